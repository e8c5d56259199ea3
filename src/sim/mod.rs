//! A deterministic simulator of a small smart city's telemetry, with labelled attacks,
//! equipment failures and insider misuse.
//!
//! In: [`SimOptions`] (seed, simulated start, optional duration, scenarios to inject, streams to
//! generate). Out: one simulated second at a time, the Kafka records of the six streams of
//! `deploy/palisade.toml` (`city.netflow`, `city.auth`, `city.badge`, `city.scada`,
//! `city.sensors`, `city.pumps`), each value one JSON object of that stream's schema; and, for
//! scoring, the ground truth of every scenario occurrence as an [`Incident`].
//!
//! Guarantees:
//! - **Deterministic.** Same seed, start and options give byte-identical records. Randomness
//!   comes from our own `xoshiro256**` (`rng.rs`), time from integer arithmetic, floats are
//!   written at fixed precision: nothing depends on a crate version or the platform.
//! - **Labelled.** Injected events carry `"label":"<scenario>"` in the JSON and
//!   [`SimRecord::label`]; benign events have neither. Every occurrence of a scenario is also
//!   an [`Incident`] (scenario, entity, start, end), including those that inject no event (a
//!   sensor that goes silent).
//! - **Separable.** The background does not depend on the scenarios: removing the labelled
//!   records of a run gives exactly the records of the same run without scenarios, less the
//!   readings an equipment scenario replaced or withheld (those of its asset, within its
//!   incident). Which streams are generated changes nothing in the others.
//! - **Benign is benign.** No benign event satisfies a shipped rule in `rules/`, in any batch
//!   however large, and the baselines learn nothing from the background that would make them
//!   fire on it (the invariants are listed in `city.rs` and `benign.rs`); each scenario
//!   satisfies the rules named by [`Scenario::rule_ids`], and no other but, once a baseline
//!   knows the victim, one that sees the attack too (a vendor signing in from abroad at night
//!   is also off the vendor's hours: `ueba.unusual_hour`), always about the scenario's entity.
//! - **On time.** The first occurrence of each enabled attack ([`Kind::Attack`]) falls within
//!   40 simulated minutes of the start, in [`Scenario::ALL`] order, about 5 minutes apart from
//!   +3 min (the slot is fixed by the scenario's position, whichever others are enabled).
//!   Equipment and insider scenarios wait for what the baselines must learn first
//!   ([`Scenario::first_slot_ms`]: two hours of telemetry, or a person's first hours or day of
//!   work) and for a victim in the right situation (at work, or off shift), then occur at the
//!   first moment one is. Each scenario then repeats about every 6 simulated hours.
//!
//! The city (zones, hosts, people and their hours, assets) is in `city.rs`; its clock is UTC,
//! so the daily rhythm (quiet nights, busy office hours, shifts) reads directly off `ts`.
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
mod tamper;
#[cfg(test)]
mod tests;

use attacks::Attacks;
use benign::Background;
use events::Sink;

/// One generated Kafka record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimRecord {
    /// Kafka topic, one of the topics in deploy/palisade.toml (city.netflow, city.auth,
    /// city.badge, city.scada, city.sensors, city.pumps).
    pub topic: &'static str,
    /// Kafka message key: the event's entity (netflow: src_ip, auth: user, badge: badge_id,
    /// scada: host, sensors and pumps: asset).
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
    /// Which streams to generate (names from [`Simulator::STREAMS`]); `None`: all of them.
    /// The others are not generated at all (the cost of a run is mostly its netflow), and
    /// scenarios of theirs do not happen; the streams generated are the same either way.
    pub streams: Option<Vec<String>>,
}

/// One occurrence of a scenario: the ground truth a detector is scored against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incident {
    /// What happened.
    pub scenario: Scenario,
    /// Who or what it happened to, as the scenario's rules name it in their alerts' entity:
    /// an address, a user, a badge, a host or an asset (the value of [`Incident::field`]).
    pub entity: String,
    /// The field of the scenario's stream holding [`Incident::entity`] (`src_ip`, `user`,
    /// `host`, `badge_id`, `asset`): tells whether it is personal, and pseudonymised in alerts.
    pub field: &'static str,
    /// When its first event happened, or the equipment began to misbehave (ms).
    pub start_ms: i64,
    /// When its last event happened, or the equipment was back to normal (ms, exclusive).
    pub end_ms: i64,
}

