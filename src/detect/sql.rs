//! SQL detectors: a header and a DataFusion query; each row the query returns is an alert.
//!
//! ```sql
//! -- id: scada.setpoint_unknown_host
//! -- title: Setpoint written from a host that is not an engineering workstation
//! -- severity: critical
//! -- stream: scada
//! -- tags: attack.ics.t0836
//! -- description: Only ews-01 and ews-02 may change setpoints.
//! SELECT * FROM scada WHERE action = 'setpoint_write' AND host NOT IN ('ews-01', 'ews-02')
//! ```
//!
//! The query is parsed, optimised and turned into a physical plan once, at load. The plan's
//! leaf is a [`SlotExec`] that reads whatever batch is in its stream's [`BatchSlot`]; per
//! batch, the detector puts the batch in the slot and executes the same plan again. Nothing
//! is planned per batch.

use std::any::Any;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::json::LineDelimitedWriter;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::TryStreamExt;
use serde_json::value::RawValue;

use super::window::{WindowPlan, WindowSpec, WindowState};
use super::{
    DetectError, Detector, EvalContext, RuleError, RuleMeta, RuleStateSize, StateCounters,
    StateEntry, protect_columns, timestamp_millis,
};
use crate::alert::{Alert, RuleRef, SCHEMA, Severity, format_time_ms};
use crate::config::{Config, PrivacyAction};

/// The batch a stream's plans read on their next execution.
#[derive(Debug, Default)]
pub struct BatchSlot(Mutex<Option<RecordBatch>>);

impl BatchSlot {
    fn set(&self, batch: Option<RecordBatch>) {
        *self
            .0
            .lock()
            .expect("slot lock is never poisoned: no panics while held") = batch;
    }

    fn get(&self) -> Option<RecordBatch> {
        self.0
            .lock()
            .expect("slot lock is never poisoned: no panics while held")
            .clone()
    }
}

/// The table a stream appears as in SQL: its scan is a [`SlotExec`].
#[derive(Debug)]
struct StreamTable {
    schema: SchemaRef,
    slot: Arc<BatchSlot>,
}

#[async_trait]
impl TableProvider for StreamTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(SlotExec::new(
            Arc::clone(&self.schema),
            projection.cloned(),
            Arc::clone(&self.slot),
        )?))
    }
}

/// Plan leaf producing the batch currently in the slot (projected), once per execution.
#[derive(Debug)]
pub struct SlotExec {
    slot: Arc<BatchSlot>,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl SlotExec {
    fn new(
        table: SchemaRef,
        projection: Option<Vec<usize>>,
        slot: Arc<BatchSlot>,
    ) -> DfResult<SlotExec> {
        let schema = match &projection {
            Some(p) => Arc::new(table.project(p)?),
            None => table,
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(SlotExec {
            slot,
            projection,
            schema,
            properties: Arc::new(properties),
        })
    }
}

impl DisplayAs for SlotExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SlotExec: projection={:?}", self.projection)
    }
}

impl ExecutionPlan for SlotExec {
    fn name(&self) -> &'static str {
        "SlotExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let batches = match self.slot.get() {
            Some(batch) => vec![match &self.projection {
                Some(p) => batch.project(p)?,
                None => batch,
            }],
            None => vec![],
        };
        Ok(Box::pin(MemoryStream::try_new(
            batches,
            Arc::clone(&self.schema),
            None,
        )?))
    }
}

/// Compiles rule files against the configured streams.
pub struct Compiler<'a> {
    config: &'a Config,
    /// One context per stream holding only that stream's table, so a rule cannot read a
    /// stream its header does not name.
    /// `None` for a projected stream (no schema), which SQL cannot read.
    contexts: Vec<Option<(SessionContext, Arc<BatchSlot>)>>,
    /// Reference tables that failed to load: the rules cannot be compiled against them.
    table_errors: Vec<RuleError>,
}

