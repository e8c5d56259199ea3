//! The simulated city: its zones, hosts, people, field assets and daily rhythms.
//!
//! In: the seed (only for per-person details such as home addresses). Out: static tables and
//! a [`City`] built once per simulator. Nothing here draws per event.
//! Guarantees the rest of the simulator relies on (and the tests check):
//! - every benign `dst_port` comes from [`BENIGN_PORTS`], far fewer than the 30 distinct ports
//!   that `net.port_scan` needs, so no benign source can ever look like a scan;
//! - every person logs in from addresses of their own (one office or console address, one
//!   home address): no benign address is shared by two users, so `auth.password_spray`
//!   (8 distinct users failing from one address) cannot fire on benign failures;
//! - nothing in the cameras zone talks to the internet (`net.bulk_exfiltration`);
//! - no benign source reaches more than 16 distinct destinations (an office PC: 12 SaaS
//!   addresses, 2 domain controllers, the file and mail servers), below the 20 that
//!   `ueba.host_fan_out` needs;
//! - everyone works fixed hours ([`Shift`]): office staff a nine-hour day, operators one of three
//!   eight-hour shifts at their desk (water, power, traffic), vendors business hours; logins,
//!   badges and operator actions happen only within them, so a day of history holds every hour a
//!   person works (`ueba.unusual_hour`), and their systems within a few hours
//!   (`ueba.user_new_target`);
//! - every place a benign login comes from lies within 100 km of Ottawa or is a vendor's own
//!   office, always the same (`ueba.impossible_travel`).
//!
//! The city keeps UTC as its wall clock, so the hour-of-day curves read directly off `ts`.

use super::rng::Rng;

/// An IPv4 address as a `u32`, most significant octet first.
pub(crate) const fn ip(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_be_bytes([a, b, c, d])
}

/// The zone of an address, as written in `src_zone` / `dst_zone`: the city's /16s under 10/8,
/// and everything else is the internet.
pub(crate) fn zone_of(addr: u32) -> &'static str {
    let [a, b, _, _] = addr.to_be_bytes();
    if a != 10 {
        return "internet";
    }
    match b {
        1 => "it",
        10 => "ot-water",
        20 => "ot-power",
        30 => "traffic",
        40 => "bikeshare",
        50 => "cameras",
        60 => "dmz",
        _ => "unknown",
    }
}

/// Every destination port benign traffic uses. `net.port_scan` needs 30 on one host.
pub(crate) const BENIGN_PORTS: [i64; 16] = [
    22, 23, 53, 80, 88, 123, 161, 389, 443, 445, 502, 554, 993, 3389, 4500, 20000,
];

// Servers (it and dmz zones).
pub(crate) const DC: [u32; 2] = [ip(10, 1, 0, 10), ip(10, 1, 0, 11)];
pub(crate) const FILES: u32 = ip(10, 1, 0, 20);
pub(crate) const MAIL: u32 = ip(10, 1, 0, 25);
pub(crate) const WWW: u32 = ip(10, 60, 0, 10);
pub(crate) const VPN_GW: u32 = ip(10, 60, 0, 5);
/// The parking back end that LPR servers push plate reads to.
pub(crate) const PARKING_API: u32 = ip(10, 60, 0, 20);

/// Office PCs 10.1.1.10 .. 10.1.1.69; the first ones belong to the office users.
pub(crate) const PC_COUNT: u32 = 60;
pub(crate) fn pc(i: u32) -> u32 {
    ip(10, 1, 1, 10) + i
}

// Water (ot-water).
pub(crate) const PLC_NAMES: [&str; 6] = [
    "wtp-plc-01",
    "wtp-plc-02",
    "wtp-plc-03",
    "wtp-plc-04",
    "wtp-plc-05",
    "wtp-plc-06",
];
pub(crate) fn plc(i: usize) -> u32 {
    ip(10, 10, 1, 1) + i as u32
}
pub(crate) const HMI_WATER: [(&str, u32); 2] = [
    ("hmi-water-01", ip(10, 10, 2, 1)),
    ("hmi-water-02", ip(10, 10, 2, 2)),
];
pub(crate) const HISTORIAN: u32 = ip(10, 10, 3, 1);
/// Operator consoles in the water plant control room, one per operator.
pub(crate) fn console(i: usize) -> u32 {
    ip(10, 10, 4, 10) + i as u32
}
/// The engineering workstations: the only hosts that write setpoints in benign traffic.
pub(crate) const EWS: [(&str, u32); 2] =
    [("ews-01", ip(10, 10, 5, 1)), ("ews-02", ip(10, 10, 5, 2))];

