//! The benign background: what the city's six streams carry when nobody is attacking.
//!
//! In: the start of a simulated second, and the tampers the equipment scenarios armed. Out: that
//! second's benign events, rendered through a [`Sink`], in generation order (the caller sorts
//! by time); a reading or poll a tamper acts on is rendered labelled, or not at all.
//! Guarantees: each stream draws from its own generator, and tampers change only what is
//! rendered, never what is drawn, so the background is the same whatever scenarios are
//! injected (and whichever streams are generated); and no benign event satisfies a shipped
//! rule (see the invariants in `city.rs`; setpoint writes come only from `ews-01`/`ews-02` with
//! chlorine doses in 1.5..=2.5 mg/L; badge denials are `no_access` / `out_of_hours`, never
//! `revoked`; VPN logins come only from Canada; sensor values are clamped to plausible ranges;
//! a pump's flow, current and pressure move together, and its flow follows its run command
//! within seconds).

use super::city::{self, ASSETS, City, Desk, Metric, PUMP_NAMES, Role, Shift, curve, hour_of};
use super::events::{Auth, Badge, Flow, PumpPoll, Reading, Scada, Sink};
use super::rng::{Rng, hash_unit};
use super::tamper::{Effect, Tampers, Target};

/// Peak rates, events per simulated second.
pub(crate) const NETFLOW_HUMAN_PEAK: f64 = 80.0;
/// Polling, video and kiosk traffic that runs around the clock.
pub(crate) const NETFLOW_MACHINE: f64 = 20.0;
/// Logins per second of each person at work (about 3/s in office hours, 0.1/s at night).
const AUTH_OFFICE: f64 = 0.085;
const AUTH_OPERATOR: f64 = 0.05;
const AUTH_VENDOR: f64 = 0.01;
/// Badge swipes per second of each person at work (about 1/s in office hours).
const BADGE_OFFICE: f64 = 0.027;
const BADGE_OPERATOR: f64 = 0.03;
pub(crate) const SCADA_PEAK: f64 = 1.5;

/// Generator tags: one independent random stream per consumer.
const TAG_CITY: u64 = 1;
const TAG_NET: u64 = 2;
const TAG_AUTH: u64 = 3;
const TAG_BADGE: u64 = 4;
const TAG_SCADA: u64 = 5;
const TAG_SENSORS: u64 = 6;
const TAG_PUMPS: u64 = 7;

const OK: &str = "ok";

/// The streams the simulator writes, in `deploy/palisade.toml` order.
pub(crate) const STREAMS: [&str; 6] = ["netflow", "auth", "badge", "scada", "sensors", "pumps"];

/// One pump station: its size and its duty cycle.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pump {
    /// Flow (m3/h), motor current (A) and pressure rise (bar) at the duty point.
    flow: f64,
    current: f64,
    rise: f64,
    /// Discharge pressure with the pump stopped (static head, bar).
    pub(crate) idle_bar: f64,
    /// Length of one start-run-stop cycle (ms) and when the first one started.
    cycle_ms: i64,
    cycle_phase: i64,
    /// When in the 10 s period the station is polled (ms).
    poll_phase: i64,
    /// Slow variation of the system's head in [-1, 1]: more head, less flow, a little less
    /// current, more pressure (the pump curve), so the three move together.
    head: f64,
}

/// How long a pump takes to reach its duty point, and to stop.
const RAMP_UP_MS: i64 = 15_000;
const RAMP_DOWN_MS: i64 = 10_000;

/// Who is at work in the current hour (indices into `City::people`), recomputed when the hour
/// changes.
#[derive(Debug, Default)]
struct Roster {
    hour: Option<i64>,
    office: Vec<usize>,
    operators: Vec<usize>,
    vendors: bool,
}

