//! Scenarios: when each one fires, and what it does: a labelled burst of events (attacks,
//! insiders) or a tamper on a series of readings (equipment).
//!
//! In: the enabled scenarios, the simulation start, and the benign city (its people and their
//! hours, the plant state for `previous` values, the pumps' cycles); equipment scenarios arm
//! their tampers on it. Out: labelled records, queued until their second comes, and one
//! [`Incident`] per occurrence.
//! Guarantees:
//! - the first occurrence of a scenario is due at `start + first_slot_ms` plus up to one
//!   minute of jitter: the attacks' bursts last at most one minute, so every first attack is
//!   over within 40 simulated minutes; an equipment or insider scenario with no victim in the
//!   right situation then (nobody at work yet, no baseline old enough) looks again every
//!   10 minutes; later occurrences follow every 6 h ± 20 min;
//! - each scenario draws from its own generator, so enabling one never changes another's
//!   events, nor the background (tampers change only what the background renders);
//! - every labelled event, on its own or with the rest of its burst, satisfies the rules in
//!   [`Scenario::rule_ids`] (aggregate rules on any one-second slice of the burst), and the
//!   victims are chosen so that no other shipped rule fires: an insider acts within their
//!   hours (but the one who signs in off shift), from their own address, on systems they use
//!   (but the one who signs in to a new one), and never twice the same way where a repeat
//!   would no longer be new to the baseline.

use super::benign::Background;
use super::city::{self, ASSETS, Desk, Metric, PUMP_NAMES, Role, ip};
use super::emit::push_ip;
use super::events::{Auth, Badge, Flow, Reading, Scada, Sink};
use super::rng::Rng;
use super::tamper::{Effect, Tamper, Target};
use super::{Incident, Scenario, SimRecord};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

/// How long a scenario with no suitable victim waits before looking again.
const RETRY_MS: i64 = 10 * MINUTE;

/// The host that writes the rogue setpoint: a vendor laptop plugged into the plant network.
pub(crate) const ROGUE_HOST: (&str, u32) = ("laptop-vendor-7", ip(10, 99, 0, 23));
/// The PLC whose chlorine dosing it changes (index into `PLC_NAMES`: wtp-plc-03).
const ROGUE_PLC: usize = 2;

/// User names a sprayer tries on top of the city's real ones (they fail as `unknown_user`).
const GUESSES: [&str; 25] = [
    "admin",
    "administrator",
    "operator",
    "scada",
    "hmi",
    "engineer",
    "maint",
    "service",
    "support",
    "test",
    "guest",
    "user",
    "root",
    "backup",
    "plc",
    "water",
    "wtp",
    "control",
    "supervisor",
    "manager",
    "sysadmin",
    "opc",
    "historian",
    "tech",
    "night.shift",
];

/// Where sprays come from: (a /24, country, city).
const SPRAY_SOURCES: [([u8; 3], &str, &str); 5] = [
    ([185, 220, 101], "DE", "Frankfurt"),
    ([45, 155, 205], "NL", "Amsterdam"),
    ([193, 32, 162], "RU", "Moscow"),
    ([103, 75, 190], "VN", "Hanoi"),
    ([179, 60, 147], "BR", "Sao Paulo"),
];

/// Where a stolen vendor credential is used from: never CA or US.
const FOREIGN_VPN: [([u8; 3], &str, &str); 6] = [
    ([95, 173, 136], "RU", "Moscow"),
    ([116, 62, 51], "CN", "Hangzhou"),
    ([5, 160, 218], "IR", "Tehran"),
    ([41, 58, 104], "NG", "Lagos"),
    ([86, 105, 9], "RO", "Bucharest"),
    ([177, 67, 82], "BR", "Sao Paulo"),
];

/// Exfiltration drop points: (a /24).
const DROP_SITES: [[u8; 3]; 3] = [[45, 86, 200], [91, 215, 85], [194, 26, 29]];

/// Badges taken off people who left: (holder, badge number). Never in the active list.
const FORMER_STAFF: [(&str, u32); 3] = [
    ("r.lalonde", 90_311),
    ("d.vachon", 90_487),
    ("k.chartrand", 90_522),
];

/// Far from Ottawa, in Canada (so no rule on foreign logins fires): where a stolen office
/// credential is used from. (a /24 of a Canadian ISP, city.)
const FAR_CITIES: [([u8; 3], &str); 5] = [
    ([24, 86, 143], "Vancouver"),
    ([68, 144, 35], "Calgary"),
    ([70, 74, 201], "Edmonton"),
    ([24, 76, 19], "Winnipeg"),
    ([142, 68, 90], "Halifax"),
];

