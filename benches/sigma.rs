//! SigmaHQ Windows rules over evtx-dump-shaped JSON events (~1.5 KB), on one thread: the
//! replay path (projected decode of the fields the rules read, then every rule).
//!
//! `cargo bench --bench sigma` prints, for 10, 100, 1,000 and all Windows rules of the corpus
//! in `../shared/data/sigma/rules/windows` (sorted by path): events per second, MB/s, the
//! per-batch latency quantiles, alerts raised, and the columns decoded; then decoding alone
//! (the same projection) and the time to load and compile the whole corpus (all three rule
//! folders) with the `sigma-windows` preset. Events are generated in memory first (Sysmon
//! process, network, file, registry and image-load events with realistic fields, one in a
//! thousand a real attack event from the corpus's regression cases), so only the pipeline is
//! timed.
//!
//! `BENCH_PROFILE=1000` (or `all`) prints instead where evaluating that many rules spends its
//! time: decoding, then every column matcher and every step of the plan in µs per event, the
//! costliest first, and the rules that select the most events.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use palisade::config::Config;
use palisade::decode::project::ProjectingDecoder;
use palisade::detect::sigma::engine::SigmaEngine;
use palisade::detect::sigma::plan::PlanProfile;
use palisade::detect::{DetectorSet, EvalContext};
use palisade::privacy::Pseudonymiser;
use palisade::source::{Origin, RawBatch};

const DATA: &str = "../shared/data/sigma";
const EVENTS: usize = 400_000;
const BATCH: usize = 8192;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
    fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b"0123456789ABCDEF"[(self.next() % 16) as usize]))
            .collect()
    }
}

const IMAGES: &[&str] = &[
    r"C:\Windows\System32\svchost.exe",
    r"C:\Windows\explorer.exe",
    r"C:\Program Files\Google\Chrome\Application\chrome.exe",
    r"C:\Program Files\Microsoft Office\root\Office16\OUTLOOK.EXE",
    r"C:\Windows\System32\RuntimeBroker.exe",
    r"C:\Windows\System32\taskhostw.exe",
    r"C:\Program Files\WindowsApps\Microsoft.Teams\ms-teams.exe",
    r"C:\Windows\System32\SearchIndexer.exe",
    r"C:\Program Files (x86)\CityWorks\Scada\hmi-client.exe",
    r"C:\Windows\System32\backgroundTaskHost.exe",
];
const USERS: &[&str] = &[
    r"CITY\m.gagnon",
    r"CITY\j.tremblay",
    r"NT AUTHORITY\SYSTEM",
    r"CITY\svc-scada",
    r"CITY\a.roy",
];
const DIRS: &[&str] = &[
    r"C:\Users\m.gagnon\AppData\Local\Temp",
    r"C:\ProgramData\CityWorks\logs",
    r"C:\Users\j.tremblay\Documents\Reports",
    r"C:\Windows\Prefetch",
];
const KEYS: &[&str] = &[
    r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Installer\UserData",
    r"HKU\S-1-5-21-1004\Software\Microsoft\Office\16.0\Common\Roaming",
    r"HKLM\System\CurrentControlSet\Services\bam\State\UserSettings",
];

fn system(rng: &mut Rng, id: u32, ts: &str) -> String {
    format!(
        r##""System":{{"Provider":{{"#attributes":{{"Name":"Microsoft-Windows-Sysmon","Guid":"5770385F-C22A-43E0-BF4C-06F5698FFBD9"}}}},"EventID":{id},"Version":5,"Level":4,"Task":{id},"Opcode":0,"Keywords":"0x8000000000000000","TimeCreated":{{"#attributes":{{"SystemTime":"{ts}"}}}},"EventRecordID":{},"Correlation":null,"Execution":{{"#attributes":{{"ProcessID":3544,"ThreadID":4272}}}},"Channel":"Microsoft-Windows-Sysmon/Operational","Computer":"ws-{}.city.local","Security":{{"#attributes":{{"UserID":"S-1-5-18"}}}}}}"##,
        rng.next() % 10_000_000,
        rng.next() % 400
    )
}

