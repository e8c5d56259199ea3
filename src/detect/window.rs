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
//! State layout, chosen to stay small at millions of keys and to be read in memory order:
//! per key one *record* of words in a slab of same-sized records ([`store`]): a meta word, the
//! key's bytes (partition + Arrow row encoding of the group values), the pane records (a
//! header and one or two words per aggregate) and the count-distinct entries (sorted words of
//! aggregate, a 44-bit hash of the value and pane tag; two distinct values of one key and
//! pane collide with probability about n²/2⁴⁵). Keys are found through an open-addressing
//! table of their 64-bit hash's top half and their record, the bytes checked on every hit; a
//! batch asks for its rows' table slots and records a few rows before it updates them. Strings
//! kept by `min`/`max` live in one arena per detector.

use std::collections::HashMap;
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

mod store;

use store::{Cursor, DIRTY, LIVE, MAX_RECORD_WORDS, PERSISTED, Rec, Ref, Store};

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
    /// Number of count-distinct aggregates.
    distinct: usize,
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
            distinct: distinct as usize,
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

/// A stable 64-bit hash of bytes (the same across processes and versions: count-distinct
/// entries store it in checkpoints).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    let mut h = hash_start(bytes.len());
    for c in &mut chunks {
        h = hash_word(h, u64::from_le_bytes(c.try_into().expect("8 bytes")));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = hash_word(h, u64::from_le_bytes(w));
    }
    mix(h)
}

/// [`hash_bytes`] of `len` bytes held in little-endian `words`, zero-padded (a record's key).
fn hash_words(len: usize, words: &[u64]) -> u64 {
    mix(words.iter().fold(hash_start(len), |h, &w| hash_word(h, w)))
}

const HASH_K: u64 = 0x9E37_79B9_7F4A_7C15;

fn hash_start(len: usize) -> u64 {
    0x243F_6A88_85A3_08D3 ^ (len as u64).wrapping_mul(HASH_K)
}

fn hash_word(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(HASH_K).rotate_left(29)
}