/// Control-room systems no office worker uses: where one signs in out of curiosity or worse.
const CONTROL_SYSTEMS: [&str; 5] = [
    "hmi-water-01",
    "hmi-water-02",
    "hmi-power-01",
    "traffic-mgmt-01",
    "scada-historian",
];

/// How long a person must have been seen before their baselines know them: their systems
/// (`ueba.user_new_target` learns for six hours), their hours (`ueba.unusual_hour`, a day),
/// plus ten minutes of slack.
const KNOWS_SYSTEMS_MS: i64 = 6 * HOUR + 10 * MINUTE;
const KNOWS_HOURS_MS: i64 = 24 * HOUR + 10 * MINUTE;
fn in_net(rng: &mut Rng, net: [u8; 3]) -> u32 {
    ip(net[0], net[1], net[2], 2 + rng.below(252) as u8)
}

fn ip_text(addr: u32) -> String {
    let mut b = Vec::with_capacity(15);
    push_ip(&mut b, addr);
    String::from_utf8(b).expect("an address is ASCII")
}

struct Planned {
    scenario: Scenario,
    rng: Rng,
    next_at: i64,
    /// What earlier occurrences used that a repeat must not (a person with a system, or with
    /// an hour of the day): the baseline knows it now.
    used: Vec<(usize, usize)>,
}

pub(crate) struct Attacks {
    /// The simulation's start: people are known to the baselines from their first hour at
    /// work after it.
    sim_start: i64,
    planned: Vec<Planned>,
    /// Labelled records not yet due, sorted by `ts_ms` (stable: bursts keep their order).
    pending: Vec<SimRecord>,
    /// Occurrences planned and not yet taken by [`super::Simulator::take_incidents`].
    pub(crate) incidents: Vec<Incident>,
}

impl Attacks {
    pub(crate) fn new(seed: u64, start: i64, scenarios: &[Scenario]) -> Attacks {
        let planned = Scenario::ALL
            .iter()
            .enumerate()
            .filter(|(_, s)| scenarios.contains(s))
            .map(|(i, &scenario)| {
                let mut rng = Rng::new(seed, 100 + i as u64);
                let next_at = start + scenario.first_slot_ms() + rng.range(0, MINUTE - 1);
                Planned {
                    scenario,
                    rng,
                    next_at,
                    used: Vec::new(),
                }
            })
            .collect();
        Attacks {
            sim_start: start,
            planned,
            pending: Vec::new(),
            incidents: Vec::new(),
        }
    }

    /// When each enabled scenario fires next (for tests and logs).
    #[cfg(test)]
    pub(crate) fn schedule(&self) -> Vec<(Scenario, i64)> {
        self.planned
            .iter()
            .map(|p| (p.scenario, p.next_at))
            .collect()
    }

    /// Starts the occurrences due in the second `[start, start + 1 s)`: bursts are queued,
    /// tampers armed on `bg` (before it renders the second).
    pub(crate) fn fire(
        &mut self,
        start: i64,
        bg: &mut Background,
        pool: &mut Vec<(String, Vec<u8>)>,
    ) {
        let end = start + 1000;
        let mut fired = false;
        for p in &mut self.planned {
            while p.next_at < end {
                let mut sink = Sink {
                    out: &mut self.pending,
                    pool,
                };
                match occur(p, self.sim_start, bg, &mut sink) {
                    Some(incident) => {
                        self.incidents.push(incident);
                        p.next_at += 6 * HOUR + p.rng.range(-20 * MINUTE, 20 * MINUTE);
                        fired = true;
                    }
                    None => p.next_at += RETRY_MS,
                }
            }
        }
        if fired {
            self.pending.sort_by_key(|r| r.ts_ms);
        }
    }

    /// Moves every queued record of the second `[start, start + 1 s)` into `out`.
    pub(crate) fn emit(&mut self, start: i64, out: &mut Vec<SimRecord>) {
        let due = self.pending.partition_point(|r| r.ts_ms < start + 1000);
        out.extend(self.pending.drain(..due));
    }
}

/// How long `shift`'s person has been at work at `t` (ms), if they are.
fn at_work_for(shift: city::Shift, t: i64) -> Option<i64> {
    let h = city::hour_of(t);
    shift
        .covers(h)
        .then(|| i64::from((h + 24 - shift.start) % 24) * HOUR + t.rem_euclid(HOUR))
}