/// The time of event `i`: a millisecond apart, in order.
fn time_of(i: usize) -> String {
    format!(
        "2026-01-05T{:02}:{:02}:{:02}.{:06}Z",
        2 + i / 3_600_000 % 20,
        i / 60_000 % 60,
        i / 1000 % 60,
        (i % 1000) * 1000
    )
}

fn event(rng: &mut Rng, i: usize) -> String {
    let ts = time_of(i);
    let image = rng.pick(IMAGES);
    let user = rng.pick(USERS);
    let guid = format!(
        "{{{}-{}-{}-{}}}",
        rng.hex(8),
        rng.hex(4),
        rng.hex(4),
        rng.hex(12)
    );
    let hashes = format!(
        "SHA1={},MD5={},SHA256={},IMPHASH={}",
        rng.hex(40),
        rng.hex(32),
        rng.hex(64),
        rng.hex(32)
    );
    let (id, data) = match rng.next() % 10 {
        0..=3 => (
            1,
            format!(
                r##""RuleName":"-","UtcTime":"{ts}","ProcessGuid":"{guid}","ProcessId":{},"Image":"{}","FileVersion":"10.0.19041.1 (WinBuild.160101.0800)","Description":"Application","Product":"Microsoft® Windows® Operating System","Company":"Microsoft Corporation","OriginalFileName":"app.exe","CommandLine":"\"{}\" --type=renderer --field-trial-handle={} --lang=en-CA --enable-features=NetworkService,NetworkServiceInProcess --mojo-platform-channel-handle={} /prefetch:1","CurrentDirectory":"{}\\","User":"{}","LogonGuid":"{guid}","LogonId":"0x{}","TerminalSessionId":1,"IntegrityLevel":"Medium","Hashes":"{hashes}","ParentProcessGuid":"{guid}","ParentProcessId":{},"ParentImage":"C:\\Windows\\explorer.exe","ParentCommandLine":"C:\\Windows\\Explorer.EXE","ParentUser":"{}""##,
                rng.next() % 65536,
                image.replace('\\', "\\\\"),
                image.replace('\\', "\\\\"),
                rng.hex(24),
                rng.hex(8),
                rng.pick(DIRS).replace('\\', "\\\\"),
                user.replace('\\', "\\\\"),
                rng.hex(6),
                rng.next() % 65536,
                user.replace('\\', "\\\\"),
            ),
        ),
        4 | 5 => (
            3,
            format!(
                r##""RuleName":"-","UtcTime":"{ts}","ProcessGuid":"{guid}","ProcessId":{},"Image":"{}","User":"{}","Protocol":"tcp","Initiated":"true","SourceIsIpv6":"false","SourceIp":"10.20.{}.{}","SourceHostname":"ws.city.local","SourcePort":{},"SourcePortName":"-","DestinationIsIpv6":"false","DestinationIp":"10.10.{}.{}","DestinationHostname":"srv-{}.city.local","DestinationPort":443,"DestinationPortName":"https","Hashes":"{hashes}""##,
                rng.next() % 65536,
                image.replace('\\', "\\\\"),
                user.replace('\\', "\\\\"),
                rng.next() % 255,
                rng.next() % 255,
                49152 + rng.next() % 16000,
                rng.next() % 255,
                rng.next() % 255,
                rng.next() % 90,
            ),
        ),
        6 | 7 => (
            11,
            format!(
                r##""RuleName":"-","UtcTime":"{ts}","ProcessGuid":"{guid}","ProcessId":{},"Image":"{}","TargetFilename":"{}\\{}.tmp","CreationUtcTime":"{ts}","User":"{}","Hashes":"{hashes}","Description":"temporary file written during normal operation of the application"##,
                rng.next() % 65536,
                image.replace('\\', "\\\\"),
                rng.pick(DIRS).replace('\\', "\\\\"),
                rng.hex(12),
                user.replace('\\', "\\\\"),
            ) + "\"",
        ),
        8 => (
            13,
            format!(
                r##""RuleName":"-","EventType":"SetValue","UtcTime":"{ts}","ProcessGuid":"{guid}","ProcessId":{},"Image":"{}","TargetObject":"{}\\{}","Details":"DWORD (0x0000000{})","User":"{}","Hashes":"{hashes}""##,
                rng.next() % 65536,
                image.replace('\\', "\\\\"),
                rng.pick(KEYS).replace('\\', "\\\\"),
                rng.hex(10),
                rng.next() % 10,
                user.replace('\\', "\\\\"),
            ),
        ),
        _ => (
            7,
            format!(
                r##""RuleName":"-","UtcTime":"{ts}","ProcessGuid":"{guid}","ProcessId":{},"Image":"{}","ImageLoaded":"C:\\Windows\\System32\\{}.dll","FileVersion":"10.0.19041.1","Description":"Windows library","Product":"Microsoft® Windows® Operating System","Company":"Microsoft Corporation","OriginalFileName":"lib.dll","Hashes":"{hashes}","Signed":"true","Signature":"Microsoft Windows","SignatureStatus":"Valid","User":"{}""##,
                rng.next() % 65536,
                image.replace('\\', "\\\\"),
                rng.pick(&["ntdll", "kernel32", "user32", "combase", "rpcrt4"]),
                user.replace('\\', "\\\\"),
            ),
        ),
    };
    let sys = system(rng, id, &ts);
    format!(
        r##"{{"Event":{{"#attributes":{{"xmlns":"http://schemas.microsoft.com/win/2004/08/events/event"}},{sys},"EventData":{{{data}}}}}}}"##
    )
}

