//! Property tests of the decoder: arbitrary bytes never panic and never lose a record; valid
//! records round-trip.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Field, Int64Type, Schema, TimeUnit, TimestampMillisecondType,
};
use palisade::decode::JsonDecoder;
use palisade::source::{Origin, RawBatch};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn decoder() -> JsonDecoder {
    let schema = Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
        Field::new("n", DataType::Int64, true),
        Field::new("s", DataType::Utf8, true),
        Field::new(
            "o",
            DataType::Struct(vec![Field::new("x", DataType::Float64, true)].into()),
            true,
        ),
    ]);
    JsonDecoder::new(Arc::new(schema), "ts", 64).unwrap()
}

fn batch(records: &[Vec<u8>]) -> RawBatch {
    let mut raw = RawBatch::new(0);
    for (i, r) in records.iter().enumerate() {
        raw.push(
            r,
            Origin {
                source: 0,
                partition: 0,
                offset: i as i64,
                timestamp_ms: 0,
            },
        );
    }
    raw
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic_and_every_record_is_accounted_for(
        records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..20),
        valid_every in 1usize..5,
    ) {
        // Mix garbage with valid records so both paths run.
        let records: Vec<Vec<u8>> = records
            .into_iter()
            .enumerate()
            .map(|(i, r)| if i % valid_every == 0 { format!("{{\"ts\":{i},\"n\":{i}}}").into_bytes() } else { r })
            .collect();
        let mut d = decoder();
        let out = d.decode(&batch(&records));
        prop_assert_eq!(out.batch.num_rows() + out.dead.len(), records.len());
        for dead in &out.dead {
            prop_assert_eq!(&dead.payload, &records[dead.origin.offset as usize]);
            prop_assert!(!dead.reason.is_empty());
        }
    }

    #[test]
    fn valid_records_round_trip(
        rows in proptest::collection::vec((0i64..4_000_000_000_000, proptest::option::of(any::<i64>()), proptest::option::of(".{0,12}"), proptest::option::of(-1e9f64..1e9)), 1..50)
    ) {
        let records: Vec<Vec<u8>> = rows
            .iter()
            .map(|(ts, n, s, x)| serde_json::json!({"ts": ts, "n": n, "s": s, "o": {"x": x}}).to_string().into_bytes())
            .collect();
        let mut d = decoder();
        let out = d.decode(&batch(&records));
        prop_assert!(out.dead.is_empty(), "{:?}", out.dead);
        let ts = out.batch.column(0).as_primitive::<TimestampMillisecondType>();
        let n = out.batch.column(1).as_primitive::<Int64Type>();
        let s = out.batch.column(2).as_string::<i32>();
        let o = out.batch.column(3).as_struct();
        let x = o.column(0).as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        for (i, (t, nv, sv, xv)) in rows.iter().enumerate() {
            prop_assert_eq!(ts.value(i), *t);
            prop_assert_eq!(n.is_valid(i).then(|| n.value(i)), *nv);
            prop_assert_eq!(s.is_valid(i).then(|| s.value(i).to_string()), sv.clone());
            prop_assert_eq!(x.is_valid(i).then(|| x.value(i)), *xv);
        }
    }
}