impl<'a> Compiler<'a> {
    /// A compiler for `config`'s streams.
    pub fn new(config: &'a Config) -> Compiler<'a> {
        let mut tables = Vec::new();
        let mut table_errors = Vec::new();
        for t in &config.detectors.tables {
            match super::tables::load(config, t) {
                Ok(mem) => tables.push((t.name.get_ref().clone(), Arc::new(mem))),
                Err(e) => table_errors.push(e),
            }
        }
        let contexts = config
            .streams
            .iter()
            .map(|s| {
                let schema = s.arrow_schema()?;
                let ctx = SessionContext::new_with_config(session_config());
                let slot = Arc::new(BatchSlot::default());
                let table = StreamTable {
                    schema: Arc::clone(schema),
                    slot: Arc::clone(&slot),
                };
                ctx.register_table(s.name.get_ref().as_str(), Arc::new(table))
                    .expect("a fresh context accepts a table");
                // Loaded once, shared by every stream's context (an `Arc`, not a copy).
                for (name, mem) in &tables {
                    ctx.register_table(name.as_str(), Arc::clone(mem) as Arc<dyn TableProvider>)
                        .expect("table names are validated unique");
                }
                Some((ctx, slot))
            })
            .collect();
        Compiler {
            config,
            contexts,
            table_errors,
        }
    }

    /// Reference tables that failed to load (each an error of the load).
    pub fn take_table_errors(&mut self) -> Vec<RuleError> {
        std::mem::take(&mut self.table_errors)
    }

    /// Loads and plans one rule file.
    pub async fn compile_file(&self, path: &Path) -> Result<SqlDetector, RuleError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| RuleError::at_line(path, 0, format!("cannot read rule: {e}")))?;
        self.compile(path, &text).await
    }

    /// Plans one rule from its text; `path` names it in errors.
    pub async fn compile(&self, path: &Path, text: &str) -> Result<SqlDetector, RuleError> {
        let err = |line: usize, message: String| RuleError::at_line(path, line, message);
        let header = parse_header(text).map_err(|(line, m)| err(line, m))?;
        let stream_idx = self.config.stream_index(&header.stream).ok_or_else(|| {
            let names: Vec<_> = self
                .config
                .streams
                .iter()
                .map(|s| s.name.get_ref().as_str())
                .collect();
            err(
                header.stream_line,
                format!(
                    "unknown stream `{}`; configured streams: {}",
                    header.stream,
                    names.join(", ")
                ),
            )
        })?;
        let stream = &self.config.streams[stream_idx];
        let Some((ctx, slot)) = &self.contexts[stream_idx] else {
            return Err(err(
                header.stream_line,
                format!(
                    "stream `{}` has no [streams.schema] (it is projected for Sigma rules); SQL \
                     detectors need a declared schema",
                    header.stream
                ),
            ));
        };
        let query = &text[header.query_offset..];
        if query.trim().is_empty() {
            return Err(err(
                header.query_line,
                "the rule has a header but no SQL query".into(),
            ));
        }
        let plan_err = |e: DataFusionError| {
            let (line, message) = locate(e, header.query_line, query);
            err(line, message)
        };
        let df = ctx.sql(query).await.map_err(plan_err)?;
        let (plan, out_schema, window) = match header.window {
            Some((spec, line)) => {
                let state = ctx.state();
                let analyzed = state
                    .analyzer()
                    .execute_and_check(df.logical_plan().clone(), state.config_options(), |_, _| {})
                    .map_err(plan_err)?;
                let w = WindowPlan::compile(
                    ctx,
                    &analyzed,
                    spec,
                    stream.name(),
                    stream.event_time.get_ref(),
                )
                .await
                .map_err(|e| err(line, e.strip_backtrace()))?;
                let mut limits = self.config.detectors.windows;
                if let Some(k) = header.max_keys {
                    limits.max_keys = limits.max_keys.min(k);
                }
                if let Some(b) = header.max_bytes {
                    limits.max_bytes = limits.max_bytes.min(b);
                }
                let plan = Arc::clone(&w.pre);
                let schema = Arc::clone(&w.out_schema);
                let state = WindowState::new(limits);
                (plan, schema, Some(Box::new(Windowed { plan: w, state })))
            }
            None => {
                let plan = df.create_physical_plan().await.map_err(plan_err)?;
                let schema = plan.schema();
                (plan, schema, None)
            }
        };
        if plan.output_partitioning().partition_count() != 1 {
            return Err(err(
                header.query_line,
                "internal: plan has more than one partition".into(),
            ));
        }

        // A windowed rule's alert is at the window's end unless the query names a time.
        let fallback = if window.is_some() { "window_end" } else { "" };
        let time_col = match out_schema.index_of("event_time") {
            Ok(i) => i,
            Err(_) => out_schema
                .index_of(stream.event_time.get_ref())
                .or_else(|_| out_schema.index_of(fallback))
                .map_err(|_| {
                err(
                    header.query_line,
                    format!(
                        "the query must return the event time: select `{0}` or alias a timestamp `AS event_time` (e.g. `max({0}) AS event_time`)",
                        stream.event_time.get_ref()
                    ),
                )
            })?,
        };
        if !matches!(
            out_schema.field(time_col).data_type(),
            DataType::Timestamp(_, _)
        ) {
            return Err(err(
                header.query_line,
                format!(
                    "column `{}` must be a timestamp, it is {}",
                    out_schema.field(time_col).name(),
                    out_schema.field(time_col).data_type()
                ),
            ));
        }
        let entity_names = header
            .entity
            .clone()
            .unwrap_or_else(|| stream.entity.get_ref().clone());
        let mut entity_cols = Vec::new();
        for name in &entity_names {
            let i = out_schema.index_of(name).map_err(|_| {
                err(
                    header.entity_line.unwrap_or(header.query_line),
                    format!("the query must return the entity column `{name}` (or name another with `-- entity:`)"),
                )
            })?;
            entity_cols.push(i);
        }
        let privacy = out_schema
            .fields()
            .iter()
            .enumerate()
            .filter_map(|(i, f)| stream.privacy.get(f.name()).map(|a| (i, *a.get_ref())))
            .collect();

        let meta = RuleMeta {
            id: header.id,
            title: header.title,
            kind: "sql",
            severity: header.severity,
            description: header.description,
            stream: header.stream,
            tags: header.tags,
            status: None,
            falsepositives: Vec::new(),
            file: path.to_path_buf(),
        };
        // Joins cache their build side on the first execution: a plan with one is reset before
        // each batch (plan nodes are rebuilt, not re-planned).
        let mut has_join = false;
        let _ = plan.apply(|node| {
            has_join |= node.name().contains("Join");
            Ok(TreeNodeRecursion::Continue)
        });
        Ok(SqlDetector {
            reset_per_batch: has_join,
            runs_since_reset: 0,
            stream: stream_idx,
            rule: RuleRef::of(&meta),
            meta: [meta],
            slot: Arc::clone(slot),
            plan,
            task_ctx: ctx.task_ctx(),
            time_col,
            entity_cols,
            privacy,
            window,
            text: text.to_string(),
        })
    }
}

