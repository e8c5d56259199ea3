//! Event-time windows for SQL detectors, computed incrementally.
//!
//! A windowed rule is an aggregate query (`SELECT keys, aggregates FROM stream WHERE ... GROUP
//! BY keys HAVING ...`) with a `-- window:` header. At load its analysed logical plan is cut
//! at the aggregate: everything below (scan, joins with reference tables, `WHERE`) becomes a
//! physical plan that, per batch, projects the group keys, the aggregates' arguments and the
//! event time; everything above (`HAVING`, the `SELECT` list) becomes physical expressions
//! applied to window results.
//!
//! Between the two, window state: per group key (and input partition, see
//! [`super::StateEntry`]) the partial aggregates of each *pane* — for hopping and tumbling
//! windows the `hop`-long slices of event time a window is made of, for session windows each
//! open session. A batch only updates panes; when the watermark passes a window's end, the
//! panes of each key in it are merged into one row per key and window (the final step of a
//! partial/final aggregation), `HAVING` and the projection run on those rows, and each row
//! left is an alert. Each window is emitted once, and what it contains depends only on the
//! events whose time falls in it, not on batch boundaries or arrival order within the allowed
//! lateness.
//!
//! State layout, chosen to stay small at millions of keys: one `Vec<u64>` per key holding a
//! meta word, the key's bytes (partition + Arrow row encoding of the group values), the pane
//! records (a header and one or two words per aggregate) and the count-distinct entries
//! (sorted words of pane tag, aggregate and a 44-bit hash of the value; two distinct values
//! of one key and pane collide with probability about n²/2⁴⁵). Keys are found through a map
//! from a 64-bit hash of their bytes, the bytes checked on every hit. Strings kept by
//! `min`/`max` live in one arena per detector.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Builder, Int64Array, Int64Builder, RecordBatch,
    StringBuilder, TimestampMillisecondArray, UInt32Array,
};
use datafusion::arrow::compute::{cast, filter, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{Column, DFSchemaRef};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use super::StateEntry;
use crate::config::WindowLimits;

/// How a rule's events are grouped in event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSpec {
    /// Windows of `size_ms` starting every `hop_ms` (tumbling when equal).
    Hop {
        /// Window length, ms.
        size_ms: i64,
        /// Distance between window starts, ms; divides `size_ms`.
        hop_ms: i64,
    },
    /// Per key, events closer than `gap_ms` to the previous one share a window.
    Session {
        /// Inactivity that closes a session, ms.
        gap_ms: i64,
    },
}

/// Most panes a hopping window may span (`size / hop`).
const MAX_PANES: i64 = 64;

impl WindowSpec {
    /// Parses a `-- window:` header value: `tumble 5m`, `hop 5m every 1m`, `session 10m`.
    pub fn parse(value: &str) -> Result<WindowSpec, String> {
        let words: Vec<&str> = value.split_whitespace().collect();
        let spec = match words.as_slice() {
            ["tumble", size] => {
                let size = parse_duration(size)?;
                WindowSpec::Hop {
                    size_ms: size,
                    hop_ms: size,
                }
            }
            ["hop", size, "every", hop] => WindowSpec::Hop {
                size_ms: parse_duration(size)?,
                hop_ms: parse_duration(hop)?,
            },
            ["session", gap] => WindowSpec::Session {
                gap_ms: parse_duration(gap)?,
            },
            _ => {
                return Err(format!(
                    "bad window `{value}`; write `tumble 5m`, `hop 5m every 1m` or `session 10m`"
                ));
            }
        };
        if let WindowSpec::Hop { size_ms, hop_ms } = spec {
            if size_ms % hop_ms != 0 {
                return Err(format!(
                    "window size {size_ms} ms is not a multiple of the hop {hop_ms} ms"
                ));
            }
            if size_ms / hop_ms > MAX_PANES {
                return Err(format!(
                    "a window may span at most {MAX_PANES} hops; this one spans {}",
                    size_ms / hop_ms
                ));
            }
        }
        Ok(spec)
    }
}

/// `500ms`, `30s`, `5m`, `2h`, `1d` in ms (positive).
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("bad duration `{s}`; write e.g. 30s, 5m, 1h"))?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("bad duration `{s}`; units are ms, s, m, h, d")),
    };
    match n.checked_mul(scale) {
        Some(ms) if ms > 0 => Ok(ms),
        _ => Err(format!(
            "duration `{s}` must be positive and under 290 million years"
        )),
    }
}

/// What an aggregate computes, with its argument in canonical form (Int64, Float64, Utf8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AggKind {
    /// `count(*)`, `count(1)`.
    CountRows,
    /// `count(x)`: non-null values.
    Count,
    /// `count(DISTINCT x)`: distinct non-null values (by hash).
    CountDistinct,
    SumI,
    SumF,
    MinI,
    MaxI,
    MinF,
    MaxF,
    MinS,
    MaxS,
    /// Float sum and count.
    Avg,
}

impl AggKind {
    fn words(self) -> usize {
        match self {
            AggKind::CountDistinct => 0,
            AggKind::Avg => 2,
            _ => 1,
        }
    }
}

/// One aggregate of the rule.
#[derive(Debug, Clone)]
struct Agg {
    kind: AggKind,
    /// Column of its argument in the pre-aggregation batch.
    arg: Option<usize>,
    /// Word offset of its slots in a pane record.
    slot: usize,
    /// Bit in the pane's presence word (sum, min, max: was any value seen).
    bit: u32,
    /// Index among the rule's count-distinct aggregates.
    distinct: u64,
    /// Type of the result (the aggregate's output field).
    out_type: DataType,
}

/// The compiled window part of a rule.
pub struct WindowPlan {
    /// Window kind and sizes.
    pub spec: WindowSpec,
    /// Per batch: group keys, aggregate arguments, event time (last column).
    pub pre: Arc<dyn ExecutionPlan>,
    /// Number of group columns (the first of `pre`'s output).
    keys: usize,
    aggs: Vec<Agg>,
    /// Words of a pane record: header, presence word (only with sums, mins or maxes), slots.
    record: usize,
    /// Whether records have a presence word (at `header`).
    presence: bool,
    /// Words of the header (1 hop: pane number; 3 session: start, end, tag).
    header: usize,
    /// Schema of the aggregate's output (group columns, then aggregates).
    agg_schema: SchemaRef,
    /// `HAVING` and `SELECT`, bottom-up.
    post: Vec<PostStep>,
    /// True when `post` starts with a filter that reads aggregates only (`HAVING count(*) >
    /// 10`): it runs before the group keys are turned back into columns, so a window close
    /// over a million keys converts only the keys that pass it.
    filter_first: bool,
    /// `agg_schema` with nullable group columns: the batch that filter is given.
    filter_schema: SchemaRef,
    /// Output of the rule: the last projection's schema plus `window_start`, `window_end`.
    pub out_schema: SchemaRef,
    converter: RowConverter,
}

/// A step applied to window results.
enum PostStep {
    Filter(Arc<dyn PhysicalExpr>),
    Project(Vec<Arc<dyn PhysicalExpr>>, SchemaRef),
}

impl WindowPlan {
    /// The names of the group columns (unqualified), in `GROUP BY` order.
    pub fn group_columns(&self) -> Vec<String> {
        self.agg_schema
            .fields()
            .iter()
            .take(self.keys)
            .map(|f| {
                let name = f.name().as_str();
                name.rsplit_once('.').map_or(name, |(_, n)| n).to_string()
            })
            .collect()
    }
}

impl std::fmt::Debug for WindowPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowPlan")
            .field("spec", &self.spec)
            .field("aggs", &self.aggs)
            .finish()
    }
}

fn unsupported(what: impl Into<String>) -> DataFusionError {
    DataFusionError::Plan(what.into())
}