pub(crate) struct Background {
    seed: u64,
    pub(crate) city: City,
    /// Which of [`STREAMS`] are generated.
    enabled: [bool; 6],
    net: Rng,
    auth: Rng,
    badge: Rng,
    scada: Rng,
    sensors: Rng,
    pumps_rng: Rng,
    roster: Roster,
    /// Chlorine dose setpoint of each water PLC (mg/L): changed by benign `ews` writes, read
    /// by the HMIs and by the rogue-setpoint scenario for its `previous`.
    pub(crate) dose: [f64; 6],
    /// Pump speed setpoint of each water PLC (%).
    pump: [f64; 6],
    /// Per asset: when in the 10 s period it reports (ms).
    phase: [i64; ASSETS.len()],
    /// Per asset: size relative to its siblings (flow, load, queue scale).
    scale: [f64; ASSETS.len()],
    /// Per asset and metric: slow noise in [-1, 1], so consecutive readings are correlated.
    wander: [[f64; 3]; ASSETS.len()],
    /// The pump stations.
    pub(crate) pumps: [Pump; PUMP_NAMES.len()],
    /// What the equipment scenarios are doing to the readings.
    pub(crate) tampers: Tampers,
}

/// A slow multiplicative wobble in [0.85, 1.15] that changes every simulated minute: a pure
/// function of (seed, stream, minute) so it does not depend on how many events came before.
fn minute_noise(seed: u64, stream: u64, ms: i64) -> f64 {
    let minute = ms.div_euclid(60_000) as u64;
    0.85 + 0.3 * hash_unit(seed ^ stream.wrapping_mul(0x9E37_79B9), minute)
}

fn ephemeral(rng: &mut Rng) -> i64 {
    rng.range(49_152, 65_535)
}

fn packets(rng: &mut Rng, bytes_out: i64, bytes_in: i64) -> i64 {
    (bytes_out + bytes_in) / 1200 + 1 + rng.range(0, 2)
}

/// The group a draw `pick` in `[0, sum of weights)` falls in: the first whose cumulative weight
/// exceeds it; never one of weight 0, even when rounding puts `pick` at the sum.
pub(crate) fn choose<const N: usize>(pick: f64, weights: [f64; N]) -> usize {
    let mut last = 0;
    let mut cumulative = 0.0;
    for (i, w) in weights.into_iter().enumerate() {
        if w <= 0.0 {
            continue;
        }
        cumulative += w;
        last = i;
        if pick < cumulative {
            return i;
        }
    }
    last
}

/// Rounds to `d` decimals, so a value stored and later written as `previous` prints the same.
fn round(v: f64, d: i32) -> f64 {
    let f = [1.0, 10.0, 100.0, 1000.0][d as usize];
    (v * f).round() / f
}

impl Background {
    /// The city of `seed`, generating the streams of [`STREAMS`] that `enabled` marks.
    pub(crate) fn new(seed: u64, enabled: [bool; 6]) -> Background {
        let mut setup = Rng::new(seed, TAG_CITY);
        let city = City::new(&mut setup);
        let mut dose = [0.0; 6];
        let mut pump = [0.0; 6];
        for i in 0..6 {
            dose[i] = round(setup.uniform(1.6, 2.4), 2);
            pump[i] = round(setup.uniform(50.0, 80.0), 1);
        }
        let mut phase = [0; ASSETS.len()];
        let mut scale = [0.0; ASSETS.len()];
        let mut wander = [[0.0; 3]; ASSETS.len()];
        for i in 0..ASSETS.len() {
            phase[i] = setup.range(0, city::REPORT_MS - 1);
            scale[i] = setup.uniform(0.8, 1.2);
            for w in &mut wander[i] {
                *w = setup.uniform(-0.5, 0.5);
            }
        }
        let pumps = std::array::from_fn(|_| {
            let flow = setup.uniform(120.0, 260.0);
            let cycle_ms = setup.range(20, 35) * 60_000;
            Pump {
                flow,
                current: flow * setup.uniform(0.18, 0.22),
                rise: setup.uniform(2.5, 3.5),
                idle_bar: setup.uniform(1.8, 2.6),
                cycle_ms,
                cycle_phase: setup.range(0, cycle_ms - 1),
                poll_phase: setup.range(0, city::REPORT_MS - 1),
                head: setup.uniform(-0.5, 0.5),
            }
        });
        Background {
            seed,
            city,
            enabled,
            net: Rng::new(seed, TAG_NET),
            auth: Rng::new(seed, TAG_AUTH),
            badge: Rng::new(seed, TAG_BADGE),
            scada: Rng::new(seed, TAG_SCADA),
            sensors: Rng::new(seed, TAG_SENSORS),
            pumps_rng: Rng::new(seed, TAG_PUMPS),
            roster: Roster::default(),
            dose,
            pump,
            phase,
            scale,
            wander,
            pumps,
            tampers: Tampers::default(),
        }
    }