/// The window part of a windowed SQL detector: its plan and its state.
struct Windowed {
    plan: WindowPlan,
    state: WindowState,
}

fn session_config() -> SessionConfig {
    // One partition and no repartitioning: the plan runs on the calling thread, and can be
    // polled to completion synchronously (nothing in it spawns tasks).
    SessionConfig::new()
        .with_target_partitions(1)
        .with_repartition_aggregations(false)
        .with_repartition_joins(false)
        .with_repartition_windows(false)
        .with_repartition_sorts(false)
        .with_coalesce_batches(false)
        .with_information_schema(false)
        // A plan is executed again for every batch: no filter may carry over from one
        // execution to the next.
        .set_bool("datafusion.optimizer.enable_dynamic_filter_pushdown", false)
}

/// Turns a DataFusion error into (file line, message), mapping the parser's
/// "Line: N, Column: M" into the file's numbering; an error at the end of the query is put on
/// its last line.
fn locate(e: DataFusionError, query_line: usize, query: &str) -> (usize, String) {
    let message = e.strip_backtrace();
    let mut line = query_line;
    if message.contains("found: EOF") {
        line = query_line + query.trim_end().lines().count().saturating_sub(1);
    }
    if let Some(at) = message.find("Line: ") {
        let digits: String = message[at + 6..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(n) = digits.parse::<usize>() {
            line = query_line + n.saturating_sub(1);
        }
    }
    (line, message)
}

struct Header {
    id: String,
    title: String,
    severity: Severity,
    stream: String,
    stream_line: usize,
    description: String,
    tags: Vec<String>,
    entity: Option<Vec<String>>,
    entity_line: Option<usize>,
    /// `-- window:` and its line.
    window: Option<(WindowSpec, usize)>,
    /// `-- max_keys:` / `-- max_bytes:`: lower the configured window bounds for this rule.
    max_keys: Option<usize>,
    max_bytes: Option<usize>,
    query_offset: usize,
    query_line: usize,
}

/// Parses the leading `-- key: value` lines.
fn parse_header(text: &str) -> Result<Header, (usize, String)> {
    let (mut id, mut title, mut severity, mut stream) = (None, None, None, None);
    let (mut description, mut tags, mut entity) = (String::new(), Vec::new(), None);
    let (mut window, mut max_keys, mut max_bytes) = (None, None, None);
    let mut offset = 0;
    let mut line_no = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if !(trimmed.starts_with("--") || trimmed.is_empty()) {
            break;
        }
        line_no += 1;
        offset += line.len();
        let Some(body) = trimmed.strip_prefix("--") else {
            continue;
        };
        let Some((key, value)) = body.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key.contains(' ') {
            continue; // a prose comment that happens to contain a colon
        }
        match key {
            "id" => id = Some(value.to_string()),
            "title" => title = Some(value.to_string()),
            "severity" | "level" => {
                severity = Some(Severity::parse(value).ok_or_else(|| {
                    (
                        line_no,
                        format!(
                            "unknown severity `{value}`; use info, low, medium, high or critical"
                        ),
                    )
                })?)
            }
            "stream" => stream = Some((value.to_string(), line_no)),
            "description" => description = value.to_string(),
            "tags" => {
                tags = value
                    .split(',')
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
                    .collect()
            }
            "entity" => {
                entity = Some((
                    value
                        .split(',')
                        .map(|t| t.trim().to_string())
                        .filter(|t| !t.is_empty())
                        .collect::<Vec<_>>(),
                    line_no,
                ))
            }
            "window" => {
                window = Some((WindowSpec::parse(value).map_err(|m| (line_no, m))?, line_no))
            }
            "max_keys" | "max_bytes" => {
                let n: usize = value.replace('_', "").parse().map_err(|_| {
                    (
                        line_no,
                        format!("`{key}` must be a positive whole number, not `{value}`"),
                    )
                })?;
                if n == 0 {
                    return Err((line_no, format!("`{key}` must be at least 1")));
                }
                if key == "max_keys" {
                    max_keys = Some(n);
                } else {
                    max_bytes = Some(n);
                }
            }
            other => {
                return Err((
                    line_no,
                    format!(
                        "unknown header key `{other}`; expected id, title, severity, stream, tags, description, entity, window, max_keys or max_bytes"
                    ),
                ));
            }
        }
    }
    let missing = |what: &str| (1, format!("missing `-- {what}: ...` in the header"));
    let id = id.filter(|s| !s.is_empty()).ok_or_else(|| missing("id"))?;
    let (stream, stream_line) = stream.ok_or_else(|| missing("stream"))?;
    Ok(Header {
        id,
        title: title.ok_or_else(|| missing("title"))?,
        severity: severity.ok_or_else(|| missing("severity"))?,
        stream,
        stream_line,
        description,
        tags,
        entity_line: entity.as_ref().map(|(_, l)| *l),
        entity: entity.map(|(e, _)| e),
        window,
        max_keys,
        max_bytes,
        query_offset: offset,
        query_line: line_no + 1,
    })
}