/// Unmanned pump stations: badge sites (their door is `main-door`) and sensor assets.
pub(crate) const PUMP_STATIONS: [&str; 4] = [
    "pump-station-01",
    "pump-station-02",
    "pump-station-03",
    "pump-station-04",
];

// Power (ot-power).
pub(crate) const RTU_NAMES: [&str; 4] = ["sub-rtu-01", "sub-rtu-02", "sub-rtu-03", "sub-rtu-04"];
pub(crate) fn rtu(i: usize) -> u32 {
    ip(10, 20, 1, 1) + i as u32
}
pub(crate) const HMI_POWER: (&str, u32) = ("hmi-power-01", ip(10, 20, 2, 1));

// Traffic.
pub(crate) const TSC_NAMES: [&str; 12] = [
    "tsc-001", "tsc-002", "tsc-003", "tsc-004", "tsc-005", "tsc-006", "tsc-007", "tsc-008",
    "tsc-009", "tsc-010", "tsc-011", "tsc-012",
];
pub(crate) fn tsc(i: usize) -> u32 {
    ip(10, 30, 1, 1) + i as u32
}
pub(crate) const TMS: (&str, u32) = ("traffic-mgmt-01", ip(10, 30, 0, 10));

// Bike share.
pub(crate) const KIOSK_COUNT: u32 = 15;
pub(crate) fn kiosk(i: u32) -> u32 {
    ip(10, 40, 1, 1) + i
}
/// The bike-share operator's cloud back end.
pub(crate) const BIKESHARE_API: [u32; 2] = [ip(3, 97, 115, 20), ip(3, 97, 115, 21)];

// Cameras.
pub(crate) const CAMERA_COUNT: u32 = 40;
pub(crate) fn camera(i: u32) -> u32 {
    ip(10, 50, 1, 1) + i
}
pub(crate) const NVR: u32 = ip(10, 50, 0, 2);
pub(crate) const LPR: [(&str, u32); 2] =
    [("lpr-01", ip(10, 50, 0, 11)), ("lpr-02", ip(10, 50, 0, 12))];

/// Public services office PCs browse (mail, office suite, CDNs, search).
pub(crate) const SAAS: [u32; 12] = [
    ip(13, 107, 42, 14),
    ip(52, 96, 166, 130),
    ip(142, 250, 64, 78),
    ip(151, 101, 1, 69),
    ip(104, 16, 132, 229),
    ip(172, 217, 13, 174),
    ip(20, 190, 151, 7),
    ip(40, 126, 32, 133),
    ip(23, 35, 229, 160),
    ip(184, 25, 56, 91),
    ip(199, 232, 210, 220),
    ip(35, 186, 224, 25),
];

/// First octets of consumer ISP ranges, for random internet clients and home addresses.
const ISP_FIRST_OCTETS: [u8; 12] = [24, 45, 66, 70, 76, 99, 104, 142, 174, 184, 206, 207];

/// A random public client address.
pub(crate) fn internet_client(rng: &mut Rng) -> u32 {
    let a = rng.pick(&ISP_FIRST_OCTETS);
    ip(
        a,
        rng.below(256) as u8,
        rng.below(256) as u8,
        1 + rng.below(254) as u8,
    )
}

// People.
/// Working hours, in hours of the (UTC) day: `hours` hours from `start`, wrapping midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shift {
    pub(crate) start: u32,
    pub(crate) hours: u32,
}