    /// Generates the benign events of the second starting at `start`.
    pub(crate) fn second(&mut self, start: i64, sink: &mut Sink<'_>) {
        let human = curve(&city::HUMAN, start);
        self.update_roster(start);
        let [netflow, auth, badge, scada, sensors, pumps] = self.enabled;
        if netflow {
            self.netflow(start, human, sink);
        }
        if auth {
            self.auth(start, sink);
        }
        if badge {
            self.badge(start, sink);
        }
        if scada {
            self.scada(start, human, sink);
        }
        if sensors {
            self.sensors(start, sink);
        }
        if pumps {
            self.pumps(start, sink);
        }
        if !self.tampers.is_empty() {
            self.tampers.expire(start + 1000);
        }
    }

    fn update_roster(&mut self, start: i64) {
        let hour = start.div_euclid(3_600_000);
        if self.roster.hour == Some(hour) {
            return;
        }
        let h = hour_of(start);
        let r = &mut self.roster;
        r.hour = Some(hour);
        r.office.clear();
        r.operators.clear();
        for (i, p) in self.city.people.iter().enumerate() {
            if !p.shift.covers(h) {
                continue;
            }
            match p.role {
                Role::Operator => r.operators.push(i),
                _ => r.office.push(i),
            }
        }
        r.vendors = Shift::BUSINESS.covers(h);
    }

    fn netflow(&mut self, start: i64, human: f64, sink: &mut Sink<'_>) {
        let n_human = self
            .net
            .count(NETFLOW_HUMAN_PEAK * human * minute_noise(self.seed, TAG_NET, start));
        let n_machine = self
            .net
            .count(NETFLOW_MACHINE * minute_noise(self.seed, TAG_NET + 100, start));
        for _ in 0..n_human {
            let f = self.human_flow(start);
            sink.flow(&f, None);
        }
        for _ in 0..n_machine {
            let f = self.machine_flow(start);
            sink.flow(&f, None);
        }
    }

    /// Traffic driven by people: browsing, directory, file shares, mail, the public web site.
    fn human_flow(&mut self, start: i64) -> Flow {
        let r = &mut self.net;
        let ts = start + r.range(0, 999);
        let pc = city::pc(r.below(u64::from(city::PC_COUNT)) as u32);
        let mut f = Flow {
            ts,
            src: pc,
            sport: ephemeral(r),
            dst: 0,
            dport: 443,
            proto: "tcp",
            bytes_out: 0,
            bytes_in: 0,
            packets: 0,
            duration_ms: 0,
            action: "allow",
        };
        match r.below(100) {
            0..=44 => {
                f.dst = r.pick(&city::SAAS);
                f.dport = if r.chance(0.85) { 443 } else { 80 };
                f.bytes_out = r.heavy(400, 60_000);
                f.bytes_in = r.heavy(2_000, 8_000_000);
                f.duration_ms = r.heavy(30, 120_000);
            }
            45..=64 => {
                f.dst = r.pick(&city::DC);
                f.dport = 53;
                f.proto = "udp";
                f.bytes_out = r.range(60, 120);
                f.bytes_in = r.range(80, 500);
                f.duration_ms = r.range(0, 40);
            }
            65..=72 => {
                f.dst = r.pick(&city::DC);
                f.dport = if r.chance(0.6) { 88 } else { 389 };
                f.bytes_out = r.range(300, 4_000);
                f.bytes_in = r.range(300, 6_000);
                f.duration_ms = r.range(5, 300);
            }
            73..=80 => {
                f.dst = city::FILES;
                f.dport = 445;
                f.bytes_out = r.heavy(500, 2_000_000);
                f.bytes_in = r.heavy(1_000, 20_000_000);
                f.duration_ms = r.heavy(50, 300_000);
            }
            81..=84 => {
                f.dst = city::MAIL;
                f.dport = 993;
                f.bytes_out = r.heavy(500, 200_000);
                f.bytes_in = r.heavy(1_000, 3_000_000);
                f.duration_ms = r.heavy(100, 600_000);
            }
            85..=94 => {
                f.src = city::internet_client(r);
                f.dst = city::WWW;
                f.dport = if r.chance(0.9) { 443 } else { 80 };
                f.bytes_out = r.heavy(300, 20_000);
                f.bytes_in = r.heavy(2_000, 3_000_000);
                f.duration_ms = r.heavy(20, 60_000);
            }
            95..=96 => {
                // Staff working from home: the tunnel itself, from their own home address.
                let p = self.city.people[r.below(self.city.people.len() as u64) as usize];
                f.src = p.home;
                f.dst = city::VPN_GW;
                (f.dport, f.proto) = if r.chance(0.5) {
                    (443, "tcp")
                } else {
                    (4500, "udp")
                };
                f.bytes_out = r.heavy(5_000, 50_000_000);
                f.bytes_in = r.heavy(10_000, 200_000_000);
                f.duration_ms = r.heavy(10_000, 3_600_000);
            }
            97 => {
                // IT administrators on RDP to the servers.
                f.src = city::pc(r.below(city::ADMIN_COUNT as u64) as u32);
                f.dst = r.pick(&[city::DC[0], city::DC[1], city::FILES, city::MAIL]);
                f.dport = 3389;
                f.bytes_out = r.heavy(20_000, 5_000_000);
                f.bytes_in = r.heavy(50_000, 30_000_000);
                f.duration_ms = r.heavy(60_000, 3_600_000);
            }
            _ => {
                // Internet background noise hitting the perimeter, dropped by the firewall:
                // always one of a few well-known ports, never a sweep.
                f.src = city::internet_client(r);
                f.dst = city::WWW;
                f.dport = r.pick(&[22, 23, 445, 3389]);
                f.bytes_out = r.range(40, 60);
                f.duration_ms = 0;
                f.action = "deny";
            }
        }
        f.packets = packets(r, f.bytes_out, f.bytes_in);
        debug_assert!(city::BENIGN_PORTS.contains(&f.dport));
        f
    }