/// A compiled SQL detector.
pub struct SqlDetector {
    /// Its one rule (an array: [`Detector::rules`] is a slice).
    meta: [RuleMeta; 1],
    /// Index of the stream it reads.
    stream: usize,
    rule: RuleRef,
    /// Where its stream's current batch is put before executing `plan`.
    slot: Arc<BatchSlot>,
    /// The physical plan, built once.
    plan: Arc<dyn ExecutionPlan>,
    task_ctx: Arc<TaskContext>,
    /// Output column with the event time.
    time_col: usize,
    /// Output columns naming the entity.
    entity_cols: Vec<usize>,
    /// Output columns holding personal fields.
    privacy: Vec<(usize, PrivacyAction)>,
    /// For a windowed rule: `plan` is the part below the aggregate, run per batch; the
    /// window state merges its output and emits when the watermark closes a window.
    window: Option<Box<Windowed>>,
    /// The rule file's text: a reload keeps a window's state only if it did not change.
    text: String,
    /// The plan holds a join, whose cached build side must not outlive a batch.
    reset_per_batch: bool,
    /// Executions since the plan's nodes were last rebuilt (see [`SqlDetector::run`]).
    runs_since_reset: u32,
}

/// Executions after which a plan's nodes are rebuilt: each execution registers new metrics
/// in every node's metrics set, which DataFusion never clears, so a plan executed for every
/// batch of a long run would grow without bound. Rebuilding the nodes (not re-planning:
/// `reset_plan_states`) costs about as much as one small batch, once per this many.
const RESET_PLAN_EVERY: u32 = 1024;