/// Final avalanche (splitmix64's).
fn mix(mut h: u64) -> u64 {
    h ^= h >> 30;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

/// A count-distinct entry: aggregate (bits 60-63), 44-bit hash of the value (16-59), pane tag
/// (0-15: a hop pane's number modulo 2^16, or a session's tag). Sorted, the entries of one
/// value are adjacent, so a window's distinct count is one pass that counts the values with
/// an entry in the window's panes.
const HASH_BITS: u64 = (1 << 44) - 1;

fn entry(distinct: u64, hash: u64, tag: u64) -> u64 {
    (distinct << 60) | ((hash & HASH_BITS) << 16) | (tag & 0xFFFF)
}

/// The hash of a record's key (what [`Store`] places it by).
fn key_hash(rec: &[u64]) -> u64 {
    let len = Rec::key_len(rec);
    hash_words(len, &rec[1..1 + Rec::key_words(len)])
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
    /// Keys' records and the table that finds them.
    store: Store,
    /// Strings held by `min`/`max`.
    arena: Arena,
    /// Per partition: the last window (hop: last pane number; session: unused) emitted. A
    /// partition without an entry has had none emitted: another partition's progress says
    /// nothing of it (a partition taken over from an instance that died before closing any
    /// of its windows, or one read from further back than the others, still has them all to
    /// fire).
    fired: HashMap<i32, i64>,
    /// The last window emitted over all partitions (nothing to close up to it when no key is
    /// held).
    fired_all: i64,
    /// Sessions: key hashes filed by a time at or before which one of the key's open sessions
    /// may close (see [`Due`]).
    due: Due,
    /// Partitions whose `fired` changed since the last checkpoint.
    fired_dirty: Vec<i32>,
    /// Keys removed since the last checkpoint that a checkpoint had written: tombstones.
    tombstones: Vec<(i32, Vec<u8>)>,
    limits: WindowLimits,
    /// Totals: events too late for every window they fall in, keys evicted by the bounds.
    pub late: u64,
    /// Keys evicted to stay within `limits`.
    pub evicted: u64,
    /// Per batch in [`WindowState::ingest`]: the rows to add.
    scratch_rows: Vec<Pending>,
    scratch_key: Vec<u8>,
    scratch_key_words: Vec<u64>,
    /// Per key in [`WindowState::fire`]: its pane numbers and the window ends they close.
    scratch_panes: Vec<i64>,
    scratch_ends: Vec<i64>,
    /// A record's words, in [`WindowState::restore`].
    scratch_words: Vec<u64>,
    /// A chunk of a close's results, in [`WindowState::emit`].
    scratch_fired: FiredSet,
}

/// A row of a batch to add: where, its key (first word in the batch's packed keys, length
/// in bytes) and the key's hash, its pane (hop) or time (session).
#[derive(Clone, Copy)]
struct Pending {
    row: u32,
    key: (u32, u32),
    hash: u64,
    at: i64,
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
    fn clear(&mut self) {
        self.rows.clear();
        self.keys.clear();
        self.records.clear();
        self.distinct.clear();
    }

    /// Appends the key bytes of `rec`; returns their range.
    fn push_key(&mut self, rec: &[u64]) -> (usize, usize) {
        let from = self.keys.len();
        Rec::push_key(rec, &mut self.keys);
        (from, self.keys.len())
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

/// Session windows: which keys a close must visit. A key is filed (by its hash) at a time at
/// or before the first close of its open sessions — when a session is created that closes
/// before the key's others, and again at each visit that leaves sessions open — so a close
/// visits the keys filed up to the watermark instead of every key. A session extended since
/// its key was filed is found not due at that visit and filed again; a key gone since is not
/// found. Without it every batch whose watermark passed the earliest session end cost a pass
/// over every key.
#[derive(Default)]
struct Due {
    /// (time, key hash) by time bucket (`time >> DUE_BUCKET_BITS`): a tree of few nodes, so
    /// filing does not miss the cache the way a tree keyed by the millisecond did.
    by_bucket: std::collections::BTreeMap<i64, Vec<(i64, u64)>>,
    /// Entries' capacity, for [`Due::bytes`].
    capacity: usize,
}

/// Due entries are bucketed by 1,024 ms.
const DUE_BUCKET_BITS: u32 = 10;

impl Due {
    fn file(&mut self, time: i64, hash: u64) {
        let v = self.by_bucket.entry(time >> DUE_BUCKET_BITS).or_default();
        let before = v.capacity();
        v.push((time, hash));
        self.capacity += v.capacity() - before;
    }

    /// The hashes filed at or before `time`, taken out (in `out`, cleared first).
    fn take_until(&mut self, time: i64, out: &mut Vec<u64>) {
        out.clear();
        let bucket = time >> DUE_BUCKET_BITS;
        let later = match bucket.checked_add(1) {
            Some(b) => self.by_bucket.split_off(&b),
            None => Default::default(),
        };
        let due = std::mem::replace(&mut self.by_bucket, later);
        for (b, mut v) in due {
            if b == bucket {
                // The watermark's own bucket: what is filed after it stays.
                out.extend(v.iter().filter(|e| e.0 <= time).map(|e| e.1));
                v.retain(|e| e.0 > time);
                if !v.is_empty() {
                    self.by_bucket.insert(b, v);
                    continue;
                }
            } else {
                out.extend(v.iter().map(|e| e.1));
            }
            self.capacity -= v.capacity();
        }
    }

    /// True when something is filed in a bucket the watermark `time` reached.
    fn maybe_due(&self, time: i64) -> bool {
        self.by_bucket
            .keys()
            .next()
            .is_some_and(|&b| b <= time >> DUE_BUCKET_BITS)
    }

    /// Bytes held: the entries' vectors, and about 40 bytes of tree per bucket.
    fn bytes(&self) -> usize {
        self.capacity * 16 + self.by_bucket.len() * 40
    }
}

/// A window close in progress (see [`WindowState::fire`]).
struct Close {
    watermark_ms: i64,
    /// Hop windows: the last pane of the last window the watermark closes.
    last: i64,
    /// The next key to visit.
    cur: Cursor,
    /// The partition of the previous key and its last fired window.
    last_partition: Option<(i32, i64)>,
    /// Keys left without panes in the current chunk (key hash, record), removed at its end.
    emptied: Vec<(u64, Ref)>,
    /// Keys using under half their record, moved to a smaller one at the end.
    shrunk: Vec<Ref>,
    /// Sessions: the hashes of the keys to visit (those filed at or before the watermark),
    /// how many were visited, and the records of the current one's hash.
    due: Vec<u64>,
    due_at: usize,
    due_refs: Vec<Ref>,
}

/// Results of a close per chunk this many at a time: the buffers stay small and warm
/// instead of growing to a row per key. Tests use chunks of a few rows, so every close they
/// check against the reference query crosses chunk boundaries.
const CLOSE_CHUNK: usize = if cfg!(test) { 7 } else { 16_384 };

/// What `HAVING` kept of a close's chunks: their output rows and each row's window and key.
#[derive(Default)]
struct Kept {
    batches: Vec<RecordBatch>,
    bounds: Vec<(i64, i64)>,
    keys: Vec<u8>,
    key_ends: Vec<(usize, usize)>,
}

impl Kept {
    /// The rows in (window end, key) order, with `window_start` and `window_end`.
    fn finish(self, plan: &WindowPlan) -> DfResult<Option<RecordBatch>> {
        let Some(first) = self.batches.first() else {
            return Ok(None);
        };
        let batch = datafusion::arrow::compute::concat_batches(&first.schema(), &self.batches)?;
        let key = |j: u32| {
            let (a, b) = self.key_ends[j as usize];
            &self.keys[a..b]
        };
        let mut order: Vec<u32> = (0..self.bounds.len() as u32).collect();
        order.sort_by(|&x, &y| {
            (self.bounds[x as usize].1, key(x)).cmp(&(self.bounds[y as usize].1, key(y)))
        });
        let take_idx = UInt32Array::from(order);
        let mut cols = datafusion::arrow::compute::take_arrays(batch.columns(), &take_idx, None)?;
        for end in [false, true] {
            cols.push(Arc::new(TimestampMillisecondArray::from_iter_values(
                take_idx.values().iter().map(|&j| {
                    let (s, e) = self.bounds[j as usize];
                    if end { e } else { s }
                }),
            )));
        }
        Ok(Some(RecordBatch::try_new(
            Arc::clone(&plan.out_schema),
            cols,
        )?))
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

/// How many rows ahead a batch asks for its keys' records (and twice that for their table
/// slots): enough misses in flight to hide a miss's latency, few enough that the lines are
/// still in cache when the row is reached.
const AHEAD: usize = 8;

fn too_large(what: &str) -> DataFusionError {
    DataFusionError::Execution(format!(
        "{what}; a window key holds at most {} bytes of key and {} MiB of state",
        Rec::MAX_KEY,
        MAX_RECORD_WORDS >> 17
    ))
}

impl WindowState {
    /// Empty state bounded by `limits`.
    pub fn new(limits: WindowLimits) -> WindowState {
        WindowState {
            store: Store::new(),
            arena: Arena::default(),
            fired: HashMap::new(),
            fired_all: i64::MIN,
            due: Due::default(),
            fired_dirty: Vec::new(),
            tombstones: Vec::new(),
            limits,
            late: 0,
            evicted: 0,
            scratch_rows: Vec::new(),
            scratch_key: Vec::new(),
            scratch_key_words: Vec::new(),
            scratch_panes: Vec::new(),
            scratch_ends: Vec::new(),
            scratch_words: Vec::new(),
            scratch_fired: FiredSet::default(),
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.store.len() == 0
    }

    /// Bytes held: the key table, every page of records (free records included), the string
    /// arena and the sessions' due index.
    pub fn bytes(&self) -> usize {
        self.store.bytes() + self.arena.bytes() + self.due.bytes()
    }

    fn fired_of(&mut self, partition: i32) -> i64 {
        *self.fired.entry(partition).or_insert(i64::MIN)
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
        let mut key = std::mem::take(&mut self.scratch_key);
        let mut pending = std::mem::take(&mut self.scratch_rows);
        pending.clear();
        // Every row's key packed in words, as records hold them.
        let mut words = std::mem::take(&mut self.scratch_key_words);
        words.clear();
        // First the rows to add and their keys' hashes, so the lookups can be asked for
        // ahead of the updates.
        for (row, time) in times.iter().enumerate() {
            let Some(t) = *time else {
                continue; // decoders reject events without a time; a join could null it
            };
            let at = match plan.spec {
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
            key.clear();
            key.extend_from_slice(&partition.to_be_bytes());
            key.extend_from_slice(rows.row(row).as_ref());
            if key.len() > Rec::MAX_KEY {
                return Err(too_large(&format!("a group key of {} bytes", key.len())));
            }
            let from = words.len();
            words.extend(key.chunks(8).map(|c| {
                let mut b = [0u8; 8];
                b[..c.len()].copy_from_slice(c);
                u64::from_le_bytes(b)
            }));
            pending.push(Pending {
                row: row as u32,
                key: (from as u32, key.len() as u32),
                hash: hash_words(key.len(), &words[from..]),
                at,
            });
        }
        // A row adds at most a pane record and an entry per count-distinct.
        let grow = plan.record + plan.distinct;
        for i in 0..pending.len() {
            if let Some(p) = pending.get(i + 2 * AHEAD) {
                self.store.prefetch_slot(p.hash);
            }
            if let Some(p) = pending.get(i + AHEAD) {
                self.store.prefetch_record(p.hash);
            }
            let Pending { row, key, hash, at } = pending[i];
            let (len, from) = (key.1 as usize, key.0 as usize);
            let key = &words[from..from + Rec::key_words(len)];
            let (slot, r) = match self.store.find(hash, len, key) {
                Ok(found) => found,
                Err(_) => self
                    .store
                    .insert(hash, len, key, grow)
                    .ok_or_else(|| too_large("a new key"))?,
            };
            let used = Rec::used(self.store.rec(r));
            let r = self
                .store
                .grow(slot, r, used + grow)
                .ok_or_else(|| too_large(&format!("a key of {used} words")))?;
            let rec = self.store.rec_mut(r);
            if Rec::pane_count(rec) == Rec::MAX_PANES {
                // Its meta word counts 16 bits of panes (a hop of 1 s with a day of lateness
                // could get there).
                return Err(DataFusionError::Execution(format!(
                    "a window key holds at most {} panes or sessions; use a longer hop or gap, \
                     or less allowed lateness",
                    Rec::MAX_PANES
                )));
            }
            let pos = match plan.spec {
                WindowSpec::Hop { .. } => hop_record(plan, rec, at),
                WindowSpec::Session { gap_ms } => {
                    let (pos, new) = session_record(plan, &mut self.arena, rec, at, gap_ms);
                    // A new session closes no earlier than `at + gap`; filed unless an
                    // other session of the key may close before (then the key is filed
                    // already, and visited again then).
                    let close = at.saturating_add(gap_ms);
                    if new && first_close(plan, rec, gap_ms, Some(pos)).is_none_or(|c| c > close) {
                        self.due.file(close, hash);
                    }
                    pos
                }
            };
            update(plan, &mut self.arena, rec, pos, row as usize, &args);
            rec[0] |= DIRTY;
        }
        self.scratch_key = key;
        self.scratch_key_words = words;
        self.scratch_rows = pending;
        self.enforce_limits(plan);
        Ok(())
    }

    /// Starts closing what the watermark `watermark_ms` closes; `None` when it closes nothing
    /// (the common case: most batches do not cross a window end), so a batch does not cost a
    /// pass over every key.
    fn close_begin(&mut self, plan: &WindowPlan, watermark_ms: i64) -> Option<Close> {
        if watermark_ms == i64::MIN {
            return None;
        }
        // Last pane of the last hop window that ends at or before the watermark.
        let last = match plan.spec {
            WindowSpec::Hop { hop_ms, .. } => {
                let last = watermark_ms.div_euclid(hop_ms) - 1;
                // Every partition holding keys has an entry (`fired_of` at ingest, restore).
                let oldest = self.fired.values().copied().min().unwrap_or(self.fired_all);
                if last <= oldest {
                    return None;
                }
                last
            }
            WindowSpec::Session { .. } => {
                if !self.due.maybe_due(watermark_ms) {
                    return None;
                }
                0
            }
        };
        let mut due = Vec::new();
        if let WindowSpec::Session { .. } = plan.spec {
            self.due.take_until(watermark_ms, &mut due);
            if due.is_empty() {
                return None;
            }
        }
        Some(Close {
            watermark_ms,
            last,
            cur: Cursor::default(),
            last_partition: None,
            emptied: Vec::new(),
            shrunk: Vec::new(),
            due,
            due_at: 0,
            due_refs: Vec::new(),
        })
    }

    /// The next key a close visits: hop windows, every key in memory order; sessions, the
    /// keys filed as due (their records asked for a few keys ahead).
    fn next_visit(&self, plan: &WindowPlan, close: &mut Close) -> Option<Ref> {
        if let WindowSpec::Hop { .. } = plan.spec {
            return self.store.next_live(&mut close.cur);
        }
        loop {
            if let Some(r) = close.due_refs.pop() {
                return Some(r);
            }
            let &hash = close.due.get(close.due_at)?;
            if let Some(&h) = close.due.get(close.due_at + 2 * AHEAD) {
                self.store.prefetch_slot(h);
            }
            if let Some(&h) = close.due.get(close.due_at + AHEAD) {
                self.store.prefetch_record(h);
            }
            close.due_at += 1;
            // Every key of that hash (a key evicted or gone since has none).
            self.store.tagged(hash, &mut close.due_refs);
            close
                .due_refs
                .retain(|&r| key_hash(self.store.rec(r)) == hash);
        }
    }

    /// Fires the windows `close` closes of the next keys into `out`, and drops the panes no
    /// open window needs, until `out` holds at least `rows` results or every key to visit was
    /// (then returns true).
    fn fire(
        &mut self,
        plan: &WindowPlan,
        close: &mut Close,
        out: &mut FiredSet,
        rows: usize,
    ) -> bool {
        let (watermark_ms, last) = (close.watermark_ms, close.last);
        let r = plan.record;
        let grow = plan.record + plan.distinct;
        let done = loop {
            if out.rows.len() >= rows {
                break false;
            }
            let Some(at_ref) = self.next_visit(plan, close) else {
                break true;
            };
            let capacity = self.store.capacity(at_ref);
            let rec = self.store.rec_mut(at_ref);
            let start = Rec::panes_start(rec);
            let mut changed = false;
            match plan.spec {
                WindowSpec::Hop { size_ms, hop_ms } => {
                    let panes = size_ms / hop_ms;
                    let partition = Rec::partition(rec);
                    let fired = match close.last_partition {
                        Some((p, f)) if p == partition => f,
                        _ => {
                            let f = *self.fired.entry(partition).or_insert(i64::MIN);
                            close.last_partition = Some((partition, f));
                            f
                        }
                    };
                    if fired >= last {
                        continue;
                    }
                    let n = Rec::pane_count(rec);
                    let pane_ids = &mut self.scratch_panes;
                    pane_ids.clear();
                    pane_ids.extend((0..n).map(|i| rec[start + i * r] as i64));
                    let ends = &mut self.scratch_ends;
                    ends.clear();
                    for &p in pane_ids.iter() {
                        ends.extend(p.max(fired + 1)..(p + panes).min(last + 1));
                    }
                    ends.sort_unstable();
                    ends.dedup();
                    if !ends.is_empty() {
                        let key = out.push_key(rec);
                        for &e in ends.iter() {
                            let at = out.push_record(plan, &[0]);
                            for (i, &p) in pane_ids.iter().enumerate() {
                                if p > e - panes && p <= e {
                                    merge_record(
                                        plan,
                                        &mut self.arena,
                                        &mut out.records[at * r..(at + 1) * r],
                                        &rec[start + i * r..start + (i + 1) * r],
                                    );
                                }
                            }
                            // Panes e - panes + 1 ..= e, by their tags.
                            let in_window =
                                |tag: u64| (e as u64).wrapping_sub(tag) & 0xFFFF < panes as u64;
                            distinct_counts(plan, rec, in_window, &mut out.distinct);
                            out.rows.push(Fired {
                                start: (e - panes + 1) * hop_ms,
                                end: (e + 1) * hop_ms,
                                key,
                                at,
                            });
                        }
                    }
                    // Drop panes no unfired window needs, with their distinct entries.
                    let keep_from = last - panes + 2;
                    let dropped = pane_ids.iter().take_while(|&&p| p < keep_from).count();
                    if dropped > 0 {
                        for i in 0..dropped {
                            let at = start + i * r;
                            self.arena.release_record(plan, &rec[at..at + r]);
                        }
                        Rec::remove(rec, start, dropped * r);
                        Rec::set_panes(rec, n - dropped);
                        let (lo, hi) = (pane_ids[0] as u64, pane_ids[dropped - 1] as u64);
                        let gone = |tag: u64| tag.wrapping_sub(lo) & 0xFFFF <= hi.wrapping_sub(lo);
                        let from = Rec::entries_start(rec, r);
                        Rec::retain_from(rec, from, |e| !gone(e & 0xFFFF));
                        changed = true;
                    }
                }
                WindowSpec::Session { gap_ms } => {
                    let mut i = 0;
                    while i < Rec::pane_count(rec) {
                        let at = start + i * r;
                        let (s, e, tag) = (rec[at] as i64, rec[at + 1] as i64, rec[at + 2]);
                        let end = e.saturating_add(gap_ms);
                        if end > watermark_ms {
                            i += 1;
                            continue;
                        }
                        let key = out.push_key(rec);
                        let row = out.push_record(plan, &[0, 0, 0]);
                        merge_record(
                            plan,
                            &mut self.arena,
                            &mut out.records[row * r..(row + 1) * r],
                            &rec[at..at + r],
                        );
                        self.arena.release_record(plan, &rec[at..at + r]);
                        distinct_counts(plan, rec, |t| t == tag, &mut out.distinct);
                        out.rows.push(Fired {
                            start: s,
                            end,
                            key,
                            at: row,
                        });
                        Rec::remove(rec, at, r);
                        let n = Rec::pane_count(rec) - 1;
                        Rec::set_panes(rec, n);
                        let from = Rec::entries_start(rec, r);
                        Rec::retain_from(rec, from, |x| x & 0xFFFF != tag);
                        changed = true;
                    }
                    // Its open sessions were extended since it was filed: filed again by the
                    // first that may close.
                    if let Some(t) = first_close(plan, rec, gap_ms, None) {
                        self.due.file(t, key_hash(rec));
                    }
                }
            }
            if changed {
                rec[0] |= DIRTY;
                if Rec::pane_count(rec) == 0 {
                    // Removed at the end of the chunk (removal moves no other record, and
                    // the pass skips freed ones), its tombstone and hash taken now, while
                    // the record is in cache.
                    if rec[0] & PERSISTED != 0 {
                        let key = Rec::key(rec);
                        self.tombstones
                            .push((Rec::partition(rec), key[4..].to_vec()));
                    }
                    close.emptied.push((key_hash(rec), at_ref));
                } else if (Rec::used(rec) + grow) * 2 < capacity {
                    close.shrunk.push(at_ref);
                }
            }
        };
        // The keys left without panes, their table slots asked for a few keys ahead.
        for i in 0..close.emptied.len() {
            if let Some(&(h, _)) = close.emptied.get(i + AHEAD) {
                self.store.prefetch_slot(h);
            }
            let (hash, at_ref) = close.emptied[i];
            self.store.remove(hash, at_ref);
        }
        close.emptied.clear();
        done
    }

    /// Ends a close once [`WindowState::fire`] visited every key: moves records that shrank a
    /// lot to smaller classes (not during the pass: a hop close walking memory would meet
    /// them again), gives back pages, and records the windows fired.
    fn close_end(&mut self, plan: &WindowPlan, close: Close) {
        let grow = plan.record + plan.distinct;
        for at_ref in close.shrunk {
            let hash = key_hash(self.store.rec(at_ref));
            self.store.shrink(hash, at_ref, grow);
        }
        self.store.compact(false, key_hash);
        match plan.spec {
            WindowSpec::Hop { .. } => {
                let last = close.last;
                tracing::debug!(last, watermark = close.watermark_ms, fired = ?self.fired, "windows closed");
                for f in self.fired.values_mut() {
                    *f = (*f).max(last);
                }
                self.fired_all = self.fired_all.max(last);
                self.fired_dirty = self.fired.keys().copied().collect();
            }
            WindowSpec::Session { .. } => {}
        }
    }

    /// Past `max_keys` or `max_bytes`, gives back free pages first; if still past, evicts an
    /// eighth of the keys, those whose newest pane is oldest (one pass, amortised over the keys
    /// admitted since).
    fn enforce_limits(&mut self, plan: &WindowPlan) {
        if self.store.len() <= self.limits.max_keys && self.bytes() <= self.limits.max_bytes {
            return;
        }
        if self.store.len() <= self.limits.max_keys {
            self.store.compact(true, key_hash);
            if self.bytes() <= self.limits.max_bytes {
                return;
            }
        }
        let len = self.store.len();
        let target = (len - len / 8).min(self.limits.max_keys * 7 / 8);
        let evict = len - target.max(1).min(len);
        if evict == 0 {
            return;
        }
        let mut by_age: Vec<(i64, Ref)> = Vec::with_capacity(len);
        let mut cur = Cursor::default();
        while let Some(at_ref) = self.store.next_live(&mut cur) {
            let rec = self.store.rec(at_ref);
            let n = Rec::pane_count(rec);
            let newest = if n == 0 {
                i64::MIN
            } else {
                let at = Rec::panes_start(rec) + (n - 1) * plan.record;
                match plan.spec {
                    WindowSpec::Hop { .. } => rec[at] as i64,
                    WindowSpec::Session { .. } => rec[at + 1] as i64,
                }
            };
            by_age.push((newest, at_ref));
        }
        by_age.select_nth_unstable(evict - 1);
        for &(_, at_ref) in &by_age[..evict] {
            self.remove(plan, at_ref);
            self.evicted += 1;
        }
        self.store.compact(true, key_hash);
    }

    /// Removes a key: frees its strings, leaves a tombstone if a checkpoint wrote it.
    fn remove(&mut self, plan: &WindowPlan, at_ref: Ref) {
        let rec = self.store.rec(at_ref);
        let start = Rec::panes_start(rec);
        for i in 0..Rec::pane_count(rec) {
            self.arena.release_record(
                plan,
                &rec[start + i * plan.record..start + (i + 1) * plan.record],
            );
        }
        if rec[0] & PERSISTED != 0 {
            let key = Rec::key(rec);
            self.tombstones
                .push((Rec::partition(rec), key[4..].to_vec()));
        }
        self.store.remove(key_hash(rec), at_ref);
    }

    /// Fires what `watermark_ms` closes, a chunk of results at a time, and turns each chunk
    /// into rows shaped like the aggregate's output, then applies `HAVING` and the
    /// projection. Returns the rule's output, ordered by window end, then key.
    pub fn emit(&mut self, plan: &WindowPlan, watermark_ms: i64) -> DfResult<Option<RecordBatch>> {
        let Some(mut close) = self.close_begin(plan, watermark_ms) else {
            return Ok(None);
        };
        let mut fired = std::mem::take(&mut self.scratch_fired);
        let mut kept = Kept::default();
        let mut result = Ok(());
        loop {
            fired.clear();
            let done = self.fire(plan, &mut close, &mut fired, CLOSE_CHUNK);
            // After an error the close still runs to its end, so the state stays whole.
            if result.is_ok() && !fired.rows.is_empty() {
                result = self.results(plan, &fired, &mut kept);
            }
            for f in &fired.rows {
                self.arena.release_record(plan, fired.record(plan, f));
            }
            if done {
                break;
            }
        }
        self.close_end(plan, close);
        self.scratch_fired = fired;
        result?;
        kept.finish(plan)
    }

    /// `HAVING` and `SELECT` over one chunk of results; what they keep goes to `kept`.
    fn results(&self, plan: &WindowPlan, fired: &FiredSet, kept: &mut Kept) -> DfResult<()> {
        let rows = &fired.rows;
        let mut aggregates: Vec<ArrayRef> = Vec::with_capacity(plan.aggs.len());
        let n_distinct = plan.distinct;
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
                return Ok(());
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
        if batch.num_rows() > 0 {
            for &i in index.values() {
                let f = &rows[i as usize];
                kept.bounds.push((f.start, f.end));
                let from = kept.keys.len();
                kept.keys.extend_from_slice(fired.key(f));
                kept.key_ends.push((from, kept.keys.len()));
            }
            kept.batches.push(batch);
        }
        Ok(())
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
        let mut cur = Cursor::default();
        while let Some(at_ref) = self.store.next_live(&mut cur) {
            let rec = self.store.rec_mut(at_ref);
            if rec[0] & DIRTY == 0 {
                continue;
            }
            rec[0] = (rec[0] & !DIRTY) | PERSISTED;
            let rec = &*rec;
            let len = Rec::key_len(rec);
            let mut key = Vec::with_capacity(len - 3);
            key.push(1);
            let mut bytes = rec[1..1 + Rec::key_words(len)]
                .iter()
                .flat_map(|w| w.to_le_bytes());
            let partition: [u8; 4] = std::array::from_fn(|_| bytes.next().expect("partition"));
            key.extend(bytes.take(len - 4));
            out.push(StateEntry {
                partition: i32::from_be_bytes(partition),
                key,
                value: Some(encode(plan, &self.arena, rec, has_strings, &mut strings)),
            });
        }
    }

    /// Restores entries written by [`WindowState::checkpoint`].
    pub fn restore(&mut self, plan: &WindowPlan, entries: &[StateEntry]) -> Result<(), String> {
        self.store.reserve(entries.len());
        let mut key = Vec::new();
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
                    // Keys of a partition whose fired windows were never written have had
                    // none emitted (its owner died before its first close).
                    self.fired.entry(e.partition).or_insert(i64::MIN);
                    key.clear();
                    key.extend_from_slice(&e.partition.to_be_bytes());
                    key.extend_from_slice(&e.key[1..]);
                    if key.len() > Rec::MAX_KEY {
                        return Err(format!("window state key of {} bytes", key.len()));
                    }
                    let mut words = std::mem::take(&mut self.scratch_words);
                    Rec::pack(&key, &mut words);
                    let hash = hash_words(key.len(), &words);
                    if let Ok((_, old)) = self.store.find(hash, key.len(), &words) {
                        // Replaced by what the changelog holds for it: no tombstone.
                        let tombstones = self.tombstones.len();
                        self.remove(plan, old);
                        self.tombstones.truncate(tombstones);
                    }
                    let Some(value) = value else {
                        self.scratch_words = words;
                        continue;
                    };
                    // The record: meta word (below), key words, then what the value holds.
                    words.insert(0, 0);
                    let panes = self.decode_into(plan, value, &mut words)?;
                    if words.len() > MAX_RECORD_WORDS {
                        return Err("window state entry too large".into());
                    }
                    words[0] = ((words.len() as u64) << 40)
                        | ((panes as u64) << 24)
                        | ((key.len() as u64) << 8)
                        | LIVE
                        | PERSISTED;
                    self.store
                        .insert_record(hash, &words)
                        .ok_or("window state entry too large")?;
                    self.scratch_words = words;
                }
                _ => return Err(format!("unknown window state entry {:?}", e.key.first())),
            }
        }
        if let WindowSpec::Session { gap_ms } = plan.spec {
            // Restored keys are filed by their first session's close.
            self.due = Due::default();
            let mut cur = Cursor::default();
            while let Some(at_ref) = self.store.next_live(&mut cur) {
                let rec = self.store.rec(at_ref);
                if let Some(t) = first_close(plan, rec, gap_ms, None) {
                    self.due.file(t, key_hash(rec));
                }
            }
        }
        self.enforce_limits(plan);
        tracing::debug!(fired = ?self.fired, entries = entries.len(), "window state restored");
        Ok(())
    }

    /// Appends a key's pane records and entries from checkpoint value `v` to `words`; returns
    /// the number of pane records. Version 1 (entries sorted by pane tag first) is converted.
    fn decode_into(
        &mut self,
        plan: &WindowPlan,
        v: &[u8],
        words: &mut Vec<u64>,
    ) -> Result<usize, String> {
        let bad = || "truncated window state entry".to_string();
        let version = match v.first() {
            Some(&x @ (1 | 2)) => x,
            _ => return Err("window state entry of an unknown version".into()),
        };
        let u32_at = |at: usize| -> Result<usize, String> {
            Ok(
                u32::from_le_bytes(v.get(at..at + 4).ok_or_else(bad)?.try_into().expect("4"))
                    as usize,
            )
        };
        let (n, len) = (u32_at(1)?, u32_at(5)?);
        let body = words.len();
        let raw = v.get(9..9 + len * 8).ok_or_else(bad)?;
        words.extend(
            raw.chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8"))),
        );
        if n * plan.record > len || n > 0xFFFF {
            return Err(bad());
        }
        let mut strings = Vec::new();
        let mut at = 9 + len * 8;
        while at < v.len() {
            let l = u32_at(at)?;
            let s = std::str::from_utf8(v.get(at + 4..at + 4 + l).ok_or_else(bad)?)
                .map_err(|_| "window state string is not UTF-8")?;
            strings.push(s);
            at += 4 + l;
        }
        for i in 0..n {
            for a in &plan.aggs {
                if matches!(a.kind, AggKind::MinS | AggKind::MaxS) {
                    let w = &mut words[body + i * plan.record + a.slot];
                    if *w != u64::MAX {
                        let s = strings.get(*w as usize).ok_or_else(bad)?;
                        *w = self.arena.alloc(s);
                    }
                }
            }
        }
        let entries = &mut words[body + n * plan.record..];
        if version == 1 {
            // Tag (bits 48-63), aggregate (44-47), hash (0-43).
            for e in entries.iter_mut() {
                *e = entry((*e >> 44) & 0xF, *e & HASH_BITS, *e >> 48);
            }
        }
        if !entries.is_sorted() {
            entries.sort_unstable();
        }
        Ok(n)
    }

    /// Forgets the keys and fired windows of `partitions`.
    pub fn release(&mut self, plan: &WindowPlan, partitions: &[i32]) {
        let mut gone = Vec::new();
        let mut cur = Cursor::default();
        while let Some(at_ref) = self.store.next_live(&mut cur) {
            if partitions.contains(&Rec::partition(self.store.rec(at_ref))) {
                gone.push(at_ref);
            }
        }
        for at_ref in gone {
            self.remove(plan, at_ref);
        }
        self.store.compact(true, key_hash);
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
    rec: &[u64],
    has_strings: bool,
    strings: &mut Vec<u64>,
) -> Vec<u8> {
    let start = Rec::panes_start(rec);
    let n = Rec::pane_count(rec);
    let words = &rec[start..Rec::used(rec)];
    strings.clear();
    let mut out = Vec::with_capacity(9 + words.len() * 8);
    out.push(2u8);
    out.extend_from_slice(&(n as u32).to_le_bytes());
    out.extend_from_slice(&(words.len() as u32).to_le_bytes());
    if !has_strings {
        for &w in words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        return out;
    }
    let mut string_bytes = 0;
    for (j, &w) in words.iter().enumerate() {
        // String slots of pane records hold arena indices: written as their rank instead.
        let is_string = j < n * plan.record
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

/// Inserts an empty pane record with `header` at `pos` of `rec` (which has room for it).
fn insert_record(plan: &WindowPlan, rec: &mut [u64], pos: usize, header: &[u64]) {
    Rec::insert(rec, pos, plan.record);
    init_record(plan, &mut rec[pos..pos + plan.record], header);
    Rec::set_panes(rec, Rec::pane_count(rec) + 1);
}

/// Index of the record of hop pane `pane` in `rec`, created if absent (records are kept
/// sorted by pane).
fn hop_record(plan: &WindowPlan, rec: &mut [u64], pane: i64) -> usize {
    let start = Rec::panes_start(rec);
    let n = Rec::pane_count(rec);
    let mut at = n;
    for i in (0..n).rev() {
        let p = rec[start + i * plan.record] as i64;
        if p == pane {
            return start + i * plan.record;
        }
        if p < pane {
            break;
        }
        at = i;
    }
    let pos = start + at * plan.record;
    insert_record(plan, rec, pos, &[pane as u64]);
    pos
}

/// Index of the session record `t` falls in, merging the sessions it bridges (sessions are
/// kept sorted by start), and whether it is a new session.
fn session_record(
    plan: &WindowPlan,
    arena: &mut Arena,
    rec: &mut [u64],
    t: i64,
    gap: i64,
) -> (usize, bool) {
    let start = Rec::panes_start(rec);
    let r = plan.record;
    let hit = |rec: &[u64], i: usize| {
        let (s, e) = (rec[start + i * r] as i64, rec[start + i * r + 1] as i64);
        t >= s - gap && t <= e + gap
    };
    let n = Rec::pane_count(rec);
    let Some(first) = (0..n).find(|&i| hit(rec, i)) else {
        // A new session: the lowest tag no open session of this key uses.
        let tag = (0u64..)
            .find(|&tag| (0..n).all(|i| rec[start + i * r + 2] != tag))
            .expect("a free tag");
        let at = (0..n).find(|&i| rec[start + i * r] as i64 > t).unwrap_or(n);
        let pos = start + at * r;
        insert_record(plan, rec, pos, &[t as u64, t as u64, tag]);
        return (pos, true);
    };
    let base = start + first * r;
    // Later sessions `t` also reaches merge into the first.
    let mut i = first + 1;
    while i < Rec::pane_count(rec) {
        if !hit(rec, i) {
            i += 1;
            continue;
        }
        let other = start + i * r;
        let (s, e, tag) = (rec[other] as i64, rec[other + 1] as i64, rec[other + 2]);
        let into_tag = rec[base + 2];
        let (into, from) = rec.split_at_mut(other);
        merge_record(plan, arena, &mut into[base..base + r], &from[..r]);
        arena.release_record(plan, &from[..r]);
        rec[base] = (rec[base] as i64).min(s) as u64;
        rec[base + 1] = (rec[base + 1] as i64).max(e) as u64;
        Rec::remove(rec, other, r);
        Rec::set_panes(rec, Rec::pane_count(rec) - 1);
        retag(plan, rec, tag, into_tag);
    }
    rec[base] = (rec[base] as i64).min(t) as u64;
    rec[base + 1] = (rec[base + 1] as i64).max(t) as u64;
    (base, false)
}

/// The earliest time one of the key's open sessions closes (end + gap), leaving out the one
/// at `except`.
fn first_close(plan: &WindowPlan, rec: &[u64], gap: i64, except: Option<usize>) -> Option<i64> {
    let start = Rec::panes_start(rec);
    (0..Rec::pane_count(rec))
        .map(|i| start + i * plan.record)
        .filter(|&at| Some(at) != except)
        .map(|at| (rec[at + 1] as i64).saturating_add(gap))
        .min()
}

/// Moves the distinct entries of session tag `from` to tag `to`, keeping them sorted and
/// unique.
fn retag(plan: &WindowPlan, rec: &mut [u64], from: u64, to: u64) {
    let start = Rec::entries_start(rec, plan.record);
    let used = Rec::used(rec);
    let mut moved = false;
    for e in &mut rec[start..used] {
        if *e & 0xFFFF == from {
            *e = (*e & !0xFFFF) | to;
            moved = true;
        }
    }
    if moved {
        Rec::sort_dedup_from(rec, start);
    }
}

/// Adds row `row` to the pane record at `pos` of `rec` (and its distinct values); `rec` has
/// room for an entry per count-distinct aggregate.
fn update(
    plan: &WindowPlan,
    arena: &mut Arena,
    rec: &mut [u64],
    pos: usize,
    row: usize,
    args: &[ArgCol],
) {
    let presence = pos + plan.header;
    let tag = match plan.spec {
        WindowSpec::Hop { .. } => rec[pos] & 0xFFFF,
        WindowSpec::Session { .. } => rec[pos + 2] & 0xFFFF,
    };
    for (a, col) in plan.aggs.iter().zip(args) {
        let s = pos + a.slot;
        match (a.kind, col) {
            (AggKind::CountRows, _) => rec[s] += 1,
            (AggKind::Count, ArgCol::Any(c)) => rec[s] += u64::from(c.is_valid(row)),
            (AggKind::CountDistinct, col) => {
                let h = match col {
                    ArgCol::I(c) if c.is_valid(row) => mix(c.value(row) as u64),
                    ArgCol::F(c) if c.is_valid(row) => mix(c.value(row).to_bits()),
                    ArgCol::S(c) if c.is_valid(row) => hash_bytes(c.value(row).as_bytes()),
                    _ => continue,
                };
                let e = entry(a.distinct, h, tag);
                let start = Rec::entries_start(rec, plan.record);
                let used = Rec::used(rec);
                if let Err(at) = rec[start..used].binary_search(&e) {
                    Rec::insert(rec, start + at, 1);
                    rec[start + at] = e;
                }
            }
            (AggKind::SumI | AggKind::MinI | AggKind::MaxI, ArgCol::I(c)) if c.is_valid(row) => {
                let v = c.value(row);
                let seen = rec[presence] & (1 << a.bit) != 0;
                let old = rec[s] as i64;
                rec[s] = match a.kind {
                    AggKind::SumI => old.wrapping_add(v),
                    AggKind::MinI if seen => old.min(v),
                    AggKind::MaxI if seen => old.max(v),
                    _ => v,
                } as u64;
                rec[presence] |= 1 << a.bit;
            }
            (AggKind::SumF | AggKind::MinF | AggKind::MaxF, ArgCol::F(c)) if c.is_valid(row) => {
                let v = c.value(row);
                let seen = rec[presence] & (1 << a.bit) != 0;
                let old = f64::from_bits(rec[s]);
                rec[s] = match a.kind {
                    AggKind::SumF => old + v,
                    AggKind::MinF if seen => old.min(v),
                    AggKind::MaxF if seen => old.max(v),
                    _ => v,
                }
                .to_bits();
                rec[presence] |= 1 << a.bit;
            }
            (AggKind::MinS | AggKind::MaxS, ArgCol::S(c)) if c.is_valid(row) => {
                let v = c.value(row);
                let replace = rec[s] == u64::MAX || {
                    let old = arena.get(rec[s]);
                    if a.kind == AggKind::MinS {
                        v < old
                    } else {
                        v > old
                    }
                };
                if replace {
                    arena.release(rec[s]);
                    rec[s] = arena.alloc(v);
                }
            }
            (AggKind::Avg, ArgCol::F(c)) if c.is_valid(row) => {
                rec[s] = (f64::from_bits(rec[s]) + c.value(row)).to_bits();
                rec[s + 1] += 1;
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

/// Distinct values of each count-distinct aggregate among the entries whose pane tag
/// `in_window` accepts, appended to `out` (one per count-distinct aggregate).
fn distinct_counts(
    plan: &WindowPlan,
    rec: &[u64],
    in_window: impl Fn(u64) -> bool,
    out: &mut Vec<u64>,
) {
    let base = out.len();
    out.resize(base + plan.distinct, 0);
    let entries = &rec[Rec::entries_start(rec, plan.record)..Rec::used(rec)];
    // Entries of one value are adjacent: count a value at its first entry in the window.
    let mut counted = u64::MAX;
    for &e in entries {
        if e >> 16 != counted && in_window(e & 0xFFFF) {
            counted = e >> 16;
            out[base + (e >> 60) as usize] += 1;
        }
    }
}
