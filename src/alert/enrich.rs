//! The asset inventory and urgency.
//!
//! In: an inventory file (CSV with a header row, or a JSON array of objects) listing the
//! city's assets: id, infrastructure domain, zone, criticality, owner, maintenance windows,
//! approved vendors, and aliases (addresses, host names) it is known by in telemetry.
//! Out: [`Inventory::lookup`] by id or alias, and [`urgency`], which weighs a rule's severity
//! by the asset's criticality (as Splunk ES derives urgency from severity and priority), so
//! one rule pages for a water-treatment PLC and only logs for a parking back end.
//!
//! A bad file fails at load with the file, line and reason; a bad file on reload leaves the
//! previous inventory in use (see [`crate::alert::stage`]).

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::alert::{Severity, parse_time_ms};

/// How much an asset matters to the city.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Criticality {
    /// Losing it inconveniences (a parking sensor).
    Low,
    /// Degrades a service.
    Medium,
    /// Stops a service.
    High,
    /// Endangers people or a lifeline (water treatment, grid control).
    Critical,
}

impl Criticality {
    /// Lower-case name (also a metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Criticality::Low => "low",
            Criticality::Medium => "medium",
            Criticality::High => "high",
            Criticality::Critical => "critical",
        }
    }

    fn parse(s: &str) -> Option<Criticality> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "low" => Criticality::Low,
            "medium" => Criticality::Medium,
            "high" => Criticality::High,
            "critical" => Criticality::Critical,
            _ => return None,
        })
    }
}

/// Urgency from severity and the asset's criticality (`None`: not in the inventory), lowered
/// one level while the asset is in a declared maintenance window.
///
/// | criticality \ severity | info | low | medium | high | critical |
/// | --- | --- | --- | --- | --- | --- |
/// | critical | low | medium | high | critical | critical |
/// | high, or unknown asset | info | low | medium | high | critical |
/// | medium | info | low | medium | high | high |
/// | low | info | info | low | medium | medium |
///
/// An asset missing from the inventory keeps the rule's severity: an unknown device is no
/// reason to care less.
pub fn urgency(
    severity: Severity,
    criticality: Option<Criticality>,
    in_maintenance: bool,
) -> Severity {
    use Severity::*;
    let row: [Severity; 5] = match criticality {
        Some(Criticality::Critical) => [Low, Medium, High, Critical, Critical],
        Some(Criticality::High) | None => [Info, Low, Medium, High, Critical],
        Some(Criticality::Medium) => [Info, Low, Medium, High, High],
        Some(Criticality::Low) => [Info, Info, Low, Medium, Medium],
    };
    let u = row[severity as usize];
    if in_maintenance {
        [Info, Info, Low, Medium, High][u as usize]
    } else {
        u
    }
}

/// One asset of the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    /// Unique id, e.g. `wtp-plc-03`.
    pub id: String,
    /// Infrastructure domain: water, power, traffic, transit, ...
    pub domain: String,
    /// Network or physical zone.
    pub zone: String,
    /// How much it matters.
    pub criticality: Criticality,
    /// Team or person responsible.
    pub owner: String,
    /// Maintenance windows, `[start, end)` in epoch ms.
    pub maintenance: Vec<(i64, i64)>,
    /// Vendors allowed to work on it.
    pub approved_vendors: Vec<String>,
    /// Other names it appears under in telemetry (IP addresses, host names).
    pub aliases: Vec<String>,
}

/// The asset as carried on an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetRef {
    /// Asset id.
    pub id: String,
    /// Infrastructure domain.
    pub domain: String,
    /// Zone.
    pub zone: String,
    /// Criticality.
    pub criticality: Criticality,
    /// Owner.
    pub owner: String,
    /// True when the detection fell in one of the asset's maintenance windows.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_maintenance: bool,
    /// Vendors allowed to work on it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approved_vendors: Vec<String>,
}

impl Asset {
    /// Whether `at_ms` falls in a maintenance window.
    pub fn in_maintenance(&self, at_ms: i64) -> bool {
        self.maintenance
            .iter()
            .any(|&(s, e)| s <= at_ms && at_ms < e)
    }

    /// The alert-side view at time `at_ms`.
    pub fn reference(&self, at_ms: i64) -> AssetRef {
        AssetRef {
            id: self.id.clone(),
            domain: self.domain.clone(),
            zone: self.zone.clone(),
            criticality: self.criticality,
            owner: self.owner.clone(),
            in_maintenance: self.in_maintenance(at_ms),
            approved_vendors: self.approved_vendors.clone(),
        }
    }
}

/// A problem in the inventory file.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct InventoryError {
    /// The file.
    pub file: String,
    /// 1-based line (0: the whole file).
    pub line: usize,
    /// What is wrong and what to change.
    pub message: String,
}

/// Assets by id and alias.
#[derive(Debug, Default)]
pub struct Inventory {
    assets: Vec<Asset>,
    by_name: HashMap<String, usize>,
}