impl SqlDetector {
    /// Emits the windows the watermark closed (nothing for a per-batch rule).
    fn emit_windows(&mut self, ctx: &EvalContext, out: &mut Vec<Alert>) -> DfResult<()> {
        let Some(w) = self.window.as_mut() else {
            return Ok(());
        };
        if let Some(result) = w.state.emit(&w.plan, ctx.watermark_ms)? {
            tracing::debug!(
                rule = self.meta[0].id,
                rows = result.num_rows(),
                watermark = ctx.watermark_ms,
                "window results"
            );
            self.alerts_from(&result, ctx, out)?;
        }
        Ok(())
    }

    /// True for a windowed rule.
    pub fn is_windowed(&self) -> bool {
        self.window.is_some()
    }

    /// Executes the plan over `batch` and returns the rows it selects.
    pub fn run(&mut self, batch: &RecordBatch) -> DfResult<Vec<RecordBatch>> {
        self.runs_since_reset += 1;
        if self.runs_since_reset >= RESET_PLAN_EVERY {
            self.runs_since_reset = 0;
            self.plan = datafusion::physical_plan::execution_plan::reset_plan_states(Arc::clone(
                &self.plan,
            ))?;
        }
        self.slot.set(Some(batch.clone()));
        let plan = if self.reset_per_batch {
            datafusion::physical_plan::execution_plan::reset_plan_states(Arc::clone(&self.plan))?
        } else {
            Arc::clone(&self.plan)
        };
        // Unconstrained: DataFusion's streams take from tokio's cooperative budget when run
        // inside a tokio task, and a spent budget parks them until the task yields, which a
        // blocking poll never does (a caller on a runtime thread would hang after a hundred
        // or so batches). The compute thread has no runtime; callers in tests do.
        let result = plan
            .execute(0, Arc::clone(&self.task_ctx))
            .and_then(|stream| {
                futures::executor::block_on(tokio::task::unconstrained(
                    stream.try_collect::<Vec<_>>(),
                ))
            });
        self.slot.set(None);
        result
    }

    /// Applies the privacy policy to an output batch.
    fn protect(&self, batch: &RecordBatch, ctx: &EvalContext) -> DfResult<RecordBatch> {
        Ok(protect_columns(batch, &self.privacy, ctx)?)
    }

    fn alerts_from(
        &self,
        raw: &RecordBatch,
        ctx: &EvalContext,
        out: &mut Vec<Alert>,
    ) -> DfResult<()> {
        let rows = raw.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let protected = self.protect(raw, ctx)?;
        // Evidence: each output row as one JSON object.
        let mut writer = LineDelimitedWriter::new(Vec::new());
        writer.write(&protected)?;
        writer.finish()?;
        let json = writer.into_inner();
        let lines: Vec<&[u8]> = json
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();

        let time_ms = timestamp_millis(raw.column(self.time_col).as_ref());
        let options = FormatOptions::default().with_null("-");
        // Entity from the protected columns, so a personal entity is pseudonymised too.
        let entity_cols: Vec<ArrayRef> = self
            .entity_cols
            .iter()
            .map(|&c| {
                let name = raw.schema().field(c).name().clone();
                protected
                    .column_by_name(&name)
                    .map(Arc::clone)
                    .unwrap_or_else(|| {
                        Arc::new(StringArray::from(vec![Some("redacted"); rows])) as ArrayRef
                    })
            })
            .collect();
        let entity_fmt: Vec<ArrayFormatter> = entity_cols
            .iter()
            .map(|col| ArrayFormatter::try_new(col.as_ref(), &options))
            .collect::<Result<_, _>>()?;
        let detected_at = format_time_ms(ctx.now_ms);
        for row in 0..rows {
            let entity = entity_fmt
                .iter()
                .map(|f| f.value(row).to_string())
                .collect::<Vec<_>>()
                .join("/");
            let event_ms = time_ms.get(row).copied().flatten().unwrap_or(ctx.now_ms);
            let evidence = match lines.get(row) {
                Some(line) => vec![
                    RawValue::from_string(String::from_utf8_lossy(line).into_owned())
                        .map_err(|e| DataFusionError::External(Box::new(e)))?,
                ],
                None => Vec::new(),
            };
            out.push(Alert {
                schema: SCHEMA.to_string(),
                id: Alert::compute_id(&self.meta[0].id, &entity, event_ms, &evidence),
                rule: self.rule.clone(),
                severity: self.meta[0].severity,
                event_time: format_time_ms(event_ms),
                detected_at: detected_at.clone(),
                stream: self.meta[0].stream.clone(),
                entity,
                tags: self.meta[0].tags.clone(),
                description: self.meta[0].description.clone(),
                evidence,
                evidence_truncated: 0,
                context: Default::default(),
            });
        }
        Ok(())
    }
}

