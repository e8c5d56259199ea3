//! What the equipment scenarios do to the benign telemetry: for a while, one series of one
//! asset is replaced by labelled readings or withheld.
//!
//! In: tampers armed by `attacks.rs` (what, on which asset, from when until when). Out:
//! consulted by `benign.rs` as it renders each sensor reading and pump poll.
//! Guarantees: the background's generators never see a tamper, so they draw exactly as without
//! it; a replaced reading carries the scenario's label, a withheld one is absent, and only
//! readings within `[from, until)` are touched. Tampers are dropped once over, so the list
//! holds only the few that are armed or running.

use super::city::Metric;

/// The series a tamper acts on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Target {
    /// One metric of one asset of the sensors stream (index into `ASSETS`).
    Sensor { asset: usize, metric: Metric },
    /// Every poll of one pump station (index into `PUMP_NAMES`).
    Pump(usize),
}

/// What happens to the series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Effect {
    /// The sensor repeats the first value it reads once stuck (filled in then).
    Freeze(Option<f64>),
    /// The sensor sends nothing.
    Withhold,
    /// The sensor's readings are shifted by this much.
    Offset(f64),
    /// While the pump runs it cavitates: flow, motor current and pressure rise scaled by these
    /// factors, the pressure ragged.
    Cavitation { flow: f64, current: f64, head: f64 },
    /// The pump is commanded to run but does not start: no current, no flow, static pressure.
    NoStart,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Tamper {
    pub(crate) target: Target,
    pub(crate) effect: Effect,
    pub(crate) from: i64,
    pub(crate) until: i64,
    pub(crate) label: &'static str,
}

/// The armed and running tampers.
#[derive(Debug, Default)]
pub(crate) struct Tampers {
    active: Vec<Tamper>,
}

impl Tampers {
    pub(crate) fn arm(&mut self, t: Tamper) {
        self.active.push(t);
    }

    /// Forgets the tampers over by `now`.
    pub(crate) fn expire(&mut self, now: i64) {
        self.active.retain(|t| t.until > now);
    }

    /// The tamper acting on `target` at `ts`, if any.
    pub(crate) fn at(&mut self, target: Target, ts: i64) -> Option<&mut Tamper> {
        self.active
            .iter_mut()
            .find(|t| t.target == target && (t.from..t.until).contains(&ts))
    }

    /// Whether a tamper acts on `target` at some time within `[from, until)`.
    pub(crate) fn busy(&self, target: Target, from: i64, until: i64) -> bool {
        self.active
            .iter()
            .any(|t| t.target == target && t.from < until && from < t.until)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.active.is_empty()
    }
}