/// A JSON inventory entry (CSV rows carry the same columns, lists separated by `;`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: String,
    domain: String,
    #[serde(default)]
    zone: String,
    criticality: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    maintenance: Vec<String>,
    #[serde(default)]
    approved_vendors: Vec<String>,
    #[serde(default)]
    aliases: Vec<String>,
}

/// Columns of a CSV inventory; `id`, `domain` and `criticality` are required.
const CSV_COLUMNS: [&str; 8] = [
    "id",
    "domain",
    "zone",
    "criticality",
    "owner",
    "maintenance",
    "approved_vendors",
    "aliases",
];

impl Inventory {
    /// Reads an inventory: `.json` as a JSON array, anything else as CSV.
    pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| InventoryError {
            file: file.clone(),
            line: 0,
            message: format!("cannot read the asset inventory: {e}"),
        })?;
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            Inventory::parse_json(&text, &file)
        } else {
            Inventory::parse_csv(&text, &file)
        }
    }

    /// Parses a JSON array of assets.
    pub fn parse_json(text: &str, file: &str) -> Result<Inventory, InventoryError> {
        let entries: Vec<Entry> = serde_json::from_str(text).map_err(|e| InventoryError {
            file: file.to_string(),
            line: e.line(),
            message: format!(
                "{e} (expected an array of {{\"id\", \"domain\", \"criticality\", ...}} objects)"
            ),
        })?;
        // serde_json does not locate array elements; find each id's line for messages.
        let line_of = |id: &str| {
            let quoted = format!("\"{id}\"");
            text.lines()
                .position(|l| l.contains(&quoted))
                .map_or(0, |i| i + 1)
        };
        let mut inv = Inventory::default();
        for e in entries {
            let line = line_of(&e.id);
            inv.add(e, file, line)?;
        }
        Ok(inv)
    }

    /// Parses a CSV inventory with a header row (columns: [`CSV_COLUMNS`], any order).
    pub fn parse_csv(text: &str, file: &str) -> Result<Inventory, InventoryError> {
        let err = |line: usize, message: String| InventoryError {
            file: file.to_string(),
            line,
            message,
        };
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let headers = reader.headers().map_err(|e| err(1, e.to_string()))?.clone();
        let mut col = HashMap::new();
        for (i, h) in headers.iter().enumerate() {
            if !CSV_COLUMNS.contains(&h) {
                return Err(err(
                    1,
                    format!("unknown column `{h}`; columns: {}", CSV_COLUMNS.join(", ")),
                ));
            }
            col.insert(h.to_string(), i);
        }
        for required in ["id", "domain", "criticality"] {
            if !col.contains_key(required) {
                return Err(err(1, format!("missing column `{required}`")));
            }
        }
        let mut inv = Inventory::default();
        for record in reader.records() {
            let record = record
                .map_err(|e| err(e.position().map_or(0, |p| p.line() as usize), e.to_string()))?;
            let line = record.position().map_or(0, |p| p.line() as usize);
            let get = |c: &str| {
                col.get(c)
                    .and_then(|&i| record.get(i))
                    .unwrap_or("")
                    .to_string()
            };
            let list = |c: &str| -> Vec<String> {
                get(c)
                    .split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            };
            let entry = Entry {
                id: get("id"),
                domain: get("domain"),
                zone: get("zone"),
                criticality: get("criticality"),
                owner: get("owner"),
                maintenance: list("maintenance"),
                approved_vendors: list("approved_vendors"),
                aliases: list("aliases"),
            };
            inv.add(entry, file, line)?;
        }
        Ok(inv)
    }

    fn add(&mut self, e: Entry, file: &str, line: usize) -> Result<(), InventoryError> {
        let err = |message: String| InventoryError {
            file: file.to_string(),
            line,
            message,
        };
        if e.id.is_empty() || e.domain.is_empty() {
            return Err(err("`id` and `domain` must not be empty".into()));
        }
        let criticality = Criticality::parse(&e.criticality).ok_or_else(|| {
            err(format!(
                "asset `{}`: criticality `{}` is not one of low, medium, high, critical",
                e.id, e.criticality
            ))
        })?;
        let mut maintenance = Vec::new();
        for w in &e.maintenance {
            let parsed = w
                .split_once('/')
                .and_then(|(s, e)| Some((parse_time_ms(s.trim())?, parse_time_ms(e.trim())?)));
            match parsed {
                Some((s, end)) if s < end => maintenance.push((s, end)),
                _ => {
                    return Err(err(format!(
                        "asset `{}`: maintenance window `{w}` is not START/END in RFC 3339 with START before END, e.g. 2026-01-05T02:00:00Z/2026-01-05T04:00:00Z",
                        e.id
                    )));
                }
            }
        }
        let index = self.assets.len();
        for name in std::iter::once(&e.id).chain(&e.aliases) {
            if let Some(&other) = self.by_name.get(name) {
                return Err(err(format!(
                    "`{name}` names both asset `{}` and asset `{}`; ids and aliases must be unique",
                    self.assets[other].id, e.id
                )));
            }
            self.by_name.insert(name.clone(), index);
        }
        self.assets.push(Asset {
            id: e.id,
            domain: e.domain,
            zone: e.zone,
            criticality,
            owner: e.owner,
            maintenance,
            approved_vendors: e.approved_vendors,
            aliases: e.aliases,
        });
        Ok(())
    }

    /// The asset with this id or alias.
    pub fn lookup(&self, name: &str) -> Option<&Asset> {
        self.by_name.get(name).map(|&i| &self.assets[i])
    }

    /// Number of assets.
    pub fn len(&self) -> usize {
        self.assets.len()
    }

    /// Whether it lists no asset.
    pub fn is_empty(&self) -> bool {
        self.assets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Severity::*;

    const CSV: &str = "\
id,domain,zone,criticality,owner,maintenance,approved_vendors,aliases
wtp-plc-03,water,ot-water,critical,water-ops,2026-01-05T02:00:00Z/2026-01-05T04:00:00Z,Siemens;Veolia,10.10.1.3
parking-api,transport,dmz,low,parking,,,10.60.0.20
";

    #[test]
    fn the_same_rule_pages_for_a_plc_and_only_logs_for_parking() {
        let inv = Inventory::parse_csv(CSV, "assets.csv").unwrap();
        let plc = inv.lookup("10.10.1.3").unwrap();
        let parking = inv.lookup("parking-api").unwrap();
        assert_eq!(plc.id, "wtp-plc-03");
        assert_eq!(plc.approved_vendors, ["Siemens", "Veolia"]);
        let outside = parse_time_ms("2026-01-05T05:00:00Z").unwrap();
        let during = parse_time_ms("2026-01-05T03:00:00Z").unwrap();
        assert!(!plc.in_maintenance(outside) && plc.in_maintenance(during));
        assert_eq!(urgency(High, Some(plc.criticality), false), Critical);
        assert_eq!(urgency(High, Some(parking.criticality), false), Medium);
        // Unknown assets keep the rule's severity; maintenance lowers one level.
        assert_eq!(urgency(High, None, false), High);
        assert_eq!(urgency(High, Some(plc.criticality), true), High);
        assert_eq!(urgency(Info, Some(Criticality::Low), true), Info);
    }

    #[test]
    fn urgency_never_falls_as_severity_or_criticality_rises() {
        let sev = [Info, Low, Medium, High, Critical];
        let crit = [
            Criticality::Low,
            Criticality::Medium,
            Criticality::High,
            Criticality::Critical,
        ];
        for w in sev.windows(2) {
            for c in crit {
                assert!(urgency(w[0], Some(c), false) <= urgency(w[1], Some(c), false));
            }
        }
        for s in sev {
            for w in crit.windows(2) {
                assert!(urgency(s, Some(w[0]), false) <= urgency(s, Some(w[1]), false));
            }
        }
    }

    #[test]
    fn json_inventories_read_like_csv() {
        let json = r#"[
  {"id": "wtp-plc-03", "domain": "water", "criticality": "critical", "aliases": ["10.10.1.3"]},
  {"id": "tsc-001", "domain": "traffic", "zone": "traffic", "criticality": "medium"}
]"#;
        let inv = Inventory::parse_json(json, "assets.json").unwrap();
        assert_eq!(inv.len(), 2);
        assert_eq!(inv.lookup("10.10.1.3").unwrap().domain, "water");
        assert_eq!(
            inv.lookup("tsc-001").unwrap().criticality,
            Criticality::Medium
        );
    }

    #[test]
    fn bad_inventories_fail_with_file_line_and_reason() {
        let check = |text: &str, json: bool, want: &str| {
            let e = if json {
                Inventory::parse_json(text, "a.json")
            } else {
                Inventory::parse_csv(text, "a.csv")
            }
            .unwrap_err()
            .to_string();
            assert!(e.contains(want), "{e} lacks {want}");
        };
        check(
            "id,domain,criticality\nx,water,vital\n",
            false,
            "a.csv:2: asset `x`: criticality `vital`",
        );
        check(
            "id,domain,colour\n",
            false,
            "a.csv:1: unknown column `colour`",
        );
        check(
            "id,criticality\n",
            false,
            "a.csv:1: missing column `domain`",
        );
        check(
            "id,domain,criticality,maintenance\nx,water,low,tomorrow\n",
            false,
            "a.csv:2: asset `x`: maintenance window `tomorrow`",
        );
        check(
            "id,domain,criticality,aliases\nx,water,low,10.0.0.1\ny,water,low,10.0.0.1\n",
            false,
            "a.csv:3: `10.0.0.1` names both asset `x` and asset `y`",
        );
        check(
            "[\n {\"id\": \"x\", \"domain\": \"water\", \"criticality\": \"low\", \"colour\": 1}\n]",
            true,
            "a.json:2: unknown field `colour`",
        );
    }
}
