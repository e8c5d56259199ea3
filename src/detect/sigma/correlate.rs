//! Sigma correlation rules evaluated over the event stream, in event time.
//!
//! In: the correlations of a rule set as [`CorrelationSpec`]s (the caller has resolved rule
//! references, aliases and field mapping into indices and column names), then, batch by batch,
//! which rows each base rule selected ([`CorrelationSet::observe`]).
//! Out: [`CorrelationHit`]s: a group (the `group-by` values), the time range of its window, the
//! aggregate the condition tested and bounded evidence. No I/O, no clock: time is the events'
//! own time, so a replay gives the same hits as the live run.
//!
//! # Semantics (Sigma correlation specification 2.1)
//!
//! An *event* of a correlation is a row selected by one of its base rules, or a hit of one of
//! its inner correlations (chaining: the hit becomes an event at its `last_ms`, with its group
//! values, looked up by name). Events are split into *groups* by their `group-by` values;
//! events of different groups never correlate. A row selected by several rules of a
//! non-temporal correlation is one event (`event_count` counts it once), as in the query
//! `(rule_a OR rule_b) | count by group` the specification describes.
//!
//! **Windows slide in event time.** A group's window holds its events `e` with
//! `newest - timespan < e.time <= newest`, `newest` being the group's newest event: the window
//! is half-open, so two events exactly `timespan` apart are not "within" it, and it is not
//! aligned to any clock boundary (a burst at 00:59.5 and 01:00.5 is one burst, as the
//! specification asks: "should not be restricted to boundaries").
//!
//! **Aggregates.** `event_count`: events in the window. `value_count`: distinct values of the
//! field. `temporal`: distinct rules seen; without a condition all of them must be.
//! `temporal_ordered`: the longest chain of events of distinct rules in the order the rules are
//! listed (by event time; equal times by arrival); without a condition the chain must cover
//! every rule. `value_sum` / `value_avg`: sum and mean of the field as a number.
//! `value_percentile`: the specification defines it by its example (`field: Image, lte: 1`,
//! "a process name seen in less than 1% of all the processes"): the aggregate is the *share*,
//! in percent, of the window's events whose field value equals the arriving event's value
//! (itself included), and the threshold is a percentage. The condition has no percentile
//! parameter in the specification (pySigma's extra `percentile:` key is not Sigma 2.1, and the
//! rule parser rejects it). `value_*` aggregates ignore events without a value for the field,
//! as SQL aggregates ignore nulls; for `value_sum` and `value_avg` a string that does not parse
//! as a number counts as no value. Several predicates (`gt: 100, lte: 200`) must all hold.
//!
//! **When a condition is evaluated, and what a hit does.** Three modes, fixed per correlation:
//!
//! - *Threshold* (`event_count`, `value_count`, `temporal`, `temporal_ordered`, `value_sum`
//!   whose predicates are all lower bounds `gt` / `gte`, and the temporal types without a
//!   condition): these aggregates only grow as events arrive, so the condition is evaluated as
//!   each event arrives and fires as soon as it holds (for `value_sum` this assumes values that
//!   are not negative, as byte counts are). A hit **consumes** the window: the
//!   group's events are dropped, so every event is evidence of at most one hit and the next hit
//!   needs the condition to hold again on newer events (120 failed logins with `gte: 100` give
//!   one hit, not 21).
//! - *Closed window* (the same types with any of `lt`, `lte`, `eq`, `neq`): "fewer than 5
//!   events" holds for the first events of every burst, so the count is only final once the
//!   window can grow no more. The window opens at a group's first event and closes `timespan`
//!   later; it is evaluated once, when an event of the group at or past its end arrives or when
//!   the correlation's clock passes its end (see below); then it is dropped, hit or not, and
//!   the group's next event opens the next window. A group that never had an event is never
//!   reported: there is nothing to group by.
//! - *Statistic* (`value_avg`, `value_percentile`, any predicates): the mean and the share are
//!   not monotonic, so the condition is evaluated as each event arrives (not as one leaves),
//!   on the sliding window.
//!   The events are **kept** after a hit (they are the baseline later events are compared
//!   with), and the group (`value_avg`) or the group and value (`value_percentile`) is quiet
//!   for one `timespan`: at most one hit per group (and value) per window. A value is judged
//!   when it occurs, against the window up to it: nothing is reported in hindsight.
//!
//! **Missing group-by values.** The specification does not say; a null or absent field (or a
//! column missing from the batch) groups as the empty string `""`, the value reported in the
//! hit. Group-by values are compared as text: `443` in an integer column and `"443"` in a
//! string column of another stream are the same group.
//!
//! **`generate`.** Per the specification, the rules a correlation refers to are not
//! stand-alone rules unless it says `generate: true`. [`CorrelationSet::suppresses_base_rule`]
//! is true for a base rule referred to by correlations none of which sets `generate: true` (an
//! explicit request to alert on the rule wins over the default); a rule no correlation refers
//! to alerts as usual. The same holds for correlations referred to by other correlations:
//! their hits are still produced (they feed the outer correlation) but carry `alert: false`.
//!
//! **Late events.** Events are inserted by time. An event older than its group's window
//! (`time <= newest - timespan`) can no longer correlate with anything kept and is dropped
//! and counted; one that arrives after its group was dropped as idle starts a new group.
//! Within a batch, each correlation's events are processed in event-time order.
//!
//! **Clock.** A correlation keeps one clock per input partition (groups belong to the
//! partition of their last event: see [`CorrelationSet::set_partition`]). A partition's clock,
//! which closes the windows and expires the idle groups of that partition, is the event time
//! of its *slowest* input: per source, the newest event time of the batches that
//! carry its rule (or the inner correlation's clock). A stream lagging another one therefore
//! does not see its groups expire under it (until a stream's first batch, the clock follows the
//! streams seen). A quiet stream holds the clock back until its next batch, or until the
//! caller reports its progress with [`CorrelationSet::advance`].
//!
//! # Bounds
//!
//! Per correlation at most `max_groups_per_correlation` groups (a new group evicts the least
//! recently updated one), per group at most `max_events_per_group` events (the oldest is
//! dropped), per hit at most `max_evidence` evidence rows, evidence rendered only for events
//! that keep it. Groups whose newest event is a `timespan` behind the clock are dropped. Each
//! loss is counted ([`CorrelationStats`]). A threshold that the event bound makes unreachable
//! (`event_count` with `gte: 50000` and 10 000 events per group) is refused by
//! [`CorrelationSet::new`] rather than silently never firing. When a group overflows, closed
//! windows still count `event_count` exactly; the other aggregates cover the events kept.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, AsArray, BooleanArray, GenericStringArray, PrimitiveArray, RecordBatch, StringViewArray,
};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, SchemaRef,
    UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use super::correlation::{CorrelationCondition, CorrelationType};
use super::value::CmpOp;
use crate::detect::StateEntry;
use crate::detect::codec::{Dec, DecodeError, Enc};

/// What a correlation refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// A detection rule: its index in the caller's base-rule numbering (the `rules` passed to
    /// [`CorrelationSet::observe`]).
    Rule(usize),
    /// Another correlation, by its index in the [`CorrelationSet`] (chained correlations).
    Correlation(usize),
}

/// One correlation rule, resolved by the caller against its rule set and streams.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrelationSpec {
    /// What is aggregated.
    pub kind: CorrelationType,
    /// The rules and correlations it refers to, in the order written (the order
    /// `temporal_ordered` requires).
    pub sources: Vec<Source>,
    /// The `group-by` names (alias or field name), as reported in hits and as looked up in the
    /// groups of inner correlations' hits.
    pub group_by: Vec<String>,
    /// Per source, per `group_by` entry: the column to read in that source's batches (aliases
    /// and field mapping already applied). For a [`Source::Correlation`], the name of the
    /// inner hit's group value to use.
    pub group_columns: Vec<Vec<String>>,
    /// Per source, the column aggregated by `value_count`, `value_sum`, `value_avg` and
    /// `value_percentile` (for a [`Source::Correlation`], a group value name of the inner
    /// hit); `None` for the other types.
    pub value_columns: Vec<Option<String>>,
    /// The window length, in milliseconds; positive.
    pub timespan_ms: i64,
    /// The threshold; `None` only for the temporal types, meaning every source must match.
    pub condition: Option<CorrelationCondition>,
    /// Whether the referenced rules also alert on their own (`generate: true`).
    pub generate: bool,
}

/// Memory bounds, per correlation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Groups tracked at once; a new group beyond it evicts the least recently updated one.
    pub max_groups_per_correlation: usize,
    /// Events kept per group; beyond it the oldest is dropped.
    pub max_events_per_group: usize,
    /// Evidence rows per hit; the rest are only counted.
    pub max_evidence: usize,
}

impl Default for Limits {
    /// 100 000 groups, 10 000 events per group, 10 evidence rows per hit.
    fn default() -> Limits {
        Limits {
            max_groups_per_correlation: 100_000,
            max_events_per_group: 10_000,
            max_evidence: 10,
        }
    }
}

/// A correlation matched for one group.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrelationHit {
    /// The correlation's index in the [`CorrelationSet`].
    pub correlation: usize,
    /// False when the correlation only feeds other correlations (`generate` not set by any of
    /// them): the hit is not an alert of its own.
    pub alert: bool,
    /// `(group-by name, value)`, in `group_by` order; a missing value is `""`.
    pub group: Vec<(String, String)>,
    /// Time of the window's first event, in milliseconds.
    pub first_ms: i64,
    /// Time of the window's last event.
    pub last_ms: i64,
    /// The aggregate the condition tested: count, distinct count, sum, mean, share in percent
    /// (`value_percentile`), or number of rules seen (in order, for `temporal_ordered`).
    pub value: f64,
    /// `value_percentile`: the field value whose share was tested.
    pub field_value: Option<String>,
    /// Rendered events of the window (for `value_percentile`: events with that value), in
    /// time order, at most `max_evidence`; the triggering event is always among them.
    pub evidence: Vec<String>,
    /// Events of the window left out of `evidence`.
    pub evidence_truncated: usize,
}