impl Shift {
    pub(crate) const DAY: Shift = Shift { start: 6, hours: 8 };
    pub(crate) const EVENING: Shift = Shift {
        start: 14,
        hours: 8,
    };
    pub(crate) const NIGHT: Shift = Shift {
        start: 22,
        hours: 8,
    };
    /// Vendors answer during business hours.
    pub(crate) const BUSINESS: Shift = Shift { start: 8, hours: 9 };

    /// Whether hour `h` of the day is a working hour.
    pub(crate) fn covers(self, h: u32) -> bool {
        (h + 24 - self.start) % 24 < self.hours
    }

    /// The first instant at or after `t` (ms) within the working hours.
    pub(crate) fn next_on(self, t: i64) -> i64 {
        let hour = hour_of(t);
        if self.covers(hour) {
            return t;
        }
        let wait = i64::from((self.start + 24 - hour) % 24);
        t - t.rem_euclid(3_600_000) + wait * 3_600_000
    }
}

/// The desk of a control-room operator: their HMI, assets and sites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Desk {
    Water,
    Power,
    Traffic,
}

/// Office staff; the first three are IT administrators (server room, RDP to servers).
pub(crate) const OFFICE_USERS: [&str; 32] = [
    "m.gagnon",
    "s.roy",
    "a.cote",
    "l.bouchard",
    "p.gauthier",
    "c.morin",
    "n.lavoie",
    "e.fortin",
    "d.gagne",
    "r.ouellet",
    "k.pelletier",
    "m.belanger",
    "f.levesque",
    "g.bergeron",
    "h.leblanc",
    "i.paquette",
    "t.girard",
    "v.simard",
    "b.boucher",
    "o.caron",
    "y.beaulieu",
    "s.cloutier",
    "a.dube",
    "j.poirier",
    "m.fournier",
    "l.lapointe",
    "c.leclerc",
    "n.lefebvre",
    "p.poulin",
    "e.thibault",
    "k.martin",
    "a.wilson",
];
pub(crate) const ADMIN_COUNT: usize = 3;
/// Control-room operators (water, power and traffic consoles, engineering workstations),
/// with their desk and shift: water and power are watched around the clock, traffic by day
/// and evening.
pub(crate) const OPERATORS: [(&str, Desk, Shift); 8] = [
    ("j.tremblay", Desk::Water, Shift::DAY),
    ("r.nadeau", Desk::Water, Shift::EVENING),
    ("s.lambert", Desk::Water, Shift::NIGHT),
    ("m.cyr", Desk::Power, Shift::DAY),
    ("d.hebert", Desk::Power, Shift::EVENING),
    ("p.lachance", Desk::Power, Shift::NIGHT),
    ("c.bolduc", Desk::Traffic, Shift::DAY),
    ("g.dion", Desk::Traffic, Shift::EVENING),
];
/// Vendor accounts: VPN only, from their company's Canadian office.
pub(crate) const VENDORS: [(&str, &str); 3] = [
    ("vendor.acme", "Montreal"),
    ("vendor.hydrotech", "Toronto"),
    ("vendor.signalco", "Mississauga"),
];
const HOME_CITIES: [&str; 6] = [
    "Ottawa",
    "Gatineau",
    "Kanata",
    "Orleans",
    "Nepean",
    "Barrhaven",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Admin,
    Office,
    Operator,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Person {
    pub(crate) name: &'static str,
    pub(crate) role: Role,
    /// Office PC or control-room console: the only internal address this person logs in from.
    pub(crate) addr: u32,
    /// Home address, used for VPN; unique per person by construction (third octet = index).
    pub(crate) home: u32,
    pub(crate) home_city: &'static str,
    /// Badge number, written `B-<number>`.
    pub(crate) badge: u32,
    /// Working hours: the only hours this person logs in, badges or acts.
    pub(crate) shift: Shift,
    /// Operators: the desk they work at.
    pub(crate) desk: Option<Desk>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Vendor {
    pub(crate) name: &'static str,
    pub(crate) city: &'static str,
    pub(crate) addr: u32,
}

/// The per-seed part of the city.
#[derive(Clone, Debug)]
pub(crate) struct City {
    /// Office users first (indices `0..OFFICE_USERS.len()`), then operators.
    pub(crate) people: Vec<Person>,
    pub(crate) vendors: [Vendor; 3],
}

impl City {
    pub(crate) fn new(rng: &mut Rng) -> City {
        let mut people = Vec::with_capacity(OFFICE_USERS.len() + OPERATORS.len());
        let names = OFFICE_USERS
            .iter()
            .copied()
            .chain(OPERATORS.iter().map(|o| o.0));
        for (i, name) in names.enumerate() {
            let role = match i {
                i if i < ADMIN_COUNT => Role::Admin,
                i if i < OFFICE_USERS.len() => Role::Office,
                _ => Role::Operator,
            };
            let addr = match role {
                Role::Operator => console(i - OFFICE_USERS.len()),
                _ => pc(i as u32),
            };
            let home = ip(
                rng.pick(&ISP_FIRST_OCTETS),
                rng.below(256) as u8,
                i as u8,
                2 + rng.below(252) as u8,
            );
            let home_city = rng.pick(&HOME_CITIES);
            let (shift, desk) = match i.checked_sub(OFFICE_USERS.len()) {
                Some(k) => (OPERATORS[k].2, Some(OPERATORS[k].1)),
                // Office days start at 7, 8 or 9.
                None => (
                    Shift {
                        start: 7 + rng.below(3) as u32,
                        hours: 9,
                    },
                    None,
                ),
            };
            people.push(Person {
                name,
                role,
                addr,
                home,
                home_city,
                badge: 10_417 + 53 * i as u32,
                shift,
                desk,
            });
        }
        let vendor = |k: usize, rng: &mut Rng| Vendor {
            name: VENDORS[k].0,
            city: VENDORS[k].1,
            // Canadian business ranges, one /24 per vendor.
            addr: ip(
                [205, 206, 207][k],
                rng.below(256) as u8,
                200 + k as u8,
                2 + rng.below(252) as u8,
            ),
        };
        let vendors = [vendor(0, rng), vendor(1, rng), vendor(2, rng)];
        City { people, vendors }
    }
}

// Field assets reporting to the sensors stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Metric {
    Chlorine,
    Pressure,
    Flow,
    Level,
    Voltage,
    Load,
    Frequency,
    Queue,
}

impl Metric {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Metric::Chlorine => "chlorine_mg_l",
            Metric::Pressure => "pressure_bar",
            Metric::Flow => "flow_m3h",
            Metric::Level => "level_m",
            Metric::Voltage => "voltage_kv",
            Metric::Load => "load_mw",
            Metric::Frequency => "frequency_hz",
            Metric::Queue => "queue_len",
        }
    }

    pub(crate) fn unit(self) -> &'static str {
        match self {
            Metric::Chlorine => "mg/L",
            Metric::Pressure => "bar",
            Metric::Flow => "m3/h",
            Metric::Level => "m",
            Metric::Voltage => "kV",
            Metric::Load => "MW",
            Metric::Frequency => "Hz",
            Metric::Queue => "vehicles",
        }
    }

    pub(crate) fn decimals(self) -> usize {
        match self {
            Metric::Voltage | Metric::Frequency => 3,
            Metric::Flow | Metric::Queue => 1,
            _ => 2,
        }
    }
}