    /// Traffic that runs around the clock: OT polling, video, kiosks, time sync.
    fn machine_flow(&mut self, start: i64) -> Flow {
        let r = &mut self.net;
        let ts = start + r.range(0, 999);
        let mut f = Flow {
            ts,
            src: 0,
            sport: ephemeral(r),
            dst: 0,
            dport: 0,
            proto: "tcp",
            bytes_out: 0,
            bytes_in: 0,
            packets: 0,
            duration_ms: 0,
            action: "allow",
        };
        match r.below(20) {
            0..=7 => {
                // HMIs and the historian poll the water PLCs over Modbus/TCP.
                f.src = r.pick(&[city::HMI_WATER[0].1, city::HMI_WATER[1].1, city::HISTORIAN]);
                f.dst = city::plc(r.below(6) as usize);
                f.dport = 502;
                f.bytes_out = r.range(100, 400);
                f.bytes_in = r.range(100, 600);
                f.duration_ms = r.range(2, 50);
            }
            8..=11 => {
                f.src = city::HMI_POWER.1;
                f.dst = city::rtu(r.below(4) as usize);
                f.dport = 20_000;
                f.bytes_out = r.range(80, 300);
                f.bytes_in = r.range(100, 900);
                f.duration_ms = r.range(5, 80);
            }
            12..=14 => {
                f.src = city::TMS.1;
                f.dst = city::tsc(r.below(12) as usize);
                f.dport = 161;
                f.proto = "udp";
                f.bytes_out = r.range(80, 200);
                f.bytes_in = r.range(100, 1_400);
                f.duration_ms = r.range(1, 30);
            }
            15 => {
                // One minute of video from a camera to the recorder: cameras talk to the NVR only.
                f.src = city::camera(r.below(u64::from(city::CAMERA_COUNT)) as u32);
                f.dst = city::NVR;
                f.dport = 554;
                f.bytes_out = r.range(15_000_000, 45_000_000);
                f.bytes_in = r.range(50_000, 200_000);
                f.duration_ms = 60_000;
            }
            16 => {
                // Plate reads pushed to the parking back end in the DMZ.
                f.src = r.pick(&[city::LPR[0].1, city::LPR[1].1]);
                f.dst = city::PARKING_API;
                f.dport = 443;
                f.bytes_out = r.range(2_000, 40_000);
                f.bytes_in = r.range(500, 2_000);
                f.duration_ms = r.range(20, 400);
            }
            17..=18 => {
                f.src = city::kiosk(r.below(u64::from(city::KIOSK_COUNT)) as u32);
                f.dst = r.pick(&city::BIKESHARE_API);
                f.dport = 443;
                f.bytes_out = r.range(500, 8_000);
                f.bytes_in = r.range(500, 12_000);
                f.duration_ms = r.range(50, 1_500);
            }
            _ => {
                f.src = match r.below(4) {
                    0 => city::pc(r.below(u64::from(city::PC_COUNT)) as u32),
                    1 => city::HMI_WATER[0].1,
                    2 => city::NVR,
                    _ => city::LPR[0].1,
                };
                f.dst = r.pick(&city::DC);
                f.dport = 123;
                f.proto = "udp";
                f.bytes_out = 76;
                f.bytes_in = 76;
                f.duration_ms = r.range(0, 20);
            }
        }
        f.packets = packets(r, f.bytes_out, f.bytes_in);
        debug_assert!(city::BENIGN_PORTS.contains(&f.dport));
        f
    }