/// A set of correlations that cannot be evaluated: a bug in how the caller built it, or a
/// rule whose condition can never hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorrelationSetError {
    /// One correlation is inconsistent or can never fire.
    #[error("correlation {correlation}: {message}")]
    Invalid {
        /// Its index in the specs.
        correlation: usize,
        /// What is wrong.
        message: String,
    },
    /// Correlations refer to each other in a loop.
    #[error("correlations refer to each other in a cycle: {}", path.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" -> "))]
    Cycle {
        /// The correlations of the loop, each referring to the next, the last to the first.
        path: Vec<usize>,
    },
    /// A limit is zero.
    #[error("correlation limits: {0}")]
    Limits(String),
}

/// What a correlation lost to its bounds, what it produced, and what it holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CorrelationCounters {
    /// Hits produced.
    pub hits: u64,
    /// Groups evicted to make room for new ones (`max_groups_per_correlation`).
    pub groups_evicted: u64,
    /// Events dropped from full groups (`max_events_per_group`).
    pub events_dropped: u64,
    /// Events too old for their group's window.
    pub events_late: u64,
    /// `value_*` events without a (numeric) value, left out of the aggregate.
    pub values_missing: u64,
    /// Evidence rows left out of hits (`max_evidence`).
    pub evidence_truncated: u64,
    /// Groups held now.
    pub groups: usize,
    /// Events held now.
    pub events: usize,
}

/// Counters of every correlation, by index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorrelationStats {
    /// One entry per correlation, in the order given to [`CorrelationSet::new`].
    pub correlations: Vec<CorrelationCounters>,
}

/// State held by a whole set, for a gauge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Live {
    /// Groups, over every correlation.
    pub groups: usize,
    /// Events, over every correlation.
    pub events: usize,
}

/// The correlations of a rule set and their state.
#[derive(Debug)]
pub struct CorrelationSet {
    /// One per spec, same index.
    trackers: Vec<Tracker>,
    /// Inner correlations before the outer ones that read their hits.
    order: Vec<usize>,
    /// Base rule -> correlations reading it, directly or through inner correlations: the
    /// correlations a batch concerns.
    readers: HashMap<usize, Vec<usize>>,
    /// Base rule -> whether a correlation referring to it sets `generate: true`.
    referenced_rules: HashMap<usize, bool>,
    /// Buffers reused from batch to batch.
    scratch: Scratch,
    /// The input partition of the batches observed now (see [`set_partition`]).
    ///
    /// [`set_partition`]: CorrelationSet::set_partition
    partition: i32,
}

impl CorrelationSet {
    /// Checks the specs and orders them so that inner correlations run first.
    pub fn new(
        specs: Vec<CorrelationSpec>,
        limits: Limits,
    ) -> Result<CorrelationSet, CorrelationSetError> {
        if limits.max_groups_per_correlation == 0 || limits.max_events_per_group == 0 {
            return Err(CorrelationSetError::Limits(
                "max_groups_per_correlation and max_events_per_group must be at least 1".into(),
            ));
        }
        for (i, spec) in specs.iter().enumerate() {
            check(i, spec, specs.len())?;
            check_reachable(i, spec, limits)?;
        }
        let order = topological_order(&specs)?;

        // Who alerts: a referenced rule or correlation only if a referrer asks for it.
        let mut referenced_rules: HashMap<usize, bool> = HashMap::new();
        let mut referenced_correlations: Vec<Option<bool>> = vec![None; specs.len()];
        for spec in &specs {
            for source in &spec.sources {
                let generate = match *source {
                    Source::Rule(r) => referenced_rules.entry(r).or_insert(false),
                    Source::Correlation(c) => referenced_correlations[c].get_or_insert(false),
                };
                *generate |= spec.generate;
            }
        }

        // The base rules each correlation depends on, through its inner correlations too.
        let mut base: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); specs.len()];
        for &c in &order {
            let mut rules = BTreeSet::new();
            for source in &specs[c].sources {
                match *source {
                    Source::Rule(r) => {
                        rules.insert(r);
                    }
                    Source::Correlation(inner) => rules.extend(base[inner].iter().copied()),
                }
            }
            base[c] = rules;
        }
        let mut readers: HashMap<usize, Vec<usize>> = HashMap::new();
        for (c, rules) in base.iter().enumerate() {
            for &r in rules {
                readers.entry(r).or_default().push(c);
            }
        }

        let n = specs.len();
        let trackers = specs
            .into_iter()
            .enumerate()
            .map(|(i, spec)| {
                Tracker::new(i, spec, limits, referenced_correlations[i] != Some(false))
            })
            .collect();
        Ok(CorrelationSet {
            trackers,
            order,
            readers,
            referenced_rules,
            scratch: Scratch {
                touched: vec![false; n],
                ranges: vec![0..0; n],
                ..Scratch::default()
            },
            partition: 0,
        })
    }

    /// Feeds one batch of one stream. `rules[k]` is the base rule whose selected rows are the
    /// set bits of `matches[k]` (every rule evaluated on the batch, matching or not: that is
    /// how the engine knows how far each stream has got); `times[i]` is row `i`'s event time
    /// in milliseconds; `evidence(i)` renders row `i` as a JSON object (called only for rows
    /// kept as evidence). Hits are appended to `out`, inner correlations' before the outer
    /// ones'.
    pub fn observe(
        &mut self,
        batch: &RecordBatch,
        times: &[i64],
        rules: &[usize],
        matches: &[BooleanBuffer],
        evidence: &mut dyn FnMut(usize) -> String,
        out: &mut Vec<CorrelationHit>,
    ) {
        debug_assert_eq!(times.len(), batch.num_rows());
        debug_assert_eq!(rules.len(), matches.len());
        let now = times.iter().copied().max().unwrap_or(i64::MIN);
        let rows = Rows {
            batch,
            times,
            matches,
        };
        self.step(Some(rows), rules, now, evidence, out);
    }

    /// The stream whose batches carry `rules` has had no events up to `now_ms`: a heartbeat,
    /// so that while a stream is quiet the windows of the correlations reading it still
    /// close (`lt` conditions) and idle groups still go. Without it they wait for the
    /// stream's next batch. Hits are appended to `out`.
    pub fn advance(&mut self, rules: &[usize], now_ms: i64, out: &mut Vec<CorrelationHit>) {
        self.step(None, rules, now_ms, &mut |_| String::new(), out);
    }

    /// Feeds the rows of a batch, if any, then moves the streams of `rules` to `now`.
    fn step(
        &mut self,
        rows: Option<Rows<'_>>,
        rules: &[usize],
        now: i64,
        evidence: &mut dyn FnMut(usize) -> String,
        out: &mut Vec<CorrelationHit>,
    ) {
        let CorrelationSet {
            trackers,
            order,
            readers,
            scratch: s,
            partition,
            ..
        } = self;
        s.touched.fill(false);
        let mut any = false;
        for r in rules {
            if let Some(cs) = readers.get(r) {
                for &c in cs {
                    s.touched[c] = true;
                }
                any = true;
            }
        }
        if !any {
            return;
        }
        s.produced.clear();
        s.ranges.fill(0..0);
        for &c in order.iter() {
            if !s.touched[c] {
                continue;
            }
            s.pending.clear();
            // Each source's progress: a stream's from its batch, an inner correlation's from
            // its own clock, already moved (it runs first).
            for src in 0..trackers[c].spec.sources.len() {
                let progress = match trackers[c].spec.sources[src] {
                    Source::Rule(r) => {
                        let Some(k) = rules.iter().position(|&x| x == r) else {
                            continue;
                        };
                        if let Some(rows) = &rows {
                            s.pending
                                .extend(rows.matches[k].set_indices().map(|row| Pending {
                                    time: rows.times[row],
                                    origin: Origin::Row(row),
                                    source: src as u32,
                                }));
                        }
                        now
                    }
                    Source::Correlation(inner) => {
                        let range = s.ranges[inner].clone();
                        s.pending.extend(range.map(|h| Pending {
                            time: s.produced[h].last_ms,
                            origin: Origin::Hit(h),
                            source: src as u32,
                        }));
                        trackers[inner].clock_of(*partition)
                    }
                };
                let t = &mut trackers[c];
                let sources = t.spec.sources.len();
                let clocks = t
                    .clocks
                    .entry(*partition)
                    .or_insert_with(|| vec![i64::MIN; sources]);
                if progress > clocks[src] {
                    clocks[src] = progress;
                    t.clocks_dirty.insert(*partition);
                }
            }
            s.pending.sort_unstable();
            let start = s.produced.len();
            let t = &mut trackers[c];
            t.partition = *partition;
            t.process(
                rows.as_ref().map(|r| r.batch),
                &s.pending,
                &s.produced,
                evidence,
                &mut s.buffers,
                &mut s.new_hits,
            );
            t.advance(&mut s.new_hits);
            s.produced.append(&mut s.new_hits);
            s.ranges[c] = start..s.produced.len();
        }
        out.append(&mut s.produced);
    }

    /// Takes over the state of correlation `from` of `old` as the state of correlation `to`
    /// (the same correlation, reloaded unchanged): its groups, open windows, clocks and
    /// counters. `old` is left with empty state for it.
    pub fn adopt(&mut self, to: usize, old: &mut CorrelationSet, from: usize) {
        let (new, was) = (&mut self.trackers[to], &mut old.trackers[from]);
        debug_assert_eq!(new.spec.kind, was.spec.kind);
        std::mem::swap(&mut new.groups, &mut was.groups);
        std::mem::swap(&mut new.closing, &mut was.closing);
        std::mem::swap(&mut new.clocks, &mut was.clocks);
        new.counters = was.counters;
        // What the next checkpoint owes the changelog goes along with the state.
        std::mem::swap(&mut new.removed, &mut was.removed);
        std::mem::swap(&mut new.clocks_dirty, &mut was.clocks_dirty);
        new.seq = was.seq;
    }

    /// The input partition of the batches observed from now on: the groups they update
    /// belong to it (see [`crate::detect::StateEntry`]).
    pub fn set_partition(&mut self, partition: i32) {
        self.partition = partition;
    }

    /// Appends the state of correlation `c` that changed since its last checkpoint: an
    /// entry per updated group (key `prefix`, `g`, group key), a tombstone per group gone, and
    /// for each partition it has seen an entry with its clocks when they moved (key `prefix`,
    /// `c`).
    pub fn checkpoint(&mut self, c: usize, prefix: &[u8], out: &mut Vec<StateEntry>) {
        let t = &mut self.trackers[c];
        let key_of = |tag: u8, group: &[u8]| {
            let mut k = Vec::with_capacity(prefix.len() + 1 + group.len());
            k.extend_from_slice(prefix);
            k.push(tag);
            k.extend_from_slice(group);
            k
        };
        for (partition, key) in t.removed.drain(..) {
            // Gone and back again since the last checkpoint: the update below says it all.
            let back = t
                .groups
                .find(&key)
                .is_some_and(|id| t.groups.get(id).partition == partition);
            if !back {
                out.push(StateEntry {
                    partition,
                    key: key_of(b'g', &key),
                    value: None,
                });
            }
        }
        for slot in &mut t.groups.slots {
            let Some(g) = &mut slot.group else { continue };
            if !g.dirty {
                continue;
            }
            g.dirty = false;
            let mut e = Enc::new();
            encode_group(g, &mut e);
            out.push(StateEntry {
                partition: g.partition,
                key: key_of(b'g', &g.key),
                value: Some(e.buf),
            });
        }
        for partition in std::mem::take(&mut t.clocks_dirty) {
            let Some(clocks) = t.clocks.get(&partition) else {
                continue;
            };
            let mut e = Enc::new();
            e.u8(STATE_VERSION);
            e.u64(clocks.len() as u64);
            for &c in clocks {
                e.i64(c);
            }
            out.push(StateEntry {
                partition,
                key: key_of(b'c', &[]),
                value: Some(e.buf),
            });
        }
    }

    /// Restores correlation `c` from checkpointed entries `(partition, key after the prefix
    /// given to [`CorrelationSet::checkpoint`], value)`, the latest per key, no tombstones.
    /// Groups already held under the same key are replaced. A group that does not decode
    /// fails the whole restore (the caller reports it; nothing is half-applied to that group).
    pub fn restore(
        &mut self,
        c: usize,
        entries: &[(i32, &[u8], &[u8])],
    ) -> Result<(), DecodeError> {
        let t = &mut self.trackers[c];
        // Groups go in least recently updated first (the order eviction and expiry walk):
        // sorted by the `touched` their state starts with, before decoding, so the groups
        // themselves (a few hundred bytes each) are built in place rather than moved.
        let mut groups: Vec<(u64, usize)> = Vec::new();
        for (i, &(partition, key, value)) in entries.iter().enumerate() {
            let Some((&tag, _)) = key.split_first() else {
                return Err(DecodeError("empty key"));
            };
            match tag {
                b'g' => {
                    let mut d = Dec::new(value);
                    if d.u8()? != STATE_VERSION {
                        return Err(DecodeError("unknown version"));
                    }
                    groups.push((d.u64()?, i));
                }
                b'c' => {
                    let mut d = Dec::new(value);
                    if d.u8()? != STATE_VERSION {
                        return Err(DecodeError("unknown version"));
                    }
                    let n = d.len()?;
                    if n != t.spec.sources.len() {
                        return Err(DecodeError("clocks of another correlation"));
                    }
                    let clocks = t
                        .clocks
                        .entry(partition)
                        .or_insert_with(|| vec![i64::MIN; n]);
                    for clock in clocks.iter_mut() {
                        *clock = (*clock).max(d.i64()?);
                    }
                }
                _ => return Err(DecodeError("unknown key tag")),
            }
        }
        groups.sort_unstable();
        t.groups.reserve(groups.len().min(t.p.max_groups));
        for (_, i) in groups {
            let (partition, key, value) = entries[i];
            let mut g = decode_state(&key[1..], value, &t.p)?;
            g.partition = partition;
            t.seq = t.seq.max(g.touched);
            if let Some(old) = t.groups.find(&g.key) {
                t.groups.remove(old);
            }
            let open = g.open;
            let id = t.groups.insert(g);
            if let Some(open) = open {
                let generation = t.groups.generation(id);
                t.closing
                    .push(Reverse((open.saturating_add(t.p.timespan), id, generation)));
            }
            if t.groups.len > t.p.max_groups
                && let Some(oldest) = t.groups.head()
            {
                t.remove_group(oldest);
                t.counters.groups_evicted += 1;
            }
        }
        Ok(())
    }

    /// Forgets the groups of `partitions` (another instance owns them now). No tombstones:
    /// their checkpointed state is the new owner's to restore.
    pub fn release(&mut self, partitions: &[i32]) {
        for t in &mut self.trackers {
            let gone: Vec<u32> = t
                .groups
                .ids()
                .filter(|&id| partitions.contains(&t.groups.get(id).partition))
                .collect();
            for id in gone {
                t.groups.remove(id);
            }
            t.removed.retain(|(p, _)| !partitions.contains(p));
            for p in partitions {
                t.clocks.remove(p);
                t.clocks_dirty.remove(p);
            }
        }
    }

    /// What correlation `correlation` refers to.
    pub fn sources(&self, correlation: usize) -> &[Source] {
        &self.trackers[correlation].spec.sources
    }

    /// True when base rule `rule` should not alert on its own: correlations refer to it and
    /// none of them sets `generate: true`.
    pub fn suppresses_base_rule(&self, rule: usize) -> bool {
        self.referenced_rules.get(&rule) == Some(&false)
    }

    /// True when correlation `correlation` should not alert on its own: other correlations
    /// refer to it and none of them sets `generate: true` (its hits carry `alert: false`).
    pub fn suppresses_correlation(&self, correlation: usize) -> bool {
        !self.trackers[correlation].alert
    }

    /// Counters per correlation, with the state each holds.
    pub fn stats(&self) -> CorrelationStats {
        CorrelationStats {
            correlations: self
                .trackers
                .iter()
                .map(|t| CorrelationCounters {
                    groups: t.groups.len,
                    events: t.groups.iter().map(|g| g.events.len()).sum(),
                    ..t.counters
                })
                .collect(),
        }
    }

    /// Per correlation, in order: the groups held and the approximate bytes they take (the
    /// group table, each group with its key, window of events, evidence and values). Walks
    /// every group: for a gauge refreshed now and then, not per batch.
    pub fn sizes(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.trackers.iter().map(|t| {
            let slot = std::mem::size_of::<GroupSlot>();
            let table = t.groups.slots.capacity() * slot
                + t.groups.index.capacity() * (std::mem::size_of::<(Box<[u8]>, u32)>() + 1)
                + t.groups.free.capacity() * 4;
            let held: usize = t.groups.iter().map(Group::heap_bytes).sum();
            (t.groups.len, table + held)
        })
    }

    /// Groups and events held, over every correlation.
    pub fn live(&self) -> Live {
        self.trackers.iter().fold(Live::default(), |live, t| Live {
            groups: live.groups + t.groups.len,
            events: live.events + t.groups.iter().map(|g| g.events.len()).sum::<usize>(),
        })
    }
}

