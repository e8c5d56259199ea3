//! Durable state: what checkpoints cost and how fast state comes back.
//!
//! `cargo bench --bench state` prints:
//! - **checkpoint cost**: a Sigma `event_count` correlation grouped by user (100,000 users,
//!   30-minute windows) fed batches of 8,192 events as fast as one thread can for 20 s,
//!   checkpointing every 10 s (what `[state] checkpoint_interval_ms` defaults to): events per
//!   second, time spent taking the checkpoints (the compute thread's share: finding the
//!   changed groups and encoding them), and that time as a share of the interval. Writing
//!   the entries to Kafka happens on the deliver task, beside the compute thread.
//! - **restore of 1 M keys**: one million groups checkpointed, written to a changelog topic
//!   of librdkafka's mock cluster (64 partitions, with offset markers), then read back with
//!   `read_changelog` and restored into a fresh correlation set: the time of each step.
//!
//! `PALISADE_BENCH_ONLY=checkpoint` or `restore` runs one of the two.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use palisade::detect::StateEntry;
use palisade::detect::sigma::correlate::{
    CorrelationHit, CorrelationSet, CorrelationSpec, Limits, Source,
};
use palisade::detect::sigma::correlation::{CorrelationCondition, CorrelationType};
use palisade::detect::sigma::value::{CmpOp, Number};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};

const BATCH: usize = 8192;

fn set(max_groups: usize) -> CorrelationSet {
    let spec = CorrelationSpec {
        kind: CorrelationType::EventCount,
        sources: vec![Source::Rule(0)],
        group_by: vec!["user".into()],
        group_columns: vec![vec!["user".into()]],
        value_columns: vec![None],
        timespan_ms: 30 * 60_000,
        condition: Some(CorrelationCondition {
            field: Vec::new(),
            predicates: vec![(CmpOp::Gte, Number::Int(50))],
        }),
        generate: false,
    };
    CorrelationSet::new(
        vec![spec],
        Limits {
            max_groups_per_correlation: max_groups,
            max_events_per_group: 1000,
            max_evidence: 10,
        },
    )
    .unwrap()
}

/// A batch of `BATCH` events of users `first..first + BATCH` (mod `users`), 1 ms apart.
fn batch(users: &[String], first: usize, start_ms: i64) -> (RecordBatch, Vec<i64>) {
    let names: StringArray = (0..BATCH)
        .map(|i| Some(users[(first + i) % users.len()].as_str()))
        .collect();
    let schema = Schema::new(vec![Field::new("user", DataType::Utf8, true)]);
    let b = RecordBatch::try_new(Arc::new(schema), vec![Arc::new(names) as ArrayRef]).unwrap();
    let times = (0..BATCH as i64).map(|i| start_ms + i).collect();
    (b, times)
}

fn feed(s: &mut CorrelationSet, b: &RecordBatch, times: &[i64], hits: &mut Vec<CorrelationHit>) {
    let all = [BooleanBuffer::new_set(b.num_rows())];
    hits.clear();
    s.observe(b, times, &[0], &all, &mut |_| "{}".to_string(), hits);
}

fn checkpoint_cost() {
    let users: Vec<String> = (0..100_000).map(|i| format!("user-{i:06}")).collect();
    let mut s = set(200_000);
    let mut hits = Vec::new();
    let mut entries: Vec<StateEntry> = Vec::new();
    let interval = Duration::from_secs(10);
    let run = Duration::from_secs(20);
    let start = Instant::now();
    let mut last = start;
    let (mut events, mut t, mut first) = (0usize, 0i64, 0usize);
    let (mut in_checkpoints, mut checkpoints, mut written) = (Duration::ZERO, 0u32, 0usize);
    while start.elapsed() < run {
        let (b, times) = batch(&users, first, t);
        feed(&mut s, &b, &times, &mut hits);
        events += BATCH;
        first += BATCH;
        t += BATCH as i64;
        if last.elapsed() >= interval {
            let c = Instant::now();
            entries.clear();
            s.checkpoint(0, b"bench", &mut entries);
            in_checkpoints += c.elapsed();
            checkpoints += 1;
            written += entries.len();
            last = Instant::now();
        }
    }
    let elapsed = start.elapsed();
    let per_checkpoint = in_checkpoints / checkpoints.max(1);
    println!(
        "checkpoint every 10 s: {:.0} events/s over {:.1} s; {checkpoints} checkpoints of {} \
         entries on average, {:.1} ms each = {:.2} % of the interval ({:.2} % of the run)",
        events as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        written / checkpoints.max(1) as usize,
        per_checkpoint.as_secs_f64() * 1e3,
        100.0 * per_checkpoint.as_secs_f64() / interval.as_secs_f64(),
        100.0 * in_checkpoints.as_secs_f64() / elapsed.as_secs_f64(),
    );
}

