//! palisade: a stream processor that watches smart-city infrastructure telemetry and flags
//! attacks on it.
//!
//! Data flows one way: Kafka (or files) -> raw batches -> Arrow `RecordBatch` -> detectors ->
//! alerts -> sinks, with metrics on the side. One module per stage:
//!
//! - [`config`]: the TOML configuration, validated at load with file:line errors.
//! - [`source`]: Kafka consumer, replay files and the embedded cluster; cut raw batches.
//! - [`sim`]: the simulated city (deterministic by seed) with labelled attack, equipment and
//!   insider scenarios, and their ground truth.
//! - [`decode`]: raw bytes -> `RecordBatch`; bad records become dead letters. Pure.
//! - [`detect`]: detectors (SQL via DataFusion, Sigma, baseline statistics) over batches ->
//!   alerts. Pure.
//! - [`alert`]: the alert model, its deterministic id, and the sinks.
//! - [`watermark`]: event time: per-partition progress, stream watermarks, late events.
//! - [`privacy`]: pseudonymisation of personal fields.
//! - [`repartition`]: rules grouped off their stream's key, fed through internal topics.
//! - [`state`]: durable detector state: the Kafka changelog, checkpoints, restore.
//! - [`pipeline`]: wires the stages with bounded channels; ordering, acks, commits, shutdown.
//! - [`metrics`]: every metric, defined once.
//! - [`server`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`app`]: the commands (`run`, `replay`, `simulate`) assembled from the above.
//! - [`eval`]: `palisade eval`: labelled data (SKAB through the baseline detector, the
//!   simulated city through the rules) replayed and scored (F1, false- and missed-alarm
//!   rates, time to detect).
//! - [`telemetry`]: `palisade replay --preset sensors`: wide telemetry CSVs (one asset per
//!   file) through default baseline rules.
//! - [`ruletest`]: `palisade test`: analysts' test cases (`*.tests.yml`) run through the rules.

pub mod alert;
pub mod app;
pub mod config;
pub mod decode;
pub mod detect;
pub mod eval;
pub mod metrics;
pub mod pipeline;
pub mod privacy;
pub mod repartition;
pub mod ruletest;
pub mod server;
pub mod sim;
pub mod source;
pub mod state;
pub mod telemetry;
pub mod watermark;

/// Settings shared by the crate's property tests: `cases` cases, and the seeds of failures
/// kept beside the test's source file (`<file>.proptest-regressions`, checked in) rather than
/// in a folder of their own at the project root.
#[cfg(test)]
pub(crate) fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..proptest::test_runner::Config::default()
    }
}