/// Rejects a spec the engine cannot run.
fn check(i: usize, spec: &CorrelationSpec, count: usize) -> Result<(), CorrelationSetError> {
    let invalid = |message: String| CorrelationSetError::Invalid {
        correlation: i,
        message,
    };
    let n = spec.sources.len();
    if n == 0 {
        return Err(invalid("refers to no rule".into()));
    }
    if n > u32::MAX as usize {
        return Err(invalid("refers to too many rules".into()));
    }
    for (k, source) in spec.sources.iter().enumerate() {
        if spec.sources[..k].contains(source) {
            return Err(invalid(format!("{source:?} is listed twice")));
        }
        if let Source::Correlation(c) = *source
            && c >= count
        {
            return Err(invalid(format!(
                "refers to correlation {c}, but there are only {count}"
            )));
        }
    }
    if spec.group_columns.len() != n || spec.value_columns.len() != n {
        return Err(invalid(format!(
            "{n} sources but {} group column lists and {} value columns",
            spec.group_columns.len(),
            spec.value_columns.len()
        )));
    }
    if let Some(cols) = spec
        .group_columns
        .iter()
        .find(|cols| cols.len() != spec.group_by.len())
    {
        return Err(invalid(format!(
            "group-by has {} entries but a source has {} group columns",
            spec.group_by.len(),
            cols.len()
        )));
    }
    let needs_value = matches!(
        spec.kind,
        CorrelationType::ValueCount
            | CorrelationType::ValueSum
            | CorrelationType::ValueAvg
            | CorrelationType::ValuePercentile
    );
    if spec
        .value_columns
        .iter()
        .any(|v| v.is_some() != needs_value)
    {
        return Err(invalid(if needs_value {
            format!(
                "a {} correlation needs a value column for every source",
                spec.kind
            )
        } else {
            format!("a {} correlation aggregates no value column", spec.kind)
        }));
    }
    if spec.timespan_ms <= 0 {
        return Err(invalid(format!(
            "timespan must be positive, not {} ms",
            spec.timespan_ms
        )));
    }
    let temporal = matches!(
        spec.kind,
        CorrelationType::Temporal | CorrelationType::TemporalOrdered
    );
    match &spec.condition {
        None if !temporal => {
            return Err(invalid(format!(
                "a {} correlation needs a condition",
                spec.kind
            )));
        }
        None => {}
        Some(c) => {
            if c.predicates.is_empty() {
                return Err(invalid("the condition has no threshold".into()));
            }
            if c.predicates.iter().any(|(_, n)| !n.as_f64().is_finite()) {
                return Err(invalid("a threshold is not a finite number".into()));
            }
        }
    }
    // A temporal threshold above the number of rules would never fire.
    let predicates = predicates(spec);
    if temporal && mode(spec.kind, &predicates) == Mode::Threshold {
        let needed = needed(&predicates);
        if needed > n as f64 {
            return Err(invalid(format!(
                "the condition needs {needed} of its {n} rules to match: it can never hold"
            )));
        }
    }
    Ok(())
}

/// Rejects a count threshold beyond the per-group event bound: it would never fire.
fn check_reachable(
    i: usize,
    spec: &CorrelationSpec,
    limits: Limits,
) -> Result<(), CorrelationSetError> {
    let predicates = predicates(spec);
    if mode(spec.kind, &predicates) != Mode::Threshold
        || !matches!(
            spec.kind,
            CorrelationType::EventCount | CorrelationType::ValueCount
        )
    {
        return Ok(());
    }
    let needed = needed(&predicates);
    if needed > limits.max_events_per_group as f64 {
        return Err(CorrelationSetError::Invalid {
            correlation: i,
            message: format!(
                "the condition needs {needed} events in a window but a group keeps at most \
                 {} (max_events_per_group): raise the limit or lower the threshold",
                limits.max_events_per_group
            ),
        });
    }
    Ok(())
}