/// Every regression event of the corpus (as written; [`at_time`] puts it among the generated
/// ones).
fn attacks() -> Vec<serde_json::Value> {
    let mut files = Vec::new();
    walk(&Path::new(DATA).join("regression"), "json", &mut files);
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for doc in serde_json::Deserializer::from_str(&text).into_iter::<serde_json::Value>() {
            out.push(doc.unwrap());
        }
    }
    out
}

/// `event` compacted to one line, its time (the preset's event-time path) rewritten to
/// `time`: as written, the regression events' own times (months apart) would take a replay's
/// watermark past the generated events, which would then be dead-lettered as late.
fn at_time(event: &serde_json::Value, time: &str) -> String {
    let mut event = event.clone();
    let at = event
        .pointer_mut("/Event/System/TimeCreated/#attributes/SystemTime")
        .expect("regression events are evtx-dump JSON");
    *at = serde_json::Value::String(time.to_string());
    event.to_string()
}

fn walk(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, ext, out);
        } else if p.extension().is_some_and(|x| x == ext) {
            out.push(p);
        }
    }
    out.sort();
}

fn batches(events: &[String]) -> Vec<RawBatch> {
    events
        .chunks(BATCH)
        .map(|chunk| {
            let mut raw = RawBatch::new(0);
            for (i, e) in chunk.iter().enumerate() {
                raw.push(
                    e.as_bytes(),
                    Origin {
                        source: 0,
                        partition: 0,
                        offset: i as i64,
                        timestamp_ms: 0,
                    },
                );
            }
            raw
        })
        .collect()
}

struct Run {
    events: usize,
    bytes: usize,
    elapsed: Duration,
    /// CPU time the process spent meanwhile: on this shared machine, wall time also counts
    /// other jobs' turns on the core.
    cpu: Duration,
    hist: Histogram<u64>,
    alerts: usize,
}

fn run(config: &Config, detectors: Option<&mut DetectorSet>, raws: &[RawBatch]) -> Run {
    let stream = &config.streams[0];
    let (paths, keywords) = match &detectors {
        Some(d) => (d.projection(0).paths.clone(), d.projection(0).keywords),
        None => (Vec::new(), false),
    };
    let mut decoder = ProjectingDecoder::new(paths, stream.event_time.get_ref(), BATCH)
        .expect("decoder")
        .with_keywords(keywords);
    let ctx = EvalContext {
        now_ms: 0,
        pseudonymiser: Pseudonymiser::new(b"bench"),
        partition: 0,
        watermark_ms: i64::MIN,
    };
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let mut alerts = Vec::new();
    let mut timings = Vec::new();
    let mut n_alerts = 0;
    let mut detectors = detectors;
    let start = Instant::now();
    let cpu = cpu_time();
    for raw in raws {
        let t = Instant::now();
        let decoded = decoder.decode(raw);
        assert!(
            decoded.dead.is_empty(),
            "{:?}",
            decoded.dead.first().map(|d| &d.reason)
        );
        if let Some(d) = detectors.as_deref_mut() {
            d.evaluate(0, &decoded.batch, &ctx, &mut alerts, &mut timings);
            assert!(timings.iter().all(|t| t.error.is_none()), "{timings:?}");
        }
        n_alerts += alerts.len();
        alerts.clear();
        timings.clear();
        hist.record(t.elapsed().as_micros() as u64).unwrap();
    }
    Run {
        events: raws.iter().map(RawBatch::len).sum(),
        bytes: raws.iter().map(RawBatch::payload_bytes).sum(),
        elapsed: start.elapsed(),
        cpu: cpu_time() - cpu,
        hist,
        alerts: n_alerts,
    }
}

