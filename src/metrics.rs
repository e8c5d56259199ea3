//! Every metric palisade exports, defined once, named `palisade_*`.
//!
//! Nothing else registers metrics. Labels are low-cardinality by construction: stream, rule,
//! severity, topic, partition, failure kind and sink names come from configuration, never
//! from event data (no entity, user or IP is ever a label).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram as Hdr;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The process's metrics and the registry they live in.
pub struct Metrics {
    registry: Registry,
    /// Records read, per stream.
    pub records: IntCounterVec,
    /// Payload bytes read, per stream.
    pub bytes: IntCounterVec,
    /// Micro-batches processed, per stream.
    pub batches: IntCounterVec,
    /// Records that failed to decode, per stream and failure kind.
    pub decode_failures: IntCounterVec,
    /// Dead letters acknowledged by the dead-letter topic (or file), per stream.
    pub dead_letters: IntCounterVec,
    /// Evaluation time per detector and batch.
    pub detector_seconds: HistogramVec,
    /// Detector evaluations that failed, per rule.
    pub detector_errors: IntCounterVec,
    /// Alerts acknowledged by the alert sink, per rule and severity.
    pub alerts: IntCounterVec,
    /// Consumer lag (messages behind the high watermark), per topic and partition.
    pub consumer_lag: IntGaugeVec,
    /// Offset commits requested after outputs were acknowledged.
    pub commits: IntCounter,
    /// Delivery attempts that failed and were retried, per sink.
    pub sink_retries: IntCounterVec,
    /// 1 when the pipeline is consuming and its sinks deliver, else 0.
    pub ready: IntGauge,
    /// Loaded detectors.
    pub rules_loaded: IntGauge,
    /// Rule reloads, by result (`ok`, `failed`).
    pub rule_reloads: IntCounterVec,
    /// Detector state held (correlation groups, events), by kind.
    pub state_held: IntGaugeVec,
    /// Detector state given up to stay within bounds, by reason.
    pub state_evicted: IntCounterVec,
    /// Bytes of detector state held, by detector kind.
    pub state_bytes: IntGaugeVec,
    /// Events older than their stream's watermark when they arrived, per stream.
    pub late_events: IntCounterVec,
    /// How far each stream's watermark lags, in seconds.
    pub watermark_delay: GaugeVec,
    /// Records produced to a route's internal topic (see [`crate::repartition`]), per stream
    /// and key column; watermark markers are not counted.
    pub repartitioned: IntCounterVec,
    /// End-to-end latency (Kafka timestamp to alert acknowledged), as quantiles.
    pub latency: std::sync::Arc<LatencySummary>,
    /// Alerts raised by detectors (before suppression), per rule.
    pub rule_matches: IntCounterVec,
    /// Alerts that left suppression for the sinks, per rule, severity, urgency and the
    /// asset's domain and criticality (`unknown` without an inventory entry).
    pub alerts_emitted: IntCounterVec,
    /// Repeats folded into an earlier alert by suppression, per rule.
    pub alerts_folded: IntCounterVec,
    /// Fingerprints whose episode suppression remembers.
    pub suppression_fingerprints: IntGauge,
    /// Suppression episodes forgotten before they ended, to stay within bounds.
    pub suppression_evicted: IntCounter,
    /// Asset inventory reloads, by result (`ok`, `failed`).
    pub inventory_reloads: IntCounterVec,
    /// Assets in the inventory in use.
    pub inventory_assets: IntGauge,
    /// Alerts acknowledged by a notification sink (`alertmanager`, `webhook`).
    pub sink_delivered: IntCounterVec,
    /// Alerts a sink gave up on, by reason (`rejected`: the receiver refused them;
    /// `attempts`: retries exhausted; `shutdown`: undelivered when the process stopped).
    pub sink_failures: IntCounterVec,
    /// Alerts dropped from a full notification buffer (oldest first), per sink.
    pub sink_dropped: IntCounterVec,
    /// Alerts waiting in a notification sink's buffer.
    pub sink_buffered: IntGaugeVec,
    /// Checkpoints written, by outcome (`ok`, `failed`).
    pub checkpoints: IntCounterVec,
    /// Time to write one checkpoint (changelog entries, offsets, transaction commit).
    pub checkpoint_seconds: prometheus::Histogram,
    /// State entries written to the changelog, by kind (`update`, `tombstone`).
    pub checkpoint_entries: IntCounterVec,
    /// Restores from the changelog (at start and after each rebalance), and their time.
    pub restore_seconds: prometheus::Histogram,
    /// State entries restored from the changelog.
    pub restore_entries: IntCounter,
    /// Delivery mode in effect: 1 for the mode named by `mode` (`exactly_once`,
    /// `at_least_once`), 0 for the other.
    pub delivery_mode: IntGaugeVec,
    /// Transactions aborted (rebalance, fencing, failed commit): their work is redone from
    /// the last checkpoint.
    pub transaction_aborts: IntCounter,
    /// Transactional producers replaced because a transaction call never returned
    /// ([`crate::state::SharedProducer`]).
    pub producer_replacements: IntCounter,
    /// Rejoins of the consumer group because this instance's assignment no longer fitted the
    /// group's members (see [`crate::source::group`]): partitions nobody was reading.
    pub group_rejoins: IntCounter,
    /// Bytes of checkpointed state per key in the last checkpoint, by detector kind
    /// (`sigma`, `baseline`, `sql`): the mean size of an entry's value.
    pub state_bytes_per_key: prometheus::GaugeVec,
    /// Evaluation seconds per rule (SQL rules, baseline rules; a one-rule Sigma set).
    pub rule_eval_seconds: prometheus::CounterVec,
    /// Keys held per stateful rule (correlation groups, window keys, baseline entities).
    pub rule_state_entries: IntGaugeVec,
    /// Approximate bytes of memory held per stateful rule.
    pub rule_state_bytes: IntGaugeVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let records = counter("palisade_records_total", "Records consumed.", &["stream"]);
        let bytes = counter(
            "palisade_bytes_total",
            "Payload bytes consumed.",
            &["stream"],
        );
        let batches = counter(
            "palisade_batches_total",
            "Micro-batches processed.",
            &["stream"],
        );
        let decode_failures = counter(
            "palisade_decode_failures_total",
            "Records that could not be decoded, by reason.",
            &["stream", "reason"],
        );
        let dead_letters = counter(
            "palisade_dead_letters_total",
            "Undecodable records acknowledged by the dead-letter topic.",
            &["stream"],
        );
        let detector_errors = counter(
            "palisade_detector_errors_total",
            "Detector evaluations that failed.",
            &["detector"],
        );
        let alerts = counter(
            "palisade_alerts_total",
            "Alerts acknowledged by the alert sink.",
            &["rule", "severity"],
        );
        let sink_retries = counter(
            "palisade_sink_retries_total",
            "Failed deliveries that will be retried.",
            &["sink"],
        );
        let detector_seconds = HistogramVec::new(
            HistogramOpts::new(
                "palisade_detector_eval_seconds",
                "Evaluation time of one detector on one batch.",
            )
            .buckets(vec![
                1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1.0,
            ]),
            &["detector"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(detector_seconds.clone()))
            .expect("registered once");
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "palisade_consumer_lag",
                "Messages between the committed position and the high watermark.",
            ),
            &["topic", "partition"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(consumer_lag.clone()))
            .expect("registered once");
        let commits = IntCounter::new(
            "palisade_offset_commits_total",
            "Offset stores after acknowledged output.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(commits.clone()))
            .expect("registered once");
        let ready = IntGauge::new("palisade_ready", "1 when consuming and delivering.")
            .expect("valid metric");
        registry
            .register(Box::new(ready.clone()))
            .expect("registered once");
        let rules_loaded =
            IntGauge::new("palisade_rules_loaded", "Detectors loaded.").expect("valid metric");
        registry
            .register(Box::new(rules_loaded.clone()))
            .expect("registered once");
        let rule_reloads = counter(
            "palisade_rule_reloads_total",
            "Rule set reloads (file change or SIGHUP); a failed one leaves the previous rules running.",
            &["result"],
        );
        let state_held = IntGaugeVec::new(
            Opts::new(
                "palisade_detector_state",
                "State held by detectors: correlation groups and the events they keep.",
            ),
            &["kind"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(state_held.clone()))
            .expect("registered once");
        let state_evicted = counter(
            "palisade_detector_state_evicted_total",
            "State given up to stay within bounds: groups evicted, events dropped from full \
             groups, events too late for their window, evidence rows left out of alerts, \
             window keys evicted.",
            &["reason"],
        );
        let state_bytes = IntGaugeVec::new(
            Opts::new(
                "palisade_detector_state_bytes",
                "Bytes of state held by detectors, by detector kind (`sql_window`: window panes, \
                 keys and distinct values of windowed SQL rules). Divided by \
                 palisade_detector_state{kind=\"window_keys\"}: bytes per key.",
            ),
            &["kind"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(state_bytes.clone()))
            .expect("registered once");
        let late_events = counter(
            "palisade_late_events_total",
            "Events older than their stream's watermark when they arrived; the stream's \
             late-event policy then dead-letters or processes them.",
            &["stream"],
        );
        let repartitioned = counter(
            "palisade_repartitioned_records_total",
            "Records produced to an internal topic keyed by a rule's group column (rules that \
             group by a field other than their stream's Kafka key), per stream and column; \
             acknowledged with the batch's alerts.",
            &["stream", "column"],
        );
        let watermark_delay = GaugeVec::new(
            Opts::new(
                "palisade_watermark_delay_seconds",
                "How far the stream's watermark lags: live, the wall clock minus the watermark; \
                 in replay, the highest event time seen minus the watermark. Windows close \
                 this much after their end.",
            ),
            &["stream"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(watermark_delay.clone()))
            .expect("registered once");
        let latency = std::sync::Arc::new(LatencySummary::new(
            "palisade_e2e_latency_seconds",
            "Kafka timestamp of the oldest record of a batch to acknowledgement of an alert from it.",
        ));
        registry
            .register(Box::new(SharedCollector(std::sync::Arc::clone(&latency))))
            .expect("registered once");
        let rule_matches = counter(
            "palisade_rule_matches_total",
            "Alerts raised by a rule before suppression.",
            &["rule"],
        );
        let alerts_emitted = counter(
            "palisade_alerts_emitted_total",
            "Alerts sent on after suppression, by rule, severity, urgency and the asset's domain and criticality.",
            &["rule", "severity", "urgency", "domain", "criticality"],
        );
        let alerts_folded = counter(
            "palisade_alerts_folded_total",
            "Repeated alerts folded into an earlier one by suppression (counted, not sent).",
            &["rule"],
        );
        let inventory_reloads = counter(
            "palisade_inventory_reloads_total",
            "Asset inventory reloads; a failed one keeps the previous inventory.",
            &["result"],
        );
        let sink_delivered = counter(
            "palisade_sink_delivered_total",
            "Alerts acknowledged by a notification sink.",
            &["sink"],
        );
        let sink_failures = counter(
            "palisade_sink_failures_total",
            "Alerts a notification sink gave up on, by reason.",
            &["sink", "reason"],
        );
        let sink_dropped = counter(
            "palisade_sink_dropped_total",
            "Alerts dropped from a full notification buffer (the alerts topic still has them).",
            &["sink"],
        );
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let suppression_fingerprints = gauge(
            "palisade_suppression_fingerprints",
            "Alert fingerprints whose episode suppression remembers.",
        );
        let inventory_assets = gauge(
            "palisade_inventory_assets",
            "Assets in the asset inventory in use.",
        );
        let suppression_evicted = IntCounter::new(
            "palisade_suppression_evicted_total",
            "Suppression episodes forgotten before they ended, to stay within max_fingerprints.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(suppression_evicted.clone()))
            .expect("registered once");
        let sink_buffered = IntGaugeVec::new(
            Opts::new(
                "palisade_sink_buffered",
                "Alerts waiting in a notification sink's buffer.",
            ),
            &["sink"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(sink_buffered.clone()))
            .expect("registered once");
        let checkpoints = counter(
            "palisade_checkpoints_total",
            "Checkpoints of detector state and input offsets, by outcome.",
            &["outcome"],
        );
        let seconds = |name: &str, help: &str| {
            let h = prometheus::Histogram::with_opts(
                HistogramOpts::new(name, help)
                    .buckets(vec![1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0]),
            )
            .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("registered once");
            h
        };
        let checkpoint_seconds = seconds(
            "palisade_checkpoint_seconds",
            "Time to write one checkpoint: changelog entries, offsets, transaction commit.",
        );
        let checkpoint_entries = counter(
            "palisade_checkpoint_entries_total",
            "State entries written to the changelog.",
            &["kind"],
        );
        let restore_seconds = seconds(
            "palisade_restore_seconds",
            "Time to restore detector state from the changelog (start, rebalance).",
        );
        let restore_entries = IntCounter::new(
            "palisade_restore_entries_total",
            "State entries restored from the changelog.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(restore_entries.clone()))
            .expect("registered once");
        let delivery_mode = IntGaugeVec::new(
            Opts::new(
                "palisade_delivery_mode",
                "1 for the delivery mode in effect (exactly_once with transactions, \
                 at_least_once with deterministic alert ids).",
            ),
            &["mode"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(delivery_mode.clone()))
            .expect("registered once");
        let transaction_aborts = IntCounter::new(
            "palisade_transaction_aborts_total",
            "Transactions aborted; their work is redone from the last checkpoint.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(transaction_aborts.clone()))
            .expect("registered once");
        let producer_replacements = IntCounter::new(
            "palisade_producer_replacements_total",
            "Transactional producers replaced because a transaction call never returned (librdkafka wedged); work resumes from the last checkpoint.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(producer_replacements.clone()))
            .expect("registered once");
        let group_rejoins = IntCounter::new(
            "palisade_group_rejoins_total",
            "Consumer group rejoins because this instance's assignment did not fit the group's members.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(group_rejoins.clone()))
            .expect("registered once");
        let state_bytes_per_key = prometheus::GaugeVec::new(
            Opts::new(
                "palisade_state_bytes_per_key",
                "Mean bytes of checkpointed state per key in the last checkpoint, by detector kind \
                 (sigma, baseline, sql).",
            ),
            &["kind"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(state_bytes_per_key.clone()))
            .expect("registered once");
        let rule_gauge = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["rule"]).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let rule_state_entries = rule_gauge(
            "palisade_rule_state_entries",
            "Keys held by a stateful rule now: correlation groups, window keys, baseline \
             entities. Refreshed at most once a second.",
        );
        let rule_state_bytes = rule_gauge(
            "palisade_rule_state_bytes",
            "Approximate bytes of memory held by a stateful rule now (its tables, keys, \
             windows and models). Refreshed at most once a second.",
        );
        let rule_eval_seconds = prometheus::CounterVec::new(
            Opts::new(
                "palisade_rule_eval_seconds_total",
                "Seconds spent evaluating a rule: each SQL rule, each baseline rule. Sigma rules \
                 share one plan (each column scanned once for all), so their cost is the set's: \
                 palisade_detector_eval_seconds{detector=\"sigma\"}.",
            ),
            &["rule"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(rule_eval_seconds.clone()))
            .expect("registered once");
        Metrics {
            rule_eval_seconds,
            rule_state_entries,
            rule_state_bytes,
            rule_matches,
            alerts_emitted,
            alerts_folded,
            suppression_fingerprints,
            suppression_evicted,
            inventory_reloads,
            inventory_assets,
            sink_delivered,
            sink_failures,
            sink_dropped,
            sink_buffered,
            late_events,
            watermark_delay,
            repartitioned,
            checkpoints,
            checkpoint_seconds,
            checkpoint_entries,
            restore_seconds,
            restore_entries,
            delivery_mode,
            transaction_aborts,
            producer_replacements,
            group_rejoins,
            state_bytes_per_key,
            registry,
            records,
            bytes,
            batches,
            decode_failures,
            dead_letters,
            detector_seconds,
            detector_errors,
            alerts,
            consumer_lag,
            commits,
            sink_retries,
            ready,
            rules_loaded,
            rule_reloads,
            state_held,
            state_evicted,
            state_bytes,
            latency,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The quantiles exported for latency.
pub const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

/// A latency recorder backed by an HDR histogram, exported as a Prometheus summary.
///
/// Quantiles cover a sliding window of one to two `window`s (the current and the previous
/// histogram), so they describe the recent past rather than the whole run; `_sum` and
/// `_count` are cumulative, as Prometheus expects.
pub struct LatencySummary {
    desc: Desc,
    inner: Mutex<LatencyWindow>,
}

struct LatencyWindow {
    current: Hdr<u64>,
    previous: Hdr<u64>,
    rotated: Instant,
    window: Duration,
    count: u64,
    sum_seconds: f64,
}

impl LatencySummary {
    /// A summary named `name` with a one-minute window.
    pub fn new(name: &str, help: &str) -> LatencySummary {
        // Microseconds, 3 significant digits, up to one hour.
        let hdr = || Hdr::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
        LatencySummary {
            desc: Desc::new(name.into(), help.into(), vec![], Default::default())
                .expect("valid desc"),
            inner: Mutex::new(LatencyWindow {
                current: hdr(),
                previous: hdr(),
                rotated: Instant::now(),
                window: Duration::from_secs(60),
                count: 0,
                sum_seconds: 0.0,
            }),
        }
    }

    /// Records one latency.
    pub fn record(&self, latency: Duration) {
        let mut w = self.inner.lock().expect("latency lock never poisoned");
        w.rotate_if_due();
        let us = (latency.as_micros() as u64).clamp(1, 3_600_000_000);
        w.current.record(us).expect("clamped into bounds");
        w.count += 1;
        w.sum_seconds += latency.as_secs_f64();
    }

    /// The quantile `q` (0..=1) of the current window, in seconds; `None` if empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let mut w = self.inner.lock().expect("latency lock never poisoned");
        w.rotate_if_due();
        let mut merged = w.previous.clone();
        merged.add(&w.current).expect("same bounds");
        (!merged.is_empty()).then(|| merged.value_at_quantile(q) as f64 / 1e6)
    }

    /// Number of latencies recorded since start.
    pub fn count(&self) -> u64 {
        self.inner
            .lock()
            .expect("latency lock never poisoned")
            .count
    }
}

impl LatencyWindow {
    fn rotate_if_due(&mut self) {
        if self.rotated.elapsed() >= self.window {
            std::mem::swap(&mut self.previous, &mut self.current);
            self.current.reset();
            self.rotated = Instant::now();
        }
    }
}

impl Collector for LatencySummary {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let quantiles = QUANTILES
            .iter()
            .map(|&q| {
                let mut pq = proto::Quantile::default();
                pq.set_quantile(q);
                pq.set_value(self.quantile(q).unwrap_or(f64::NAN));
                pq
            })
            .collect();
        let (count, sum) = {
            let w = self.inner.lock().expect("latency lock never poisoned");
            (w.count, w.sum_seconds)
        };
        let mut summary = proto::Summary::default();
        summary.set_sample_count(count);
        summary.set_sample_sum(sum);
        summary.set_quantile(quantiles);
        let mut metric = proto::Metric::default();
        metric.set_summary(summary);
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::SUMMARY);
        family.set_metric(vec![metric]);
        vec![family]
    }
}

/// Registers an `Arc`ed collector while the pipeline keeps its own handle.
struct SharedCollector(std::sync::Arc<LatencySummary>);

impl Collector for SharedCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_come_from_the_histogram() {
        let m = Metrics::new();
        assert!(m.latency.quantile(0.5).is_none());
        for ms in 1..=1000u64 {
            m.latency.record(Duration::from_millis(ms));
        }
        let p50 = m.latency.quantile(0.5).unwrap();
        let p99 = m.latency.quantile(0.99).unwrap();
        assert!((0.495..0.505).contains(&p50), "p50 {p50}");
        assert!((0.985..0.995).contains(&p99), "p99 {p99}");
        let text = m.render();
        assert!(
            text.contains("palisade_e2e_latency_seconds{quantile=\"0.99\"} 0.99"),
            "{text}"
        );
        assert!(
            text.contains("palisade_e2e_latency_seconds_count 1000"),
            "{text}"
        );
    }

    #[test]
    fn every_metric_is_palisade_prefixed() {
        let m = Metrics::new();
        m.records.with_label_values(&["s"]).inc();
        m.detector_seconds.with_label_values(&["r"]).observe(0.1);
        for line in m.render().lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("palisade_"), "{line}");
        }
    }
}