/// What a scenario is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An intrusion the signature rules name (`rules/*/*.sql`, Sigma).
    Attack,
    /// Field equipment misbehaving, by fault or by tampering: the equipment baselines' work.
    Equipment,
    /// A member of staff (or their stolen credentials) behaving unlike themselves: the
    /// behaviour baselines' work.
    Insider,
}

/// A scenario the simulator can inject, each caught by the shipped rules of
/// [`Scenario::rule_ids`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    /// A reservoir's level transmitter freezes on its last reading for 25-35 minutes.
    SensorStuck,
    /// A treatment plant's flow meter sends nothing for 12-20 minutes.
    SensorSilent,
    /// A treatment plant's outlet pressure reads 1.2-1.8 bar high for 8-12 minutes: a plausible
    /// value, far from the sensor's own recent readings.
    SensorOffset,
    /// A running pump cavitates for 15-25 minutes: its flow falls to 50-65 % of its duty point
    /// and its pressure rise sags while the motor draws nearly its usual current.
    PumpCavitation,
    /// A pump station's controller starts its pump, and the pump does not run: no current, no
    /// flow, for the whole run (at most 20 minutes).
    PumpNoFlow,
    /// An office worker's account signs in to the VPN from a far Canadian city minutes after
    /// they signed in at their desk in Ottawa.
    ImpossibleTravel,
    /// An office PC pulls video from 35-40 street cameras within two minutes.
    CameraGrab,
    /// An office worker signs in to a control-room system they have never used.
    NewSystemLogin,
    /// An operator signs in to their HMI outside their shift.
    OffHoursLogin,
}

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