/// The smallest count satisfying every lower bound.
fn needed(predicates: &[(CmpOp, f64)]) -> f64 {
    predicates
        .iter()
        .map(|&(op, v)| match op {
            CmpOp::Gt => v.floor() + 1.0,
            _ => v.ceil(),
        })
        .fold(f64::MIN, f64::max)
}

/// The condition as `(op, threshold)`; a temporal type without one needs every source.
fn predicates(spec: &CorrelationSpec) -> Vec<(CmpOp, f64)> {
    match &spec.condition {
        Some(c) => c
            .predicates
            .iter()
            .map(|&(op, n)| (op, n.as_f64()))
            .collect(),
        None => vec![(CmpOp::Gte, spec.sources.len() as f64)],
    }
}

/// How a correlation is evaluated (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// On arrival; a hit consumes the window.
    Threshold,
    /// Once per window, when it closes.
    Closed,
    /// On arrival; a hit keeps the window and quiets the group (and value).
    Statistic,
}

fn mode(kind: CorrelationType, predicates: &[(CmpOp, f64)]) -> Mode {
    match kind {
        CorrelationType::ValueAvg | CorrelationType::ValuePercentile => Mode::Statistic,
        _ if predicates
            .iter()
            .all(|(op, _)| matches!(op, CmpOp::Gt | CmpOp::Gte)) =>
        {
            Mode::Threshold
        }
        _ => Mode::Closed,
    }
}

/// Inner correlations first; ties by index, so the order is stable.
fn topological_order(specs: &[CorrelationSpec]) -> Result<Vec<usize>, CorrelationSetError> {
    let inner = |c: usize| {
        specs[c].sources.iter().filter_map(|s| match *s {
            Source::Correlation(i) => Some(i),
            Source::Rule(_) => None,
        })
    };
    let mut waiting: Vec<usize> = (0..specs.len()).map(|c| inner(c).count()).collect();
    let mut outer: Vec<Vec<usize>> = vec![Vec::new(); specs.len()];
    for c in 0..specs.len() {
        for i in inner(c) {
            outer[i].push(c);
        }
    }
    let mut ready: BTreeSet<usize> = (0..specs.len()).filter(|&c| waiting[c] == 0).collect();
    let mut order = Vec::with_capacity(specs.len());
    while let Some(c) = ready.pop_first() {
        order.push(c);
        for &o in &outer[c] {
            waiting[o] -= 1;
            if waiting[o] == 0 {
                ready.insert(o);
            }
        }
    }
    if order.len() == specs.len() {
        return Ok(order);
    }
    // Every correlation left waits on another one left: walk back until one repeats.
    let start = (0..specs.len())
        .find(|&c| waiting[c] > 0)
        .expect("some correlation is left");
    let mut path = vec![start];
    let mut c = start;
    loop {
        c = inner(c)
            .find(|&i| waiting[i] > 0)
            .expect("a correlation left waits on another one left");
        if let Some(at) = path.iter().position(|&p| p == c) {
            return Err(CorrelationSetError::Cycle {
                path: path[at..].to_vec(),
            });
        }
        path.push(c);
    }
}

/// The rows of one batch, for [`CorrelationSet::step`].
struct Rows<'a> {
    batch: &'a RecordBatch,
    times: &'a [i64],
    matches: &'a [BooleanBuffer],
}

/// Buffers reused from batch to batch, so that `observe` allocates only for new state.
#[derive(Debug, Default)]
struct Scratch {
    /// Correlations the current batch concerns.
    touched: Vec<bool>,
    /// Per correlation, its hits in `produced` for the current batch.
    ranges: Vec<Range<usize>>,
    /// The current correlation's events of the batch.
    pending: Vec<Pending>,
    /// Hits of the batch so far.
    produced: Vec<CorrelationHit>,
    /// Hits of the current correlation.
    new_hits: Vec<CorrelationHit>,
    /// Group keys and values being read.
    buffers: Buffers,
}

/// Text buffers for one event.
#[derive(Debug, Default)]
struct Buffers {
    /// The group key being built.
    key: Vec<u8>,
    /// The previous event's key (to merge a row selected by several rules).
    previous: Vec<u8>,
    /// A non-string group value, formatted.
    text: String,
    /// The aggregated value.
    value: String,
}

/// One event of the batch for one correlation; ordered by time, then row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pending {
    time: i64,
    origin: Origin,
    /// Index in the spec's sources.
    source: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Origin {
    /// A row of the batch.
    Row(usize),
    /// A hit of an inner correlation, in the batch's `produced`.
    Hit(usize),
}

/// The value an event brings to a `value_*` aggregate.
#[derive(Debug, Clone, Copy)]
enum Val<'a> {
    /// No value, or not a `value_*` type.
    Missing,
    /// `value_sum`, `value_avg`.
    Number(f64),
    /// `value_count`, `value_percentile`: the value as text.
    Text(&'a [u8]),
}

/// The fixed parameters of one correlation.
#[derive(Debug)]
struct Params {
    kind: CorrelationType,
    mode: Mode,
    timespan: i64,
    /// Number of sources.
    sources: usize,
    /// ANDed.
    predicates: Vec<(CmpOp, f64)>,
    max_groups: usize,
    max_events: usize,
    max_evidence: usize,
    /// Evidence kept per source, for the temporal types (so every rule shows).
    evidence_per_source: usize,
    /// Whether arriving events keep evidence (not for `value_percentile`, whose evidence is
    /// the rare event itself, rendered when it fires).
    keep_evidence: bool,
}

impl Params {
    fn holds(&self, v: f64) -> bool {
        self.predicates.iter().all(|&(op, n)| match op {
            CmpOp::Lt => v < n,
            CmpOp::Lte => v <= n,
            CmpOp::Gt => v > n,
            CmpOp::Gte => v >= n,
            CmpOp::Eq => v == n,
            CmpOp::Neq => v != n,
        })
    }

    fn temporal(&self) -> bool {
        matches!(
            self.kind,
            CorrelationType::Temporal | CorrelationType::TemporalOrdered
        )
    }

    fn numeric(&self) -> bool {
        matches!(
            self.kind,
            CorrelationType::ValueSum | CorrelationType::ValueAvg
        )
    }

    fn distinct(&self) -> bool {
        matches!(
            self.kind,
            CorrelationType::ValueCount | CorrelationType::ValuePercentile
        )
    }
}

/// One correlation: its spec, its groups, its counters.
#[derive(Debug)]
struct Tracker {
    index: usize,
    spec: CorrelationSpec,
    p: Params,
    /// See [`CorrelationHit::alert`].
    alert: bool,
    groups: Groups,
    /// Closed mode: `(window end, group, generation)` of open windows, earliest first;
    /// entries of groups since removed or re-anchored are skipped.
    closing: BinaryHeap<Reverse<(i64, u32, u32)>>,
    /// Per input partition, per source: the newest event time of that partition's batches
    /// of its stream (or the inner correlation's clock for the partition); `i64::MIN` until
    /// seen. The partition's clock is its slowest source seen: the event time up to which
    /// every input of the partition has been read, so the windows of its groups close and
    /// its groups expire by it. Per partition, because partitions are read at their own
    /// pace (one instance reads several, each its own backlog): a partition far ahead must
    /// not expire the groups of one behind it.
    clocks: BTreeMap<i32, Vec<i64>>,
    counters: CorrelationCounters,
    /// Per source, where its columns are in the last schema seen.
    columns: Vec<ColumnIndex>,
    /// Durable state: the partition of the batch being processed (groups belong to the
    /// partition of their last event).
    partition: i32,
    /// Durable state: bumped at every group update, so a restore rebuilds the
    /// least-recently-updated order exactly.
    seq: u64,
    /// Durable state: groups removed since the last checkpoint, `(partition, key)`.
    removed: Vec<(i32, Box<[u8]>)>,
    /// Durable state: the partitions whose clocks moved since the last checkpoint.
    clocks_dirty: BTreeSet<i32>,
}

impl Tracker {
    fn new(index: usize, spec: CorrelationSpec, limits: Limits, alert: bool) -> Tracker {
        let predicates = predicates(&spec);
        let sources = spec.sources.len();
        let p = Params {
            kind: spec.kind,
            mode: mode(spec.kind, &predicates),
            timespan: spec.timespan_ms,
            sources,
            predicates,
            max_groups: limits.max_groups_per_correlation,
            max_events: limits.max_events_per_group,
            max_evidence: limits.max_evidence,
            evidence_per_source: (limits.max_evidence / sources).max(1),
            keep_evidence: spec.kind != CorrelationType::ValuePercentile,
        };
        Tracker {
            index,
            columns: (0..sources).map(|_| ColumnIndex::default()).collect(),
            spec,
            p,
            alert,
            groups: Groups::new(),
            closing: BinaryHeap::new(),
            clocks: BTreeMap::new(),
            counters: CorrelationCounters::default(),
            partition: 0,
            seq: 0,
            removed: Vec::new(),
            clocks_dirty: BTreeSet::new(),
        }
    }

    /// Removes a group whose state is over (evicted, closed, expired): a tombstone at the
    /// next checkpoint.
    fn remove_group(&mut self, id: u32) {
        let g = self.groups.remove(id);
        if g.partition != NO_PARTITION {
            self.removed.push((g.partition, g.key));
        }
    }

