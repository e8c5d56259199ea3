//! Attack scenarios: when each one fires, and the labelled burst of events it produces.
//!
//! In: the enabled scenarios, the simulation start, and (for `previous` values) the benign
//! plant state. Out: labelled records, queued until their second comes.
//! Guarantees:
//! - the first occurrence of scenario number `i` in [`Scenario::ALL`] starts at
//!   `start + 3 min + i * 5 min`, plus up to one minute of jitter, and its burst lasts at most
//!   one minute, so every first occurrence is over within 40 simulated minutes; later occurrences
//!   follow every 6 h ± 20 min;
//! - each scenario draws from its own generator, so enabling one never changes another's
//!   events, nor the background;
//! - every labelled event, on its own or with the rest of its burst, satisfies the rules in
//!   [`Scenario::rule_ids`] (aggregate rules on any one-second slice of the burst).

use super::benign::Background;
use super::city::{self, ASSETS, Metric, ip};
use super::events::{Auth, Badge, Flow, Reading, Scada, Sink};
use super::rng::Rng;
use super::{Scenario, SimRecord};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

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

fn in_net(rng: &mut Rng, net: [u8; 3]) -> u32 {
    ip(net[0], net[1], net[2], 2 + rng.below(252) as u8)
}

struct Planned {
    scenario: Scenario,
    rng: Rng,
    next_at: i64,
}

pub(crate) struct Attacks {
    planned: Vec<Planned>,
    /// Labelled records not yet due, sorted by `ts_ms` (stable: bursts keep their order).
    pending: Vec<SimRecord>,
}

impl Attacks {
    pub(crate) fn new(seed: u64, start: i64, scenarios: &[Scenario]) -> Attacks {
        let planned = Scenario::ALL
            .iter()
            .enumerate()
            .filter(|(_, s)| scenarios.contains(s))
            .map(|(i, &scenario)| {
                let mut rng = Rng::new(seed, 100 + i as u64);
                let next_at = start + 3 * MINUTE + i as i64 * 5 * MINUTE + rng.range(0, MINUTE - 1);
                Planned {
                    scenario,
                    rng,
                    next_at,
                }
            })
            .collect();
        Attacks {
            planned,
            pending: Vec::new(),
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

    /// Starts the bursts due in the second `[start, start + 1 s)`, then moves every queued
    /// record of that second into `out`.
    pub(crate) fn second(
        &mut self,
        start: i64,
        bg: &Background,
        out: &mut Vec<SimRecord>,
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
                burst(p.scenario, p.next_at, &mut p.rng, bg, &mut sink);
                p.next_at += 6 * HOUR + p.rng.range(-20 * MINUTE, 20 * MINUTE);
                fired = true;
            }
        }
        if fired {
            self.pending.sort_by_key(|r| r.ts_ms);
        }
        let due = self.pending.partition_point(|r| r.ts_ms < end);
        out.extend(self.pending.drain(..due));
    }
}

/// Writes one occurrence of `s` starting at `at`.
fn burst(s: Scenario, at: i64, rng: &mut Rng, bg: &Background, sink: &mut Sink<'_>) {
    let label = Some(s.name());
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
    }
}