impl Detector for SqlDetector {
    fn name(&self) -> &str {
        &self.meta[0].id
    }

    fn rules(&self) -> &[RuleMeta] {
        &self.meta
    }

    fn reads(&self, stream: usize) -> bool {
        stream == self.stream
    }

    fn group_columns(&self) -> Vec<String> {
        self.window
            .as_ref()
            .map(|w| w.plan.group_columns())
            .unwrap_or_default()
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn evaluate(
        &mut self,
        _stream: usize,
        batch: &RecordBatch,
        ctx: &EvalContext,
        out: &mut Vec<Alert>,
    ) -> Result<(), DetectError> {
        let id = self.meta[0].id.clone();
        let fail = |e: DataFusionError| DetectError {
            detector: id.clone(),
            message: e.strip_backtrace(),
        };
        let results = self.run(batch).map_err(fail)?;
        if self.window.is_none() {
            for result in results {
                self.alerts_from(&result, ctx, out).map_err(fail)?;
            }
            return Ok(());
        }
        if let Some(w) = self.window.as_mut() {
            for pre in &results {
                w.state.ingest(&w.plan, pre, ctx.partition).map_err(fail)?;
            }
        }
        self.emit_windows(ctx, out).map_err(fail)
    }

    fn advance(
        &mut self,
        _stream: usize,
        ctx: &EvalContext,
        out: &mut Vec<Alert>,
    ) -> Result<(), DetectError> {
        self.emit_windows(ctx, out).map_err(|e| DetectError {
            detector: self.meta[0].id.clone(),
            message: e.strip_backtrace(),
        })
    }

    fn state(&self) -> StateCounters {
        match &self.window {
            Some(w) => StateCounters {
                events_late: w.state.late,
                window_keys: w.state.len() as u64,
                window_bytes: w.state.bytes() as u64,
                window_keys_evicted: w.state.evicted,
                ..StateCounters::default()
            },
            None => StateCounters::default(),
        }
    }

    fn rule_state(&self, f: &mut dyn FnMut(&str, RuleStateSize)) {
        if let Some(w) = &self.window {
            f(
                &self.meta[0].id,
                RuleStateSize {
                    entries: w.state.len() as u64,
                    bytes: w.state.bytes() as u64,
                },
            );
        }
    }

    fn checkpoint(&mut self, out: &mut Vec<StateEntry>) {
        if let Some(w) = self.window.as_mut() {
            w.state.checkpoint(&w.plan, out);
        }
    }

    fn restore(&mut self, entries: &[StateEntry]) -> Result<(), DetectError> {
        match self.window.as_mut() {
            Some(w) => w
                .state
                .restore(&w.plan, entries)
                .map_err(|message| DetectError {
                    detector: self.meta[0].id.clone(),
                    message,
                }),
            None => Ok(()),
        }
    }

    fn release(&mut self, partitions: &[i32]) {
        if let Some(w) = self.window.as_mut() {
            w.state.release(&w.plan, partitions);
        }
    }

    fn adopt_state(&mut self, old: &mut dyn Detector) -> usize {
        // Same rule text, same window layout: keep the open windows across a reload.
        let Some(old) = old.as_any_mut().downcast_mut::<SqlDetector>() else {
            return 0;
        };
        match (self.window.as_mut(), old.window.as_mut()) {
            (Some(new), Some(was)) if self.text == old.text => {
                std::mem::swap(&mut new.state, &mut was.state);
                1
            }
            _ => 0,
        }
    }
}

impl fmt::Debug for SqlDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlDetector")
            .field("rule", &self.meta[0].id)
            .finish()
    }
}

