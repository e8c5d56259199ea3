//! Conformance on the SigmaHQ corpus, read in place from `../shared/data/sigma`: the whole
//! corpus loads with `palisade check --preset sigma-windows`, every regression case fires its
//! rule in `palisade replay --preset sigma-windows`, and the specification's examples load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::support::*;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/sigma")
}

fn corpus() -> Vec<PathBuf> {
    ["rules", "rules-emerging-threats", "rules-threat-hunting"]
        .iter()
        .map(|r| data().join(r))
        .collect()
}

fn walk(dir: &Path, name: &dyn Fn(&str) -> bool, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, name, out);
        } else if p.file_name().and_then(|n| n.to_str()).is_some_and(name) {
            out.push(p);
        }
    }
}

/// The preset with the corpus's one placeholder configured, as a file.
fn config_with_placeholders(dir: &Path) -> PathBuf {
    let preset = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/presets/sigma-windows.toml"),
    )
    .unwrap();
    let path = dir.join("windows.toml");
    std::fs::write(
        &path,
        format!(
            "{preset}\n[sigma.placeholders]\nknown_cdcs = [\"dc01.city.local\", \"10.0.0.*\"]\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn the_corpus_loads_and_what_does_not_is_named() {
    let out = bin()
        .args(["check", "--preset", "sigma-windows"])
        .args(corpus())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap();
    let counts: Vec<usize> = last
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let [n, ok, failed] = counts[..] else {
        panic!("{last}")
    };
    assert_eq!(ok + failed, n);
    assert!(n >= 3700, "{last}");
    assert!(ok * 100 >= n * 99, "at least 99 % compile: {last}");
    // What fails is named with file:line:column and the feature.
    let errors: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), failed, "{stdout}");
    for e in &errors {
        assert!(
            e.contains(".yml:") && e.contains("unsupported feature `expand`"),
            "{e}"
        );
    }
    assert_eq!(out.status.code(), Some(1));

    // With the placeholder configured, every rule compiles.
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .arg("check")
        .arg("--config")
        .arg(config_with_placeholders(dir.path()))
        .args(corpus())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.ends_with(&format!("checked {n} rules: {n} ok, 0 failed\n")),
        "{}",
        stdout.lines().last().unwrap()
    );
    assert!(out.status.success());
}

#[test]
fn every_regression_case_fires_its_rule_on_its_event() {
    let mut infos = Vec::new();
    walk(&data().join("regression"), &|n| n == "info.yml", &mut infos);
    infos.sort();
    // Per case: the rule id and the event times of its JSON events.
    let mut cases: BTreeMap<PathBuf, (String, Vec<String>)> = BTreeMap::new();
    let mut inputs = Vec::new();
    for info in &infos {
        let text = std::fs::read_to_string(info).unwrap();
        let id = text
            .lines()
            .skip_while(|l| !l.starts_with("rule_metadata:"))
            .find_map(|l| l.trim().strip_prefix("- id:"))
            .unwrap()
            .trim()
            .to_string();
        let mut events = Vec::new();
        walk(
            info.parent().unwrap(),
            &|n| n.ends_with(".json"),
            &mut events,
        );
        let mut times = Vec::new();
        for e in &events {
            let text = std::fs::read_to_string(e).unwrap();
            for doc in serde_json::Deserializer::from_str(&text).into_iter::<serde_json::Value>() {
                let t = doc.unwrap()["Event"]["System"]["TimeCreated"]["#attributes"]["SystemTime"]
                    .as_str()
                    .unwrap()
                    .to_string();
                times.push(t[..23].to_string());
            }
        }
        inputs.extend(events);
        cases.insert(info.clone(), (id, times));
    }
    assert!(cases.len() >= 100, "{} cases", cases.len());
    let dir = tempfile::tempdir().unwrap();
    let alerts = dir.path().join("alerts.jsonl");
    let out = bin()
        .args(["replay", "--stream", "windows", "--config"])
        .arg(config_with_placeholders(dir.path()))
        .args(
            corpus()
                .iter()
                .flat_map(|c| [PathBuf::from("--rules"), c.clone()]),
        )
        .arg("--output")
        .arg(&alerts)
        .arg("--input")
        .args(&inputs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fired: Vec<serde_json::Value> = std::fs::read_to_string(&alerts)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut missing = Vec::new();
    let mut without_event = Vec::new();
    for (info, (id, times)) in &cases {
        if times.is_empty() {
            without_event.push(info.clone());
            continue;
        }
        let hit = fired.iter().any(|a| {
            a["rule"]["id"] == id.as_str()
                && times
                    .iter()
                    .any(|t| a["event_time"].as_str().unwrap().starts_with(t.as_str()))
        });
        if !hit {
            missing.push(format!("{} ({id})", info.display()));
        }
    }
    assert!(
        missing.is_empty(),
        "rules that did not fire on their event: {missing:#?}"
    );
    // A case without a JSON event (its info.yml names a raw log, not evtx) cannot be run.
    assert!(without_event.len() <= 1, "{without_event:?}");
}

#[test]
fn the_specification_examples_load() {
    let out = bin()
        .arg("check")
        .arg(data().join("specification/tests/schema"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let last = stdout.lines().last().unwrap();
    assert!(
        last.starts_with("checked 12 rules: 12 ok, 0 failed"),
        "{last}"
    );
}