    /// Feeds this correlation's events of one batch, in order (`batch` is `None` when they
    /// are all inner hits).
    fn process(
        &mut self,
        batch: Option<&RecordBatch>,
        pending: &[Pending],
        produced: &[CorrelationHit],
        evidence: &mut dyn FnMut(usize) -> String,
        b: &mut Buffers,
        hits: &mut Vec<CorrelationHit>,
    ) {
        if pending.is_empty() {
            return;
        }
        let mut has_rows = vec![false; self.spec.sources.len()];
        for pend in pending {
            if let Origin::Row(_) = pend.origin {
                has_rows[pend.source as usize] = true;
            }
        }
        let mut readers: Vec<Option<Readers<'_>>> = Vec::with_capacity(self.spec.sources.len());
        for (src, source) in self.spec.sources.iter().enumerate() {
            readers.push(match (source, batch) {
                (Source::Rule(_), Some(batch)) if has_rows[src] => {
                    let index = &mut self.columns[src];
                    index.resolve(
                        &batch.schema(),
                        &self.spec.group_columns[src],
                        self.spec.value_columns[src].as_deref(),
                    );
                    Some(Readers::new(batch, index))
                }
                _ => None,
            });
        }
        let merge_rows = !self.p.temporal();
        let numeric = self.p.numeric();
        let mut previous_row = None;
        for pend in pending {
            let src = pend.source as usize;
            b.key.clear();
            b.value.clear();
            let mut number = None;
            let have_value = match pend.origin {
                Origin::Row(row) => {
                    let r = readers[src].as_ref().expect("rule sources have readers");
                    for col in &r.group {
                        col.append_key(row, &mut b.key, &mut b.text);
                    }
                    match &r.value {
                        Some(col) if numeric => {
                            number = col.number(row, &mut b.text);
                            number.is_some()
                        }
                        Some(col) => match col.text(row, &mut b.text) {
                            Some(t) => {
                                b.value.push_str(t);
                                true
                            }
                            None => false,
                        },
                        None => false,
                    }
                }
                Origin::Hit(h) => {
                    let hit = &produced[h];
                    let lookup = |name: &str| {
                        hit.group
                            .iter()
                            .find(|(n, _)| n == name)
                            .map(|(_, v)| v.as_str())
                    };
                    for name in &self.spec.group_columns[src] {
                        append_key_text(&mut b.key, lookup(name).unwrap_or(""));
                    }
                    match self.spec.value_columns[src].as_deref().and_then(lookup) {
                        Some(v) => {
                            b.value.push_str(v);
                            true
                        }
                        None => false,
                    }
                }
            };
            if merge_rows && let Origin::Row(row) = pend.origin {
                if previous_row == Some(row) && b.previous == b.key {
                    continue;
                }
                previous_row = Some(row);
                b.previous.clear();
                b.previous.extend_from_slice(&b.key);
            }
            let value = if !have_value {
                Val::Missing
            } else if numeric {
                number
                    .or_else(|| parse_number(&b.value))
                    .map_or(Val::Missing, Val::Number)
            } else if self.p.distinct() {
                Val::Text(b.value.as_bytes())
            } else {
                Val::Missing
            };
            let mut render = || match pend.origin {
                Origin::Row(row) => evidence(row),
                Origin::Hit(h) => hit_json(&produced[h]),
            };
            self.arrive(&b.key, pend.time, src, value, &mut render, hits);
        }
    }

    /// One event for the group `key`.
    fn arrive(
        &mut self,
        key: &[u8],
        time: i64,
        source: usize,
        value: Val<'_>,
        render: &mut dyn FnMut() -> String,
        hits: &mut Vec<CorrelationHit>,
    ) {
        let (number, text) = match value {
            Val::Number(n) if self.p.numeric() => (n, &[][..]),
            Val::Text(t) if self.p.distinct() => (0.0, t),
            _ if self.p.numeric() || self.p.distinct() => {
                self.counters.values_missing += 1;
                return;
            }
            _ => (0.0, &[][..]),
        };
        let id = match self.groups.find(key) {
            Some(id) => {
                self.groups.touch(id);
                id
            }
            None => {
                if self.groups.len >= self.p.max_groups
                    && let Some(oldest) = self.groups.head()
                {
                    self.remove_group(oldest);
                    self.counters.groups_evicted += 1;
                }
                self.groups.insert(Group::new(key, &self.p))
            }
        };
        // Durable state: the group changed, and it now belongs to this batch's partition.
        self.seq += 1;
        let (seq, partition) = (self.seq, self.partition);
        let g = self.groups.get_mut(id);
        g.touched = seq;
        g.dirty = true;
        let was = g.partition;
        if was != partition {
            g.partition = partition;
            if was != NO_PARTITION {
                let key = g.key.clone();
                self.removed.push((was, key));
            }
        }
        let event = NewEvent {
            time,
            source,
            number,
            text,
        };
        match self.p.mode {
            Mode::Closed => self.arrive_closed(id, event, render, hits),
            Mode::Threshold | Mode::Statistic => self.arrive_sliding(id, event, render, hits),
        }
    }

    /// Threshold and statistic modes: insert, slide, evaluate.
    fn arrive_sliding(
        &mut self,
        id: u32,
        e: NewEvent<'_>,
        render: &mut dyn FnMut() -> String,
        hits: &mut Vec<CorrelationHit>,
    ) {
        let Tracker {
            index,
            spec,
            p,
            alert,
            groups,
            counters,
            ..
        } = self;
        let g = groups.get_mut(id);
        let newest = g.newest.max(e.time);
        let lower = newest.saturating_sub(p.timespan);
        if e.time <= lower {
            counters.events_late += 1;
            return;
        }
        let in_order = e.time >= g.newest;
        g.newest = newest;
        while g.events.front().is_some_and(|old| old.time <= lower) {
            g.pop_front(p);
        }
        if g.events.len() >= p.max_events {
            counters.events_dropped += 1;
            if g.events.front().is_some_and(|old| e.time < old.time) {
                return;
            }
            let old = g.pop_front(p);
            g.floor = g.floor.max(old.time);
        }
        let at = g.insert(p, &e, render);
        if p.kind == CorrelationType::TemporalOrdered {
            let lower = g.lower(p);
            if in_order {
                chain_step(&mut g.chains, p.sources, e.source, e.time, lower);
            } else {
                g.rebuild_chains(p.sources, lower);
            }
        }
        let cx = HitContext {
            correlation: *index,
            alert: *alert,
            group_by: &spec.group_by,
            p,
        };
        match p.kind {
            CorrelationType::ValueAvg => {
                if newest < g.quiet_until {
                    return;
                }
                let mean = g.sum.value() / g.events.len() as f64;
                if p.holds(mean) {
                    hits.push(cx.hit(g, mean, None, Some(at), render, false, counters));
                    g.quiet_until = newest.saturating_add(p.timespan);
                }
            }
            CorrelationType::ValuePercentile => {
                let slot = g.events[at].slot;
                if newest < g.values.slots[slot as usize].quiet_until {
                    return;
                }
                let share =
                    100.0 * f64::from(g.values.slots[slot as usize].count) / g.events.len() as f64;
                if p.holds(share) {
                    hits.push(cx.hit(g, share, Some(slot), Some(at), render, false, counters));
                    g.values.slots[slot as usize].quiet_until = newest.saturating_add(p.timespan);
                }
            }
            _ => {
                let v = g.aggregate(p);
                if p.holds(v) {
                    hits.push(cx.hit(g, v, None, Some(at), render, true, counters));
                    g.clear();
                }
            }
        }
    }

    /// Closed mode: close the window if this event is past it, then add the event.
    fn arrive_closed(
        &mut self,
        id: u32,
        e: NewEvent<'_>,
        render: &mut dyn FnMut() -> String,
        hits: &mut Vec<CorrelationHit>,
    ) {
        let ts = self.p.timespan;
        if self
            .groups
            .get(id)
            .open
            .is_some_and(|open| e.time >= open.saturating_add(ts))
        {
            self.close(id, hits);
        }
        let generation = self.groups.generation(id);
        let Tracker {
            p,
            groups,
            counters,
            closing,
            ..
        } = self;
        let g = groups.get_mut(id);
        match g.open {
            None => {
                g.open = Some(e.time);
                closing.push(Reverse((e.time.saturating_add(ts), id, generation)));
            }
            // Late for the window: it may start the window earlier if everything in it
            // still fits in one timespan from it.
            Some(open) if e.time < open => {
                if g.newest.saturating_sub(e.time) < ts {
                    g.open = Some(e.time);
                    closing.push(Reverse((e.time.saturating_add(ts), id, generation)));
                } else {
                    counters.events_late += 1;
                    return;
                }
            }
            Some(_) => {}
        }
        g.newest = g.newest.max(e.time);
        if g.events.len() >= p.max_events {
            counters.events_dropped += 1;
            g.dropped_in_window += 1;
            if g.events.front().is_some_and(|old| e.time < old.time) {
                return;
            }
            g.pop_front(p);
        }
        g.insert(p, &e, render);
    }

    /// Closed mode: evaluates group `id`'s window and empties it.
    fn close(&mut self, id: u32, hits: &mut Vec<CorrelationHit>) {
        let Tracker {
            index,
            spec,
            p,
            alert,
            groups,
            counters,
            ..
        } = self;
        let g = groups.get_mut(id);
        if g.open.is_none() || g.events.is_empty() {
            return;
        }
        if p.kind == CorrelationType::TemporalOrdered {
            g.rebuild_chains(p.sources, i64::MIN);
        }
        let v = match p.kind {
            CorrelationType::TemporalOrdered => chain_len(&g.chains, p.sources, i64::MIN) as f64,
            _ => g.aggregate(p),
        };
        if p.holds(v) {
            let cx = HitContext {
                correlation: *index,
                alert: *alert,
                group_by: &spec.group_by,
                p,
            };
            hits.push(cx.hit(g, v, None, None, &mut String::new, true, counters));
        }
        g.clear();
        g.open = None;
        g.newest = i64::MIN;
    }

    /// The clock of `partition`: its slowest source seen. (Sources never seen do not hold it
    /// back, or a correlation over a stream that has not started yet would never close a
    /// window.)
    fn clock_of(&self, partition: i32) -> i64 {
        self.clocks.get(&partition).map_or(i64::MIN, |c| slowest(c))
    }