pub(crate) struct Asset {
    pub(crate) name: &'static str,
    pub(crate) domain: &'static str,
    pub(crate) metrics: &'static [Metric],
}

const PLANT: &[Metric] = &[Metric::Chlorine, Metric::Pressure, Metric::Flow];
const RESERVOIR: &[Metric] = &[Metric::Chlorine, Metric::Level];
const SUBSTATION: &[Metric] = &[Metric::Voltage, Metric::Load, Metric::Frequency];
const SIGNAL: &[Metric] = &[Metric::Queue];

const fn asset(name: &'static str, domain: &'static str, metrics: &'static [Metric]) -> Asset {
    Asset {
        name,
        domain,
        metrics,
    }
}

/// The 24 assets of the sensors stream; each reports all its metrics every 10 s.
pub(crate) const ASSETS: [Asset; 24] = [
    asset("wtp-plc-01", "water", PLANT),
    asset("wtp-plc-02", "water", PLANT),
    asset("wtp-plc-03", "water", PLANT),
    asset("wtp-plc-04", "water", PLANT),
    asset("wtp-plc-05", "water", PLANT),
    asset("wtp-plc-06", "water", PLANT),
    asset("reservoir-01", "water", RESERVOIR),
    asset("reservoir-02", "water", RESERVOIR),
    asset("sub-rtu-01", "power", SUBSTATION),
    asset("sub-rtu-02", "power", SUBSTATION),
    asset("sub-rtu-03", "power", SUBSTATION),
    asset("sub-rtu-04", "power", SUBSTATION),
    asset("tsc-001", "traffic", SIGNAL),
    asset("tsc-002", "traffic", SIGNAL),
    asset("tsc-003", "traffic", SIGNAL),
    asset("tsc-004", "traffic", SIGNAL),
    asset("tsc-005", "traffic", SIGNAL),
    asset("tsc-006", "traffic", SIGNAL),
    asset("tsc-007", "traffic", SIGNAL),
    asset("tsc-008", "traffic", SIGNAL),
    asset("tsc-009", "traffic", SIGNAL),
    asset("tsc-010", "traffic", SIGNAL),
    asset("tsc-011", "traffic", SIGNAL),
    asset("tsc-012", "traffic", SIGNAL),
];
/// Sensor reporting period (the pump stations' controllers are polled as often).
pub(crate) const REPORT_MS: i64 = 10_000;