/// Lets tests and tools see the plan.
impl SqlDetector {
    /// The physical plan, indented.
    pub fn plan_text(&self) -> String {
        datafusion::physical_plan::displayable(self.plan.as_ref())
            .indent(false)
            .to_string()
    }

    /// As `Any`, for downcasting in tools.
    pub fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::Pseudonymiser;
    use datafusion::arrow::json::ReaderBuilder;

    const CONFIG: &str = r#"
[kafka]
brokers = "b:9092"
group_id = "g"
alerts_topic = "a"
dead_letter_topic = "d"
[detectors]
rules = ["rules"]
[[streams]]
name = "scada"
topics = ["t"]
format = "json"
event_time = "ts"
entity = ["host"]
[streams.schema]
ts = "timestamp"
host = "string"
operator = "string"
value = "float64"
[streams.privacy]
operator = "pseudonymise"
"#;

    fn config() -> Config {
        Config::parse(CONFIG, "test.toml", Path::new(".")).unwrap()
    }

    fn batch(config: &Config, lines: &str) -> RecordBatch {
        let mut d = ReaderBuilder::new(Arc::clone(config.streams[0].arrow_schema().unwrap()))
            .build_decoder()
            .unwrap();
        d.decode(lines.as_bytes()).unwrap();
        d.flush().unwrap().unwrap()
    }

    fn ctx() -> EvalContext {
        EvalContext {
            now_ms: 0,
            pseudonymiser: Pseudonymiser::new(b"k"),
            partition: 0,
            watermark_ms: i64::MIN,
        }
    }

    const HEADER: &str =
        "-- id: r1\n-- title: T\n-- severity: high\n-- stream: scada\n-- tags: a, b\n";

    /// Compiles `sql` under the standard header, or returns the error as `line: message`.
    async fn compile(sql: &str) -> Result<SqlDetector, String> {
        let config = config();
        let text = format!("{HEADER}{sql}");
        Compiler::new(&config)
            .compile(Path::new("r.sql"), &text)
            .await
            .map_err(|e| format!("{}: {}", e.line, e.message))
    }

    #[tokio::test]
    async fn each_returned_row_is_an_alert_with_pseudonymised_personal_fields() {
        let config = config();
        let mut det = compile("SELECT ts, host, operator, value FROM scada WHERE value > 5")
            .await
            .unwrap();
        let b = batch(
            &config,
            r#"{"ts":"2026-01-05T02:30:00Z","host":"h1","operator":"alice","value":9}
{"ts":"2026-01-05T02:30:01Z","host":"h2","operator":"bob","value":1}
{"ts":"2026-01-05T02:30:02Z","host":"h3","operator":"carol","value":7}"#,
        );
        let mut out = Vec::new();
        // Twice through the same plan: nothing is consumed by the first execution.
        det.evaluate(0, &b, &ctx(), &mut out).unwrap();
        det.evaluate(0, &b, &ctx(), &mut out).unwrap();
        assert_eq!(out.len(), 4);
        assert_eq!(out[0].entity, "h1");
        assert_eq!(out[1].entity, "h3");
        assert_eq!(out[0].event_time, "2026-01-05T02:30:00.000Z");
        assert_eq!(out[0].id, out[2].id, "same input, same id");
        assert_ne!(out[0].id, out[1].id);
        assert_eq!(out[0].tags, vec!["a", "b"]);
        let evidence = out[0].evidence[0].get();
        assert!(!evidence.contains("alice"), "{evidence}");
        assert!(
            evidence.contains(&Pseudonymiser::new(b"k").pseudonym("alice")),
            "{evidence}"
        );
    }