impl Scenario {
    /// Every scenario: the attacks in the order of their first occurrence, then equipment,
    /// then insiders.
    pub const ALL: [Scenario; 16] = [
        Scenario::PortScan,
        Scenario::PasswordSpray,
        Scenario::RogueSetpoint,
        Scenario::VpnForeignLogin,
        Scenario::RevokedBadge,
        Scenario::SensorTamper,
        Scenario::LprExfiltration,
        Scenario::SensorStuck,
        Scenario::SensorSilent,
        Scenario::SensorOffset,
        Scenario::PumpCavitation,
        Scenario::PumpNoFlow,
        Scenario::ImpossibleTravel,
        Scenario::CameraGrab,
        Scenario::NewSystemLogin,
        Scenario::OffHoursLogin,
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
            Scenario::SensorStuck => "sensor_stuck",
            Scenario::SensorSilent => "sensor_silent",
            Scenario::SensorOffset => "sensor_offset",
            Scenario::PumpCavitation => "pump_cavitation",
            Scenario::PumpNoFlow => "pump_no_flow",
            Scenario::ImpossibleTravel => "impossible_travel",
            Scenario::CameraGrab => "camera_grab",
            Scenario::NewSystemLogin => "new_system_login",
            Scenario::OffHoursLogin => "off_hours_login",
        }
    }

    /// The scenario called `s` (exact, lower-case name), if any.
    pub fn from_name(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|sc| sc.name() == s)
    }

    /// Attack, equipment or insider.
    pub fn kind(self) -> Kind {
        match self {
            Scenario::PortScan
            | Scenario::PasswordSpray
            | Scenario::RogueSetpoint
            | Scenario::VpnForeignLogin
            | Scenario::RevokedBadge
            | Scenario::SensorTamper
            | Scenario::LprExfiltration => Kind::Attack,
            Scenario::SensorStuck
            | Scenario::SensorSilent
            | Scenario::SensorOffset
            | Scenario::PumpCavitation
            | Scenario::PumpNoFlow => Kind::Equipment,
            Scenario::ImpossibleTravel
            | Scenario::CameraGrab
            | Scenario::NewSystemLogin
            | Scenario::OffHoursLogin => Kind::Insider,
        }
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
            Scenario::SensorStuck | Scenario::SensorSilent => &["equipment.sensor_silence"],
            Scenario::SensorOffset => &["equipment.sensor_deviation"],
            Scenario::PumpCavitation => &["equipment.pump_behaviour"],
            Scenario::PumpNoFlow => &["equipment.pump_no_flow"],
            Scenario::ImpossibleTravel => &["ueba.impossible_travel"],
            Scenario::CameraGrab => &["ueba.host_fan_out"],
            Scenario::NewSystemLogin => &["ueba.user_new_target"],
            Scenario::OffHoursLogin => &["ueba.unusual_hour"],
        }
    }

    /// The stream (as named in `deploy/palisade.toml`) its events go to.
    pub fn stream(self) -> &'static str {
        match self {
            Scenario::PortScan | Scenario::LprExfiltration | Scenario::CameraGrab => "netflow",
            Scenario::PasswordSpray
            | Scenario::VpnForeignLogin
            | Scenario::ImpossibleTravel
            | Scenario::NewSystemLogin
            | Scenario::OffHoursLogin => "auth",
            Scenario::RogueSetpoint => "scada",
            Scenario::RevokedBadge => "badge",
            Scenario::SensorTamper
            | Scenario::SensorStuck
            | Scenario::SensorSilent
            | Scenario::SensorOffset => "sensors",
            Scenario::PumpCavitation | Scenario::PumpNoFlow => "pumps",
        }
    }

    /// When, after the simulation's start, the scenario is first due (ms; plus up to a minute
    /// of jitter). Attacks need no history: from +3 min, 5 minutes apart. The others wait for
    /// what their baselines learn first: equipment from +2 h 30 (the pumps' model learns from
    /// two hours of polls); impossible travel and the camera grab from +1 h (a previous
    /// location; an hour of the PC's traffic); a login to a new system from +6 h 30 (a user's
    /// systems are learnt over their first six hours); a login off shift from +24 h 30 (a
    /// person's hours, over their first day).
    pub fn first_slot_ms(self) -> i64 {
        match self {
            Scenario::PortScan => 3 * MINUTE,
            Scenario::PasswordSpray => 8 * MINUTE,
            Scenario::RogueSetpoint => 13 * MINUTE,
            Scenario::VpnForeignLogin => 18 * MINUTE,
            Scenario::RevokedBadge => 23 * MINUTE,
            Scenario::SensorTamper => 28 * MINUTE,
            Scenario::LprExfiltration => 33 * MINUTE,
            Scenario::SensorStuck => 2 * HOUR + 30 * MINUTE,
            Scenario::SensorSilent => 2 * HOUR + 40 * MINUTE,
            Scenario::SensorOffset => 2 * HOUR + 50 * MINUTE,
            Scenario::PumpCavitation => 3 * HOUR,
            Scenario::PumpNoFlow => 3 * HOUR + 10 * MINUTE,
            Scenario::ImpossibleTravel => HOUR,
            Scenario::CameraGrab => HOUR + 30 * MINUTE,
            Scenario::NewSystemLogin => 6 * HOUR + 30 * MINUTE,
            Scenario::OffHoursLogin => 24 * HOUR + 30 * MINUTE,
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
    /// The streams the simulator writes, in `deploy/palisade.toml` order.
    pub const STREAMS: [&'static str; 6] = benign::STREAMS;

    /// Builds the city for `opts.seed` and plans the first occurrence of each scenario.
    /// Cheap: nothing is generated until [`Simulator::next_second`]. Stream names that are not
    /// in [`Simulator::STREAMS`] are ignored.
    pub fn new(opts: SimOptions) -> Simulator {
        let enabled = Simulator::STREAMS.map(|s| {
            opts.streams
                .as_ref()
                .is_none_or(|only| only.iter().any(|o| o == s))
        });
        // A scenario whose stream is not generated does not happen at all (no incident).
        let scenarios: Vec<Scenario> = opts
            .scenarios
            .iter()
            .copied()
            .filter(|s| {
                let i = Simulator::STREAMS.iter().position(|&n| n == s.stream());
                i.is_some_and(|i| enabled[i])
            })
            .collect();
        Simulator {
            now_ms: opts.start_ms,
            end_ms: opts
                .duration_ms
                .map(|d| opts.start_ms.saturating_add(d.max(0))),
            background: Background::new(opts.seed, enabled),
            attacks: Attacks::new(opts.seed, opts.start_ms, &scenarios),
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
        // Scenarios due this second go first: an equipment scenario arms the tamper the
        // background then applies as it renders the second's readings.
        self.attacks
            .fire(start, &mut self.background, &mut self.pool);
        let mut sink = Sink {
            out,
            pool: &mut self.pool,
        };
        self.background.second(start, &mut sink);
        self.attacks.emit(start, out);
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

    /// Moves the incidents that have started by now ([`Simulator::now_ms`]) into `out`, each
    /// once; one planned to start after the end of the run never is. Call it as you go: they
    /// are held until taken.
    pub fn take_incidents(&mut self, out: &mut Vec<Incident>) {
        let now = self.now_ms;
        let pending = &mut self.attacks.incidents;
        out.extend(pending.iter().filter(|i| i.start_ms < now).cloned());
        pending.retain(|i| i.start_ms >= now);
    }
}
