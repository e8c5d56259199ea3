//! A deterministic simulator of a small smart city's telemetry, with labelled attacks.
//!
//! In: [`SimOptions`] (seed, simulated start, optional duration, scenarios to inject).
//! Out: one simulated second at a time, the Kafka records of the five streams of
//! `deploy/palisade.toml` (`city.netflow`, `city.auth`, `city.badge`, `city.scada`,
//! `city.sensors`), each value one JSON object of that stream's schema.
//!
//! Guarantees:
//! - **Deterministic.** Same seed, start and options give byte-identical records. Randomness
//!   comes from our own `xoshiro256**` (`rng.rs`), time from integer arithmetic, floats are
//!   written at fixed precision: nothing depends on a crate version or the platform.
//! - **Labelled.** Injected events carry `"label":"<scenario>"` in the JSON and
//!   [`SimRecord::label`]; benign events have neither.
//! - **Separable.** The background does not depend on the scenarios: removing the labelled
//!   records of a run gives exactly the records of the same run without scenarios.
//! - **Benign is benign.** No benign event satisfies a shipped rule in `rules/`, in any batch
//!   however large (the invariants are listed in `city.rs` and `benign.rs`); each scenario
//!   satisfies the rules named by [`Scenario::rule_ids`].
//! - **On time.** The first occurrence of each enabled scenario falls within 40 simulated
//!   minutes of the start, in [`Scenario::ALL`] order, about 5 minutes apart from +3 min
//!   (the slot is fixed by the scenario's position, whichever others are enabled); each then
//!   repeats about every 6 simulated hours.
//!
//! The city (zones, hosts, people, assets) is in `city.rs`; its clock is UTC, so the daily
//! rhythm (quiet nights, busy office hours) reads directly off `ts`.
//!
//! Cost: rendering writes straight into buffers recycled from the previous second's records,
//! so a caller that reads the records in place (rather than taking them out of the vector)
//! allocates nothing per event in steady state.

mod attacks;
mod benign;
mod city;
mod emit;
mod events;
mod rng;
#[cfg(test)]
mod tests;

use attacks::Attacks;
use benign::Background;
use events::Sink;

/// One generated Kafka record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimRecord {
    /// Kafka topic, one of the topics in deploy/palisade.toml (city.netflow, city.auth, city.badge, city.scada, city.sensors).
    pub topic: &'static str,
    /// Kafka message key: the event's entity (netflow: src_ip, auth: user, badge: badge_id, scada: host, sensors: asset).
    pub key: String,
    /// Event time, milliseconds since the Unix epoch (equal to the `ts` field in `value`).
    pub ts_ms: i64,
    /// The JSON object bytes (one object, no trailing newline).
    pub value: Vec<u8>,
    /// Ground-truth label: Some(scenario name) for injected attack events, None for benign ones.
    pub label: Option<&'static str>,
}

/// What to simulate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimOptions {
    /// Seed of every random choice; the same seed replays the same city and the same attacks.
    pub seed: u64,
    /// Simulated start time, ms since epoch.
    pub start_ms: i64,
    /// Simulated duration in ms; None = run forever (the embedded `palisade run`).
    pub duration_ms: Option<i64>,
    /// Which scenarios to inject (names from `Scenario::ALL`); empty = benign only.
    pub scenarios: Vec<Scenario>,
}

/// An attack the simulator can inject, each caught by the shipped rules of [`Scenario::rule_ids`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// A bike-share kiosk sweeps 600-900 ports of a water PLC in under 4 s (mostly denied).
    PortScan,
    /// One internet address tries 40-60 user names on `hmi-water-01` within 5 s.
    PasswordSpray,
    /// `laptop-vendor-7` (10.99.0.23) writes a chlorine dose of 8-10 mg/L to `wtp-plc-03`.
    RogueSetpoint,
    /// A vendor account logs in successfully to `vpn-gw` from outside Canada and the US.
    VpnForeignLogin,
    /// A former employee's revoked badge is tried 3-5 times on a pump-station door.
    RevokedBadge,
    /// Spoofed chlorine readings (below 0 or above 25 mg/L) for a water asset.
    SensorTamper,
    /// An LPR server uploads 3-5 flows of 180-260 MB each to an internet address.
    LprExfiltration,
}