/// Canonical type an argument is cast to, by its (or the result's) type.
fn canonical(t: &DataType) -> Option<DataType> {
    use DataType::*;
    Some(match t {
        Int8
        | Int16
        | Int32
        | Int64
        | UInt8
        | UInt16
        | UInt32
        | UInt64
        | Boolean
        | Timestamp(_, _)
        | Date32
        | Date64
        | Time32(_)
        | Time64(_)
        | Duration(_) => Int64,
        Float16 | Float32 | Float64 => Float64,
        Utf8 | LargeUtf8 | Utf8View => Utf8,
        Dictionary(_, v) if matches!(v.as_ref(), Utf8 | LargeUtf8 | Utf8View) => Utf8,
        _ => return None,
    })
}

impl WindowPlan {
    /// Cuts `plan` (analysed, not optimised) at its aggregate. `time` is the stream's
    /// event-time field, `stream` its table name.
    pub async fn compile(
        ctx: &SessionContext,
        plan: &LogicalPlan,
        spec: WindowSpec,
        stream: &str,
        time: &str,
    ) -> DfResult<WindowPlan> {
        // Peel HAVING and SELECT off the top, down to the aggregate.
        let mut above = Vec::new();
        let mut node = plan;
        let aggregate = loop {
            match node {
                LogicalPlan::Aggregate(a) => break a,
                LogicalPlan::Projection(p) => {
                    above.push(node);
                    node = p.input.as_ref();
                }
                LogicalPlan::Filter(f) => {
                    above.push(node);
                    node = f.input.as_ref();
                }
                LogicalPlan::SubqueryAlias(s) => node = s.input.as_ref(),
                other => {
                    return Err(unsupported(format!(
                        "a windowed rule is `SELECT ... FROM {stream} [JOIN table ...] WHERE ... \
                         GROUP BY ... HAVING ...`; `{}` is not supported here",
                        other.display()
                    )));
                }
            }
        };
        if aggregate
            .group_expr
            .iter()
            .any(|e| matches!(e, Expr::GroupingSet(_)))
        {
            return Err(unsupported(
                "GROUPING SETS, CUBE and ROLLUP are not supported in windows",
            ));
        }
        let input_schema = aggregate.input.schema();
        let mut pre_exprs: Vec<Expr> = Vec::new();
        for (i, g) in aggregate.group_expr.iter().enumerate() {
            pre_exprs.push(g.clone().alias(format!("__k{i}")));
        }
        let keys = pre_exprs.len();
        let mut aggs = Vec::new();
        let header = match spec {
            WindowSpec::Hop { .. } => 1,
            WindowSpec::Session { .. } => 3,
        };
        let mut slot = header + 1; // after the presence word
        let mut bit = 0;
        let mut distinct = 0;
        for (j, e) in aggregate.aggr_expr.iter().enumerate() {
            let out_type = aggregate.schema.field(keys + j).data_type().clone();
            let Expr::AggregateFunction(f) = e.clone().unalias() else {
                return Err(unsupported(format!("`{e}` is not an aggregate")));
            };
            let p = &f.params;
            if p.filter.is_some() || !p.order_by.is_empty() {
                return Err(unsupported(format!(
                    "`{e}`: FILTER and ORDER BY in aggregates are not supported in windows"
                )));
            }
            let name = f.func.name().to_ascii_lowercase();
            let arg = p.args.first().cloned();
            let arg_type = match &arg {
                Some(a) => Some(a.get_type(input_schema.as_ref())?),
                None => None,
            };
            let class = |t: &DataType| {
                canonical(t).ok_or_else(|| {
                    unsupported(format!(
                        "`{e}`: values of type {t} are not supported in windows"
                    ))
                })
            };
            let is_literal =
                matches!(&arg, Some(Expr::Literal(v, _)) if !v.is_null()) || arg.is_none();
            let (kind, cast_to) = match (name.as_str(), p.distinct) {
                ("count", false) if is_literal => (AggKind::CountRows, None),
                ("count", false) => (AggKind::Count, None),
                ("count", true) => {
                    let t = class(arg_type.as_ref().expect("count has an argument"))?;
                    (AggKind::CountDistinct, Some(t))
                }
                ("sum", false) => match class(&out_type)? {
                    DataType::Int64 => (AggKind::SumI, Some(DataType::Int64)),
                    DataType::Float64 => (AggKind::SumF, Some(DataType::Float64)),
                    t => return Err(unsupported(format!("`{e}`: sum of {t}"))),
                },
                ("avg", false) => (AggKind::Avg, Some(DataType::Float64)),
                ("min", false) | ("max", false) => {
                    let min = name == "min";
                    match class(&out_type)? {
                        DataType::Int64 if min => (AggKind::MinI, Some(DataType::Int64)),
                        DataType::Int64 => (AggKind::MaxI, Some(DataType::Int64)),
                        DataType::Float64 if min => (AggKind::MinF, Some(DataType::Float64)),
                        DataType::Float64 => (AggKind::MaxF, Some(DataType::Float64)),
                        _ if min => (AggKind::MinS, Some(DataType::Utf8)),
                        _ => (AggKind::MaxS, Some(DataType::Utf8)),
                    }
                }
                _ => {
                    return Err(unsupported(format!(
                        "`{e}`: windows support count, count(DISTINCT), sum, min, max and avg"
                    )));
                }
            };
            let arg_col = match (kind, arg) {
                (AggKind::CountRows, _) | (_, None) => None,
                (_, Some(a)) => {
                    let a = match cast_to {
                        Some(t) => datafusion::logical_expr::cast(a, t),
                        None => a,
                    };
                    pre_exprs.push(a.alias(format!("__a{j}")));
                    Some(pre_exprs.len() - 1)
                }
            };
            let agg = Agg {
                kind,
                arg: arg_col,
                slot,
                bit,
                distinct,
                out_type,
            };
            slot += kind.words();
            if matches!(
                kind,
                AggKind::SumI
                    | AggKind::SumF
                    | AggKind::MinI
                    | AggKind::MaxI
                    | AggKind::MinF
                    | AggKind::MaxF
            ) {
                bit += 1;
            }
            if kind == AggKind::CountDistinct {
                distinct += 1;
            }
            aggs.push(agg);
        }
        let presence = bit > 0;
        if !presence {
            // No sum, min or max: no presence word (count-distinct rules stay small).
            for a in &mut aggs {
                a.slot -= 1;
            }
            slot -= 1;
        }
        if bit > 64 || distinct > 15 {
            return Err(unsupported(
                "a windowed rule may have at most 64 sums, mins and maxes and 15 count(DISTINCT)",
            ));
        }
        // The event time, qualified by the stream (a joined table may have a column of the
        // same name).
        let candidates = input_schema.columns_with_unqualified_name(time);
        let time_col = candidates
            .iter()
            .find(|c| c.relation.as_ref().is_some_and(|r| r.table() == stream))
            .or(candidates.first())
            .cloned()
            .unwrap_or_else(|| Column::from_name(time));
        pre_exprs.push(Expr::Column(time_col).alias("__time"));
        let pre_logical = LogicalPlanBuilder::from(aggregate.input.as_ref().clone())
            .project(pre_exprs)?
            .build()?;
        let state = ctx.state();
        let pre = state.create_physical_plan(&pre_logical).await?;

        // HAVING and SELECT, applied to rows shaped like the aggregate's output.
        let mut post = Vec::new();
        let mut schema: DFSchemaRef = Arc::clone(&aggregate.schema);
        for node in above.iter().rev() {
            match node {
                LogicalPlan::Filter(f) => {
                    post.push(PostStep::Filter(
                        state.create_physical_expr(f.predicate.clone(), &schema)?,
                    ));
                }
                LogicalPlan::Projection(p) => {
                    let exprs = p
                        .expr
                        .iter()
                        .map(|e| state.create_physical_expr(e.clone(), &schema))
                        .collect::<DfResult<Vec<_>>>()?;
                    post.push(PostStep::Project(exprs, Arc::clone(p.schema.inner())));
                    schema = Arc::clone(&p.schema);
                }
                _ => unreachable!("only filters and projections are kept"),
            }
        }
        let mut fields: Vec<Field> = schema
            .as_arrow()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        for name in ["window_start", "window_end"] {
            if fields.iter().any(|f| f.name() == name) {
                return Err(unsupported(format!(
                    "`{name}` is added to every window result; name the column otherwise"
                )));
            }
            fields.push(Field::new(
                name,
                DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Millisecond, None),
                false,
            ));
        }
        let filter_first = match post.first() {
            Some(PostStep::Filter(pred)) => datafusion::physical_expr::utils::collect_columns(pred)
                .iter()
                .all(|c| c.index() >= keys),
            _ => false,
        };
        let pre_schema = pre.schema();
        let converter = RowConverter::new(
            (0..keys)
                .map(|i| SortField::new(pre_schema.field(i).data_type().clone()))
                .collect(),
        )?;
        let record = slot;
        Ok(WindowPlan {
            spec,
            pre,
            keys,
            aggs,
            record,
            presence,
            header,
            agg_schema: Arc::clone(aggregate.schema.inner()),
            post,
            filter_first,
            filter_schema: Arc::new(Schema::new(
                aggregate
                    .schema
                    .inner()
                    .fields()
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        f.as_ref()
                            .clone()
                            .with_nullable(i < keys || f.is_nullable())
                    })
                    .collect::<Vec<_>>(),
            )),
            out_schema: Arc::new(Schema::new(fields)),
            converter,
        })
    }
}