/// The next occurrence of `p`'s scenario, due at `p.next_at`: its events queued in `sink`, its
/// tamper armed on `bg`; `None` when nobody is in a situation to be its victim yet.
fn occur(
    p: &mut Planned,
    sim_start: i64,
    bg: &mut Background,
    sink: &mut Sink<'_>,
) -> Option<Incident> {
    let (s, at, rng) = (p.scenario, p.next_at, &mut p.rng);
    let label = s.name();
    let incident = |entity: String, field: &'static str, start_ms: i64, end_ms: i64| Incident {
        scenario: s,
        entity,
        field,
        start_ms,
        end_ms,
    };
    // Indices into `ASSETS` of the assets reporting `m`.
    let with = |m: Metric| -> Vec<usize> {
        (0..ASSETS.len())
            .filter(|&i| ASSETS[i].metrics.contains(&m))
            .collect()
    };
    let mut tamper = |asset: usize, metric: Metric, effect: Effect, until: i64| {
        bg.tampers.arm(Tamper {
            target: Target::Sensor { asset, metric },
            effect,
            from: at,
            until,
            label,
        });
        Some(incident(ASSETS[asset].name.to_string(), "asset", at, until))
    };
    match s {
        Scenario::SensorStuck => {
            // A fouled float: the level transmitter repeats its last reading.
            let asset = rng.pick(&with(Metric::Level));
            let until = at + rng.range(25, 35) * MINUTE;
            tamper(asset, Metric::Level, Effect::Freeze(None), until)
        }
        Scenario::SensorSilent => {
            // A plant's flow meter's link is down (or cut): nothing arrives from it, the rest
            // of the plant reports.
            let plants: Vec<usize> = with(Metric::Flow);
            let asset = rng.pick(&plants);
            let until = at + rng.range(12, 20) * MINUTE;
            tamper(asset, Metric::Flow, Effect::Withhold, until)
        }
        Scenario::SensorOffset => {
            // Readings shifted by a fixed amount: a plausible pressure, wrong by 1.2-1.8 bar.
            let asset = rng.pick(&with(Metric::Pressure));
            let offset = (rng.uniform(1.2, 1.8) * 100.0).round() / 100.0;
            let until = at + rng.range(8, 12) * MINUTE;
            tamper(asset, Metric::Pressure, Effect::Offset(offset), until)
        }
        Scenario::PumpCavitation => {
            // While the pump runs, at least a minute after it started (past its ramp), on a
            // station no other scenario is acting on.
            let first = rng.below(PUMP_NAMES.len() as u64) as usize;
            let length = rng.range(15, 25) * MINUTE;
            let effect = Effect::Cavitation {
                flow: rng.uniform(0.5, 0.65),
                current: rng.uniform(0.85, 0.92),
                head: rng.uniform(0.65, 0.8),
            };
            let (i, from, until) = (0..PUMP_NAMES.len())
                .map(|k| (first + k) % PUMP_NAMES.len())
                .find_map(|i| {
                    let mut t = at;
                    let (from, until) = loop {
                        let (cycle, stop) = bg.pump_cycle(i, t);
                        let from = t.max(cycle + MINUTE);
                        if t < stop && stop - from >= 10 * MINUTE {
                            break (from, stop.min(from + length));
                        }
                        t = bg.next_pump_start(i, t + 1);
                    };
                    let free = !bg.tampers.busy(Target::Pump(i), from, until);
                    free.then_some((i, from, until))
                })?;
            bg.tampers.arm(Tamper {
                target: Target::Pump(i),
                effect,
                from,
                until,
                label,
            });
            Some(incident(PUMP_NAMES[i].to_string(), "asset", from, until))
        }
        Scenario::PumpNoFlow => {
            // From the pump's next start until it is commanded off (20 minutes at most), on a
            // station no other scenario is acting on.
            let first = rng.below(PUMP_NAMES.len() as u64) as usize;
            let (i, from, until) = (0..PUMP_NAMES.len())
                .map(|k| (first + k) % PUMP_NAMES.len())
                .find_map(|i| {
                    let from = bg.next_pump_start(i, at);
                    let (_, stop) = bg.pump_cycle(i, from);
                    let until = stop.min(from + 20 * MINUTE);
                    (!bg.tampers.busy(Target::Pump(i), from, until)).then_some((i, from, until))
                })?;
            bg.tampers.arm(Tamper {
                target: Target::Pump(i),
                effect: Effect::NoStart,
                from,
                until,
                label,
            });
            Some(incident(PUMP_NAMES[i].to_string(), "asset", from, until))
        }
        Scenario::ImpossibleTravel => {
            // An office worker at their desk for at least ten minutes (so the baseline has
            // their place): the account signs in to the VPN from across the country.
            let victims: Vec<usize> = office_at_work(bg, at, 10 * MINUTE, 0, sim_start);
            let v = bg.city.people[*pick(rng, &victims)?];
            let (net, far) = rng.pick(&FAR_CITIES);
            let a = Auth {
                ts: at,
                user: v.name,
                src: in_net(rng, net),
                target: "vpn-gw",
                method: "vpn",
                result: "success",
                reason: "ok",
                country: "CA",
                city: far,
            };
            sink.auth(&a, Some(label));
            Some(incident(v.name.to_string(), "user", at, at + 1))
        }
        Scenario::CameraGrab => {
            // Within one 5-minute window (the fan-out baseline's), so the count is not split.
            let window = 5 * MINUTE;
            let t0 = (at.div_euclid(window) + 1) * window + rng.range(5_000, 40_000);
            let victims: Vec<usize> = office_at_work(bg, at, 10 * MINUTE, 0, sim_start)
                .into_iter()
                .filter(|&i| at_work_for(bg.city.people[i].shift, t0 + 2 * MINUTE).is_some())
                .collect();
            let v = bg.city.people[*pick(rng, &victims)?];
            let n = rng.range(35, 40) as usize;
            let span = rng.range(60_000, 110_000);
            let mut cams: Vec<u32> = (0..city::CAMERA_COUNT).collect();
            for k in 0..n {
                let j = k + rng.below((cams.len() - k) as u64) as usize;
                cams.swap(k, j);
                let bytes_out = rng.range(2_000, 6_000);
                let bytes_in = rng.range(8_000_000, 25_000_000);
                let f = Flow {
                    ts: t0 + k as i64 * span / n as i64,
                    src: v.addr,
                    sport: rng.range(49_152, 65_535),
                    dst: city::camera(cams[k]),
                    dport: 554,
                    proto: "tcp",
                    bytes_out,
                    bytes_in,
                    packets: (bytes_out + bytes_in) / 1200,
                    duration_ms: rng.range(20_000, 60_000),
                    action: "allow",
                };
                sink.flow(&f, Some(label));
            }
            let last = t0 + (n as i64 - 1) * span / n as i64;
            Some(incident(ip_text(v.addr), "src_ip", t0, last + 1))
        }
        Scenario::NewSystemLogin => {
            // An office worker known to the baseline for six hours, at work, signs in from
            // their own PC to a control-room system: each (person, system) once.
            let victims: Vec<(usize, usize)> =
                office_at_work(bg, at, 0, KNOWS_SYSTEMS_MS, sim_start)
                    .into_iter()
                    .filter(|&i| bg.city.people[i].role == Role::Office)
                    .flat_map(|i| (0..CONTROL_SYSTEMS.len()).map(move |t| (i, t)))
                    .filter(|pair| !p.used.contains(pair))
                    .collect();
            let (i, target) = *pick(rng, &victims)?;
            p.used.push((i, target));
            let v = bg.city.people[i];
            let a = Auth {
                ts: at,
                user: v.name,
                src: v.addr,
                target: CONTROL_SYSTEMS[target],
                method: "password",
                result: "success",
                reason: "ok",
                country: "CA",
                city: "Ottawa",
            };
            sink.auth(&a, Some(label));
            Some(incident(v.name.to_string(), "user", at, at + 1))
        }
        Scenario::OffHoursLogin => {
            // An operator whose hours the baseline knows (a day of them), off shift, signs in
            // to their own HMI from their console: each (person, hour of day) once.
            let hour = city::hour_of(at) as usize;
            let victims: Vec<usize> = (0..bg.city.people.len())
                .filter(|&i| {
                    let v = &bg.city.people[i];
                    v.desk.is_some()
                        && at_work_for(v.shift, at).is_none()
                        && at - v.shift.next_on(sim_start) >= KNOWS_HOURS_MS
                        && !p.used.contains(&(i, hour))
                })
                .collect();
            let i = *pick(rng, &victims)?;
            p.used.push((i, hour));
            let v = bg.city.people[i];
            let target = match v.desk {
                Some(Desk::Power) => "hmi-power-01",
                Some(Desk::Traffic) => "traffic-mgmt-01",
                _ => "hmi-water-01",
            };
            let a = Auth {
                ts: at,
                user: v.name,
                src: v.addr,
                target,
                method: "password",
                result: "success",
                reason: "ok",
                country: "CA",
                city: "Ottawa",
            };
            sink.auth(&a, Some(label));
            Some(incident(v.name.to_string(), "user", at, at + 1))
        }
        _ => Some(burst(s, at, rng, bg, sink)),
    }
}