    fn auth(&mut self, start: i64, sink: &mut Sink<'_>) {
        let roster = &self.roster;
        let office = AUTH_OFFICE * roster.office.len() as f64;
        let operators = AUTH_OPERATOR * roster.operators.len() as f64;
        let vendors = if roster.vendors {
            AUTH_VENDOR * self.city.vendors.len() as f64
        } else {
            0.0
        };
        let total = office + operators + vendors;
        let n = self
            .auth
            .count(total * minute_noise(self.seed, TAG_AUTH, start));
        for _ in 0..n {
            let r = &mut self.auth;
            let ts = start + r.range(0, 999);
            let mut a = Auth {
                ts,
                user: "",
                src: 0,
                target: "",
                method: "",
                result: "success",
                reason: OK,
                country: "CA",
                city: "Ottawa",
            };
            let group = choose(r.unit() * total, [office, operators, vendors]);
            if group == 2 {
                let v = r.pick(&self.city.vendors);
                (a.user, a.src, a.city) = (v.name, v.addr, v.city);
                (a.target, a.method) = ("vpn-gw", "vpn");
            } else {
                let who = [&roster.office, &roster.operators][group];
                let p = self.city.people[who[r.below(who.len() as u64) as usize]];
                (a.user, a.src) = (p.name, p.addr);
                (a.target, a.method) = match p.desk {
                    // Operators sign in at their console, to their own desk's systems.
                    Some(Desk::Water) => match r.below(100) {
                        0..=34 => ("hmi-water-01", "password"),
                        35..=59 => ("hmi-water-02", "password"),
                        60..=69 => ("scada-historian", "password"),
                        70..=89 => ("ad", "kerberos"),
                        _ => ("mail", "password"),
                    },
                    Some(Desk::Power) => match r.below(100) {
                        0..=54 => ("hmi-power-01", "password"),
                        55..=64 => ("scada-historian", "password"),
                        65..=84 => ("ad", "kerberos"),
                        _ => ("mail", "password"),
                    },
                    Some(Desk::Traffic) => match r.below(100) {
                        0..=54 => ("traffic-mgmt-01", "password"),
                        55..=84 => ("ad", "kerberos"),
                        _ => ("mail", "password"),
                    },
                    None => match r.below(100) {
                        0..=44 => ("ad", "kerberos"),
                        45..=59 => ("mail", "password"),
                        60..=84 => ("sso", "mfa"),
                        85..=94 => ("vpn-gw", "vpn"),
                        _ => ("files-01", "kerberos"),
                    },
                };
                if a.method == "vpn" {
                    // Working from home: the tunnel from their own address, near Ottawa.
                    (a.src, a.city) = (p.home, p.home_city);
                }
            }
            // A single mistyped password (or an ignored MFA prompt), always by the account's
            // owner from their own address: nothing like a spray.
            if r.chance(0.03) {
                a.result = "failure";
                a.reason = if a.method == "mfa" && r.chance(0.5) {
                    "mfa_timeout"
                } else {
                    "bad_password"
                };
            }
            sink.auth(&a, None);
        }
    }