/// Identity hasher for maps keyed by an already well-mixed 64-bit hash.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _bytes: &[u8]) {
        unreachable!("only u64 keys")
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A stable 64-bit hash of bytes (the same across processes and versions: it is stored in
/// checkpoints).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = 0x243F_6A88_85A3_08D3 ^ (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h ^ w).wrapping_mul(K).rotate_left(29);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(29);
    }
    mix(h)
}

/// Final avalanche (splitmix64's).
fn mix(mut h: u64) -> u64 {
    h ^= h >> 30;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

const HASH_BITS: u64 = (1 << 44) - 1;
const DIRTY: u64 = 1;
const PERSISTED: u64 = 2;

/// Meta word: flags (bits 0-7), key byte length (8-31), pane records (32-47).
fn key_len(meta: u64) -> usize {
    ((meta >> 8) & 0xFF_FFFF) as usize
}
fn pane_count(meta: u64) -> usize {
    ((meta >> 32) & 0xFFFF) as usize
}
fn key_words(len: usize) -> usize {
    len.div_ceil(8)
}

/// Views of one key's words.
struct Blob;

impl Blob {
    fn create(key: &[u8]) -> Vec<u64> {
        let mut v = Vec::with_capacity(1 + key_words(key.len()) + 4);
        v.push(((key.len() as u64) << 8) | DIRTY);
        for c in key.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            v.push(u64::from_le_bytes(w));
        }
        v
    }

    /// The input partition (the key's first four bytes).
    fn partition(v: &[u64]) -> i32 {
        let b = v[1].to_le_bytes();
        i32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    fn key(v: &[u64]) -> Vec<u8> {
        let len = key_len(v[0]);
        let mut out = Vec::with_capacity(len);
        for w in &v[1..1 + key_words(len)] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    fn key_eq(v: &[u64], key: &[u8]) -> bool {
        let len = key_len(v[0]);
        len == key.len()
            && v[1..1 + key_words(len)]
                .iter()
                .zip(key.chunks(8))
                .all(|(w, c)| {
                    let b = w.to_le_bytes();
                    b[..c.len()] == *c
                })
    }

    fn panes_start(v: &[u64]) -> usize {
        1 + key_words(key_len(v[0]))
    }

    fn set_panes(v: &mut [u64], n: usize) {
        v[0] = (v[0] & !(0xFFFF << 32)) | ((n as u64) << 32);
    }
}

/// Strings held by `min`/`max`, referred to by index from pane slots (`u64::MAX`: none).
#[derive(Default)]
struct Arena {
    strings: Vec<Option<Box<str>>>,
    free: Vec<u32>,
}

impl Arena {
    fn alloc(&mut self, s: &str) -> u64 {
        let s = Some(Box::<str>::from(s));
        match self.free.pop() {
            Some(i) => {
                self.strings[i as usize] = s;
                i as u64
            }
            None => {
                self.strings.push(s);
                (self.strings.len() - 1) as u64
            }
        }
    }

    fn release(&mut self, i: u64) {
        if i != u64::MAX {
            self.strings[i as usize] = None;
            self.free.push(i as u32);
        }
    }

    fn get(&self, i: u64) -> &str {
        self.strings[i as usize].as_deref().unwrap_or("")
    }

    /// Frees the strings a pane record refers to.
    fn release_record(&mut self, plan: &WindowPlan, rec: &[u64]) {
        for a in &plan.aggs {
            if matches!(a.kind, AggKind::MinS | AggKind::MaxS) {
                self.release(rec[a.slot]);
            }
        }
    }

    fn bytes(&self) -> usize {
        self.strings
            .iter()
            .map(|s| 16 + s.as_ref().map_or(0, |s| s.len()))
            .sum()
    }
}

/// Window state of one detector, with the fired windows per partition.
pub struct WindowState {
    /// Key blobs by the hash of their key bytes (collisions resolved by probing).
    keys: HashMap<u64, Vec<u64>, BuildHasherDefault<IdHasher>>,
    /// Strings held by `min`/`max`.
    arena: Arena,
    /// Per partition: the last window (hop: last pane number; session: unused) emitted.
    fired: HashMap<i32, i64>,
    /// Fired windows of partitions first seen later start here.
    fired_all: i64,
    /// Sessions: no session closes before this watermark (a lower bound).
    next_close: i64,
    /// Partitions whose `fired` changed since the last checkpoint.
    fired_dirty: Vec<i32>,
    /// Keys removed since the last checkpoint that a checkpoint had written: tombstones.
    tombstones: Vec<(i32, Vec<u8>)>,
    /// Bytes of blobs (capacity), kept up to date.
    blob_bytes: usize,
    limits: WindowLimits,
    /// Totals: events too late for every window they fall in, keys evicted by the bounds.
    pub late: u64,
    /// Keys evicted to stay within `limits`.
    pub evicted: u64,
    scratch_key: Vec<u8>,
    scratch_hashes: Vec<u64>,
    /// Per key in [`WindowState::fire`]: its pane numbers, the window ends they close, and
    /// the tags of the panes merged into one window.
    scratch_panes: Vec<i64>,
    scratch_ends: Vec<i64>,
    scratch_tags: Vec<u64>,
}

/// A window result before `HAVING`: key bytes (with partition), bounds, merged record.
struct Fired {
    start: i64,
    end: i64,
    /// Range of the key bytes (with partition) in [`FiredSet::keys`].
    key: (usize, usize),
    /// Index of its record (`plan.record` words) and distinct counts in the set.
    at: usize,
}

/// Window results before `HAVING`, in flat buffers (no allocation per result).
#[derive(Default)]
struct FiredSet {
    rows: Vec<Fired>,
    keys: Vec<u8>,
    records: Vec<u64>,
    distinct: Vec<u64>,
}

impl FiredSet {
    /// Appends the key bytes of `blob`; returns their range.
    fn push_key(&mut self, blob: &[u64]) -> (usize, usize) {
        let len = key_len(blob[0]);
        let from = self.keys.len();
        for w in &blob[1..1 + key_words(len)] {
            self.keys.extend_from_slice(&w.to_le_bytes());
        }
        self.keys.truncate(from + len);
        (from, from + len)
    }

    /// Appends an empty record; returns its index.
    fn push_record(&mut self, plan: &WindowPlan, header: &[u64]) -> usize {
        let from = self.records.len();
        self.records.resize(from + plan.record, 0);
        init_record(plan, &mut self.records[from..], header);
        from / plan.record
    }

    fn key(&self, f: &Fired) -> &[u8] {
        &self.keys[f.key.0..f.key.1]
    }

    fn record(&self, plan: &WindowPlan, f: &Fired) -> &[u64] {
        &self.records[f.at * plan.record..(f.at + 1) * plan.record]
    }
}

/// One row's worth of canonical argument columns.
enum ArgCol<'a> {
    None,
    I(&'a Int64Array),
    F(&'a datafusion::arrow::array::Float64Array),
    S(&'a datafusion::arrow::array::StringArray),
    Any(&'a ArrayRef),
}

impl WindowState {
    /// Empty state bounded by `limits`.
    pub fn new(limits: WindowLimits) -> WindowState {
        WindowState {
            keys: HashMap::default(),
            arena: Arena::default(),
            fired: HashMap::new(),
            fired_all: i64::MIN,
            next_close: i64::MIN,
            fired_dirty: Vec::new(),
            tombstones: Vec::new(),
            blob_bytes: 0,
            limits,
            late: 0,
            evicted: 0,
            scratch_key: Vec::new(),
            scratch_hashes: Vec::new(),
            scratch_panes: Vec::new(),
            scratch_ends: Vec::new(),
            scratch_tags: Vec::new(),
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Bytes held: the key map's table, the blobs and the string arena.
    pub fn bytes(&self) -> usize {
        let table = self.keys.capacity() * (8 + std::mem::size_of::<Vec<u64>>() + 1);
        table + self.blob_bytes + self.arena.bytes()
    }

    fn slot_of(&self, hash: u64, key: &[u8]) -> (u64, bool) {
        let mut h = hash;
        loop {
            match self.keys.get(&h) {
                None => return (h, false),
                Some(v) if Blob::key_eq(v, key) => return (h, true),
                Some(_) => h = h.wrapping_add(0x9E37_79B9_7F4A_7C15),
            }
        }
    }

    fn fired_of(&mut self, partition: i32) -> i64 {
        let all = self.fired_all;
        *self.fired.entry(partition).or_insert(all)
    }

    /// Adds the rows of `pre` (the pre-aggregation batch) of `partition`.
    pub fn ingest(&mut self, plan: &WindowPlan, pre: &RecordBatch, partition: i32) -> DfResult<()> {
        let n = pre.num_rows();
        if n == 0 {
            return Ok(());
        }
        let times = super::timestamp_millis(pre.column(pre.num_columns() - 1).as_ref());
        let rows = plan
            .converter
            .convert_columns(&pre.columns()[..plan.keys])?;
        let args: Vec<ArgCol> = plan
            .aggs
            .iter()
            .map(|a| match a.arg {
                None => ArgCol::None,
                Some(c) => {
                    let col = pre.column(c);
                    match (a.kind, col.data_type()) {
                        (AggKind::Count, _) => ArgCol::Any(col),
                        (_, DataType::Int64) => ArgCol::I(col.as_primitive::<Int64Type>()),
                        (_, DataType::Float64) => ArgCol::F(col.as_primitive::<Float64Type>()),
                        (_, DataType::Utf8) => ArgCol::S(col.as_string::<i32>()),
                        _ => ArgCol::Any(col),
                    }
                }
            })
            .collect();
        let fired = self.fired_of(partition);
        for (row, time) in times.iter().enumerate() {
            let Some(t) = *time else {
                continue; // decoders reject events without a time; a join could null it
            };
            let pane = match plan.spec {
                WindowSpec::Hop { size_ms, hop_ms } => {
                    let p = t.div_euclid(hop_ms);
                    if p + size_ms / hop_ms - 1 <= fired {
                        // Every window holding it was emitted already.
                        self.late += 1;
                        continue;
                    }
                    p
                }
                WindowSpec::Session { .. } => t,
            };
            let mut key = std::mem::take(&mut self.scratch_key);
            key.clear();
            key.extend_from_slice(&partition.to_be_bytes());
            key.extend_from_slice(rows.row(row).as_ref());
            let (slot, found) = self.slot_of(hash_bytes(&key), &key);
            let blob = self.keys.entry(slot).or_insert_with(|| Blob::create(&key));
            let before = if found { blob.capacity() } else { 0 };
            let rec = match plan.spec {
                WindowSpec::Hop { .. } => hop_record(plan, blob, pane),
                WindowSpec::Session { gap_ms } => {
                    // The session `t` joins closes no earlier than `t + gap`.
                    self.next_close = self.next_close.min(t.saturating_add(gap_ms));
                    session_record(plan, &mut self.arena, blob, t, gap_ms)
                }
            };
            update(plan, &mut self.arena, blob, rec, row, &args);
            blob[0] |= DIRTY;
            self.blob_bytes = self.blob_bytes + blob.capacity() * 8 - before * 8;
            self.scratch_key = key;
        }
        self.enforce_limits(plan);
        Ok(())
    }

    /// Emits every window the watermark `watermark_ms` closes, in (end, key) order, and drops
    /// the panes no open window needs. Returns at once when the watermark closes nothing
    /// (the common case: most batches do not cross a window end), so a batch does not cost a
    /// pass over every key.
    fn fire(&mut self, plan: &WindowPlan, watermark_ms: i64) -> FiredSet {
        let mut out = FiredSet::default();
        if watermark_ms == i64::MIN {
            return out;
        }
        // Last pane of the last hop window that ends at or before the watermark.
        let last = match plan.spec {
            WindowSpec::Hop { hop_ms, .. } => {
                let last = watermark_ms.div_euclid(hop_ms) - 1;
                // Keys of a partition without an entry start at `fired_all`.
                let oldest = self.fired.values().copied().fold(self.fired_all, i64::min);
                if last <= oldest {
                    return out;
                }
                last
            }
            WindowSpec::Session { .. } => {
                if watermark_ms < self.next_close {
                    return out;
                }
                0
            }
        };
        let mut emptied = Vec::new();
        let mut next_close = i64::MAX;
        let r = plan.record;
        // As in `checkpoint`: a chunk's first words are read ahead so their misses overlap.
        let mut chunk: Vec<(u64, &mut Vec<u64>)> = Vec::with_capacity(32);
        let mut entries = self.keys.iter_mut();
        loop {
            chunk.clear();
            chunk.extend(entries.by_ref().take(32).map(|(&s, b)| (s, b)));
            if chunk.is_empty() {
                break;
            }
            let mut warm = 0u64;
            for (_, blob) in chunk.iter() {
                warm ^= blob[0] ^ blob[blob.len() - 1];
            }
            std::hint::black_box(warm);
            for (slot, blob) in chunk.iter_mut() {
                let (slot, blob): (u64, &mut Vec<u64>) = (*slot, blob);
                let before = blob.capacity();
                let start = Blob::panes_start(blob);
                let mut changed = false;
                match plan.spec {
                    WindowSpec::Hop { size_ms, hop_ms } => {
                        let panes = size_ms / hop_ms;
                        let partition = Blob::partition(blob);
                        let fired = *self.fired.entry(partition).or_insert(self.fired_all);
                        if fired >= last {
                            continue;
                        }
                        let n = pane_count(blob[0]);
                        let pane_ids = &mut self.scratch_panes;
                        pane_ids.clear();
                        pane_ids.extend((0..n).map(|i| blob[start + i * r] as i64));
                        let ends = &mut self.scratch_ends;
                        ends.clear();
                        ends.extend(
                            pane_ids
                                .iter()
                                .flat_map(|&p| (p..p + panes).filter(|&e| e > fired && e <= last)),
                        );
                        ends.sort_unstable();
                        ends.dedup();
                        let key = out.push_key(blob);
                        let tags = &mut self.scratch_tags;
                        for &e in ends.iter() {
                            let at = out.push_record(plan, &[0]);
                            tags.clear();
                            for (i, &p) in pane_ids.iter().enumerate() {
                                if p > e - panes && p <= e {
                                    merge_record(
                                        plan,
                                        &mut self.arena,
                                        &mut out.records[at * r..(at + 1) * r],
                                        &blob[start + i * r..start + (i + 1) * r],
                                    );
                                    tags.push((p as u64) & 0xFFFF);
                                }
                            }
                            distinct_counts(
                                plan,
                                blob,
                                tags,
                                &mut self.scratch_hashes,
                                &mut out.distinct,
                            );
                            out.rows.push(Fired {
                                start: (e - panes + 1) * hop_ms,
                                end: (e + 1) * hop_ms,
                                key,
                                at,
                            });
                        }
                        // Drop panes no unfired window needs, with their distinct entries.
                        let keep_from = last - panes + 2;
                        for i in (0..n).rev() {
                            if pane_ids[i] >= keep_from {
                                continue;
                            }
                            let at = start + i * r;
                            self.arena.release_record(plan, &blob[at..at + r]);
                            blob.drain(at..at + r);
                            let left = pane_count(blob[0]) - 1;
                            Blob::set_panes(blob, left);
                            let tag = (pane_ids[i] as u64) & 0xFFFF;
                            blob.retain_from(start + left * r, |e| e >> 48 != tag);
                            changed = true;
                        }
                    }
                    WindowSpec::Session { gap_ms } => {
                        let mut i = 0;
                        while i < pane_count(blob[0]) {
                            let at = start + i * r;
                            let (s, e, tag) = (blob[at] as i64, blob[at + 1] as i64, blob[at + 2]);
                            let close = e.saturating_add(gap_ms);
                            if close > watermark_ms {
                                next_close = next_close.min(close);
                                i += 1;
                                continue;
                            }
                            let key = out.push_key(blob);
                            let row = out.push_record(plan, &[0, 0, 0]);
                            merge_record(
                                plan,
                                &mut self.arena,
                                &mut out.records[row * r..(row + 1) * r],
                                &blob[at..at + r],
                            );
                            self.arena.release_record(plan, &blob[at..at + r]);
                            distinct_counts(
                                plan,
                                blob,
                                &[tag],
                                &mut self.scratch_hashes,
                                &mut out.distinct,
                            );
                            out.rows.push(Fired {
                                start: s,
                                end: close,
                                key,
                                at: row,
                            });
                            blob.drain(at..at + r);
                            let n = pane_count(blob[0]) - 1;
                            Blob::set_panes(blob, n);
                            blob.retain_from(start + n * r, |x| x >> 48 != tag);
                            changed = true;
                        }
                    }
                }
                if changed {
                    blob[0] |= DIRTY;
                    self.blob_bytes = self.blob_bytes + blob.capacity() * 8 - before * 8;
                    if pane_count(blob[0]) == 0 {
                        emptied.push(slot);
                    }
                }
            }
        }
        for slot in emptied {
            let blob = self.keys.remove(&slot).expect("listed");
            self.blob_bytes -= blob.capacity() * 8;
            if blob[0] & PERSISTED != 0 {
                let key = Blob::key(&blob);
                let partition = i32::from_be_bytes(key[..4].try_into().expect("partition"));
                self.tombstones.push((partition, key[4..].to_vec()));
            }
            self.remove_slot(slot);
        }
        match plan.spec {
            WindowSpec::Hop { .. } => {
                for f in self.fired.values_mut() {
                    *f = (*f).max(last);
                }
                self.fired_all = self.fired_all.max(last);
                self.fired_dirty = self.fired.keys().copied().collect();
            }
            WindowSpec::Session { .. } => self.next_close = next_close,
        }
        out
    }

    /// Removes the (absent) entry at `slot`, moving back entries probed past it.
    fn remove_slot(&mut self, slot: u64) {
        let mut hole = slot;
        let mut next = slot.wrapping_add(0x9E37_79B9_7F4A_7C15);
        while let Some(v) = self.keys.get(&next) {
            // An entry displaced from `hole`'s chain moves into the hole.
            let home = hash_bytes(&Blob::key(v));
            let mut h = home;
            let mut passes_hole = false;
            while h != next {
                if h == hole {
                    passes_hole = true;
                    break;
                }
                h = h.wrapping_add(0x9E37_79B9_7F4A_7C15);
            }
            if !passes_hole {
                break;
            }
            let v = self.keys.remove(&next).expect("present");
            self.keys.insert(hole, v);
            hole = next;
            next = next.wrapping_add(0x9E37_79B9_7F4A_7C15);
        }
    }

    /// Past `max_keys` or `max_bytes`, evicts an eighth of the keys, those whose newest pane
    /// is oldest (one pass, amortised over the keys admitted since).
    fn enforce_limits(&mut self, plan: &WindowPlan) {
        if self.keys.len() <= self.limits.max_keys && self.bytes() <= self.limits.max_bytes {
            return;
        }
        let target = (self.keys.len() - self.keys.len() / 8).min(self.limits.max_keys * 7 / 8);
        let mut by_age: Vec<(i64, u64)> = self
            .keys
            .iter()
            .map(|(&slot, v)| {
                let n = pane_count(v[0]);
                let newest = if n == 0 {
                    i64::MIN
                } else {
                    let at = Blob::panes_start(v) + (n - 1) * plan.record;
                    match plan.spec {
                        WindowSpec::Hop { .. } => v[at] as i64,
                        WindowSpec::Session { .. } => v[at + 1] as i64,
                    }
                };
                (newest, slot)
            })
            .collect();
        let evict = self.keys.len() - target.max(1).min(self.keys.len());
        if evict == 0 {
            return;
        }
        by_age.select_nth_unstable(evict - 1);
        for &(_, slot) in &by_age[..evict] {
            let Some(blob) = self.keys.remove(&slot) else {
                continue;
            };
            self.blob_bytes -= blob.capacity() * 8;
            let start = Blob::panes_start(&blob);
            for i in 0..pane_count(blob[0]) {
                let rec = blob[start + i * plan.record..start + (i + 1) * plan.record].to_vec();
                self.arena.release_record(plan, &rec);
            }
            if blob[0] & PERSISTED != 0 {
                let key = Blob::key(&blob);
                let partition = i32::from_be_bytes(key[..4].try_into().expect("partition"));
                self.tombstones.push((partition, key[4..].to_vec()));
            }
            self.remove_slot(slot);
            self.evicted += 1;
        }
    }

    /// Fires what `watermark_ms` closes and turns it into rows shaped like the aggregate's
    /// output, then applies `HAVING` and the projection. Returns the rule's output.
    pub fn emit(&mut self, plan: &WindowPlan, watermark_ms: i64) -> DfResult<Option<RecordBatch>> {
        let fired = self.fire(plan, watermark_ms);
        if fired.rows.is_empty() {
            return Ok(None);
        }
        let rows = &fired.rows;
        let mut aggregates: Vec<ArrayRef> = Vec::with_capacity(plan.aggs.len());
        let n_distinct = plan
            .aggs
            .iter()
            .filter(|a| a.kind == AggKind::CountDistinct)
            .count();
        let mut distinct_i = 0;
        for a in &plan.aggs {
            let s = a.slot;
            let rec = |f: &Fired| fired.record(plan, f);
            let present = |f: &Fired| rec(f)[plan.header] & (1 << a.bit) != 0;
            let col: ArrayRef = match a.kind {
                AggKind::CountRows | AggKind::Count => Arc::new(Int64Array::from_iter_values(
                    rows.iter().map(|f| rec(f)[s] as i64),
                )),
                AggKind::CountDistinct => {
                    let d = distinct_i;
                    distinct_i += 1;
                    Arc::new(Int64Array::from_iter_values(
                        rows.iter()
                            .map(|f| fired.distinct[f.at * n_distinct + d] as i64),
                    ))
                }
                AggKind::SumI | AggKind::MinI | AggKind::MaxI => {
                    let mut b = Int64Builder::with_capacity(rows.len());
                    for f in rows {
                        b.append_option(present(f).then_some(rec(f)[s] as i64));
                    }
                    Arc::new(b.finish())
                }
                AggKind::SumF | AggKind::MinF | AggKind::MaxF => {
                    let mut b = Float64Builder::with_capacity(rows.len());
                    for f in rows {
                        b.append_option(present(f).then_some(f64::from_bits(rec(f)[s])));
                    }
                    Arc::new(b.finish())
                }
                AggKind::Avg => {
                    let mut b = Float64Builder::with_capacity(rows.len());
                    for f in rows {
                        let n = rec(f)[s + 1];
                        b.append_option((n > 0).then(|| f64::from_bits(rec(f)[s]) / n as f64));
                    }
                    Arc::new(b.finish())
                }
                AggKind::MinS | AggKind::MaxS => {
                    let mut b = StringBuilder::new();
                    for f in rows {
                        let i = rec(f)[s];
                        b.append_option((i != u64::MAX).then(|| self.arena.get(i)));
                    }
                    Arc::new(b.finish())
                }
            };
            aggregates.push(cast(&col, &a.out_type)?);
        }
        for f in rows {
            self.arena.release_record(plan, fired.record(plan, f));
        }
        let schema = Arc::clone(&plan.agg_schema);
        // Which result each row is, carried through `HAVING` to order the survivors.
        let mut index = UInt32Array::from_iter_values(0..rows.len() as u32);
        let mut post = &plan.post[..];
        if let (true, Some(PostStep::Filter(pred))) = (plan.filter_first, post.first()) {
            // The filter reads aggregates only: the key columns it is given are nulls.
            let mut columns: Vec<ArrayRef> = schema.fields()[..plan.keys]
                .iter()
                .map(|f| datafusion::arrow::array::new_null_array(f.data_type(), rows.len()))
                .collect();
            for (c, f) in aggregates.iter().zip(&schema.fields()[plan.keys..]) {
                columns.push(cast(c, f.data_type())?);
            }
            let batch = RecordBatch::try_new(Arc::clone(&plan.filter_schema), columns)?;
            let mask = pred.evaluate(&batch)?.into_array(batch.num_rows())?;
            let mask: &BooleanArray = mask.as_boolean();
            index = filter(&index, mask)?.as_primitive().clone();
            if index.is_empty() {
                return Ok(None);
            }
            for c in &mut aggregates {
                *c = filter(c, mask)?;
            }
            post = &post[1..];
        }
        let parser = plan.converter.parser();
        let mut columns: Vec<ArrayRef> = plan.converter.convert_rows(
            index
                .values()
                .iter()
                .map(|&i| parser.parse(&fired.key(&rows[i as usize])[4..])),
        )?;
        columns.extend(aggregates);
        // Group columns keep their pre-plan types; the aggregate schema may name them with
        // other nullability: rebuild with its fields.
        let columns = columns
            .into_iter()
            .zip(schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    cast(&c, f.data_type())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut batch = RecordBatch::try_new(schema, columns)?;
        for step in post {
            match step {
                PostStep::Filter(pred) => {
                    let mask = pred.evaluate(&batch)?.into_array(batch.num_rows())?;
                    let mask: &BooleanArray = mask.as_boolean();
                    batch = filter_record_batch(&batch, mask)?;
                    index = filter(&index, mask)?.as_primitive().clone();
                }
                PostStep::Project(exprs, schema) => {
                    let cols = exprs
                        .iter()
                        .map(|e| {
                            e.evaluate(&batch)
                                .and_then(|v| v.into_array(batch.num_rows()))
                        })
                        .collect::<DfResult<Vec<_>>>()?;
                    batch = RecordBatch::try_new(Arc::clone(schema), cols)?;
                }
            }
        }
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        // Deterministic order: by window end, then key bytes (only the rows `HAVING` kept).
        let mut order: Vec<u32> = (0..index.len() as u32).collect();
        let of = |j: u32| &rows[index.value(j as usize) as usize];
        order.sort_by(|&x, &y| {
            let (a, b) = (of(x), of(y));
            (a.end, fired.key(a)).cmp(&(b.end, fired.key(b)))
        });
        let take_idx = UInt32Array::from(order);
        let mut cols = datafusion::arrow::compute::take_arrays(batch.columns(), &take_idx, None)?;
        cols.push(Arc::new(TimestampMillisecondArray::from_iter_values(
            take_idx.values().iter().map(|&j| of(j).start),
        )));
        cols.push(Arc::new(TimestampMillisecondArray::from_iter_values(
            take_idx.values().iter().map(|&j| of(j).end),
        )));
        Ok(Some(RecordBatch::try_new(
            Arc::clone(&plan.out_schema),
            cols,
        )?))
    }

    /// Appends the entries changed since the last call: tombstones of keys gone, each
    /// partition's last fired window (`[0]`), keys (`[1] + group bytes`).
    pub fn checkpoint(&mut self, plan: &WindowPlan, out: &mut Vec<StateEntry>) {
        // Tombstones first: a key removed and created again since the last checkpoint must
        // end up with its new value.
        for (partition, key) in self.tombstones.drain(..) {
            let mut k = Vec::with_capacity(key.len() + 1);
            k.push(1);
            k.extend_from_slice(&key);
            out.push(StateEntry {
                partition,
                key: k,
                value: None,
            });
        }
        for p in std::mem::take(&mut self.fired_dirty) {
            out.push(StateEntry {
                partition: p,
                key: vec![0],
                value: Some(self.fired[&p].to_le_bytes().to_vec()),
            });
        }
        let has_strings = plan
            .aggs
            .iter()
            .any(|a| matches!(a.kind, AggKind::MinS | AggKind::MaxS));
        let mut strings: Vec<u64> = Vec::new();
        // Blobs are scattered over the heap: the first touch of each is a cache miss. Reading
        // a chunk's first words in a loop of its own lets the CPU overlap those misses, which
        // the encoding loop (one allocation per entry) would otherwise take one at a time.
        const CHUNK: usize = 32;
        let mut chunk: Vec<&mut Vec<u64>> = Vec::with_capacity(CHUNK);
        let mut values = self.keys.values_mut();
        loop {
            chunk.clear();
            chunk.extend(values.by_ref().take(CHUNK));
            if chunk.is_empty() {
                break;
            }
            let mut warm = 0u64;
            for blob in chunk.iter() {
                warm ^= blob[0] ^ blob[blob.len() - 1];
            }
            std::hint::black_box(warm);
            for blob in chunk.iter_mut() {
                if blob[0] & DIRTY == 0 {
                    continue;
                }
                blob[0] = (blob[0] & !DIRTY) | PERSISTED;
                let len = key_len(blob[0]);
                let mut key = Vec::with_capacity(len - 3);
                key.push(1);
                let mut bytes = blob[1..1 + key_words(len)]
                    .iter()
                    .flat_map(|w| w.to_le_bytes());
                let partition: [u8; 4] = std::array::from_fn(|_| bytes.next().expect("partition"));
                key.extend(bytes.take(len - 4));
                out.push(StateEntry {
                    partition: i32::from_be_bytes(partition),
                    key,
                    value: Some(encode(plan, &self.arena, blob, has_strings, &mut strings)),
                });
            }
        }
    }

    /// Restores entries written by [`WindowState::checkpoint`].
    pub fn restore(&mut self, plan: &WindowPlan, entries: &[StateEntry]) -> Result<(), String> {
        for e in entries {
            match (e.key.first(), &e.value) {
                (Some(0), Some(v)) => {
                    let fired = i64::from_le_bytes(
                        v.as_slice()
                            .try_into()
                            .map_err(|_| "bad fired-window entry")?,
                    );
                    let f = self.fired.entry(e.partition).or_insert(fired);
                    *f = (*f).max(fired);
                    self.fired_all = self.fired_all.max(fired);
                }
                (Some(1), value) => {
                    let mut key = e.partition.to_be_bytes().to_vec();
                    key.extend_from_slice(&e.key[1..]);
                    let (slot, found) = self.slot_of(hash_bytes(&key), &key);
                    if found {
                        let old = self.keys.remove(&slot).expect("found");
                        self.blob_bytes -= old.capacity() * 8;
                        self.remove_slot(slot);
                    }
                    let Some(value) = value else { continue };
                    let mut blob = Blob::create(&key);
                    self.decode_into(plan, value, &mut blob)?;
                    blob[0] = (blob[0] & !DIRTY) | PERSISTED;
                    let (slot, _) = self.slot_of(hash_bytes(&key), &key);
                    self.blob_bytes += blob.capacity() * 8;
                    self.keys.insert(slot, blob);
                }
                _ => return Err(format!("unknown window state entry {:?}", e.key.first())),
            }
        }
        // Restored sessions may close at any time: look at them on the next emit.
        self.next_close = i64::MIN;
        self.enforce_limits(plan);
        Ok(())
    }

    fn decode_into(
        &mut self,
        plan: &WindowPlan,
        v: &[u8],
        blob: &mut Vec<u64>,
    ) -> Result<(), String> {
        let bad = || "truncated window state entry".to_string();
        if v.first() != Some(&1) {
            return Err("window state entry of an unknown version".into());
        }
        let u32_at = |at: usize| -> Result<usize, String> {
            Ok(
                u32::from_le_bytes(v.get(at..at + 4).ok_or_else(bad)?.try_into().expect("4"))
                    as usize,
            )
        };
        let (n, len) = (u32_at(1)?, u32_at(5)?);
        let mut at = 9;
        let mut words = Vec::with_capacity(len);
        for _ in 0..len {
            words.push(u64::from_le_bytes(
                v.get(at..at + 8).ok_or_else(bad)?.try_into().expect("8"),
            ));
            at += 8;
        }
        let mut strings = Vec::new();
        while at < v.len() {
            let l = u32_at(at)?;
            let s = std::str::from_utf8(v.get(at + 4..at + 4 + l).ok_or_else(bad)?)
                .map_err(|_| "window state string is not UTF-8")?;
            strings.push(s.to_string());
            at += 4 + l;
        }
        if n * plan.record > words.len() {
            return Err(bad());
        }
        for i in 0..n {
            for a in &plan.aggs {
                if matches!(a.kind, AggKind::MinS | AggKind::MaxS) {
                    let w = &mut words[i * plan.record + a.slot];
                    if *w != u64::MAX {
                        let s = strings.get(*w as usize).ok_or_else(bad)?;
                        *w = self.arena.alloc(s);
                    }
                }
            }
        }
        blob.extend_from_slice(&words);
        Blob::set_panes(blob, n);
        Ok(())
    }

    /// Forgets the keys and fired windows of `partitions`.
    pub fn release(&mut self, plan: &WindowPlan, partitions: &[i32]) {
        let gone: Vec<u64> = self
            .keys
            .iter()
            .filter(|(_, v)| {
                let k = Blob::key(v);
                partitions.contains(&i32::from_be_bytes(k[..4].try_into().expect("partition")))
            })
            .map(|(&s, _)| s)
            .collect();
        // Remove all first, then no probing chain needs repair among removed entries; repair
        // the survivors' chains by reinserting them.
        for slot in &gone {
            let blob = self.keys.remove(slot).expect("listed");
            self.blob_bytes -= blob.capacity() * 8;
            let start = Blob::panes_start(&blob);
            for i in 0..pane_count(blob[0]) {
                let rec = blob[start + i * plan.record..start + (i + 1) * plan.record].to_vec();
                self.arena.release_record(plan, &rec);
            }
        }
        let all: Vec<(u64, Vec<u64>)> = self.keys.drain().collect();
        for (_, blob) in all {
            let key = Blob::key(&blob);
            let (slot, _) = self.slot_of(hash_bytes(&key), &key);
            self.keys.insert(slot, blob);
        }
        self.tombstones.retain(|(p, _)| !partitions.contains(p));
        for p in partitions {
            self.fired.remove(p);
        }
        self.fired_dirty.retain(|p| !partitions.contains(p));
    }
}

/// Value of a key's entry: version, pane count, the words after the key (string slots
/// replaced by an index into the strings that follow), then the strings. `strings` is scratch.
fn encode(
    plan: &WindowPlan,
    arena: &Arena,
    blob: &[u64],
    has_strings: bool,
    strings: &mut Vec<u64>,
) -> Vec<u8> {
    let start = Blob::panes_start(blob);
    let n = pane_count(blob[0]);
    let words = &blob[start..];
    strings.clear();
    let mut string_bytes = 0;
    let mut out = Vec::with_capacity(9 + words.len() * 8);
    out.push(1u8);
    out.extend_from_slice(&(n as u32).to_le_bytes());
    out.extend_from_slice(&(words.len() as u32).to_le_bytes());
    for (j, &w) in words.iter().enumerate() {
        // String slots of pane records hold arena indices: written as their rank instead.
        let is_string = has_strings
            && j < n * plan.record
            && w != u64::MAX
            && plan.aggs.iter().any(|a| {
                matches!(a.kind, AggKind::MinS | AggKind::MaxS) && j % plan.record == a.slot
            });
        let w = if is_string {
            strings.push(w);
            string_bytes += 4 + arena.get(w).len();
            (strings.len() - 1) as u64
        } else {
            w
        };
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.reserve_exact(string_bytes);
    for &i in strings.iter() {
        let s = arena.get(i);
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out
}

/// Makes `rec` an empty record with `header`: counts 0, nothing present, no strings.
fn init_record(plan: &WindowPlan, rec: &mut [u64], header: &[u64]) {
    rec.fill(0);
    rec[..header.len()].copy_from_slice(header);
    for a in &plan.aggs {
        if matches!(a.kind, AggKind::MinS | AggKind::MaxS) {
            rec[a.slot] = u64::MAX;
        }
    }
}

/// Inserts an empty record with `header` at `pos` of `blob`, without a temporary vector.
fn insert_record(plan: &WindowPlan, blob: &mut Vec<u64>, pos: usize, header: &[u64]) {
    blob.splice(pos..pos, std::iter::repeat_n(0, plan.record));
    init_record(plan, &mut blob[pos..pos + plan.record], header);
}

/// Moves the distinct entries of session tag `from` to tag `to`, keeping them sorted and
/// unique.
fn retag(blob: &mut Vec<u64>, plan: &WindowPlan, from: u64, to: u64) {
    let start = Blob::panes_start(blob) + pane_count(blob[0]) * plan.record;
    let mut moved = false;
    for e in &mut blob[start..] {
        if *e >> 48 == from {
            *e = (to << 48) | (*e & ((1 << 48) - 1));
            moved = true;
        }
    }
    if moved {
        let mut rest = blob.split_off(start);
        rest.sort_unstable();
        rest.dedup();
        blob.extend(rest);
    }
}

/// `Vec::retain` on the tail from `start`.
trait RetainFrom {
    fn retain_from(&mut self, start: usize, keep: impl FnMut(u64) -> bool);
}

impl RetainFrom for Vec<u64> {
    fn retain_from(&mut self, start: usize, mut keep: impl FnMut(u64) -> bool) {
        let mut w = start;
        for r in start..self.len() {
            if keep(self[r]) {
                self[w] = self[r];
                w += 1;
            }
        }
        self.truncate(w);
    }
}

/// Index of the record of hop pane `pane` in `blob`, created if absent (records are kept
/// sorted by pane).
fn hop_record(plan: &WindowPlan, blob: &mut Vec<u64>, pane: i64) -> usize {
    let start = Blob::panes_start(blob);
    let n = pane_count(blob[0]);
    let mut at = n;
    for i in (0..n).rev() {
        let p = blob[start + i * plan.record] as i64;
        if p == pane {
            return start + i * plan.record;
        }
        if p < pane {
            break;
        }
        at = i;
    }
    let pos = start + at * plan.record;
    insert_record(plan, blob, pos, &[pane as u64]);
    Blob::set_panes(blob, n + 1);
    pos
}

/// Index of the session record `t` falls in, merging the sessions it bridges.
fn session_record(
    plan: &WindowPlan,
    arena: &mut Arena,
    blob: &mut Vec<u64>,
    t: i64,
    gap: i64,
) -> usize {
    let start = Blob::panes_start(blob);
    let r = plan.record;
    let mut n = pane_count(blob[0]);
    let hits: Vec<usize> = (0..n)
        .filter(|&i| {
            let (s, e) = (blob[start + i * r] as i64, blob[start + i * r + 1] as i64);
            t >= s - gap && t <= e + gap
        })
        .collect();
    let Some(&first) = hits.first() else {
        // A new session: the lowest tag no open session of this key uses.
        let tags: Vec<u64> = (0..n).map(|i| blob[start + i * r + 2]).collect();
        let tag = (0..).find(|t| !tags.contains(t)).expect("a free tag");
        let at = (0..n)
            .find(|&i| blob[start + i * r] as i64 > t)
            .unwrap_or(n);
        let pos = start + at * r;
        insert_record(plan, blob, pos, &[t as u64, t as u64, tag]);
        Blob::set_panes(blob, n + 1);
        return pos;
    };
    let base = start + first * r;
    // Merge later hits into the first, from the last so indexes stay valid.
    for &i in hits[1..].iter().rev() {
        let other = start + i * r;
        let rec: Vec<u64> = blob[other..other + r].to_vec();
        let (s, e) = (rec[0] as i64, rec[1] as i64);
        let tag = rec[2];
        let into_tag = blob[base + 2];
        merge_record(plan, arena, &mut blob[base..base + r], &rec);
        arena.release_record(plan, &rec);
        blob[base] = (blob[base] as i64).min(s) as u64;
        blob[base + 1] = (blob[base + 1] as i64).max(e) as u64;
        blob.drain(other..other + r);
        n -= 1;
        Blob::set_panes(blob, n);
        retag(blob, plan, tag, into_tag);
    }
    blob[base] = (blob[base] as i64).min(t) as u64;
    blob[base + 1] = (blob[base + 1] as i64).max(t) as u64;
    base
}

/// Adds row `row` to the record at `rec` (and its distinct values).
fn update(
    plan: &WindowPlan,
    arena: &mut Arena,
    blob: &mut Vec<u64>,
    rec: usize,
    row: usize,
    args: &[ArgCol],
) {
    let presence = rec + plan.header;
    let tag = match plan.spec {
        WindowSpec::Hop { .. } => blob[rec] & 0xFFFF,
        WindowSpec::Session { .. } => blob[rec + 2] & 0xFFFF,
    };
    for (a, col) in plan.aggs.iter().zip(args) {
        let s = rec + a.slot;
        match (a.kind, col) {
            (AggKind::CountRows, _) => blob[s] += 1,
            (AggKind::Count, ArgCol::Any(c)) => blob[s] += u64::from(c.is_valid(row)),
            (AggKind::CountDistinct, col) => {
                let h = match col {
                    ArgCol::I(c) if c.is_valid(row) => mix(c.value(row) as u64),
                    ArgCol::F(c) if c.is_valid(row) => mix(c.value(row).to_bits()),
                    ArgCol::S(c) if c.is_valid(row) => hash_bytes(c.value(row).as_bytes()),
                    _ => continue,
                };
                let entry = (tag << 48) | (a.distinct << 44) | (h & HASH_BITS);
                let start = Blob::panes_start(blob) + pane_count(blob[0]) * plan.record;
                if let Err(at) = blob[start..].binary_search(&entry) {
                    blob.insert(start + at, entry);
                }
            }
            (AggKind::SumI | AggKind::MinI | AggKind::MaxI, ArgCol::I(c)) if c.is_valid(row) => {
                let v = c.value(row);
                let seen = blob[presence] & (1 << a.bit) != 0;
                let old = blob[s] as i64;
                blob[s] = match a.kind {
                    AggKind::SumI => old.wrapping_add(v),
                    AggKind::MinI if seen => old.min(v),
                    AggKind::MaxI if seen => old.max(v),
                    _ => v,
                } as u64;
                blob[presence] |= 1 << a.bit;
            }
            (AggKind::SumF | AggKind::MinF | AggKind::MaxF, ArgCol::F(c)) if c.is_valid(row) => {
                let v = c.value(row);
                let seen = blob[presence] & (1 << a.bit) != 0;
                let old = f64::from_bits(blob[s]);
                blob[s] = match a.kind {
                    AggKind::SumF => old + v,
                    AggKind::MinF if seen => old.min(v),
                    AggKind::MaxF if seen => old.max(v),
                    _ => v,
                }
                .to_bits();
                blob[presence] |= 1 << a.bit;
            }
            (AggKind::MinS | AggKind::MaxS, ArgCol::S(c)) if c.is_valid(row) => {
                let v = c.value(row);
                let replace = blob[s] == u64::MAX || {
                    let old = arena.get(blob[s]);
                    if a.kind == AggKind::MinS {
                        v < old
                    } else {
                        v > old
                    }
                };
                if replace {
                    arena.release(blob[s]);
                    blob[s] = arena.alloc(v);
                }
            }
            (AggKind::Avg, ArgCol::F(c)) if c.is_valid(row) => {
                blob[s] = (f64::from_bits(blob[s]) + c.value(row)).to_bits();
                blob[s + 1] += 1;
            }
            _ => {}
        }
    }
}

/// Folds record `from` into `into` (same layout): the final step of the aggregation.
/// Strings of `from` are freed or moved into `into`.
fn merge_record(plan: &WindowPlan, arena: &mut Arena, into: &mut [u64], from: &[u64]) {
    let p = plan.header;
    for a in &plan.aggs {
        let s = a.slot;
        let (had, has) = if plan.presence {
            (into[p] & (1 << a.bit) != 0, from[p] & (1 << a.bit) != 0)
        } else {
            (false, false)
        };
        match a.kind {
            AggKind::CountRows | AggKind::Count => into[s] += from[s],
            AggKind::CountDistinct => {}
            AggKind::Avg => {
                into[s] = (f64::from_bits(into[s]) + f64::from_bits(from[s])).to_bits();
                into[s + 1] += from[s + 1];
            }
            AggKind::SumI | AggKind::MinI | AggKind::MaxI if has => {
                let (x, y) = (into[s] as i64, from[s] as i64);
                into[s] = match a.kind {
                    AggKind::SumI => x.wrapping_add(y),
                    AggKind::MinI if had => x.min(y),
                    AggKind::MaxI if had => x.max(y),
                    _ => y,
                } as u64;
            }
            AggKind::SumF | AggKind::MinF | AggKind::MaxF if has => {
                let (x, y) = (f64::from_bits(into[s]), f64::from_bits(from[s]));
                into[s] = match a.kind {
                    AggKind::SumF => x + y,
                    AggKind::MinF if had => x.min(y),
                    AggKind::MaxF if had => x.max(y),
                    _ => y,
                }
                .to_bits();
            }
            AggKind::MinS | AggKind::MaxS if from[s] != u64::MAX => {
                let replace = into[s] == u64::MAX || {
                    let (x, y) = (arena.get(into[s]), arena.get(from[s]));
                    if a.kind == AggKind::MinS {
                        y < x
                    } else {
                        y > x
                    }
                };
                if replace {
                    let v = arena.get(from[s]).to_string();
                    arena.release(into[s]);
                    into[s] = arena.alloc(&v);
                }
            }
            _ => {}
        }
    }
    if plan.presence {
        into[p] |= from[p];
    }
}

#[cfg(test)]
#[path = "window_tests.rs"]
mod tests;

/// Distinct values of each count-distinct aggregate among the entries of panes `tags`.
fn distinct_counts(
    plan: &WindowPlan,
    blob: &[u64],
    tags: &[u64],
    scratch: &mut Vec<u64>,
    out: &mut Vec<u64>,
) {
    let n_distinct = plan
        .aggs
        .iter()
        .filter(|a| a.kind == AggKind::CountDistinct)
        .count();
    let start = Blob::panes_start(blob) + pane_count(blob[0]) * plan.record;
    let entries = &blob[start..];
    out.extend((0..n_distinct as u64).map(|d| {
        scratch.clear();
        scratch.extend(
            entries
                .iter()
                .filter(|e| tags.contains(&(*e >> 48)) && (*e >> 44) & 0xF == d)
                .map(|e| e & HASH_BITS),
        );
        scratch.sort_unstable();
        scratch.dedup();
        scratch.len() as u64
    }));
}