/// One of `xs`, if any.
fn pick<'a, T>(rng: &mut Rng, xs: &'a [T]) -> Option<&'a T> {
    (!xs.is_empty()).then(|| &xs[rng.below(xs.len() as u64) as usize])
}

/// Office staff at work at `t` for at least `for_ms`, first at work after the simulation's
/// start at least `known_ms` before `t` (indices into `City::people`).
fn office_at_work(
    bg: &Background,
    t: i64,
    for_ms: i64,
    known_ms: i64,
    sim_start: i64,
) -> Vec<usize> {
    (0..bg.city.people.len())
        .filter(|&i| {
            let v = &bg.city.people[i];
            v.desk.is_none()
                && at_work_for(v.shift, t).is_some_and(|w| w >= for_ms)
                && t - v.shift.next_on(sim_start) >= known_ms
        })
        .collect()
}

/// Writes one occurrence of attack `s` starting at `at`.
fn burst(s: Scenario, at: i64, rng: &mut Rng, bg: &Background, sink: &mut Sink<'_>) -> Incident {
    let label = Some(s.name());
    let first = sink.out.len();
    // The spray's alerts are about its address, not the users it tries (its records' keys).
    let mut sprayer = None;
    match s {
        Scenario::PortScan => {
            // A compromised kiosk sweeps a PLC: 600-900 distinct ports in under 4 s, so any
            // one-second slice still has ~150 distinct ports, far above the rule's 30.
            let src = city::kiosk(rng.below(u64::from(city::KIOSK_COUNT)) as u32);
            let dst = city::plc(rng.below(6) as usize);
            let n = rng.range(600, 900) as usize;
            let span = rng.range(3_000, 3_900);
            let sport = rng.range(40_000, 60_999);
            let mut ports: [u16; 1024] = std::array::from_fn(|i| i as u16 + 1);
            for k in 0..n {
                let j = k + rng.below((ports.len() - k) as u64) as usize;
                ports.swap(k, j);
                let allowed = rng.chance(0.03);
                let f = Flow {
                    ts: at + k as i64 * span / n as i64,
                    src,
                    sport,
                    dst,
                    dport: i64::from(ports[k]),
                    proto: "tcp",
                    bytes_out: rng.range(40, 60),
                    bytes_in: if allowed { rng.range(40, 60) } else { 0 },
                    packets: if allowed { 2 } else { 1 },
                    duration_ms: rng.range(0, 2),
                    action: if allowed { "allow" } else { "deny" },
                };
                sink.flow(&f, label);
            }
        }
        Scenario::PasswordSpray => {
            // 40-60 names, one every 60-80 ms: at least 12 distinct users in any second.
            let (net, country, city) = rng.pick(&SPRAY_SOURCES);
            let src = in_net(rng, net);
            sprayer = Some(src);
            let people = &bg.city.people;
            let total = people.len() + GUESSES.len();
            let mut order: Vec<usize> = (0..total).collect();
            let n = rng.range(40, 60) as usize;
            let step = rng.range(60, 80);
            for k in 0..n {
                let j = k + rng.below((total - k) as u64) as usize;
                order.swap(k, j);
                let (user, reason) = match people.get(order[k]) {
                    Some(p) => (p.name, "bad_password"),
                    None => (GUESSES[order[k] - people.len()], "unknown_user"),
                };
                let a = Auth {
                    ts: at + k as i64 * step,
                    user,
                    src,
                    target: "hmi-water-01",
                    method: "password",
                    result: "failure",
                    reason,
                    country,
                    city,
                };
                sink.auth(&a, label);
            }
        }
        Scenario::RogueSetpoint => {
            // One or two writes pushing chlorine dosing to 8-10 mg/L (safe band 1.5-2.5).
            let writes = rng.range(1, 2);
            let mut previous = bg.dose[ROGUE_PLC];
            let mut ts = at;
            for _ in 0..writes {
                let value = (rng.uniform(8.0, 10.0) * 100.0).round() / 100.0;
                let e = Scada {
                    ts,
                    operator: "admin",
                    host: ROGUE_HOST.0,
                    src: ROGUE_HOST.1,
                    asset: city::PLC_NAMES[ROGUE_PLC],
                    domain: "water",
                    action: "setpoint_write",
                    tag: "cl2_dose_setpoint",
                    value,
                    previous,
                };
                sink.scada(&e, label);
                previous = value;
                ts += rng.range(5_000, 20_000);
            }
        }
        Scenario::VpnForeignLogin => {
            let v = rng.pick(&bg.city.vendors);
            let (net, country, city) = rng.pick(&FOREIGN_VPN);
            let a = Auth {
                ts: at,
                user: v.name,
                src: in_net(rng, net),
                target: "vpn-gw",
                method: "vpn",
                result: "success",
                reason: "ok",
                country,
                city,
            };
            sink.auth(&a, label);
        }
        Scenario::RevokedBadge => {
            let (holder, badge) = rng.pick(&FORMER_STAFF);
            let site = rng.pick(&city::PUMP_STATIONS);
            let mut ts = at;
            for _ in 0..rng.range(3, 5) {
                let b = Badge {
                    ts,
                    badge,
                    holder,
                    site,
                    door: "main-door",
                    zone: "ot-water",
                    result: "denied",
                    reason: "revoked",
                };
                sink.badge(&b, label);
                ts += rng.range(4_000, 15_000);
            }
        }
        Scenario::SensorTamper => {
            // Spoofed readings injected between the sensor's genuine ones, which go on.
            let chlorine: Vec<usize> = (0..ASSETS.len())
                .filter(|&i| ASSETS[i].metrics.contains(&Metric::Chlorine))
                .collect();
            let asset = &ASSETS[rng.pick(&chlorine)];
            let mut ts = at;
            for _ in 0..rng.range(3, 5) {
                let v = if rng.chance(0.5) {
                    -rng.uniform(0.5, 3.0)
                } else {
                    rng.uniform(25.0, 60.0)
                };
                let r = Reading {
                    ts,
                    asset: asset.name,
                    domain: asset.domain,
                    metric: Metric::Chlorine,
                    value: (v * 100.0).round() / 100.0,
                };
                sink.reading(&r, label);
                ts += rng.range(3_000, 8_000);
            }
        }
        Scenario::LprExfiltration => {
            // 3-5 uploads of 180-260 MB each: every flow alone exceeds the rule's 100 MB and
            // the burst moves over 500 MB.
            let (_, src) = rng.pick(&city::LPR);
            let drop_site = rng.pick(&DROP_SITES);
            let dst = in_net(rng, drop_site);
            let sport_base = rng.range(49_152, 60_000);
            let mut ts = at;
            for k in 0..rng.range(3, 5) {
                let bytes_out = rng.range(180_000_000, 260_000_000);
                let bytes_in = rng.range(200_000, 2_000_000);
                let f = Flow {
                    ts,
                    src,
                    sport: sport_base + k,
                    dst,
                    dport: 443,
                    proto: "tcp",
                    bytes_out,
                    bytes_in,
                    packets: (bytes_out + bytes_in) / 1400,
                    duration_ms: rng.range(30_000, 90_000),
                    action: "allow",
                };
                sink.flow(&f, label);
                ts += rng.range(5_000, 10_000);
            }
        }
        _ => unreachable!("{} is not an attack burst", s.name()),
    }
    let records = &sink.out[first..];
    let end = records.iter().map(|r| r.ts_ms).max().unwrap_or(at) + 1;
    let key = records.first().map(|r| r.key.clone()).unwrap_or_default();
    let (entity, field) = match s {
        Scenario::PasswordSpray => (sprayer.map(ip_text).unwrap_or_default(), "src_ip"),
        Scenario::PortScan | Scenario::LprExfiltration => (key, "src_ip"),
        Scenario::VpnForeignLogin => (key, "user"),
        Scenario::RogueSetpoint => (key, "host"),
        Scenario::RevokedBadge => (key, "badge_id"),
        _ => (key, "asset"),
    };
    Incident {
        scenario: s,
        entity,
        field,
        start_ms: at,
        end_ms: end,
    }
}