/// The pump stations of the pumps stream: one record per poll, with the pump's run command,
/// motor current, discharge pressure and flow. Each pump starts and stops on its own cycle.
pub(crate) const PUMP_NAMES: [&str; 6] = [
    "pump-station-01",
    "pump-station-02",
    "pump-station-03",
    "pump-station-04",
    "pump-station-05",
    "pump-station-06",
];

// Daily rhythms, one value per UTC hour (linearly interpolated within the hour).
/// People: office hours with a lunch dip, a quiet night.
pub(crate) const HUMAN: [f64; 24] = [
    0.10, 0.08, 0.07, 0.07, 0.08, 0.14, 0.28, 0.55, 0.85, 0.97, 1.00, 0.98, 0.88, 0.95, 1.00, 0.97,
    0.90, 0.72, 0.50, 0.38, 0.30, 0.24, 0.18, 0.13,
];
/// Water demand: morning and evening peaks.
pub(crate) const WATER: [f64; 24] = [
    0.30, 0.25, 0.22, 0.22, 0.25, 0.40, 0.75, 1.00, 0.95, 0.80, 0.70, 0.68, 0.72, 0.68, 0.62, 0.62,
    0.68, 0.80, 0.92, 0.95, 0.85, 0.70, 0.52, 0.38,
];
/// Electrical load: daytime plateau, evening peak.
pub(crate) const POWER: [f64; 24] = [
    0.45, 0.40, 0.38, 0.37, 0.38, 0.45, 0.58, 0.72, 0.80, 0.82, 0.82, 0.83, 0.83, 0.82, 0.82, 0.84,
    0.90, 0.97, 1.00, 0.96, 0.88, 0.76, 0.62, 0.52,
];
/// Road traffic: two rush hours.
pub(crate) const TRAFFIC: [f64; 24] = [
    0.05, 0.03, 0.02, 0.02, 0.04, 0.15, 0.50, 0.95, 1.00, 0.70, 0.50, 0.52, 0.58, 0.55, 0.55, 0.68,
    0.92, 1.00, 0.80, 0.52, 0.38, 0.28, 0.18, 0.10,
];

/// The value of a daily curve at `ms`.
pub(crate) fn curve(table: &[f64; 24], ms: i64) -> f64 {
    let in_day = ms.rem_euclid(86_400_000);
    let h = (in_day / 3_600_000) as usize;
    let frac = (in_day % 3_600_000) as f64 / 3_600_000.0;
    table[h] * (1.0 - frac) + table[(h + 1) % 24] * frac
}

/// UTC hour of day.
pub(crate) fn hour_of(ms: i64) -> u32 {
    (ms.rem_euclid(86_400_000) / 3_600_000) as u32
}