/// CPU time of this process (user + system), from `/proc/self/stat` (Linux; zero elsewhere),
/// in clock ticks of 10 ms.
fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // The fields after the command name (in parentheses, which may hold spaces).
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Decodes every batch, then evaluates the rules of `files` on each, timing every part of the
/// plan: prints the parts in µs per event, the costliest first.
fn profile(config: &Config, files: &[PathBuf], raws: &[RawBatch]) {
    let loaded = SigmaEngine::load(config, files);
    let mut engine = loaded.engine.expect("rules load");
    let projection = engine.projection(0);
    let mut decoder = ProjectingDecoder::new(
        projection.paths.clone(),
        config.streams[0].event_time.get_ref(),
        BATCH,
    )
    .expect("decoder")
    .with_keywords(projection.keywords);
    let t = Instant::now();
    let decoded: Vec<_> = raws.iter().map(|r| decoder.decode(r).batch).collect();
    let decode = t.elapsed();
    let events: usize = raws.iter().map(RawBatch::len).sum();
    let per_event = |d: Duration| d.as_secs_f64() * 1e6 / events as f64;
    let mut profile = PlanProfile::default();
    let mut selected = std::collections::HashMap::<String, usize>::new();
    let t = Instant::now();
    for batch in &decoded {
        for (rule, n) in engine.profile(0, batch, &mut profile).expect("evaluates") {
            *selected.entry(rule.to_string()).or_default() += n;
        }
    }
    let total = t.elapsed();
    println!(
        "{} rules, {} columns{}: decode {:.2} µs/event, evaluate {:.2} µs/event; by part:",
        files.len(),
        projection.paths.len(),
        if projection.keywords {
            " + keywords"
        } else {
            ""
        },
        per_event(decode),
        per_event(total),
    );
    let parts = profile.parts();
    for (name, d) in parts.iter().take(30) {
        println!(
            "  {:>7.3} µs/event {:>5.1} %  {name}",
            per_event(*d),
            d.as_secs_f64() / total.as_secs_f64() * 100.0
        );
    }
    let rest: Duration = parts.iter().skip(30).map(|(_, d)| *d).sum();
    println!(
        "  {:>7.3} µs/event {:>5.1} %  the other {} parts",
        per_event(rest),
        rest.as_secs_f64() / total.as_secs_f64() * 100.0,
        parts.len().saturating_sub(30)
    );
    let mut selected: Vec<(String, usize)> = selected.into_iter().collect();
    selected.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    println!("rules selecting the most events:");
    for (rule, n) in selected.iter().take(10) {
        println!("  {n:>7}  {rule}");
    }
}

fn report(label: &str, r: &Run) {
    let secs = r.elapsed.as_secs_f64();
    println!(
        "{label:<28} {:>9.0} events/s ({:>7.0} per CPU-second) {:>7.1} MB/s   batch p50 {:>6.1} ms  p99 {:>6.1} ms   alerts {}",
        r.events as f64 / secs,
        r.events as f64 / r.cpu.as_secs_f64(),
        r.bytes as f64 / secs / 1e6,
        r.hist.value_at_quantile(0.5) as f64 / 1000.0,
        r.hist.value_at_quantile(0.99) as f64 / 1000.0,
        r.alerts,
    );
}