    #[tokio::test]
    async fn aggregates_run_per_batch() {
        let config = config();
        let mut det = compile(
            "SELECT host, count(*) AS n, max(ts) AS event_time FROM scada GROUP BY host HAVING count(*) >= 2",
        )
        .await
        .unwrap();
        let b = batch(
            &config,
            r#"{"ts":"2026-01-05T02:30:00Z","host":"h1"}
{"ts":"2026-01-05T02:30:05Z","host":"h1"}
{"ts":"2026-01-05T02:30:02Z","host":"h2"}"#,
        );
        let mut out = Vec::new();
        det.evaluate(0, &b, &ctx(), &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].entity.as_str(), out[0].event_time.as_str()),
            ("h1", "2026-01-05T02:30:05.000Z")
        );
        assert!(out[0].evidence[0].get().contains("\"n\":2"));
    }

    #[tokio::test]
    async fn load_errors_name_the_line_and_the_fix() {
        assert_eq!(
            compile("SELECT host FROM scada").await.unwrap_err(),
            "6: the query must return the event time: select `ts` or alias a timestamp `AS event_time` (e.g. `max(ts) AS event_time`)"
        );
        assert_eq!(
            compile("SELECT ts FROM scada").await.unwrap_err(),
            "6: the query must return the entity column `host` (or name another with `-- entity:`)"
        );
        let err = compile("SELECT ts, host\nFROM scada\nWHERE nosuch = 1")
            .await
            .unwrap_err();
        assert!(err.contains("nosuch"), "{err}");
        let err = compile("SELECT ts, host FROM netflow").await.unwrap_err();
        assert!(err.starts_with("6: ") && err.contains("netflow"), "{err}");
        let err = compile("SELECT ts, host\nFROM scada WHERE host = = 'x'")
            .await
            .unwrap_err();
        assert!(
            err.starts_with("7: "),
            "parser position mapped to the file: {err}"
        );
        let err = compile("SELECT ts, host\nFROM scada\nWHERE (")
            .await
            .unwrap_err();
        assert!(
            err.starts_with("8: "),
            "end of query is its last line: {err}"
        );
        let config = config();
        let e = Compiler::new(&config)
            .compile(
                Path::new("r.sql"),
                "-- id: x\n-- title: t\n-- severity: urgent\n-- stream: scada\nSELECT 1",
            )
            .await
            .unwrap_err();
        assert_eq!(
            (e.line, e.message.as_str()),
            (
                3,
                "unknown severity `urgent`; use info, low, medium, high or critical"
            )
        );
        let e = Compiler::new(&config)
            .compile(Path::new("r.sql"), "-- id: x\n-- titel: t\nSELECT 1")
            .await
            .unwrap_err();
        assert_eq!(e.line, 2);
        assert!(
            e.message.starts_with("unknown header key `titel`"),
            "{}",
            e.message
        );
    }

    /// Metrics entries held by every node of the detector's plan.
    fn metric_entries(det: &SqlDetector) -> usize {
        let mut n = 0;
        let _ = det.plan.apply(|node| {
            n += node.metrics().map_or(0, |m| m.iter().count());
            Ok(TreeNodeRecursion::Continue)
        });
        n
    }

    #[tokio::test]
    async fn a_plan_run_for_every_batch_holds_bounded_metrics_and_still_answers() {
        let config = config();
        let mut det = compile(
            "SELECT host, count(*) AS n, max(ts) AS event_time FROM scada GROUP BY host HAVING count(*) >= 2",
        )
        .await
        .unwrap();
        let b = batch(
            &config,
            r#"{"ts":"2026-01-05T02:30:00Z","host":"h1"}
{"ts":"2026-01-05T02:30:05Z","host":"h1"}"#,
        );
        let mut out = Vec::new();
        det.evaluate(0, &b, &ctx(), &mut out).unwrap();
        let per_run = metric_entries(&det);
        assert!(per_run > 0, "the plan's nodes keep metrics");
        let runs = 2 * RESET_PLAN_EVERY as usize + 7;
        let mut most = 0;
        for _ in 1..runs {
            det.evaluate(0, &b, &ctx(), &mut out).unwrap();
            most = most.max(metric_entries(&det));
        }
        // DataFusion adds entries at every execution; the rebuilt nodes start empty.
        assert!(
            most <= per_run * RESET_PLAN_EVERY as usize,
            "{most} entries after {runs} runs ({per_run} per run)"
        );
        assert_eq!(
            out.len(),
            runs,
            "one alert per batch, before and after each rebuild"
        );
    }

    #[tokio::test]
    async fn the_plan_is_built_once_and_reads_the_slot() {
        let det = compile("SELECT ts, host FROM scada WHERE host = 'x'")
            .await
            .unwrap();
        let plan = det.plan_text();
        assert!(plan.contains("SlotExec"), "{plan}");
        assert!(!plan.contains("Repartition"), "{plan}");
    }
}
