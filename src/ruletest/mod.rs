//! Rule tests: `palisade test`. Test cases written by analysts beside their rules, run through
//! the rules exactly as the service loads and evaluates them.
//!
//! In: paths to `*.tests.yml` files, or folders searched for them, and the configuration.
//! Out: a report in the shape of `cargo test` written to the caller's writer, and the counts
//! ([`Outcome`]) that decide the exit code. The format of a test file is in [`spec`] and, for
//! analysts, in `rules/README.md`.
//!
//! How a file runs: the rule folder holding it is loaded with [`DetectorSet::load`] and the
//! given configuration, as `palisade run` and `palisade check` load it. Each case then gets
//! fresh detectors (the rules are loaded again for every case after the first), so no state —
//! a correlation's open windows — carries from one case into the next. A case's events are
//! replayed as `palisade replay` replays one file per stream: each stream's events in the
//! order written, the streams merged by event time (ties: the stream written first), cut into
//! micro-batches of `batch_rows` per stream, the open batches flushed at the end; each event
//! is decoded by its stream's decoder, and detection time is stream time. Personal fields are
//! pseudonymised as in the service (with a fixed test key); the report shows them, and the
//! expectations compare them, as the values written in the events.
//!
//! A case fails when its alerts differ from its expectations, when one of its events does not
//! decode (a dead letter), or when a detector fails on its batch. A file that cannot be used
//! (bad YAML, an unknown key, stream or rule, rules that do not load) is an error, reported at
//! its line and column; the other files still run.

mod compare;
pub mod spec;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::alert::Alert;
use crate::config::Config;
use crate::decode::StreamDecoder;
use crate::detect::sigma::SigmaDocument;
use crate::detect::{DetectorSet, EvalContext, RuleError, Timing, timestamp_millis};
use crate::privacy::Pseudonymiser;
use crate::source::{Batcher, Origin, RawBatch};
use compare::{Comparison, Seen, Wanted};
use spec::{Case, TestFile};

/// Totals of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed.
    pub failed: usize,
    /// Paths and test files that could not be run.
    pub errors: usize,
}

impl Outcome {
    /// The process exit code: 0 all passed, 1 some case failed, 2 something could not run.
    pub fn exit_code(&self) -> u8 {
        if self.errors > 0 {
            2
        } else if self.failed > 0 {
            1
        } else {
            0
        }
    }
}

/// True for a file `palisade test` runs (and the rule loader skips).
pub fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".tests.yml") || name.ends_with(".tests.yaml")
}

/// Runs every test file under `paths` (files, or folders searched recursively), writing the
/// report to `out`. Only a failing writer is an error; everything else is in the report.
pub async fn run<W: Write>(config: &Config, paths: &[PathBuf], out: &mut W) -> io::Result<Outcome> {
    let mut outcome = Outcome::default();
    let mut files = Vec::new();
    for path in paths {
        let before = files.len();
        if let Err(e) = collect(path, &mut files) {
            writeln!(out, "error: {}: {e}", path.display())?;
            outcome.errors += 1;
        } else if files.len() == before {
            writeln!(
                out,
                "error: {}: no rule tests here (files named `*.tests.yml`)",
                path.display()
            )?;
            outcome.errors += 1;
        }
    }
    files.dedup();
    for file in &files {
        run_file(config, file, out, &mut outcome).await?;
    }
    let mut tail = String::new();
    if outcome.errors > 0 {
        tail = format!(
            "; {} error{}",
            outcome.errors,
            if outcome.errors == 1 { "" } else { "s" }
        );
    }
    writeln!(
        out,
        "test result: {}. {} passed; {} failed{tail}",
        if outcome.exit_code() == 0 {
            "ok"
        } else {
            "FAILED"
        },
        outcome.passed,
        outcome.failed
    )?;
    Ok(outcome)
}