async fn restore_million() {
    const KEYS: usize = 1_000_000;
    // The mock cluster keeps about 5 MB per partition: 64 partitions hold the million.
    const PARTITIONS: i32 = 64;
    let users: Vec<String> = (0..KEYS).map(|i| format!("user-{i:07}")).collect();
    let mut s = set(KEYS);
    let mut hits = Vec::new();
    let mut first = 0;
    while first < KEYS {
        let (b, times) = batch(&users, first, first as i64);
        // Spread the groups over the partitions, as keyed input would.
        s.set_partition((first / BATCH) as i32 % PARTITIONS);
        feed(&mut s, &b, &times, &mut hits);
        first += BATCH;
    }
    let mut entries = Vec::new();
    let c = Instant::now();
    s.checkpoint(0, b"bench", &mut entries);
    let encode = c.elapsed();
    entries.sort_by(|a, b| (a.partition, &a.key).cmp(&(b.partition, &b.key)));
    let bytes: usize = entries
        .iter()
        .map(|e| e.key.len() + e.value.as_ref().map_or(0, Vec::len))
        .sum();

    // Into a changelog topic, with the offset markers a checkpoint ends with.
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("bench.state", PARTITIONS, 1).unwrap();
    let mut config = palisade::config::Config::builtin();
    config.kafka.brokers = cluster.bootstrap_servers();
    let producer: FutureProducer = palisade::source::kafka::client_config(&config)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "2000000")
        .create()
        .unwrap();
    let w = Instant::now();
    let mut sends = Vec::with_capacity(entries.len());
    for e in &entries {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to("bench.state")
            .partition(e.partition)
            .key(&e.key[..]);
        // Groups that moved partition leave a tombstone (null value) where they were.
        if let Some(v) = &e.value {
            record = record.payload(&v[..]);
        }
        sends.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for s in sends {
        s.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    let mut marker = palisade::detect::codec::Enc::new();
    marker.u8(1);
    marker.i64(0);
    for p in 0..PARTITIONS {
        let mut key = palisade::state::OFFSETS_KEY.to_vec();
        key.extend_from_slice(b"city.auth");
        let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to("bench.state")
            .partition(p)
            .key(&key[..])
            .payload(&marker.buf[..]);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let write = w.elapsed();

    let r = Instant::now();
    let partitions: Vec<i32> = (0..PARTITIONS).collect();
    let restored = tokio::task::spawn_blocking(move || {
        palisade::state::read_changelog(
            &config,
            "bench.state",
            &partitions,
            palisade::state::DeliveryMode::ExactlyOnce,
        )
        .unwrap()
    })
    .await
    .unwrap();
    let read = r.elapsed();
    let mut fresh = set(KEYS);
    let d = Instant::now();
    let mine: Vec<(i32, &[u8], &[u8])> = restored
        .entries
        .iter()
        .map(|e| (e.partition, &e.key[5..], e.value.as_deref().unwrap()))
        .collect();
    fresh.restore(0, &mine).unwrap();
    let apply = d.elapsed();
    assert_eq!(fresh.live().groups, KEYS, "every group came back");
    let same = restored
        .entries
        .iter()
        .filter(|e| {
            entries
                .binary_search_by(|o| (o.partition, &o.key).cmp(&(e.partition, &e.key)))
                .is_ok_and(|i| entries[i].value == e.value)
        })
        .count();
    println!(
        "restore of {} keys ({:.0} MB, {:.0} bytes/key): read from the changelog {:.2} s \
         ({} entries read back, {same} identical to those written) + restore into the \
         detector {:.2} s = {:.2} s (checkpoint encode {:.2} s, write {:.2} s)",
        entries.len(),
        bytes as f64 / 1e6,
        bytes as f64 / entries.len() as f64,
        read.as_secs_f64(),
        restored.entries.len(),
        apply.as_secs_f64(),
        (read + apply).as_secs_f64(),
        encode.as_secs_f64(),
        write.as_secs_f64(),
    );
}

#[tokio::main]
async fn main() {
    // `PALISADE_BENCH_ONLY=checkpoint` or `=restore` runs one of the two (for profiling).
    let only = std::env::var("PALISADE_BENCH_ONLY").unwrap_or_default();
    if only != "restore" {
        checkpoint_cost();
    }
    if only != "checkpoint" {
        restore_million().await;
    }
}