    /// Closes the windows the clocks of their partitions passed, drops groups gone idle.
    fn advance(&mut self, hits: &mut Vec<CorrelationHit>) {
        let ts = self.p.timespan;
        if self.p.mode == Mode::Closed {
            let fastest = self
                .clocks
                .values()
                .map(|c| slowest(c))
                .max()
                .unwrap_or(i64::MIN);
            let mut later = Vec::new();
            while let Some(&Reverse((end, id, generation))) = self.closing.peek() {
                if end > fastest {
                    break;
                }
                self.closing.pop();
                if !self.groups.is_live(id, generation)
                    || self.groups.get(id).open.map(|o| o.saturating_add(ts)) != Some(end)
                {
                    continue;
                }
                if end > self.clock_of(self.groups.get(id).partition) {
                    // Its partition is behind: not closed yet.
                    later.push(Reverse((end, id, generation)));
                    continue;
                }
                self.close(id, hits);
                self.remove_group(id);
            }
            self.closing.extend(later);
            // Stale entries (evicted groups, re-anchored windows) must not pile up.
            if self.closing.len() > 2 * self.groups.len + 64 {
                let groups = &self.groups;
                self.closing = groups
                    .ids()
                    .filter_map(|id| {
                        let open = groups.get(id).open?;
                        Some(Reverse((
                            open.saturating_add(ts),
                            id,
                            groups.generation(id),
                        )))
                    })
                    .collect();
            }
        }
        // Least recently updated first; a group its partition's clock has not passed stops
        // the walk (groups of a partition behind wait a little longer, within the bounds).
        while let Some(id) = self.groups.head() {
            let g = self.groups.get(id);
            let horizon = self.clock_of(g.partition).saturating_sub(ts);
            if g.open.is_some() || g.newest > horizon {
                break;
            }
            self.remove_group(id);
        }
    }
}

/// The slowest of the sources seen (`i64::MIN` when none was).
fn slowest(clocks: &[i64]) -> i64 {
    clocks
        .iter()
        .copied()
        .filter(|&c| c != i64::MIN)
        .min()
        .unwrap_or(i64::MIN)
}

/// An arriving event, before it is stored.
#[derive(Debug, Clone, Copy)]
struct NewEvent<'a> {
    time: i64,
    source: usize,
    /// `value_sum`, `value_avg`.
    number: f64,
    /// `value_count`, `value_percentile`.
    text: &'a [u8],
}

/// What building a hit needs besides the group.
struct HitContext<'a> {
    correlation: usize,
    alert: bool,
    group_by: &'a [String],
    p: &'a Params,
}

impl HitContext<'_> {
    /// A hit over `g`'s window (only events of value `slot` when given). The event at
    /// `trigger` is rendered now if it kept no evidence. `take` moves the evidence out (the
    /// window is consumed next).
    #[allow(clippy::too_many_arguments)]
    fn hit(
        &self,
        g: &mut Group,
        value: f64,
        slot: Option<u32>,
        trigger: Option<usize>,
        render: &mut dyn FnMut() -> String,
        take: bool,
        counters: &mut CorrelationCounters,
    ) -> CorrelationHit {
        let max = self.p.max_evidence;
        let render_trigger = max > 0 && trigger.is_some_and(|at| g.events[at].evidence.is_none());
        let budget = max - usize::from(render_trigger);
        let mut evidence = Vec::new();
        let mut kept = 0;
        let mut in_scope = 0;
        for (i, e) in g.events.iter_mut().enumerate() {
            if slot.is_some_and(|s| e.slot != s) {
                continue;
            }
            in_scope += 1;
            if render_trigger && Some(i) == trigger {
                evidence.push(render());
                continue;
            }
            if kept < budget {
                let ev = if take {
                    e.evidence.take()
                } else {
                    e.evidence.clone()
                };
                if let Some(ev) = ev {
                    evidence.push(String::from(ev));
                    kept += 1;
                }
            }
        }
        let in_scope = in_scope + g.dropped_in_window;
        let truncated = in_scope - evidence.len();
        counters.hits += 1;
        counters.evidence_truncated += truncated as u64;
        CorrelationHit {
            correlation: self.correlation,
            alert: self.alert,
            group: decode_group(self.group_by, &g.key),
            first_ms: g
                .open
                .or(g.events.front().map(|e| e.time))
                .unwrap_or(i64::MIN),
            last_ms: g.events.back().map_or(i64::MIN, |e| e.time),
            value,
            field_value: slot.and_then(|s| {
                g.values
                    .key_of(s)
                    .map(|k| String::from_utf8_lossy(k).into_owned())
            }),
            evidence,
            evidence_truncated: truncated,
        }
    }
}

/// A kept event.
#[derive(Debug)]
struct Event {
    time: i64,
    /// Index in the spec's sources.
    source: u32,
    /// `value_count`, `value_percentile`: the value's slot in [`Values`].
    slot: u32,
    /// `value_sum`, `value_avg`.
    number: f64,
    /// Rendered row, for the first `max_evidence` events of a window.
    evidence: Option<Box<str>>,
}

const NO_SLOT: u32 = u32::MAX;
const NO_PARTITION: i32 = i32::MIN;

/// One group: its window and the aggregates over it, kept up to date event by event.
#[derive(Debug)]
struct Group {
    /// The encoded group-by values (see [`append_key_text`]).
    key: Box<[u8]>,
    /// Neighbours in the least-recently-updated list of [`Groups`].
    prev: u32,
    next: u32,
    /// The window, oldest first.
    events: VecDeque<Event>,
    /// The newest event time seen (kept when a hit consumes the window).
    newest: i64,
    /// `value_sum`, `value_avg`.
    sum: Sum,
    /// `value_count`, `value_percentile`.
    values: Values,
    /// Temporal types: events per source, and how many sources have some.
    per_source: Vec<u32>,
    distinct_sources: usize,
    /// `temporal_ordered`, threshold mode: `chains[l * n + s]` is the latest start time of a
    /// chain of `l + 1` events of increasing sources ending with source `s`.
    chains: Vec<i64>,
    /// Events at or before this time were dropped from a full group: no chain starts there.
    floor: i64,
    /// Events holding evidence, overall and (temporal types) per source.
    evidence_held: usize,
    evidence_by_source: Vec<u32>,
    /// `value_avg`: no hit before the newest event reaches this time.
    quiet_until: i64,
    /// Closed mode: start of the open window.
    open: Option<i64>,
    /// Closed mode: events of the open window dropped from the full group.
    dropped_in_window: usize,
    /// Durable state: the input partition of its last event (`NO_PARTITION` until one).
    partition: i32,
    /// Durable state: when it was last updated (the tracker's `seq`).
    touched: u64,
    /// Durable state: updated since the last checkpoint.
    dirty: bool,
}

impl Group {
    /// Bytes it owns on the heap: its key twice (here and in the index), its events and
    /// their evidence, its values and per-source tallies.
    fn heap_bytes(&self) -> usize {
        let evidence: usize = self
            .events
            .iter()
            .map(|e| e.evidence.as_ref().map_or(0, |s| s.len()))
            .sum();
        2 * self.key.len()
            + self.events.capacity() * std::mem::size_of::<Event>()
            + evidence
            + self.values.heap_bytes()
            + self.per_source.capacity() * 4
            + self.chains.capacity() * 8
            + self.evidence_by_source.capacity() * 4
    }

    fn new(key: &[u8], p: &Params) -> Group {
        let per_source = if p.temporal() {
            vec![0; p.sources]
        } else {
            Vec::new()
        };
        Group {
            key: key.into(),
            prev: NIL,
            next: NIL,
            events: VecDeque::new(),
            newest: i64::MIN,
            sum: Sum::default(),
            values: Values::default(),
            evidence_by_source: per_source.clone(),
            per_source,
            distinct_sources: 0,
            chains: if p.kind == CorrelationType::TemporalOrdered {
                vec![i64::MIN; p.sources * p.sources]
            } else {
                Vec::new()
            },
            floor: i64::MIN,
            evidence_held: 0,
            quiet_until: i64::MIN,
            open: None,
            dropped_in_window: 0,
            partition: NO_PARTITION,
            touched: 0,
            dirty: false,
        }
    }

    /// Stores `e` in time order, with its evidence if the budget allows; returns its index.
    fn insert(
        &mut self,
        p: &Params,
        e: &NewEvent<'_>,
        render: &mut dyn FnMut() -> String,
    ) -> usize {
        let slot = if p.distinct() {
            self.values.add(e.text)
        } else {
            NO_SLOT
        };
        let keep = p.keep_evidence
            && self.evidence_held < p.max_evidence
            && (!p.temporal()
                || (self.evidence_by_source[e.source] as usize) < p.evidence_per_source);
        let event = Event {
            time: e.time,
            source: e.source as u32,
            slot,
            number: e.number,
            evidence: keep.then(|| render().into_boxed_str()),
        };
        if event.evidence.is_some() {
            self.evidence_held += 1;
            if p.temporal() {
                self.evidence_by_source[e.source] += 1;
            }
        }
        if p.temporal() {
            let n = &mut self.per_source[e.source];
            if *n == 0 {
                self.distinct_sources += 1;
            }
            *n += 1;
        }
        if p.numeric() {
            self.sum.add(e.number);
        }
        if self.events.back().is_none_or(|last| last.time <= e.time) {
            self.events.push_back(event);
            self.events.len() - 1
        } else {
            let at = self.events.partition_point(|old| old.time <= e.time);
            self.events.insert(at, event);
            at
        }
    }

    /// Removes the oldest event and its part of the aggregates.
    fn pop_front(&mut self, p: &Params) -> Event {
        let e = self.events.pop_front().expect("a window to pop from");
        if e.evidence.is_some() {
            self.evidence_held -= 1;
            if p.temporal() {
                self.evidence_by_source[e.source as usize] -= 1;
            }
        }
        if p.temporal() {
            let n = &mut self.per_source[e.source as usize];
            *n -= 1;
            if *n == 0 {
                self.distinct_sources -= 1;
            }
        }
        if p.numeric() {
            // Exact again once empty, whatever rounding accumulated.
            if self.events.is_empty() {
                self.sum = Sum::default();
            } else {
                self.sum.add(-e.number);
            }
        }
        if p.distinct() {
            self.values.release(e.slot);
        }
        e
    }

    /// Empties the window (a hit consumed it, or it closed).
    fn clear(&mut self) {
        self.events.clear();
        self.sum = Sum::default();
        self.values.clear();
        self.per_source.fill(0);
        self.distinct_sources = 0;
        self.chains.fill(i64::MIN);
        self.floor = i64::MIN;
        self.evidence_held = 0;
        self.evidence_by_source.fill(0);
        self.dropped_in_window = 0;
    }

    /// Chains must start after this time to lie in the window.
    fn lower(&self, p: &Params) -> i64 {
        self.newest.saturating_sub(p.timespan).max(self.floor)
    }