fn main() {
    if !Path::new(DATA).exists() {
        eprintln!("{DATA} not found: run from the project root next to ../shared");
        return;
    }
    let config = Config::preset("sigma-windows").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    // The whole corpus, loaded and compiled as `palisade check --preset sigma-windows` does.
    let roots: Vec<PathBuf> = ["rules", "rules-emerging-threats", "rules-threat-hunting"]
        .iter()
        .map(|r| Path::new(DATA).join(r))
        .collect();
    let t = Instant::now();
    let all = rt.block_on(DetectorSet::load(&config, &roots));
    let load = t.elapsed();
    let (ok, failed) = match &all {
        Ok(s) => (s.summary().ok, s.summary().failed),
        Err(e) => (e.summary.ok, e.summary.failed),
    };
    println!(
        "load + compile the whole corpus: {:.2} s ({ok} rules ok, {failed} failed)",
        load.as_secs_f64()
    );

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let attacks = attacks();
    let events: Vec<String> = (0..EVENTS)
        .map(|i| {
            if i % 1000 == 999 {
                at_time(&attacks[(i / 1000) % attacks.len()], &time_of(i))
            } else {
                event(&mut rng, i)
            }
        })
        .collect();
    let mean = events.iter().map(String::len).sum::<usize>() / events.len();
    println!(
        "{EVENTS} events, {mean} bytes on average, {} regression attack events mixed in; batches of {BATCH}",
        EVENTS / 1000
    );
    // `BENCH_WRITE=FILE`: write the events as JSON lines for `palisade replay`, and stop.
    if let Ok(path) = std::env::var("BENCH_WRITE") {
        let mut text = events.join("\n");
        text.push('\n');
        std::fs::write(&path, text).expect("BENCH_WRITE: writable file");
        println!("wrote {path}");
        return;
    }
    let raws = batches(&events);

    let mut windows = Vec::new();
    walk(&Path::new(DATA).join("rules/windows"), "yml", &mut windows);
    windows.sort();
    let total = windows.len();
    // `BENCH_PROFILE=1000` (or `all`): where evaluating that many rules spends its time, per
    // column matcher and per part of the plan, and stop.
    if let Ok(n) = std::env::var("BENCH_PROFILE") {
        let n = if n.trim() == "all" {
            total
        } else {
            n.trim().parse().expect("BENCH_PROFILE: a rule count")
        };
        profile(&config, &windows[..n.min(total)], &raws);
        return;
    }
    // `BENCH_RULES=1000` (or `10,1000`): only these rule counts (`all` for every rule).
    let counts: Vec<usize> = match std::env::var("BENCH_RULES") {
        Ok(v) => v
            .split(',')
            .map(|n| {
                if n.trim() == "all" {
                    total
                } else {
                    n.trim().parse().expect("BENCH_RULES: counts")
                }
            })
            .collect(),
        Err(_) => vec![10, 100, 1000, total],
    };
    for n in counts {
        let files = &windows[..n.min(total)];
        let mut set = match rt.block_on(DetectorSet::load(&config, files)) {
            Ok(set) => set,
            Err(e) => {
                eprintln!("{n} rules: {} failed to load; first: {}", e.errors.len(), e);
                continue;
            }
        };
        let columns = set.projection(0).paths.len();
        let keywords = if set.projection(0).keywords {
            " + keywords"
        } else {
            ""
        };
        let r = run(&config, Some(&mut set), &raws);
        report(
            &format!("{} rules ({columns} columns{keywords})", set.len()),
            &r,
        );
    }
    // Decoding alone, with the projection of 1,000 rules: the floor under every figure above.
    let files = &windows[..1000.min(total)];
    let set = rt.block_on(DetectorSet::load(&config, files)).unwrap();
    let mut decode_only = ProjectingDecoder::new(
        set.projection(0).paths.clone(),
        config.streams[0].event_time.get_ref(),
        BATCH,
    )
    .unwrap();
    let t = Instant::now();
    let cpu = cpu_time();
    let mut hist = Histogram::<u64>::new(3).unwrap();
    for raw in &raws {
        let b = Instant::now();
        let d = decode_only.decode(raw);
        assert!(d.dead.is_empty());
        hist.record(b.elapsed().as_micros() as u64).unwrap();
    }
    report(
        "decode only (1000-rule cols)",
        &Run {
            events: EVENTS,
            bytes: raws.iter().map(RawBatch::payload_bytes).sum(),
            elapsed: t.elapsed(),
            cpu: cpu_time() - cpu,
            hist,
            alerts: 0,
        },
    );
    let _ = run(&config, None, &raws[..1]);
}