impl Scenario {
    /// Every scenario, in the order of their first occurrence.
    pub const ALL: [Scenario; 7] = [
        Scenario::PortScan,
        Scenario::PasswordSpray,
        Scenario::RogueSetpoint,
        Scenario::VpnForeignLogin,
        Scenario::RevokedBadge,
        Scenario::SensorTamper,
        Scenario::LprExfiltration,
    ];

    /// The scenario's name, as used in labels and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::PortScan => "port_scan",
            Scenario::PasswordSpray => "password_spray",
            Scenario::RogueSetpoint => "rogue_setpoint",
            Scenario::VpnForeignLogin => "vpn_foreign_login",
            Scenario::RevokedBadge => "revoked_badge",
            Scenario::SensorTamper => "sensor_tamper",
            Scenario::LprExfiltration => "lpr_exfiltration",
        }
    }

    /// The scenario called `s` (exact, lower-case name), if any.
    pub fn from_name(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|sc| sc.name() == s)
    }

    /// The id of the shipped rule(s) in rules/ that must catch it.
    pub fn rule_ids(self) -> &'static [&'static str] {
        match self {
            Scenario::PortScan => &["net.port_scan"],
            Scenario::PasswordSpray => &["auth.password_spray"],
            Scenario::RogueSetpoint => &["scada.setpoint_unknown_host", "scada.unsafe_setpoint"],
            Scenario::VpnForeignLogin => &["auth.vpn_unusual_country"],
            Scenario::RevokedBadge => &["0d6f6f0e-8c1b-4c55-9a4e-3f2b7d9e1a01"],
            Scenario::SensorTamper => &["sensor.physical_limits", "equipment.sensor_deviation"],
            Scenario::LprExfiltration => &["net.bulk_exfiltration"],
        }
    }

    /// The stream (as named in `deploy/palisade.toml`) its events go to.
    pub fn stream(self) -> &'static str {
        match self {
            Scenario::PortScan | Scenario::LprExfiltration => "netflow",
            Scenario::PasswordSpray | Scenario::VpnForeignLogin => "auth",
            Scenario::RogueSetpoint => "scada",
            Scenario::RevokedBadge => "badge",
            Scenario::SensorTamper => "sensors",
        }
    }
}

/// The simulator: call [`Simulator::next_second`] repeatedly.
pub struct Simulator {
    /// Start of the next second to generate (ms since epoch).
    now_ms: i64,
    /// Exclusive end of the simulation, if bounded.
    end_ms: Option<i64>,
    /// The benign background and the city's state (setpoints) that scenarios refer to.
    background: Background,
    /// Scenario schedule and labelled records queued for later seconds.
    attacks: Attacks,
    /// Key and value buffers of records already handed out, reused for the next ones.
    pool: Vec<(String, Vec<u8>)>,
}

impl Simulator {
    /// Builds the city for `opts.seed` and plans the first occurrence of each scenario.
    /// Cheap: nothing is generated until [`Simulator::next_second`].
    pub fn new(opts: SimOptions) -> Simulator {
        Simulator {
            now_ms: opts.start_ms,
            end_ms: opts
                .duration_ms
                .map(|d| opts.start_ms.saturating_add(d.max(0))),
            background: Background::new(opts.seed),
            attacks: Attacks::new(opts.seed, opts.start_ms, &opts.scenarios),
            pool: Vec::new(),
        }
    }

    /// Generates the next second of simulated time into `out` (cleared first; records sorted by ts_ms,
    /// ties in a deterministic order). Returns false (and generates nothing) once the duration is over.
    ///
    /// The records left in `out` by the previous call are recycled: their buffers are reused.
    /// If the duration ends mid-second, only the records before the end are produced.
    pub fn next_second(&mut self, out: &mut Vec<SimRecord>) -> bool {
        self.pool.extend(out.drain(..).map(|r| (r.key, r.value)));
        let start = self.now_ms;
        if self.end_ms.is_some_and(|end| start >= end) {
            return false;
        }
        let mut sink = Sink {
            out,
            pool: &mut self.pool,
        };
        self.background.second(start, &mut sink);
        self.attacks
            .second(start, &self.background, out, &mut self.pool);
        // Stable, so records with equal times keep their generation order (benign first, then
        // labelled): the order is fully determined and independent of the sort algorithm.
        out.sort_by_key(|r| r.ts_ms);
        if let Some(end) = self.end_ms {
            out.retain(|r| r.ts_ms < end);
        }
        self.now_ms = start + 1000;
        true
    }

    /// Simulated time (ms) at the start of the next second to generate.
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }
}