    fn rebuild_chains(&mut self, n: usize, lower: i64) {
        self.chains.fill(i64::MIN);
        for e in &self.events {
            chain_step(&mut self.chains, n, e.source as usize, e.time, lower);
        }
    }

    /// The aggregate of the count-like types over the window.
    fn aggregate(&self, p: &Params) -> f64 {
        match p.kind {
            CorrelationType::EventCount => (self.events.len() + self.dropped_in_window) as f64,
            CorrelationType::ValueCount => self.values.distinct as f64,
            CorrelationType::Temporal => self.distinct_sources as f64,
            CorrelationType::TemporalOrdered => {
                chain_len(&self.chains, p.sources, self.lower(p)) as f64
            }
            CorrelationType::ValueSum => self.sum.value(),
            CorrelationType::ValueAvg | CorrelationType::ValuePercentile => {
                unreachable!("statistic types are evaluated per event")
            }
        }
    }
}

/// Extends the ordered chains with an event of source `s` at `t` (after every event already
/// folded in). Only chains starting after `lower` are extended.
fn chain_step(chains: &mut [i64], n: usize, s: usize, t: i64, lower: i64) {
    for l in (1..=s).rev() {
        let best = chains[(l - 1) * n..(l - 1) * n + s]
            .iter()
            .copied()
            .filter(|&start| start > lower)
            .max();
        if let Some(start) = best {
            let c = &mut chains[l * n + s];
            *c = (*c).max(start);
        }
    }
    chains[s] = chains[s].max(t);
}

/// The longest chain starting after `lower`.
fn chain_len(chains: &[i64], n: usize, lower: i64) -> usize {
    (0..n)
        .rev()
        .find(|&l| {
            chains[l * n..(l + 1) * n]
                .iter()
                .any(|&start| start > lower)
        })
        .map_or(0, |l| l + 1)
}

/// A compensated (Neumaier) sum, so that adding and removing values for a long time keeps
/// it close to the exact sum of the window.
#[derive(Debug, Clone, Copy, Default)]
struct Sum {
    sum: f64,
    compensation: f64,
}

impl Sum {
    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.compensation += (self.sum - t) + x;
        } else {
            self.compensation += (x - t) + self.sum;
        }
        self.sum = t;
    }

    fn value(&self) -> f64 {
        self.sum + self.compensation
    }
}

/// The distinct values of a group's window, with how many events hold each: events store a
/// slot number, so a value is allocated once however often it repeats.
#[derive(Debug, Default)]
struct Values {
    index: HashMap<Box<[u8]>, u32>,
    slots: Vec<ValueSlot>,
    /// Slots no longer in `index`.
    free: Vec<u32>,
    /// Slots with a positive count.
    distinct: usize,
}

impl Values {
    /// Bytes it owns on the heap: the index with its keys, the slots and the free list.
    fn heap_bytes(&self) -> usize {
        let keys: usize = self.index.keys().map(|k| k.len()).sum();
        self.index.capacity() * (std::mem::size_of::<(Box<[u8]>, u32)>() + 1)
            + keys
            + self.slots.capacity() * std::mem::size_of::<ValueSlot>()
            + self.free.capacity() * 4
    }
}

#[derive(Debug, Clone, Copy)]
struct ValueSlot {
    count: u32,
    /// `value_percentile`: no hit for this value before the newest event reaches this time.
    quiet_until: i64,
}

impl Values {
    fn add(&mut self, value: &[u8]) -> u32 {
        let slot = match self.index.get(value) {
            Some(&slot) => slot,
            None => {
                self.collect_garbage();
                let fresh = ValueSlot {
                    count: 0,
                    quiet_until: i64::MIN,
                };
                let slot = match self.free.pop() {
                    Some(slot) => {
                        self.slots[slot as usize] = fresh;
                        slot
                    }
                    None => {
                        self.slots.push(fresh);
                        (self.slots.len() - 1) as u32
                    }
                };
                self.index.insert(value.into(), slot);
                slot
            }
        };
        let s = &mut self.slots[slot as usize];
        if s.count == 0 {
            self.distinct += 1;
        }
        s.count += 1;
        slot
    }

    fn release(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        s.count -= 1;
        if s.count == 0 {
            self.distinct -= 1;
        }
    }

    /// Values no event holds stay indexed (a repeat is likely) until they outnumber the live
    /// ones.
    fn collect_garbage(&mut self) {
        if self.index.len() <= 2 * self.distinct + 32 {
            return;
        }
        let Values {
            index, slots, free, ..
        } = self;
        index.retain(|_, slot| {
            let live = slots[*slot as usize].count > 0;
            if !live {
                free.push(*slot);
            }
            live
        });
    }

    fn clear(&mut self) {
        self.index.clear();
        self.slots.clear();
        self.free.clear();
        self.distinct = 0;
    }

    /// The value of `slot` (only when a hit reports it).
    fn key_of(&self, slot: u32) -> Option<&[u8]> {
        self.index
            .iter()
            .find(|&(_, &s)| s == slot)
            .map(|(k, _)| &**k)
    }
}

const NIL: u32 = u32::MAX;

/// A correlation's groups: a slab indexed by key, threaded on a least-recently-updated list
/// (head: the next to evict or expire).
#[derive(Debug)]
struct Groups {
    index: HashMap<Box<[u8]>, u32>,
    slots: Vec<GroupSlot>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    len: usize,
}

#[derive(Debug)]
struct GroupSlot {
    /// Bumped when the group is removed, so that stale references to the slot are told apart.
    generation: u32,
    group: Option<Group>,
}

impl Groups {
    fn new() -> Groups {
        Groups {
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }

    fn find(&self, key: &[u8]) -> Option<u32> {
        self.index.get(key).copied()
    }

    /// Makes room for `n` more groups (a restore knows how many come).
    fn reserve(&mut self, n: usize) {
        let n = n.saturating_sub(self.free.len());
        self.index.reserve(n);
        self.slots.reserve(n);
    }

    fn get(&self, id: u32) -> &Group {
        self.slots[id as usize]
            .group
            .as_ref()
            .expect("a live group")
    }

    fn get_mut(&mut self, id: u32) -> &mut Group {
        self.slots[id as usize]
            .group
            .as_mut()
            .expect("a live group")
    }

    fn generation(&self, id: u32) -> u32 {
        self.slots[id as usize].generation
    }

    fn is_live(&self, id: u32, generation: u32) -> bool {
        let slot = &self.slots[id as usize];
        slot.generation == generation && slot.group.is_some()
    }

    fn head(&self) -> Option<u32> {
        (self.head != NIL).then_some(self.head)
    }

    fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.group.is_some())
            .map(|(id, _)| id as u32)
    }

    fn iter(&self) -> impl Iterator<Item = &Group> {
        self.slots.iter().filter_map(|s| s.group.as_ref())
    }

    /// Adds `group` as the most recently updated.
    fn insert(&mut self, group: Group) -> u32 {
        let key = group.key.clone();
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize].group = Some(group);
                id
            }
            None => {
                self.slots.push(GroupSlot {
                    generation: 0,
                    group: Some(group),
                });
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(key, id);
        self.link_back(id);
        self.len += 1;
        id
    }

    /// Marks `id` as the most recently updated.
    fn touch(&mut self, id: u32) {
        if self.tail != id {
            self.unlink(id);
            self.link_back(id);
        }
    }

    fn remove(&mut self, id: u32) -> Group {
        self.unlink(id);
        let slot = &mut self.slots[id as usize];
        slot.generation = slot.generation.wrapping_add(1);
        let group = slot.group.take().expect("a live group");
        self.index.remove(&group.key);
        self.free.push(id);
        self.len -= 1;
        group
    }

    fn unlink(&mut self, id: u32) {
        let (prev, next) = {
            let g = self.get(id);
            (g.prev, g.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.get_mut(prev).next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.get_mut(next).prev = prev;
        }
    }

    fn link_back(&mut self, id: u32) {
        let tail = self.tail;
        let g = self.get_mut(id);
        g.prev = tail;
        g.next = NIL;
        if tail == NIL {
            self.head = id;
        } else {
            self.get_mut(tail).next = id;
        }
        self.tail = id;
    }
}

/// A checkpointed entry of one correlation: partition, key after the correlation's prefix,
/// value.
pub type RestoreEntry<'a> = (i32, &'a [u8], &'a [u8]);

/// Version byte of checkpointed correlation state.
const STATE_VERSION: u8 = 1;

/// A group as a checkpoint value. What can be recomputed from the events (per-source counts,
/// evidence held, distinct values) is not written.
fn encode_group(g: &Group, e: &mut Enc) {
    e.u8(STATE_VERSION);
    e.u64(g.touched);
    e.i64(g.newest);
    e.i64(g.floor);
    e.i64(g.quiet_until);
    e.opt_i64(g.open);
    e.u64(g.dropped_in_window as u64);
    e.f64(g.sum.sum);
    e.f64(g.sum.compensation);
    e.u64(g.chains.len() as u64);
    for &c in &g.chains {
        e.i64(c);
    }
    let v = &g.values;
    e.u64(v.slots.len() as u64);
    for s in &v.slots {
        e.u64(u64::from(s.count));
        e.i64(s.quiet_until);
    }
    e.u64(v.free.len() as u64);
    for &f in &v.free {
        e.u64(u64::from(f));
    }
    e.u64(v.index.len() as u64);
    for (value, &slot) in &v.index {
        e.u64(u64::from(slot));
        e.bytes(value);
    }
    e.u64(g.events.len() as u64);
    for ev in &g.events {
        e.i64(ev.time);
        e.u64(u64::from(ev.source));
        e.u64(if ev.slot == NO_SLOT {
            0
        } else {
            u64::from(ev.slot) + 1
        });
        e.f64(ev.number);
        e.opt_bytes(ev.evidence.as_deref().map(str::as_bytes));
    }
}