    fn badge(&mut self, start: i64, sink: &mut Sink<'_>) {
        let roster = &self.roster;
        let office = BADGE_OFFICE * roster.office.len() as f64;
        let operators = BADGE_OPERATOR * roster.operators.len() as f64;
        let total = office + operators;
        let n = self
            .badge
            .count(total * minute_noise(self.seed, TAG_BADGE, start));
        // The office floors open at 08:00; the lobby and the garage at 07:00.
        let early = hour_of(start) < 8;
        for _ in 0..n {
            let r = &mut self.badge;
            let who =
                [&roster.office, &roster.operators][choose(r.unit() * total, [office, operators])];
            let p = self.city.people[who[r.below(who.len() as u64) as usize]];
            let mut b = Badge {
                ts: start + r.range(0, 999),
                badge: p.badge,
                holder: p.name,
                site: "city-hall",
                door: "",
                zone: "it",
                result: "granted",
                reason: OK,
            };
            match p.desk {
                Some(Desk::Water) => {
                    b.zone = "ot-water";
                    if r.chance(0.75) {
                        b.site = "wtp-main";
                        b.door = r.pick(&[
                            "main-gate",
                            "main-gate",
                            "control-room",
                            "control-room",
                            "chem-storage",
                            "pump-hall",
                        ]);
                    } else {
                        b.site = r.pick(&city::PUMP_STATIONS);
                        b.door = "main-door";
                    }
                }
                Some(Desk::Power) => {
                    (b.site, b.zone, b.door) = ("substation-east", "ot-power", "control-building");
                }
                Some(Desk::Traffic) => {
                    (b.site, b.zone, b.door) = ("traffic-ops", "traffic", "main-entrance");
                }
                None => {
                    b.door = match r.below(100) {
                        0..=44 => "main-entrance",
                        45..=64 => "floor-2",
                        65..=84 => "floor-3",
                        85..=96 => "parking-garage",
                        _ => "server-room",
                    };
                    if b.door == "server-room" && p.role != Role::Admin {
                        (b.result, b.reason) = ("denied", "no_access");
                    } else if early && b.door.starts_with("floor") && r.chance(0.5) {
                        (b.result, b.reason) = ("denied", "out_of_hours");
                    }
                }
            }
            // Someone trying a door they have no business with, now and then.
            if b.result == "granted" && r.chance(0.01) {
                (b.result, b.reason) = ("denied", "no_access");
            }
            sink.badge(&b, None);
        }
    }

