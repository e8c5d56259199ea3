//! Correlation engine tests: each type on a burst that straddles a boundary, the negative
//! cases (too spread out, other groups), window edges, what a hit does, closed windows for
//! upper bounds, bounds and their counters, chaining, `generate`, nulls and column types.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Int64Array, LargeStringArray, StringArray, StringViewArray,
};
use datafusion::arrow::datatypes::{Field, Schema};

use super::*;
use crate::detect::sigma::value::Number;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

/// One row of a test batch: the rules that selected it, its time, its fields.
#[derive(Debug, Clone)]
struct Ev {
    rules: Vec<usize>,
    ms: i64,
    host: Option<&'static str>,
    user: Option<&'static str>,
    image: Option<&'static str>,
    bytes: Option<i64>,
}

/// An event of `rule` at `ms` on `host`.
fn ev(rule: usize, ms: i64, host: &'static str) -> Ev {
    Ev {
        rules: vec![rule],
        ms,
        host: Some(host),
        user: None,
        image: None,
        bytes: None,
    }
}

impl Ev {
    fn user(mut self, user: &'static str) -> Ev {
        self.user = Some(user);
        self
    }
    fn image(mut self, image: &'static str) -> Ev {
        self.image = Some(image);
        self
    }
    fn bytes(mut self, bytes: i64) -> Ev {
        self.bytes = Some(bytes);
        self
    }
    fn no_host(mut self) -> Ev {
        self.host = None;
        self
    }
    /// Also selected by `rule`.
    fn also(mut self, rule: usize) -> Ev {
        self.rules.push(rule);
        self
    }
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let schema = Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(
        Arc::new(schema),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap()
}

/// Feeds `batch` with `times`, `selected[k] = (rule, rows)`; evidence renders `{"row":i}`.
fn observe_raw(
    set: &mut CorrelationSet,
    batch: &RecordBatch,
    times: &[i64],
    selected: &[(usize, Vec<bool>)],
) -> Vec<CorrelationHit> {
    let rules: Vec<usize> = selected.iter().map(|(r, _)| *r).collect();
    let matches: Vec<BooleanBuffer> = selected
        .iter()
        .map(|(_, rows)| BooleanBuffer::from_iter(rows.iter().copied()))
        .collect();
    let mut out = Vec::new();
    let mut evidence = |i: usize| format!(r#"{{"row":{i},"ms":{}}}"#, times[i]);
    set.observe(batch, times, &rules, &matches, &mut evidence, &mut out);
    out
}

/// The base rules of the test stream: all evaluated on each of its batches, selecting or not.
const STREAM_RULES: usize = 4;

/// Feeds `evs` as one batch of the test stream (columns host, user, image, bytes).
fn observe(set: &mut CorrelationSet, evs: &[Ev]) -> Vec<CorrelationHit> {
    let b = batch(vec![
        (
            "host",
            Arc::new(StringArray::from_iter(evs.iter().map(|e| e.host))) as ArrayRef,
        ),
        (
            "user",
            Arc::new(StringArray::from_iter(evs.iter().map(|e| e.user))),
        ),
        (
            "image",
            Arc::new(StringArray::from_iter(evs.iter().map(|e| e.image))),
        ),
        (
            "bytes",
            Arc::new(Int64Array::from_iter(evs.iter().map(|e| e.bytes))),
        ),
    ]);
    let times: Vec<i64> = evs.iter().map(|e| e.ms).collect();
    assert!(evs.iter().flat_map(|e| &e.rules).all(|&r| r < STREAM_RULES));
    let selected: Vec<(usize, Vec<bool>)> = (0..STREAM_RULES)
        .map(|r| (r, evs.iter().map(|e| e.rules.contains(&r)).collect()))
        .collect();
    observe_raw(set, &b, &times, &selected)
}

/// Feeds each event as its own batch, the way a slow stream arrives.
fn observe_each(set: &mut CorrelationSet, evs: &[Ev]) -> Vec<CorrelationHit> {
    evs.iter()
        .flat_map(|e| observe(set, std::slice::from_ref(e)))
        .collect()
}

/// A hit in one line: `c0 host=a 1000..2000 = 3`, plus the tested value and `no alert`.
fn show(hits: &[CorrelationHit]) -> Vec<String> {
    hits.iter()
        .map(|h| {
            let group: Vec<String> = h.group.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let mut s = format!(
                "c{} {} {}..{} = {}",
                h.correlation,
                group.join(","),
                h.first_ms,
                h.last_ms,
                h.value
            );
            if let Some(v) = &h.field_value {
                s.push_str(&format!(" [{v}]"));
            }
            if !h.alert {
                s.push_str(" no alert");
            }
            s
        })
        .collect()
}

/// The test's one check: feeding `evs` one batch per event gives `expected`.
fn check(set: &mut CorrelationSet, evs: &[Ev], expected: &[&str]) {
    assert_eq!(show(&observe_each(set, evs)), expected);
}

fn condition(predicates: &[(CmpOp, f64)]) -> Option<CorrelationCondition> {
    Some(CorrelationCondition {
        field: Vec::new(),
        predicates: predicates
            .iter()
            .map(|&(op, n)| {
                let n = if n.fract() == 0.0 {
                    Number::Int(n as i64)
                } else {
                    Number::Float(n)
                };
                (op, n)
            })
            .collect(),
    })
}

/// A correlation of `kind` over base rules `rules`, grouped by `host`.
fn spec(
    kind: CorrelationType,
    rules: &[usize],
    timespan_ms: i64,
    predicates: &[(CmpOp, f64)],
) -> CorrelationSpec {
    let sources: Vec<Source> = rules.iter().map(|&r| Source::Rule(r)).collect();
    CorrelationSpec {
        kind,
        group_by: vec!["host".into()],
        group_columns: vec![vec!["host".into()]; sources.len()],
        value_columns: vec![None; sources.len()],
        sources,
        timespan_ms,
        condition: if predicates.is_empty() {
            None
        } else {
            condition(predicates)
        },
        generate: false,
    }
}

/// The same, aggregating `column`.
fn value_spec(
    kind: CorrelationType,
    rules: &[usize],
    timespan_ms: i64,
    column: &str,
    predicates: &[(CmpOp, f64)],
) -> CorrelationSpec {
    let mut s = spec(kind, rules, timespan_ms, predicates);
    s.value_columns = vec![Some(column.into()); rules.len()];
    s
}

fn set(specs: Vec<CorrelationSpec>) -> CorrelationSet {
    CorrelationSet::new(specs, Limits::default()).unwrap()
}

fn set_with(specs: Vec<CorrelationSpec>, limits: Limits) -> CorrelationSet {
    CorrelationSet::new(specs, limits).unwrap()
}

use CorrelationType::*;

// ---- event_count ----

#[test]
fn event_count_fires_on_a_burst_straddling_a_minute_boundary() {
    let mut s = set(vec![spec(EventCount, &[0], MINUTE, &[(CmpOp::Gte, 3.0)])]);
    // 00:59.0, 00:59.5, 01:00.5: two fixed minutes, one sliding window.
    check(
        &mut s,
        &[ev(0, 59_000, "a"), ev(0, 59_500, "a"), ev(0, 60_500, "a")],
        &["c0 host=a 59000..60500 = 3"],
    );
}

#[test]
fn event_count_does_not_fire_on_events_spread_beyond_the_timespan() {
    let mut s = set(vec![spec(EventCount, &[0], MINUTE, &[(CmpOp::Gte, 3.0)])]);
    let spread: Vec<Ev> = (0..6).map(|i| ev(0, i * 30_000, "a")).collect();
    check(&mut s, &spread, &[]);
}

#[test]
fn the_window_is_half_open() {
    let mut s = set(vec![spec(EventCount, &[0], MINUTE, &[(CmpOp::Gte, 2.0)])]);
    // Exactly one timespan apart: not within it.
    check(&mut s, &[ev(0, 0, "a"), ev(0, MINUTE, "a")], &[]);
    // One millisecond less is.
    check(
        &mut s,
        &[ev(0, 2 * MINUTE - 1, "a")],
        &["c0 host=a 60000..119999 = 2"],
    );
}

#[test]
fn groups_do_not_mix() {
    let mut s = set(vec![spec(EventCount, &[0], MINUTE, &[(CmpOp::Gte, 2.0)])]);
    check(
        &mut s,
        &[
            ev(0, 0, "a"),
            ev(0, 1_000, "b"),
            ev(0, 2_000, "c"),
            ev(0, 3_000, "a"),
        ],
        &["c0 host=a 0..3000 = 2"],
    );
}

#[test]
fn a_hit_consumes_the_window_so_a_burst_gives_one_hit_per_threshold() {
    let burst: Vec<Ev> = (0..5).map(|i| ev(0, i * 1_000, "a")).collect();
    let expected = ["c0 host=a 0..1000 = 2", "c0 host=a 2000..3000 = 2"];
    let mut s = set(vec![spec(EventCount, &[0], MINUTE, &[(CmpOp::Gte, 2.0)])]);
    check(&mut s, &burst, &expected);
    // The same burst in one batch: the same hits.
    let mut s = set(vec![spec(EventCount, &[0], MINUTE, &[(CmpOp::Gte, 2.0)])]);
    assert_eq!(show(&observe(&mut s, &burst)), expected);
    assert_eq!(s.stats().correlations[0].hits, 2);
}

#[test]
fn events_arriving_out_of_order_are_placed_by_time() {
    let mut s = set(vec![spec(EventCount, &[0], MINUTE, &[(CmpOp::Gte, 3.0)])]);
    check(
        &mut s,
        &[ev(0, 10_000, "a"), ev(0, 30_000, "a"), ev(0, 20_000, "a")],
        &["c0 host=a 10000..30000 = 3"],
    );
    // Older than the window of its group: dropped, counted.
    let mut s = set(vec![spec(EventCount, &[0], MINUTE, &[(CmpOp::Gte, 2.0)])]);
    check(&mut s, &[ev(0, 2 * MINUTE, "a"), ev(0, 30_000, "a")], &[]);
    assert_eq!(s.stats().correlations[0].events_late, 1);
}

#[test]
fn a_row_selected_by_two_rules_is_one_event() {
    let mut s = set(vec![spec(
        EventCount,
        &[0, 1],
        MINUTE,
        &[(CmpOp::Gte, 2.0)],
    )]);
    check(&mut s, &[ev(0, 0, "a").also(1)], &[]);
    check(&mut s, &[ev(1, 1_000, "a")], &["c0 host=a 0..1000 = 2"]);
}

// ---- closed windows: upper bounds ----

#[test]
fn fewer_than_is_decided_when_the_window_closes() {
    let mut s = set(vec![spec(EventCount, &[0], MINUTE, &[(CmpOp::Lt, 3.0)])]);
    let quiet_a = [ev(0, 0, "a"), ev(0, 10_000, "a")];
    let busy_b = [
        ev(0, 0, "b"),
        ev(0, 1_000, "b"),
        ev(0, 2_000, "b"),
        ev(0, 3_000, "b"),
    ];
    // Nothing is final while the windows are open, though "a" has fewer than 3 so far.
    check(&mut s, &quiet_a, &[]);
    check(&mut s, &busy_b, &[]);
    // Any later event of the stream moves the clock past both windows.
    check(&mut s, &[ev(0, 61_000, "c")], &["c0 host=a 0..10000 = 2"]);
    // The group's own later event closes its window too.
    check(
        &mut s,
        &[ev(0, 121_000, "c")],
        &["c0 host=c 61000..61000 = 1"],
    );
}

#[test]
fn a_range_condition_tests_the_whole_window() {
    // "3 to 4 events": the 5th event of "c" disqualifies its window.
    let mut s = set(vec![spec(
        EventCount,
        &[0],
        MINUTE,
        &[(CmpOp::Gt, 2.0), (CmpOp::Lte, 4.0)],
    )]);
    let mut evs = Vec::new();
    for (host, n) in [("a", 2), ("b", 4), ("c", 5)] {
        evs.extend((0..n).map(|i| ev(0, i * 1_000, host)));
    }
    assert!(observe(&mut s, &evs).is_empty());
    check(
        &mut s,
        &[ev(0, 5 * MINUTE, "z")],
        &["c0 host=b 0..3000 = 4"],
    );
}

#[test]
fn temporal_with_an_upper_bound_uses_closed_windows() {
    // Exactly one of the two rules in the window.
    let mut s = set(vec![spec(Temporal, &[0, 1], MINUTE, &[(CmpOp::Eq, 1.0)])]);
    let evs = [
        ev(0, 0, "a"),
        ev(0, 5_000, "a"),
        ev(0, 0, "b"),
        ev(1, 5_000, "b"),
    ];
    assert!(observe(&mut s, &evs).is_empty());
    check(
        &mut s,
        &[ev(1, 2 * MINUTE, "z")],
        &["c0 host=a 0..5000 = 1"],
    );
}

// ---- value_count ----

#[test]
fn value_count_counts_distinct_values_across_a_boundary() {
    let mut s = set(vec![value_spec(
        ValueCount,
        &[0],
        MINUTE,
        "user",
        &[(CmpOp::Gte, 3.0)],
    )]);
    check(
        &mut s,
        &[
            ev(0, 59_000, "a").user("u1"),
            ev(0, 59_500, "a").user("u1"),
            ev(0, 59_800, "a"), // no user: no value
            ev(0, 60_500, "a").user("u2"),
            ev(0, 70_000, "b").user("u3"), // another group
            ev(0, 61_000, "a").user("u3"),
        ],
        &["c0 host=a 59000..61000 = 3"],
    );
    assert_eq!(s.stats().correlations[0].values_missing, 1);
}

#[test]
fn value_count_forgets_values_that_left_the_window() {
    let mut s = set(vec![value_spec(
        ValueCount,
        &[0],
        MINUTE,
        "user",
        &[(CmpOp::Gte, 3.0)],
    )]);
    check(
        &mut s,
        &[
            ev(0, 0, "a").user("u1"),
            ev(0, 30_000, "a").user("u2"),
            ev(0, 61_000, "a").user("u3"), // u1 has left
            ev(0, 62_000, "a").user("u2"),
        ],
        &[],
    );
}

// ---- temporal ----

#[test]
fn temporal_needs_every_rule_in_any_order_across_a_boundary() {
    let mut s = set(vec![spec(Temporal, &[0, 1, 2], 10_000, &[])]);
    check(
        &mut s,
        &[ev(2, 9_000, "a"), ev(0, 9_500, "a"), ev(1, 10_500, "a")],
        &["c0 host=a 9000..10500 = 3"],
    );
}

#[test]
fn temporal_does_not_fire_when_a_rule_is_missing_spread_out_or_elsewhere() {
    let mut s = set(vec![spec(Temporal, &[0, 1, 2], 10_000, &[])]);
    check(
        &mut s,
        &[
            // Spread out: rule 0 has left when rule 2 comes.
            ev(0, 0, "a"),
            ev(1, 5_000, "a"),
            ev(2, 20_000, "a"),
            // Other groups.
            ev(0, 30_000, "b"),
            ev(1, 30_000, "c"),
            ev(2, 30_000, "d"),
            // Repeats of two rules only.
            ev(0, 40_000, "e"),
            ev(0, 41_000, "e"),
            ev(1, 42_000, "e"),
        ],
        &[],
    );
}

#[test]
fn temporal_with_a_condition_counts_distinct_rules() {
    let mut s = set(vec![spec(
        Temporal,
        &[0, 1, 2],
        10_000,
        &[(CmpOp::Gte, 2.0)],
    )]);
    check(
        &mut s,
        &[ev(2, 0, "a"), ev(2, 1_000, "a"), ev(0, 2_000, "a")],
        &["c0 host=a 0..2000 = 2"],
    );
}

// ---- temporal_ordered ----

#[test]
fn temporal_ordered_needs_the_listed_order() {
    let mut s = set(vec![spec(TemporalOrdered, &[0, 1], MINUTE, &[])]);
    // B then A: no.
    check(&mut s, &[ev(1, 1_000, "a"), ev(0, 2_000, "a")], &[]);
    // A (at 2 s) then B: yes.
    check(&mut s, &[ev(1, 3_000, "a")], &["c0 host=a 1000..3000 = 2"]);
}

#[test]
fn temporal_ordered_across_a_boundary_and_beyond_the_timespan() {
    let mut s = set(vec![spec(TemporalOrdered, &[0, 1, 2], 10_000, &[])]);
    check(
        &mut s,
        &[ev(0, 9_000, "a"), ev(1, 9_500, "a"), ev(2, 10_500, "a")],
        &["c0 host=a 9000..10500 = 3"],
    );
    // The first step is too old by the time the last comes.
    check(
        &mut s,
        &[ev(0, 20_000, "b"), ev(1, 25_000, "b"), ev(2, 30_000, "b")],
        &[],
    );
}

#[test]
fn temporal_ordered_with_a_condition_counts_rules_in_order() {
    let mut s = set(vec![spec(
        TemporalOrdered,
        &[0, 1, 2],
        MINUTE,
        &[(CmpOp::Gte, 2.0)],
    )]);
    // C then A: out of order; then A, C: in order (skipping B is allowed).
    check(&mut s, &[ev(2, 0, "a"), ev(0, 1_000, "a")], &[]);
    check(&mut s, &[ev(2, 2_000, "a")], &["c0 host=a 0..2000 = 2"]);
}

#[test]
fn temporal_ordered_uses_event_time_not_arrival_order() {
    // Within one batch, B's row comes first but happened later.
    let mut s = set(vec![spec(TemporalOrdered, &[0, 1], MINUTE, &[])]);
    assert_eq!(
        show(&observe(&mut s, &[ev(1, 20_000, "a"), ev(0, 10_000, "a")])),
        ["c0 host=a 10000..20000 = 2"]
    );
    // Across batches: A arrives late, but within B's window.
    let mut s = set(vec![spec(TemporalOrdered, &[0, 1], MINUTE, &[])]);
    check(
        &mut s,
        &[ev(1, 20_000, "a"), ev(0, 10_000, "a")],
        &["c0 host=a 10000..20000 = 2"],
    );
    // And a late B before A is still B before A.
    let mut s = set(vec![spec(TemporalOrdered, &[0, 1], MINUTE, &[])]);
    check(&mut s, &[ev(0, 20_000, "a"), ev(1, 10_000, "a")], &[]);
}

// ---- value_sum, value_avg ----

#[test]
fn value_sum_across_a_boundary() {
    let mut s = set(vec![value_spec(
        ValueSum,
        &[0],
        MINUTE,
        "bytes",
        &[(CmpOp::Gt, 1_000.0)],
    )]);
    check(
        &mut s,
        &[
            ev(0, 59_000, "a").bytes(400),
            ev(0, 59_500, "a").bytes(400),
            ev(0, 60_000, "b").bytes(900),
            ev(0, 60_500, "a").bytes(300),
        ],
        &["c0 host=a 59000..60500 = 1100"],
    );
}

#[test]
fn value_sum_does_not_fire_when_spread_out() {
    let mut s = set(vec![value_spec(
        ValueSum,
        &[0],
        MINUTE,
        "bytes",
        &[(CmpOp::Gt, 1_000.0)],
    )]);
    let spread: Vec<Ev> = (0..5).map(|i| ev(0, i * 61_000, "a").bytes(600)).collect();
    check(&mut s, &spread, &[]);
}

#[test]
fn value_sum_parses_numbers_written_as_text() {
    let mut s = set(vec![value_spec(
        ValueSum,
        &[0],
        MINUTE,
        "size",
        &[(CmpOp::Gte, 1_000.5)],
    )]);
    let b = batch(vec![
        (
            "host",
            Arc::new(StringArray::from(vec!["a"; 4])) as ArrayRef,
        ),
        (
            "size",
            Arc::new(StringArray::from(vec![
                Some("500"),
                Some("n/a"),
                None,
                Some(" 500.5 "),
            ])),
        ),
    ]);
    let hits = observe_raw(&mut s, &b, &[0, 1, 2, 3], &[(0, vec![true; 4])]);
    assert_eq!(show(&hits), ["c0 host=a 0..3 = 1000.5"]);
    assert_eq!(s.stats().correlations[0].values_missing, 2);
}

#[test]
fn value_avg_fires_once_per_timespan_while_it_holds() {
    let mut s = set(vec![value_spec(
        ValueAvg,
        &[0],
        MINUTE,
        "bytes",
        &[(CmpOp::Gt, 500.0)],
    )]);
    check(
        &mut s,
        &[
            ev(0, 59_000, "a").bytes(100),
            ev(0, 60_500, "a").bytes(1_000), // mean 550, across the minute
            ev(0, 61_000, "a").bytes(1_000), // still high: quiet
            ev(0, 90_000, "a").bytes(1_000), // quiet
            ev(0, 121_000, "a").bytes(1_000), // one timespan later, on new events only
        ],
        &[
            "c0 host=a 59000..60500 = 550",
            // (61 000, 121 000]: nothing of the first hit's window.
            "c0 host=a 90000..121000 = 1000",
        ],
    );
}

#[test]
fn value_avg_keeps_the_baseline_after_a_hit() {
    let mut s = set(vec![value_spec(
        ValueAvg,
        &[0],
        10 * MINUTE,
        "bytes",
        &[(CmpOp::Lt, 100.0)],
    )]);
    // The first event alone is the mean: below 100.
    check(&mut s, &[ev(0, 0, "a").bytes(50)], &["c0 host=a 0..0 = 50"]);
    // Quiet for one timespan; the window still holds the 50.
    check(&mut s, &[ev(0, MINUTE, "a").bytes(250)], &[]);
    assert_eq!(s.live().events, 2);
}

// ---- value_percentile ----

#[test]
fn value_percentile_flags_a_rare_value_across_midnight() {
    let mut s = set(vec![value_spec(
        ValuePercentile,
        &[0],
        24 * HOUR,
        "image",
        &[(CmpOp::Lte, 1.0)],
    )]);
    // 99 common processes late on day 0, then a rare one just after midnight: a daily bucket
    // would see it alone (100%).
    let mut evs: Vec<Ev> = (0..99)
        .map(|i| ev(0, 23 * HOUR + i * 30_000, "pc1").image("svchost.exe"))
        .collect();
    evs.push(ev(0, 24 * HOUR + 30 * MINUTE, "pc1").image("mimikatz.exe"));
    let hits = observe_each(&mut s, &evs);
    assert_eq!(
        show(&hits),
        [format!(
            "c0 host=pc1 {}..{} = 1 [mimikatz.exe]",
            23 * HOUR,
            24 * HOUR + 30 * MINUTE
        )]
    );
    // The evidence is the rare event itself.
    assert_eq!(
        hits[0].evidence,
        [format!(r#"{{"row":0,"ms":{}}}"#, 24 * HOUR + 30 * MINUTE)]
    );
    assert_eq!(hits[0].evidence_truncated, 0);
    // The same value again soon: quiet. Another rare value: its own hit.
    let t = 24 * HOUR + 31 * MINUTE;
    check(
        &mut s,
        &[
            ev(0, t, "pc1").image("mimikatz.exe"),
            ev(0, t + 1, "pc1").image("svchost.exe"),
            ev(0, t + 2, "pc1").image("psexec.exe"),
        ],
        &[&format!(
            "c0 host=pc1 {}..{} = 0.970873786407767 [psexec.exe]",
            23 * HOUR,
            t + 2
        )],
    );
}

#[test]
fn value_percentile_needs_enough_history() {
    let mut s = set(vec![value_spec(
        ValuePercentile,
        &[0],
        24 * HOUR,
        "image",
        &[(CmpOp::Lte, 1.0)],
    )]);
    // 1 in 51 is about 2%: not rare enough.
    let mut evs: Vec<Ev> = (0..50)
        .map(|i| ev(0, i * 1_000, "pc1").image("svchost.exe"))
        .collect();
    evs.push(ev(0, 60_000, "pc1").image("mimikatz.exe"));
    check(&mut s, &evs, &[]);
}

// ---- bounds ----

#[test]
fn evicting_a_group_is_counted() {
    let limits = Limits {
        max_groups_per_correlation: 2,
        ..Limits::default()
    };
    let mut s = set_with(
        vec![spec(EventCount, &[0], MINUTE, &[(CmpOp::Gte, 2.0)])],
        limits,
    );
    check(
        &mut s,
        &[
            ev(0, 0, "a"),
            ev(0, 1, "b"),
            ev(0, 2, "c"), // evicts a, the least recently updated
            ev(0, 3, "a"), // a starts over, evicting b
            ev(0, 4, "c"), // c kept its first event
        ],
        &["c0 host=c 2..4 = 2"],
    );
    let stats = s.stats().correlations[0];
    assert_eq!(stats.groups_evicted, 2);
    assert_eq!(stats.groups, 2);
}

#[test]
fn a_full_group_drops_its_oldest_events_and_counts_them() {
    let limits = Limits {
        max_events_per_group: 3,
        ..Limits::default()
    };
    let mut s = set_with(
        vec![value_spec(
            ValueCount,
            &[0],
            MINUTE,
            "user",
            &[(CmpOp::Gte, 3.0)],
        )],
        limits,
    );
    check(
        &mut s,
        &["u1", "u1", "u1", "u2", "u3"]
            .iter()
            .enumerate()
            .map(|(i, u)| ev(0, i as i64, "a").user(u))
            .collect::<Vec<_>>(),
        &["c0 host=a 2..4 = 3"],
    );
    assert_eq!(s.stats().correlations[0].events_dropped, 2);
}

#[test]
fn a_closed_window_still_counts_dropped_events() {
    let limits = Limits {
        max_events_per_group: 3,
        max_evidence: 2,
        ..Limits::default()
    };
    let mut s = set_with(
        vec![spec(EventCount, &[0], MINUTE, &[(CmpOp::Lt, 10.0)])],
        limits,
    );
    let evs: Vec<Ev> = (0..5).map(|i| ev(0, i * 1_000, "a")).collect();
    check(&mut s, &evs, &[]);
    let hits = observe(&mut s, &[ev(0, 2 * MINUTE, "b")]);
    assert_eq!(show(&hits), ["c0 host=a 0..4000 = 5"]);
    // The first two kept evidence until they were dropped; the survivors never had room.
    assert_eq!(hits[0].evidence.len() + hits[0].evidence_truncated, 5);
    let stats = s.stats().correlations[0];
    assert_eq!(stats.events_dropped, 2);
    assert_eq!(stats.evidence_truncated, hits[0].evidence_truncated as u64);
}

#[test]
fn evidence_is_capped_and_keeps_the_trigger() {
    let limits = Limits {
        max_evidence: 2,
        ..Limits::default()
    };
    let mut s = set_with(
        vec![spec(EventCount, &[0], MINUTE, &[(CmpOp::Gte, 5.0)])],
        limits,
    );
    let evs: Vec<Ev> = (0..5).map(|i| ev(0, i * 1_000, "a")).collect();
    let hits = observe(&mut s, &evs);
    assert_eq!(
        hits[0].evidence,
        [r#"{"row":0,"ms":0}"#, r#"{"row":4,"ms":4000}"#]
    );
    assert_eq!(hits[0].evidence_truncated, 3);
    assert_eq!(s.stats().correlations[0].evidence_truncated, 3);
}

#[test]
fn temporal_evidence_shows_every_rule() {
    let limits = Limits {
        max_evidence: 2,
        ..Limits::default()
    };
    let mut s = set_with(vec![spec(Temporal, &[0, 1], MINUTE, &[])], limits);
    let mut evs: Vec<Ev> = (0..5).map(|i| ev(0, i * 1_000, "a")).collect();
    evs.push(ev(1, 9_000, "a"));
    let hits = observe_each(&mut s, &evs);
    assert_eq!(
        hits[0].evidence,
        [r#"{"row":0,"ms":0}"#, r#"{"row":0,"ms":9000}"#]
    );
}

#[test]
fn idle_groups_are_dropped_as_time_passes() {
    let mut s = set(vec![spec(EventCount, &[0], MINUTE, &[(CmpOp::Gte, 5.0)])]);
    observe(&mut s, &[ev(0, 0, "a"), ev(0, 1_000, "b")]);
    assert_eq!(
        s.live(),
        Live {
            groups: 2,
            events: 2
        }
    );
    observe(&mut s, &[ev(0, 2 * MINUTE, "c")]);
    assert_eq!(
        s.live(),
        Live {
            groups: 1,
            events: 1
        }
    );
}

#[test]
fn thresholds_the_bounds_make_unreachable_are_refused() {
    let limits = Limits {
        max_events_per_group: 10,
        ..Limits::default()
    };
    let err = CorrelationSet::new(
        vec![spec(EventCount, &[0], MINUTE, &[(CmpOp::Gt, 10.0)])],
        limits,
    )
    .unwrap_err();
    assert!(err.to_string().contains("max_events_per_group"), "{err}");
    let err = CorrelationSet::new(
        vec![spec(Temporal, &[0, 1], MINUTE, &[(CmpOp::Gte, 3.0)])],
        limits,
    )
    .unwrap_err();
    assert!(err.to_string().contains("can never hold"), "{err}");
    // An upper bound beyond it is fine: closed windows count dropped events.
    CorrelationSet::new(
        vec![spec(EventCount, &[0], MINUTE, &[(CmpOp::Lt, 100.0)])],
        limits,
    )
    .unwrap();
}

#[test]
fn inconsistent_specs_are_refused() {
    let mut missing_value = spec(ValueSum, &[0], MINUTE, &[(CmpOp::Gt, 1.0)]);
    missing_value.value_columns = vec![None];
    let mut short_columns = spec(EventCount, &[0, 1], MINUTE, &[(CmpOp::Gt, 1.0)]);
    short_columns.group_columns.pop();
    let no_condition = spec(EventCount, &[0], MINUTE, &[]);
    let zero_span = spec(EventCount, &[0], 0, &[(CmpOp::Gt, 1.0)]);
    for bad in [missing_value, short_columns, no_condition, zero_span] {
        let err = CorrelationSet::new(vec![bad.clone()], Limits::default()).unwrap_err();
        assert!(
            matches!(err, CorrelationSetError::Invalid { correlation: 0, .. }),
            "{bad:?}: {err}"
        );
    }
}

// ---- chaining, generate ----

/// Outer (index 0, listed first): temporal_ordered [many failed logins, success] by User.
/// Inner (index 1): event_count of failed logins (rule 0) by user, at least 3.
fn brute_force() -> Vec<CorrelationSpec> {
    let inner = CorrelationSpec {
        group_by: vec!["user".into()],
        group_columns: vec![vec!["user".into()]],
        ..spec(EventCount, &[0], 10 * MINUTE, &[(CmpOp::Gte, 3.0)])
    };
    let outer = CorrelationSpec {
        kind: TemporalOrdered,
        sources: vec![Source::Correlation(1), Source::Rule(1)],
        group_by: vec!["User".into()],
        group_columns: vec![vec!["user".into()], vec!["user".into()]],
        value_columns: vec![None, None],
        timespan_ms: 10 * MINUTE,
        condition: None,
        generate: false,
    };
    vec![outer, inner]
}

#[test]
fn a_chained_correlation_reads_the_hits_of_the_inner_one() {
    let mut s = set(brute_force());
    let failures = [
        ev(0, 0, "pc").user("bob"),
        ev(0, 1_000, "pc").user("bob"),
        ev(0, 2_000, "pc").user("alice"),
        ev(0, 3_000, "pc").user("bob"),
    ];
    // The inner correlation fires; it is not an alert of its own.
    check(&mut s, &failures, &["c1 user=bob 0..3000 = 3 no alert"]);
    // A success of someone else, then bob's.
    let hits = observe_each(
        &mut s,
        &[
            ev(1, 4_000, "pc").user("alice"),
            ev(1, 5_000, "pc").user("bob"),
        ],
    );
    assert_eq!(show(&hits), ["c0 User=bob 3000..5000 = 2"]);
    // The inner hit is the outer hit's first evidence.
    assert!(
        hits[0].evidence[0].starts_with(r#"{"correlation":1,"group":{"user":"bob"},"first_ms":0"#),
        "{}",
        hits[0].evidence[0]
    );
}

#[test]
fn a_chained_correlation_in_one_batch_and_in_the_wrong_order() {
    let mut s = set(brute_force());
    // Success first: not a brute force.
    let evs = [
        ev(1, 0, "pc").user("bob"),
        ev(0, 1_000, "pc").user("bob"),
        ev(0, 2_000, "pc").user("bob"),
        ev(0, 3_000, "pc").user("bob"),
    ];
    assert_eq!(
        show(&observe(&mut s, &evs)),
        ["c1 user=bob 1000..3000 = 3 no alert"]
    );
    // In one batch with its success: inner hit first, then the outer one.
    let evs = [
        ev(0, 4_000, "pc").user("bob"),
        ev(0, 5_000, "pc").user("bob"),
        ev(0, 6_000, "pc").user("bob"),
        ev(1, 7_000, "pc").user("bob"),
    ];
    assert_eq!(
        show(&observe(&mut s, &evs)),
        [
            "c1 user=bob 4000..6000 = 3 no alert",
            // The window also holds bob's first success (0 ms), which starts no chain.
            "c0 User=bob 0..7000 = 2"
        ]
    );
}

#[test]
fn cycles_and_unknown_correlations_are_refused() {
    let refer = |to: Vec<Source>| CorrelationSpec {
        group_columns: vec![vec!["host".into()]; to.len()],
        value_columns: vec![None; to.len()],
        sources: to,
        ..spec(Temporal, &[0], MINUTE, &[])
    };
    let err = CorrelationSet::new(
        vec![
            refer(vec![Source::Rule(0), Source::Correlation(1)]),
            refer(vec![Source::Correlation(2)]),
            refer(vec![Source::Correlation(1)]),
        ],
        Limits::default(),
    )
    .unwrap_err();
    assert_eq!(err, CorrelationSetError::Cycle { path: vec![1, 2] });
    let err = CorrelationSet::new(vec![refer(vec![Source::Correlation(0)])], Limits::default())
        .unwrap_err();
    assert_eq!(err, CorrelationSetError::Cycle { path: vec![0] });
    let err = CorrelationSet::new(vec![refer(vec![Source::Correlation(5)])], Limits::default())
        .unwrap_err();
    assert!(matches!(err, CorrelationSetError::Invalid { .. }), "{err}");
}

#[test]
fn generate_decides_which_referenced_rules_alert_on_their_own() {
    let mut chatty = spec(Temporal, &[0, 2], MINUTE, &[]);
    chatty.generate = true;
    let s = set(vec![spec(Temporal, &[0, 1], MINUTE, &[]), chatty]);
    // Rule 0: one referrer asks for it. Rule 1: only the default. Rule 2: asked. Rule 3: free.
    assert!(!s.suppresses_base_rule(0));
    assert!(s.suppresses_base_rule(1));
    assert!(!s.suppresses_base_rule(2));
    assert!(!s.suppresses_base_rule(3));
    assert!(!s.suppresses_correlation(0));

    let s = set(brute_force());
    assert!(s.suppresses_base_rule(0));
    assert!(s.suppresses_base_rule(1));
    assert!(!s.suppresses_correlation(0));
    assert!(s.suppresses_correlation(1));
}

// ---- group values ----

#[test]
fn a_missing_group_value_groups_as_empty() {
    let mut s = set(vec![spec(EventCount, &[0], MINUTE, &[(CmpOp::Gte, 2.0)])]);
    // A null host, then a batch without the host column at all.
    observe(&mut s, &[ev(0, 0, "x").no_host()]);
    let b = batch(vec![(
        "user",
        Arc::new(StringArray::from(vec![Some("bob")])) as ArrayRef,
    )]);
    let hits = observe_raw(&mut s, &b, &[1_000], &[(0, vec![true])]);
    assert_eq!(show(&hits), ["c0 host= 0..1000 = 2"]);
}

#[test]
fn group_values_are_compared_as_text_across_column_types_and_names() {
    // Two streams name and type the port differently; the caller mapped both to `port`.
    let mut temporal = spec(Temporal, &[0, 1, 2, 3], MINUTE, &[]);
    temporal.group_by = vec!["port".into(), "tls".into()];
    temporal.group_columns = vec![
        vec!["dst_port".into(), "tls".into()],
        vec!["port".into(), "tls".into()],
        vec!["p".into(), "tls".into()],
        vec!["p".into(), "tls".into()],
    ];
    let mut s = set(vec![temporal]);
    let ints = batch(vec![
        (
            "dst_port",
            Arc::new(Int64Array::from(vec![443])) as ArrayRef,
        ),
        ("tls", Arc::new(BooleanArray::from(vec![true]))),
    ]);
    let strings = batch(vec![
        ("port", Arc::new(StringArray::from(vec!["443"])) as ArrayRef),
        ("tls", Arc::new(StringArray::from(vec!["true"]))),
    ]);
    let large = batch(vec![
        (
            "p",
            Arc::new(LargeStringArray::from(vec!["443"])) as ArrayRef,
        ),
        ("tls", Arc::new(StringViewArray::from(vec!["true"]))),
    ]);
    let view = batch(vec![
        (
            "p",
            Arc::new(StringViewArray::from(vec!["443"])) as ArrayRef,
        ),
        ("tls", Arc::new(LargeStringArray::from(vec!["true"]))),
    ]);
    let mut hits = observe_raw(&mut s, &ints, &[0], &[(0, vec![true])]);
    hits.extend(observe_raw(&mut s, &strings, &[1], &[(1, vec![true])]));
    hits.extend(observe_raw(&mut s, &large, &[2], &[(2, vec![true])]));
    hits.extend(observe_raw(&mut s, &view, &[3], &[(3, vec![true])]));
    assert_eq!(show(&hits), ["c0 port=443,tls=true 0..3 = 4"]);
}

#[test]
fn batches_of_other_streams_are_ignored() {
    let mut s = set(vec![spec(EventCount, &[0], MINUTE, &[(CmpOp::Gte, 1.0)])]);
    let b = batch(vec![(
        "host",
        Arc::new(StringArray::from(vec!["a"])) as ArrayRef,
    )]);
    assert!(observe_raw(&mut s, &b, &[0], &[(7, vec![true])]).is_empty());
    assert_eq!(s.live(), Live::default());
}

// ---- the clock ----

/// A batch of one row on `host`, from a stream whose only rule is `rule`.
fn one_row(s: &mut CorrelationSet, rule: usize, ms: i64, host: &str) -> Vec<CorrelationHit> {
    let b = batch(vec![(
        "host",
        Arc::new(StringArray::from(vec![host])) as ArrayRef,
    )]);
    observe_raw(s, &b, &[ms], &[(rule, vec![true])])
}

#[test]
fn a_lagging_stream_keeps_its_groups() {
    // Rule 10 is on a stream 5 minutes ahead of rule 11's; the count is over both.
    let mut s = set(vec![spec(
        EventCount,
        &[10, 11],
        MINUTE,
        &[(CmpOp::Gte, 3.0)],
    )]);
    let mut hits = Vec::new();
    for i in 0..3 {
        hits.extend(one_row(&mut s, 10, 5 * MINUTE + i * 1_000, "ahead"));
        hits.extend(one_row(&mut s, 11, i * 1_000, "behind"));
    }
    assert_eq!(
        show(&hits),
        [
            format!("c0 host=ahead {}..{} = 3", 5 * MINUTE, 5 * MINUTE + 2_000),
            "c0 host=behind 0..2000 = 3".to_string(),
        ]
    );
}

#[test]
fn a_heartbeat_closes_the_windows_of_a_quiet_stream() {
    let mut s = set(vec![spec(EventCount, &[0], MINUTE, &[(CmpOp::Lt, 3.0)])]);
    check(&mut s, &[ev(0, 0, "a")], &[]);
    let mut hits = Vec::new();
    s.advance(&[0], 30_000, &mut hits);
    assert!(hits.is_empty());
    s.advance(&[0], MINUTE, &mut hits);
    assert_eq!(show(&hits), ["c0 host=a 0..0 = 1"]);
    assert_eq!(s.live(), Live::default());
}

#[test]
fn the_clock_is_the_slowest_stream() {
    // Rule 10's stream is ahead; rule 11's has only reached 30 s: a's window stays open.
    let mut s = set(vec![spec(
        EventCount,
        &[10, 11],
        MINUTE,
        &[(CmpOp::Lt, 3.0)],
    )]);
    assert!(one_row(&mut s, 11, 0, "a").is_empty());
    assert!(one_row(&mut s, 10, 10 * MINUTE, "b").is_empty());
    let mut hits = Vec::new();
    s.advance(&[11], 30_000, &mut hits);
    assert!(hits.is_empty());
    s.advance(&[11], MINUTE, &mut hits);
    assert_eq!(show(&hits), ["c0 host=a 0..0 = 1"]);
}

// ---- durable state ----

/// Every kind of correlation (threshold, closed window, statistic, chained) over the test
/// stream.
fn every_kind() -> Vec<CorrelationSpec> {
    let mut chained = spec(EventCount, &[], 10 * MINUTE, &[(CmpOp::Gte, 2.0)]);
    chained.sources = vec![Source::Correlation(0)];
    chained.group_columns = vec![vec!["host".into()]];
    chained.value_columns = vec![None];
    vec![
        spec(EventCount, &[0, 1], MINUTE, &[(CmpOp::Gte, 3.0)]),
        spec(EventCount, &[2], MINUTE, &[(CmpOp::Lt, 3.0)]),
        value_spec(ValueCount, &[0], 2 * MINUTE, "user", &[(CmpOp::Gte, 3.0)]),
        spec(Temporal, &[0, 1, 2], 2 * MINUTE, &[]),
        spec(TemporalOrdered, &[1, 2, 3], 2 * MINUTE, &[]),
        value_spec(ValueSum, &[3], MINUTE, "bytes", &[(CmpOp::Gte, 1500.0)]),
        value_spec(ValueAvg, &[1], MINUTE, "bytes", &[(CmpOp::Gt, 700.0)]),
        value_spec(
            ValuePercentile,
            &[2],
            5 * MINUTE,
            "image",
            &[(CmpOp::Lte, 20.0)],
        ),
        chained,
    ]
}

/// A long, mostly ordered stream of events of every rule, some late, from a fixed seed.
fn random_events(n: usize, seed: u64) -> Vec<Ev> {
    const HOSTS: [&str; 4] = ["a", "b", "c", "d"];
    const USERS: [&str; 5] = ["u1", "u2", "u3", "u4", "u5"];
    const IMAGES: [&str; 6] = ["x", "x", "x", "y", "y", "z"];
    let mut state = seed;
    let mut next = move |m: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % m
    };
    let mut ms = 0i64;
    (0..n)
        .map(|_| {
            ms += next(20_000) as i64;
            let late = if next(10) == 0 { 30_000 } else { 0 };
            let mut e = ev(next(4) as usize, ms - late, HOSTS[next(4) as usize])
                .user(USERS[next(5) as usize])
                .image(IMAGES[next(6) as usize])
                .bytes(next(1000) as i64);
            if next(5) == 0 {
                e = e.also(next(4) as usize);
            }
            e
        })
        .collect()
}

/// Applies checkpoint entries to a changelog kept as its compaction would (latest per key).
fn apply(changelog: &mut Vec<StateEntry>, entries: Vec<StateEntry>) {
    for e in entries {
        changelog.retain(|o| (o.partition, &o.key) != (e.partition, &e.key));
        if e.value.is_some() {
            changelog.push(e);
        }
    }
}

/// Checkpoints every correlation of `s` into `changelog`.
fn checkpoint_into(s: &mut CorrelationSet, n: usize, changelog: &mut Vec<StateEntry>) {
    let mut out = Vec::new();
    for c in 0..n {
        s.checkpoint(c, &[c as u8], &mut out);
    }
    apply(changelog, out);
}

/// A fresh set of `specs` restored from `changelog` (partitions `keep` only).
fn restored(
    specs: Vec<CorrelationSpec>,
    limits: Limits,
    changelog: &[StateEntry],
) -> CorrelationSet {
    let n = specs.len();
    let mut s = set_with(specs, limits);
    for c in 0..n {
        let mine: Vec<(i32, &[u8], &[u8])> = changelog
            .iter()
            .filter(|e| e.key[0] == c as u8)
            .map(|e| (e.partition, &e.key[1..], e.value.as_deref().unwrap()))
            .collect();
        s.restore(c, &mine).unwrap();
    }
    s
}

/// Stopping anywhere, restoring the last checkpoint into a fresh set and going on gives the
/// hits of an uninterrupted run: evidence, windows and counts included.
fn check_restart_is_invisible(limits: Limits, seed: u64, all_fire: bool) {
    let evs = random_events(600, seed);
    let n = every_kind().len();
    let mut whole = set_with(every_kind(), limits);
    let expected = observe_each(&mut whole, &evs);
    assert!(
        expected.len() > 20
            && (!all_fire || (0..n).all(|c| expected.iter().any(|h| h.correlation == c))),
        "every correlation fires in the test stream: {:?}",
        show(&expected)
    );
    for stop in [1, 77, 300, 599] {
        // Checkpoints at several points before the stop: deltas and tombstones accumulate.
        let mut live = set_with(every_kind(), limits);
        let mut changelog = Vec::new();
        let mut hits = Vec::new();
        for (i, e) in evs[..stop].iter().enumerate() {
            hits.extend(observe(&mut live, std::slice::from_ref(e)));
            if i % 50 == 0 {
                checkpoint_into(&mut live, n, &mut changelog);
            }
        }
        checkpoint_into(&mut live, n, &mut changelog);
        let mut after = restored(every_kind(), limits, &changelog);
        hits.extend(observe_each(&mut after, &evs[stop..]));
        assert_eq!(hits, expected, "restart after event {stop}");
    }
}

#[test]
fn a_restart_from_a_checkpoint_gives_the_hits_of_an_uninterrupted_run() {
    check_restart_is_invisible(Limits::default(), 1, true);
    check_restart_is_invisible(Limits::default(), 2, true);
}

#[test]
fn a_restart_keeps_eviction_order_and_bounds() {
    // Tight bounds: groups are evicted least recently updated first, events dropped from
    // full groups; a restored set must evict the same ones.
    let limits = Limits {
        max_groups_per_correlation: 2,
        max_events_per_group: 4,
        max_evidence: 2,
    };
    check_restart_is_invisible(limits, 3, false);
}

#[test]
fn state_is_checkpointed_per_partition_and_released_per_partition() {
    let specs = vec![spec(EventCount, &[0], MINUTE, &[(CmpOp::Gte, 3.0)])];
    let mut s = set(specs.clone());
    s.set_partition(0);
    observe(&mut s, &[ev(0, 1000, "a"), ev(0, 1100, "a")]);
    s.set_partition(1);
    observe(&mut s, &[ev(0, 1200, "b"), ev(0, 1300, "b")]);
    let mut changelog = Vec::new();
    checkpoint_into(&mut s, 1, &mut changelog);
    let groups: Vec<i32> = changelog
        .iter()
        .filter(|e| e.key[1] == b'g')
        .map(|e| e.partition)
        .collect();
    assert_eq!(groups, [0, 1]);
    // Nothing changed: nothing to write.
    let mut out = Vec::new();
    s.checkpoint(0, &[0], &mut out);
    assert!(out.is_empty(), "{out:?}");
    // Partition 1 goes to another instance: its group is forgotten here (no tombstone, the
    // new owner restores it), partition 0's stays.
    s.release(&[1]);
    s.checkpoint(0, &[0], &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(s.live().groups, 1);
    s.set_partition(0);
    assert_eq!(
        show(&observe(&mut s, &[ev(0, 1400, "a")])),
        ["c0 host=a 1000..1400 = 3"]
    );
    assert!(
        observe(&mut s, &[ev(0, 1500, "b")]).is_empty(),
        "b started afresh here"
    );
    // The new owner of partition 1 restores only partition 1 and completes b's burst.
    let only_1: Vec<StateEntry> = changelog.into_iter().filter(|e| e.partition == 1).collect();
    let mut owner = restored(specs, Limits::default(), &only_1);
    owner.set_partition(1);
    assert_eq!(
        show(&observe(&mut owner, &[ev(0, 1500, "b")])),
        ["c0 host=b 1200..1500 = 3"]
    );
    // The hit consumed b's window; expiry later removes the group: a tombstone.
    let mut out = Vec::new();
    owner.checkpoint(0, &[0], &mut out);
    observe(&mut owner, &[ev(0, 10 * MINUTE, "c")]);
    out.clear();
    owner.checkpoint(0, &[0], &mut out);
    assert!(
        out.iter()
            .any(|e| e.partition == 1 && e.value.is_none() && e.key.ends_with(b"b")),
        "{out:?}"
    );
}

#[test]
fn damaged_state_is_an_error() {
    let mut s = set(vec![spec(EventCount, &[0], MINUTE, &[(CmpOp::Gte, 3.0)])]);
    let mut key = vec![b'g'];
    append_key_text(&mut key, "a");
    assert!(s.restore(0, &[(0, &key, &[1, 2, 3])]).is_err());
    assert!(s.restore(0, &[(0, &key, &[9])]).is_err(), "unknown version");
    assert!(s.restore(0, &[(0, b"x", &[1])]).is_err(), "unknown tag");
}

#[test]
fn a_partition_ahead_does_not_expire_the_groups_of_one_behind() {
    // One instance reads several partitions, each its own backlog: partition 0 is hours
    // ahead of partition 1, whose burst must still be seen whole.
    for kind in [(CmpOp::Gte, 3.0), (CmpOp::Lt, 5.0)] {
        let mut s = set(vec![spec(EventCount, &[0], MINUTE, &[kind])]);
        s.set_partition(1);
        observe(&mut s, &[ev(0, 1000, "a"), ev(0, 2000, "a")]);
        s.set_partition(0);
        observe(&mut s, &[ev(0, 10 * HOUR, "b")]);
        s.set_partition(1);
        let hits = show(&observe(
            &mut s,
            &[ev(0, 3000, "a"), ev(0, 2 * MINUTE, "c")],
        ));
        assert_eq!(hits, ["c0 host=a 1000..3000 = 3"], "{kind:?}");
    }
}