/// The inverse of [`encode_group`], checked against the correlation's parameters.
fn decode_state(key: &[u8], bytes: &[u8], p: &Params) -> Result<Group, DecodeError> {
    let mut d = Dec::new(bytes);
    if d.u8()? != STATE_VERSION {
        return Err(DecodeError("unknown version"));
    }
    let mut g = Group::new(key, p);
    g.touched = d.u64()?;
    g.newest = d.i64()?;
    g.floor = d.i64()?;
    g.quiet_until = d.i64()?;
    g.open = d.opt_i64()?;
    g.dropped_in_window = d.len()?;
    g.sum = Sum {
        sum: d.f64()?,
        compensation: d.f64()?,
    };
    let n = d.len()?;
    if n != g.chains.len() {
        return Err(DecodeError("chains of another correlation"));
    }
    for c in &mut g.chains {
        *c = d.i64()?;
    }
    let v = &mut g.values;
    for _ in 0..d.len()? {
        v.slots.push(ValueSlot {
            count: d.u32()?,
            quiet_until: d.i64()?,
        });
    }
    for _ in 0..d.len()? {
        let f = d.u32()?;
        if f as usize >= v.slots.len() {
            return Err(DecodeError("free slot out of range"));
        }
        v.free.push(f);
    }
    for _ in 0..d.len()? {
        let slot = d.u32()?;
        if slot as usize >= v.slots.len() {
            return Err(DecodeError("value slot out of range"));
        }
        v.index.insert(d.bytes()?.into(), slot);
    }
    v.distinct = v.slots.iter().filter(|s| s.count > 0).count();
    for _ in 0..d.len()? {
        let time = d.i64()?;
        let source = d.u32()?;
        if source as usize >= p.sources {
            return Err(DecodeError("source out of range"));
        }
        let slot = match d.u32()? {
            0 => NO_SLOT,
            s if (s as usize) <= v.slots.len() => s - 1,
            _ => return Err(DecodeError("event slot out of range")),
        };
        let number = d.f64()?;
        let evidence = match d.opt_bytes()? {
            Some(b) => Some(
                std::str::from_utf8(b)
                    .map_err(|_| DecodeError("evidence is not UTF-8"))?
                    .into(),
            ),
            None => None,
        };
        if evidence.is_some() {
            g.evidence_held += 1;
            if p.temporal() {
                g.evidence_by_source[source as usize] += 1;
            }
        }
        if p.temporal() {
            let n = &mut g.per_source[source as usize];
            if *n == 0 {
                g.distinct_sources += 1;
            }
            *n += 1;
        }
        g.events.push_back(Event {
            time,
            source,
            slot,
            number,
            evidence,
        });
    }
    if !d.is_empty() {
        return Err(DecodeError("trailing bytes"));
    }
    Ok(g)
}

/// Appends one group-by value to a key: its length, then its bytes.
fn append_key_text(key: &mut Vec<u8>, text: &str) {
    let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
    key.extend_from_slice(&len.to_le_bytes());
    key.extend_from_slice(&text.as_bytes()[..len as usize]);
}

/// The `(name, value)` pairs of a key.
fn decode_group(names: &[String], mut key: &[u8]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|name| {
            let (len, rest) = key.split_at(4);
            let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
            let (value, rest) = rest.split_at(len);
            key = rest;
            (name.clone(), String::from_utf8_lossy(value).into_owned())
        })
        .collect()
}

/// A finite number written as text.
fn parse_number(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

/// An inner correlation's hit as the evidence of the outer one.
fn hit_json(hit: &CorrelationHit) -> String {
    let quote = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let mut out = format!("{{\"correlation\":{},\"group\":{{", hit.correlation);
    for (i, (name, value)) in hit.group.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{}:{}", quote(name), quote(value));
    }
    let value = serde_json::Number::from_f64(hit.value).map_or("null".into(), |n| n.to_string());
    let _ = write!(
        out,
        "}},\"first_ms\":{},\"last_ms\":{},\"value\":{value},\"evidence\":[{}],\"evidence_truncated\":{}}}",
        hit.first_ms,
        hit.last_ms,
        hit.evidence.join(","),
        hit.evidence_truncated
    );
    out
}

/// Where one source's columns are in the last schema seen (a stream's batches share their
/// schema, so this is resolved once per stream change, not per batch).
#[derive(Debug, Default)]
struct ColumnIndex {
    schema: Option<SchemaRef>,
    group: Vec<Option<usize>>,
    value: Option<usize>,
}

impl ColumnIndex {
    fn resolve(&mut self, schema: &SchemaRef, group: &[String], value: Option<&str>) {
        if self.schema.as_ref().is_some_and(|s| Arc::ptr_eq(s, schema)) {
            return;
        }
        self.group = group.iter().map(|c| schema.index_of(c).ok()).collect();
        self.value = value.and_then(|c| schema.index_of(c).ok());
        self.schema = Some(Arc::clone(schema));
    }
}

/// One source's columns in one batch.
struct Readers<'a> {
    group: Vec<Col<'a>>,
    value: Option<Col<'a>>,
}

impl<'a> Readers<'a> {
    fn new(batch: &'a RecordBatch, index: &ColumnIndex) -> Readers<'a> {
        let col = |i: Option<usize>| Col::new(i.map(|i| batch.column(i).as_ref()));
        Readers {
            group: index.group.iter().map(|&i| col(i)).collect(),
            value: index.value.map(|i| col(Some(i))),
        }
    }
}

/// A column read row by row as text, without allocating.
enum Col<'a> {
    Absent,
    Utf8(&'a GenericStringArray<i32>),
    LargeUtf8(&'a GenericStringArray<i64>),
    Utf8View(&'a StringViewArray),
    Boolean(&'a BooleanArray),
    Int8(&'a PrimitiveArray<Int8Type>),
    Int16(&'a PrimitiveArray<Int16Type>),
    Int32(&'a PrimitiveArray<Int32Type>),
    Int64(&'a PrimitiveArray<Int64Type>),
    UInt8(&'a PrimitiveArray<UInt8Type>),
    UInt16(&'a PrimitiveArray<UInt16Type>),
    UInt32(&'a PrimitiveArray<UInt32Type>),
    UInt64(&'a PrimitiveArray<UInt64Type>),
    Float32(&'a PrimitiveArray<Float32Type>),
    Float64(&'a PrimitiveArray<Float64Type>),
    /// Any other type, as Arrow displays it (dates, timestamps, dictionaries...).
    Other(&'a dyn Array, ArrayFormatter<'a>),
}

impl<'a> Col<'a> {
    fn new(array: Option<&'a dyn Array>) -> Col<'a> {
        let Some(a) = array else {
            return Col::Absent;
        };
        match a.data_type() {
            DataType::Utf8 => Col::Utf8(a.as_string::<i32>()),
            DataType::LargeUtf8 => Col::LargeUtf8(a.as_string::<i64>()),
            DataType::Utf8View => Col::Utf8View(a.as_string_view()),
            DataType::Boolean => Col::Boolean(a.as_boolean()),
            DataType::Int8 => Col::Int8(a.as_primitive()),
            DataType::Int16 => Col::Int16(a.as_primitive()),
            DataType::Int32 => Col::Int32(a.as_primitive()),
            DataType::Int64 => Col::Int64(a.as_primitive()),
            DataType::UInt8 => Col::UInt8(a.as_primitive()),
            DataType::UInt16 => Col::UInt16(a.as_primitive()),
            DataType::UInt32 => Col::UInt32(a.as_primitive()),
            DataType::UInt64 => Col::UInt64(a.as_primitive()),
            DataType::Float32 => Col::Float32(a.as_primitive()),
            DataType::Float64 => Col::Float64(a.as_primitive()),
            _ => match ArrayFormatter::try_new(a, &FormatOptions::default()) {
                Ok(f) => Col::Other(a, f),
                Err(_) => Col::Absent,
            },
        }
    }

    /// Row `row` as text (numbers formatted into `buf`); `None` when null or absent.
    fn text<'s>(&'s self, row: usize, buf: &'s mut String) -> Option<&'s str> {
        macro_rules! formatted {
            ($a:expr) => {{
                if $a.is_null(row) {
                    return None;
                }
                buf.clear();
                let _ = write!(buf, "{}", $a.value(row));
                Some(buf.as_str())
            }};
        }
        match self {
            Col::Absent => None,
            Col::Utf8(a) => (!a.is_null(row)).then(|| a.value(row)),
            Col::LargeUtf8(a) => (!a.is_null(row)).then(|| a.value(row)),
            Col::Utf8View(a) => (!a.is_null(row)).then(|| a.value(row)),
            Col::Boolean(a) => {
                (!a.is_null(row)).then(|| if a.value(row) { "true" } else { "false" })
            }
            Col::Int8(a) => formatted!(a),
            Col::Int16(a) => formatted!(a),
            Col::Int32(a) => formatted!(a),
            Col::Int64(a) => formatted!(a),
            Col::UInt8(a) => formatted!(a),
            Col::UInt16(a) => formatted!(a),
            Col::UInt32(a) => formatted!(a),
            Col::UInt64(a) => formatted!(a),
            Col::Float32(a) => formatted!(a),
            Col::Float64(a) => formatted!(a),
            Col::Other(a, f) => {
                if a.is_null(row) {
                    return None;
                }
                buf.clear();
                f.value(row).write(buf).ok()?;
                Some(buf.as_str())
            }
        }
    }

    /// Row `row` as a finite number; strings are parsed; `None` when null, absent or not a
    /// number (booleans are not numbers).
    fn number(&self, row: usize, buf: &mut String) -> Option<f64> {
        macro_rules! cast {
            ($a:expr) => {
                (!$a.is_null(row)).then(|| $a.value(row) as f64)
            };
        }
        let n = match self {
            Col::Int8(a) => cast!(a),
            Col::Int16(a) => cast!(a),
            Col::Int32(a) => cast!(a),
            Col::Int64(a) => cast!(a),
            Col::UInt8(a) => cast!(a),
            Col::UInt16(a) => cast!(a),
            Col::UInt32(a) => cast!(a),
            Col::UInt64(a) => cast!(a),
            Col::Float32(a) => cast!(a),
            Col::Float64(a) => cast!(a),
            Col::Boolean(_) => None,
            _ => self.text(row, buf).and_then(parse_number),
        };
        n.filter(|n| n.is_finite())
    }

    /// Appends row `row` to a group key; null and absent are `""`.
    fn append_key(&self, row: usize, key: &mut Vec<u8>, buf: &mut String) {
        append_key_text(key, self.text(row, buf).unwrap_or(""));
    }
}

#[cfg(test)]
#[path = "correlate_tests.rs"]
mod tests;