    fn scada(&mut self, start: i64, human: f64, sink: &mut Sink<'_>) {
        // Operators watch the plant around the clock; more so in the day.
        let n = self
            .scada
            .count(SCADA_PEAK * (0.35 + 0.65 * human) * minute_noise(self.seed, TAG_SCADA, start));
        let on_duty = &self.roster.operators;
        if on_duty.is_empty() {
            return;
        }
        for _ in 0..n {
            let r = &mut self.scada;
            let ts = start + r.range(0, 999);
            let p = self.city.people[on_duty[r.below(on_duty.len() as u64) as usize]];
            let operator = p.name;
            let kind = r.below(1000);
            let desk = p.desk.unwrap_or(Desk::Water);
            let e = if desk == Desk::Water && kind < 6 {
                // Engineering change from an engineering workstation, within the safe band.
                let (host, src) = r.pick(&city::EWS);
                let i = r.below(6) as usize;
                let (tag, value, previous) = if r.chance(0.7) {
                    let v = round(r.uniform(1.5, 2.5), 2);
                    let prev = std::mem::replace(&mut self.dose[i], v);
                    ("cl2_dose_setpoint", v, prev)
                } else {
                    let v = round(r.uniform(40.0, 90.0), 1);
                    let prev = std::mem::replace(&mut self.pump[i], v);
                    ("pump_speed_setpoint", v, prev)
                };
                Scada {
                    ts,
                    operator,
                    host,
                    src,
                    asset: city::PLC_NAMES[i],
                    domain: "water",
                    action: "setpoint_write",
                    tag,
                    value,
                    previous,
                }
            } else {
                let ack = kind < 83;
                let (host, src, asset, domain, tag, value, previous) = match desk {
                    Desk::Water => {
                        let (host, src) = r.pick(&city::HMI_WATER);
                        let i = r.below(6) as usize;
                        let (tag, v, p) = if ack {
                            let tag = r.pick(&[
                                "alarm.low_cl2_residual",
                                "alarm.high_turbidity",
                                "alarm.pump_trip",
                                "alarm.low_pressure",
                                "alarm.comm_loss",
                            ]);
                            (tag, 1.0, 0.0)
                        } else {
                            match r.below(5) {
                                0 => {
                                    let v = r.uniform(1.0, 2.0);
                                    ("cl2_residual", v, v + r.uniform(-0.03, 0.03))
                                }
                                1 => ("cl2_dose_setpoint", self.dose[i], self.dose[i]),
                                2 => {
                                    let v = r.uniform(2.0, 8.0);
                                    ("tank_level_m", v, v + r.uniform(-0.05, 0.05))
                                }
                                3 => ("pump_speed_pct", self.pump[i], self.pump[i]),
                                _ => {
                                    let v = r.uniform(0.05, 0.5);
                                    ("turbidity_ntu", v, v + r.uniform(-0.02, 0.02))
                                }
                            }
                        };
                        (host, src, city::PLC_NAMES[i], "water", tag, v, p)
                    }
                    Desk::Power => {
                        let i = r.below(4) as usize;
                        let (tag, v, p) = if ack {
                            let tag = r.pick(&[
                                "alarm.breaker_trip",
                                "alarm.overload",
                                "alarm.comm_loss",
                            ]);
                            (tag, 1.0, 0.0)
                        } else {
                            match r.below(3) {
                                0 => ("breaker_state", 1.0, 1.0),
                                1 => {
                                    let v = r.uniform(13.5, 14.1);
                                    ("voltage_kv", v, v + r.uniform(-0.02, 0.02))
                                }
                                _ => {
                                    let v = r.uniform(2.0, 12.0);
                                    ("load_mw", v, v + r.uniform(-0.2, 0.2))
                                }
                            }
                        };
                        let (host, src) = city::HMI_POWER;
                        (host, src, city::RTU_NAMES[i], "power", tag, v, p)
                    }
                    Desk::Traffic => {
                        let i = r.below(12) as usize;
                        let (tag, v, p) = if ack {
                            let tag = r.pick(&[
                                "alarm.detector_fault",
                                "alarm.cabinet_door",
                                "alarm.comm_loss",
                            ]);
                            (tag, 1.0, 0.0)
                        } else {
                            match r.below(3) {
                                0 => {
                                    let v = r.range(1, 8) as f64;
                                    ("phase", v, if v > 1.0 { v - 1.0 } else { 8.0 })
                                }
                                1 => {
                                    let v = r.range(1, 5) as f64;
                                    ("plan", v, v)
                                }
                                _ => {
                                    let v = r.range(0, 40) as f64;
                                    ("detector_count", v, (v - r.range(0, 3) as f64).max(0.0))
                                }
                            }
                        };
                        let (host, src) = city::TMS;
                        (host, src, city::TSC_NAMES[i], "traffic", tag, v, p)
                    }
                };
                Scada {
                    ts,
                    operator,
                    host,
                    src,
                    asset,
                    domain,
                    action: if ack { "ack_alarm" } else { "read" },
                    tag,
                    value,
                    previous,
                }
            };
            sink.scada(&e, None);
        }
    }

    fn sensors(&mut self, start: i64, sink: &mut Sink<'_>) {
        let water = curve(&city::WATER, start);
        let power = curve(&city::POWER, start);
        let traffic = curve(&city::TRAFFIC, start);
        for (i, a) in ASSETS.iter().enumerate() {
            // The one report of this asset that falls in [start, start + 1 s), if any.
            let offset = (self.phase[i] - start).rem_euclid(city::REPORT_MS);
            if offset >= 1000 {
                continue;
            }
            let ts = start + offset;
            let scale = self.scale[i];
            for (m, &metric) in a.metrics.iter().enumerate() {
                let w = &mut self.wander[i][m];
                *w = (0.85 * *w + 0.15 * self.sensors.noise()).clamp(-1.0, 1.0);
                let w = *w;
                let mut value = match metric {
                    Metric::Chlorine => (1.55 - 0.35 * (water - 0.6) + 0.12 * w).clamp(1.0, 2.0),
                    Metric::Pressure => (5.2 - 1.4 * water + 0.25 * w).clamp(3.0, 6.0),
                    Metric::Flow => (scale * (60.0 + 340.0 * water) * (1.0 + 0.05 * w)).max(5.0),
                    Metric::Level => (5.8 - 1.8 * water + 0.3 * w).clamp(3.0, 8.0),
                    Metric::Voltage => (13.8 + 0.15 * (0.6 - power) + 0.08 * w).clamp(13.5, 14.1),
                    Metric::Load => (scale * (2.5 + 9.5 * power) * (1.0 + 0.04 * w)).max(0.5),
                    Metric::Frequency => 60.0 + 0.015 * w,
                    Metric::Queue => (scale * 22.0 * traffic + 2.5 * w + 0.5).max(0.0).floor(),
                };
                let mut label = None;
                if let Some(t) = self.tampers.at(Target::Sensor { asset: i, metric }, ts) {
                    label = Some(t.label);
                    match &mut t.effect {
                        Effect::Withhold => continue,
                        Effect::Freeze(stuck) => value = *stuck.get_or_insert(value),
                        Effect::Offset(d) => value += *d,
                        Effect::Cavitation { .. } | Effect::NoStart => {}
                    }
                }
                let r = Reading {
                    ts,
                    asset: a.name,
                    domain: a.domain,
                    metric,
                    value,
                };
                sink.reading(&r, label);
            }
        }
    }