/// Test files under `path`, sorted within each folder.
fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    if path.is_file() {
        if !is_test_file(path) {
            return Err("not a rule test file: their names end in `.tests.yml`".into());
        }
        out.push(path.to_path_buf());
        return Ok(());
    }
    let entries = std::fs::read_dir(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut paths = Vec::new();
    for entry in entries {
        paths.push(entry.map_err(|e| format!("cannot read: {e}"))?.path());
    }
    paths.sort();
    for p in paths {
        if p.is_dir() {
            collect(&p, out)?;
        } else if is_test_file(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// A test file ready to run: parsed, its rules loaded, every name resolved.
struct Prepared {
    spec: TestFile,
    /// The rule folder (the test file's).
    dir: PathBuf,
    /// The rules as loaded first, used by the first case.
    detectors: DetectorSet,
    /// Per case: the configuration index of each of its streams, in the case's order.
    streams: Vec<Vec<usize>>,
    /// Per case: its expectations with rules resolved.
    wanted: Vec<Vec<Wanted>>,
    /// Ids of the compared rules.
    compared: HashSet<String>,
    /// How each rule is shown, by id.
    labels: HashMap<String, String>,
}

async fn run_file<W: Write>(
    config: &Config,
    file: &Path,
    out: &mut W,
    outcome: &mut Outcome,
) -> io::Result<()> {
    let prepared = match prepare(config, file).await {
        Ok(p) => p,
        Err(errors) => {
            for e in errors {
                writeln!(out, "error: {e}")?;
            }
            writeln!(out)?;
            outcome.errors += 1;
            return Ok(());
        }
    };
    let Prepared {
        spec,
        dir,
        detectors,
        streams,
        wanted,
        compared,
        labels,
    } = prepared;
    let cases = spec.cases.len();
    writeln!(
        out,
        "running {cases} test{} from {}",
        if cases == 1 { "" } else { "s" },
        file.display()
    )?;
    let pseudonymiser = Pseudonymiser::new(TEST_KEY);
    let mut first = Some(detectors);
    let mut failures = Vec::new();
    for (i, case) in spec.cases.iter().enumerate() {
        let raised = match first.take() {
            Some(mut d) => run_case(config, &mut d, case, &streams[i], file, &pseudonymiser),
            // The same files loaded a moment ago; they can only fail if edited meanwhile.
            None => match DetectorSet::load(config, std::slice::from_ref(&dir)).await {
                Ok(mut d) => run_case(config, &mut d, case, &streams[i], file, &pseudonymiser),
                Err(e) => Raised {
                    problems: vec![format!("the rules no longer load: {e}")],
                    ..Raised::default()
                },
            },
        };
        let seen = seen(&raised.alerts, &compared, &labels, &raised.personal);
        let comparison = compare::compare(&wanted[i], &seen);
        let passed = comparison.holds() && raised.problems.is_empty();
        writeln!(
            out,
            "test {} ... {}",
            case.name,
            if passed { "ok" } else { "FAILED" }
        )?;
        if passed {
            outcome.passed += 1;
        } else {
            outcome.failed += 1;
            failures.push((case, raised.problems, comparison));
        }
    }
    if !failures.is_empty() {
        writeln!(out, "\nfailures:")?;
        for (case, problems, comparison) in &failures {
            write_failure(out, case, problems, comparison)?;
        }
    }
    writeln!(out)?;
    Ok(())
}

fn write_failure<W: Write>(
    out: &mut W,
    case: &Case,
    problems: &[String],
    c: &Comparison,
) -> io::Result<()> {
    writeln!(out, "\n---- {} ----", case.name)?;
    for p in problems {
        writeln!(out, "{p}")?;
    }
    writeln!(out, "expected alerts:")?;
    if c.expected.is_empty() {
        writeln!(out, "  (none)")?;
    }
    for line in &c.expected {
        writeln!(out, "  {line}")?;
    }
    writeln!(out, "actual alerts:")?;
    if c.actual.is_empty() {
        writeln!(out, "  (none)")?;
    }
    for (line, evidence) in &c.actual {
        writeln!(out, "  {line}")?;
        if !evidence.is_empty() {
            writeln!(out, "      evidence {evidence}")?;
        }
    }
    if !c.holds() {
        writeln!(out, "diff:")?;
        for line in &c.missing {
            writeln!(out, "- {line}")?;
        }
        for line in &c.unexpected {
            writeln!(out, "+ {line}")?;
        }
    }
    Ok(())
}

/// Parses `file`, loads the rules beside it and resolves every stream and rule it names.
async fn prepare(config: &Config, file: &Path) -> Result<Prepared, Vec<RuleError>> {
    let at = |pos: crate::detect::sigma::yaml::Pos, message: String| RuleError {
        file: file.to_path_buf(),
        line: pos.line,
        column: pos.column,
        message,
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| vec![RuleError::at_line(file, 0, format!("cannot read: {e}"))])?;
    let spec = spec::parse(&text).map_err(|errors| {
        errors
            .into_iter()
            .map(|e| at(e.pos, e.message))
            .collect::<Vec<_>>()
    })?;
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let detectors = DetectorSet::load(config, std::slice::from_ref(&dir))
        .await
        .map_err(|e| {
            let mut errors = vec![RuleError::at_line(
                file,
                0,
                format!(
                    "the rules beside it do not load (`palisade check {}` says more):",
                    dir.display()
                ),
            )];
            errors.extend(e.errors);
            errors
        })?;
    let names = RuleNames::of(&detectors);
    let mut errors = Vec::new();
    if names.ids.is_empty() {
        errors.push(RuleError::at_line(
            file,
            0,
            format!("no rules beside it: {} holds no rule file", dir.display()),
        ));
        return Err(errors);
    }
    let compared: HashSet<String> = match &spec.rules {
        None => names.ids.iter().cloned().collect(),
        Some(rules) => rules
            .iter()
            .filter_map(|r| match names.resolve(&r.name) {
                Some(id) => Some(id.to_string()),
                None => {
                    errors.push(at(r.pos, names.unknown(&r.name, &dir)));
                    None
                }
            })
            .collect(),
    };
    let mut streams = Vec::new();
    let mut wanted = Vec::new();
    for case in &spec.cases {
        let mut indices = Vec::new();
        for s in &case.streams {
            match config.stream_index(&s.stream.name) {
                None => errors.push(at(
                    s.stream.pos,
                    format!(
                        "unknown stream `{}`; the configuration has {}",
                        s.stream.name,
                        config
                            .streams
                            .iter()
                            .map(|s| format!("`{}`", s.name()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
                Some(i) => indices.push(i),
            }
        }
        streams.push(indices);
        let mut case_wanted = Vec::new();
        for e in &case.expect {
            let Some(id) = names.resolve(&e.rule.name) else {
                errors.push(at(e.rule.pos, names.unknown(&e.rule.name, &dir)));
                continue;
            };
            if !compared.contains(id) {
                errors.push(at(
                    e.rule.pos,
                    format!(
                        "rule `{}` is not compared in this file: add it to `rules:` at the top",
                        e.rule.name
                    ),
                ));
                continue;
            }
            case_wanted.push(Wanted {
                rule: id.to_string(),
                label: names.label(id).to_string(),
                entity: e.entity.clone(),
                count: e.count,
                evidence: e.evidence.clone(),
            });
        }
        wanted.push(case_wanted);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Prepared {
        spec,
        dir,
        detectors,
        streams,
        wanted,
        compared,
        labels: names.labels,
    })
}

/// The loaded rules by every name a test may use: the id, and a Sigma rule's `name`.
struct RuleNames {
    /// Ids in load order.
    ids: Vec<String>,
    /// Id or Sigma name -> id.
    keys: HashMap<String, String>,
    /// Id -> how it is shown (the Sigma name when there is one: ids are often UUIDs).
    labels: HashMap<String, String>,
}

impl RuleNames {
    fn of(detectors: &DetectorSet) -> RuleNames {
        let mut names = RuleNames {
            ids: Vec::new(),
            keys: HashMap::new(),
            labels: HashMap::new(),
        };
        // Sigma `name`s are not part of a loaded rule's metadata: read them from the files.
        let mut sigma_names: HashMap<PathBuf, Vec<(String, String)>> = HashMap::new();
        for meta in detectors.rules() {
            names.ids.push(meta.id.clone());
            names.keys.insert(meta.id.clone(), meta.id.clone());
            names.labels.insert(meta.id.clone(), meta.id.clone());
            if !meta.kind.starts_with("sigma") {
                continue;
            }
            let in_file = sigma_names
                .entry(meta.file.clone())
                .or_insert_with(|| sigma_names_in(&meta.file));
            if let Some((_, name)) = in_file.iter().find(|(id, _)| *id == meta.id) {
                names.keys.entry(name.clone()).or_insert(meta.id.clone());
                names.labels.insert(meta.id.clone(), name.clone());
            }
        }
        names
    }

    fn resolve(&self, key: &str) -> Option<&str> {
        self.keys.get(key).map(String::as_str)
    }

    fn label<'a>(&'a self, id: &'a str) -> &'a str {
        self.labels.get(id).map_or(id, String::as_str)
    }

    fn unknown(&self, key: &str, dir: &Path) -> String {
        let known: Vec<String> = self
            .ids
            .iter()
            .map(|id| format!("`{}`", self.label(id)))
            .collect();
        format!(
            "unknown rule `{key}`: the rules in {} are {}",
            dir.display(),
            known.join(", ")
        )
    }
}

/// `(id, name)` of every Sigma rule in `file` that has a name; the id is what the engine
/// uses (`id`, else `name`).
fn sigma_names_in(file: &Path) -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Vec::new();
    };
    let Ok(docs) = crate::detect::sigma::parse(file, &text) else {
        return Vec::new();
    };
    docs.iter()
        .filter_map(|d| match d {
            SigmaDocument::Rule(r) => Some(&r.meta),
            SigmaDocument::Correlation(c) => Some(&c.meta),
            SigmaDocument::Filter(_) => None,
        })
        .filter_map(|m| {
            let name = m.name.clone()?;
            Some((m.id.clone().unwrap_or_else(|| name.clone()), name))
        })
        .collect()
}

/// The pseudonymisation key of test runs: fixed, so a test never depends on the environment.
const TEST_KEY: &[u8] = b"palisade-rule-tests";

/// What a case raised.
#[derive(Default)]
struct Raised {
    /// Every alert, in the order raised.
    alerts: Vec<Alert>,
    /// Dead letters and detector failures, as report lines.
    problems: Vec<String>,
    /// Pseudonym -> the value written in the events.
    personal: HashMap<String, String>,
}

/// Replays a case's events through `detectors` (see the module docs for the semantics).
fn run_case(
    config: &Config,
    detectors: &mut DetectorSet,
    case: &Case,
    streams: &[usize],
    file: &Path,
    pseudonymiser: &Pseudonymiser,
) -> Raised {
    let mut raised = Raised::default();
    for s in &case.streams {
        for e in &s.events {
            remember_personal(&e.value, pseudonymiser, &mut raised.personal);
        }
    }
    let order = merge(config, case, streams);
    let batch_rows = case
        .batch_rows
        .unwrap_or(*config.pipeline.batch_rows.get_ref());
    // Only row counts cut batches, as in replay.
    let mut batcher = Batcher::new(config.streams.len(), batch_rows, Duration::from_secs(3600));
    let mut decoders: HashMap<usize, StreamDecoder> = HashMap::new();
    let mut ctx = EvalContext {
        now_ms: 0,
        pseudonymiser: pseudonymiser.clone(),
        partition: 0,
        watermark_ms: i64::MIN,
    };
    let mut watermarks = crate::watermark::Watermarks::new(config);
    let mut stream_time = i64::MIN;
    let names = detectors.detector_names();
    let mut process = |raw: RawBatch, detectors: &mut DetectorSet, raised: &mut Raised| {
        let s = &config.streams[raw.stream];
        let decoder = decoders.entry(raw.stream).or_insert_with(|| {
            let p = detectors.projection(raw.stream);
            StreamDecoder::for_stream(s, &p.paths, p.keywords, batch_rows)
                .expect("the configuration validated the stream")
        });
        let mut decoded = decoder.decode(&raw);
        watermarks.split_late(raw.stream, &raw, &mut decoded, decoder.time_col());
        for dead in &decoded.dead {
            let event = order[dead.origin.offset as usize].1;
            let what = if dead.kind == crate::decode::FailureKind::Late {
                "was dropped"
            } else {
                "did not decode"
            };
            raised.problems.push(format!(
                "event at {}:{}:{} (stream `{}`) {what}: {}",
                file.display(),
                event.pos.line,
                event.pos.column,
                s.name(),
                dead.reason
            ));
        }
        let times = timestamp_millis(decoded.batch.column(decoder.time_col()).as_ref());
        let max = times.into_iter().flatten().max();
        if let Some(max) = max {
            stream_time = stream_time.max(max);
        }
        // Processing time stands still: no partition of a test case goes idle.
        watermarks.observe(raw.stream, raw.partition, max, 0);
        ctx.watermark_ms = watermarks.watermark(raw.stream);
        ctx.now_ms = stream_time.max(0);
        let mut timings: Vec<Timing> = Vec::new();
        detectors.evaluate(
            raw.stream,
            &decoded.batch,
            &ctx,
            &mut raised.alerts,
            &mut timings,
        );
        for t in timings {
            if let Some(e) = t.error {
                raised.problems.push(format!(
                    "detector `{}` failed on a batch of `{}`: {e}",
                    names[t.detector],
                    s.name()
                ));
            }
        }
    };
    for (n, (stream, event)) in order.iter().enumerate() {
        let payload = serde_json::to_vec(&event.value).expect("JSON values serialize");
        let origin = Origin {
            source: 0,
            partition: 0,
            offset: n as i64,
            timestamp_ms: 0,
        };
        if let Some(full) = batcher.push(*stream, &payload, origin) {
            process(full, detectors, &mut raised);
        }
    }
    for rest in batcher.drain() {
        process(rest, detectors, &mut raised);
    }
    // The case's input is finished: every window closes, as at the end of a replay.
    watermarks.finish();
    ctx.watermark_ms = i64::MAX;
    ctx.now_ms = stream_time.max(0);
    let mut timings: Vec<Timing> = Vec::new();
    for &stream in streams {
        detectors.advance(stream, &ctx, &mut raised.alerts, &mut timings);
    }
    for t in timings {
        if let Some(e) = t.error {
            raised.problems.push(format!(
                "detector `{}` failed at the end of the case: {e}",
                names[t.detector]
            ));
        }
    }
    raised
}

/// The case's events in arrival order: each stream's as written, merged by event time; equal
/// times go to the stream written first.
fn merge<'c>(config: &Config, case: &'c Case, streams: &[usize]) -> Vec<(usize, &'c spec::Event)> {
    let mut heads: Vec<(
        usize,
        std::iter::Peekable<std::slice::Iter<'c, spec::Event>>,
        &str,
    )> = case
        .streams
        .iter()
        .zip(streams)
        .map(|(s, &i)| {
            (
                i,
                s.events.iter().peekable(),
                config.streams[i].event_time.get_ref().as_str(),
            )
        })
        .collect();
    let mut out = Vec::new();
    loop {
        let next = heads
            .iter_mut()
            .enumerate()
            .filter_map(|(n, (_, events, field))| {
                events.peek().map(|e| (event_time_ms(&e.value, field), n))
            })
            .min();
        let Some((_, n)) = next else { break };
        let (stream, events, _) = &mut heads[n];
        out.push((*stream, events.next().expect("peeked")));
    }
    out
}

/// An event's time for the merge: RFC 3339 text or epoch milliseconds at `field` (a dotted
/// path into objects); events without one go first, as in replay.
fn event_time_ms(event: &Value, field: &str) -> i64 {
    let value = event
        .get(field)
        .or_else(|| field.split('.').try_fold(event, |v, part| v.get(part)));
    match value {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => {
            datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(s.trim())
                .ok()
                .map(|ns| ns / 1_000_000)
        }
        _ => None,
    }
    .unwrap_or(i64::MIN)
}

/// Records the pseudonym of every value in `value`, so alerts can be shown with the values the
/// test wrote.
fn remember_personal(value: &Value, p: &Pseudonymiser, out: &mut HashMap<String, String>) {
    match value {
        Value::String(s) => {
            out.insert(p.pseudonym(s), s.clone());
        }
        Value::Number(_) | Value::Bool(_) => {
            let text = value.to_string();
            out.insert(p.pseudonym(&text), text);
        }
        Value::Array(items) => items.iter().for_each(|v| remember_personal(v, p, out)),
        Value::Object(fields) => fields.values().for_each(|v| remember_personal(v, p, out)),
        Value::Null => {}
    }
}

/// Replaces the pseudonyms in `text` (`ps:` and 16 hex digits) by the values they stand for.
fn reveal(text: &str, personal: &HashMap<String, String>) -> String {
    const LEN: usize = 19;
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("ps:") {
        out.push_str(&rest[..at]);
        let candidate = rest.get(at..at + LEN);
        match candidate.and_then(|c| personal.get(c)) {
            Some(value) => {
                out.push_str(value);
                rest = &rest[at + LEN..];
            }
            None => {
                out.push_str("ps:");
                rest = &rest[at + 3..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The alerts of the compared rules, personal values revealed.
fn seen(
    alerts: &[Alert],
    compared: &HashSet<String>,
    labels: &HashMap<String, String>,
    personal: &HashMap<String, String>,
) -> Vec<Seen> {
    // Inside JSON text a revealed value must be escaped as a JSON string's content.
    let escaped: HashMap<String, String> = personal
        .iter()
        .map(|(k, v)| {
            let quoted = Value::String(v.clone()).to_string();
            (k.clone(), quoted[1..quoted.len() - 1].to_string())
        })
        .collect();
    alerts
        .iter()
        .filter(|a| compared.contains(&a.rule.id))
        .map(|a| {
            let rows: Vec<String> = a
                .evidence
                .iter()
                .map(|row| reveal(row.get(), &escaped))
                .collect();
            Seen {
                rule: a.rule.id.clone(),
                label: labels.get(&a.rule.id).unwrap_or(&a.rule.id).clone(),
                entity: reveal(&a.entity, personal),
                evidence: rows
                    .iter()
                    .filter_map(|row| serde_json::from_str::<Map<String, Value>>(row).ok())
                    .collect(),
                shown: match rows.as_slice() {
                    [] => String::new(),
                    [one] => one.clone(),
                    rows => format!("[{}]", rows.join(",")),
                },
            }
        })
        .collect()
}