    /// The run command of pump `i` at `t`: the start of the cycle `t` falls in, and when the
    /// pump is commanded off in that cycle (the pump runs while `t` is before it). A pure
    /// function of the time: scenarios ask it when the next start is.
    pub(crate) fn pump_cycle(&self, i: usize, t: i64) -> (i64, i64) {
        let p = &self.pumps[i];
        let k = (t - p.cycle_phase).div_euclid(p.cycle_ms);
        let start = p.cycle_phase + k * p.cycle_ms;
        // Pumps run longer when demand is high; each cycle a little differently.
        let jitter = hash_unit(
            self.seed ^ (i as u64 + 1).wrapping_mul(0x2545_F491),
            k as u64,
        );
        let duty = (0.35 + 0.5 * curve(&city::WATER, start)) * (0.95 + 0.1 * jitter);
        (start, start + (duty * p.cycle_ms as f64) as i64)
    }

    /// The first start of pump `i` at or after `t`.
    pub(crate) fn next_pump_start(&self, i: usize, t: i64) -> i64 {
        let (start, _) = self.pump_cycle(i, t);
        if start >= t {
            start
        } else {
            start + self.pumps[i].cycle_ms
        }
    }

    fn pumps(&mut self, start: i64, sink: &mut Sink<'_>) {
        for (i, &name) in PUMP_NAMES.iter().enumerate() {
            let offset = (self.pumps[i].poll_phase - start).rem_euclid(city::REPORT_MS);
            if offset >= 1000 {
                continue;
            }
            let ts = start + offset;
            let (cycle, stop) = self.pump_cycle(i, ts);
            let on = ts < stop;
            // How far the pump is towards its duty point: ramping up after the command,
            // down after it is withdrawn.
            let frac = if on {
                ((ts - cycle) as f64 / RAMP_UP_MS as f64).min(1.0)
            } else {
                (1.0 - (ts - stop) as f64 / RAMP_DOWN_MS as f64).max(0.0)
            };
            let r = &mut self.pumps_rng;
            let p = &mut self.pumps[i];
            p.head = (0.95 * p.head + 0.1 * r.noise()).clamp(-1.0, 1.0);
            let (n1, n2, n3) = (r.noise(), r.noise(), r.noise());
            let mut current = frac * p.current * (1.0 - 0.02 * p.head) * (1.0 + 0.005 * n1);
            let mut flow = frac * p.flow * (1.0 - 0.05 * p.head) * (1.0 + 0.008 * n2);
            let idle = p.idle_bar * (1.0 + 0.004 * n3);
            let mut rise = frac * p.rise * (1.0 + 0.04 * p.head);
            let mut label = None;
            if let Some(t) = self.tampers.at(Target::Pump(i), ts) {
                label = Some(t.label);
                match t.effect {
                    Effect::Cavitation {
                        flow: f,
                        current: c,
                        head: h,
                    } => {
                        flow *= f;
                        current *= c;
                        // Vapour bubbles collapsing: the discharge pressure sags and shakes.
                        rise *= h * (1.0 + 0.06 * n1);
                    }
                    Effect::NoStart => (current, flow, rise) = (0.0, 0.0, 0.0),
                    Effect::Freeze(_) | Effect::Withhold | Effect::Offset(_) => {}
                }
            }
            let poll = PumpPoll {
                ts,
                asset: name,
                cmd: i64::from(on),
                current_a: current,
                pressure_bar: idle + rise,
                flow_m3h: flow,
            };
            sink.pump(&poll, label);
        }
    }
}
