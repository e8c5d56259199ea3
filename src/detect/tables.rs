//! Reference tables: files (an asset inventory, an allow-list) loaded once into memory and
//! registered for SQL rules to join with.
//!
//! In: a `[[detectors.tables]]` entry. Out: a DataFusion `MemTable`, or a [`RuleError`]
//! naming the file, the line and what to fix. A CSV file has a header row; its columns are
//! strings unless the entry's `schema` types them. A JSON-lines file needs the `schema`.
//! Loading happens with the rules (at start and on every reload), never per batch.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::json::ReaderBuilder;
use datafusion::datasource::MemTable;

use super::RuleError;
use crate::config::{Config, TableConfig, parse_type};

/// Loads one reference table.
pub fn load(config: &Config, table: &TableConfig) -> Result<MemTable, RuleError> {
    let path = config.table_path(table);
    let err = |line: usize, m: String| {
        RuleError::at_line(
            &path,
            line,
            format!("table `{}`: {m}", table.name.get_ref()),
        )
    };
    let text = std::fs::read_to_string(&path).map_err(|e| err(0, format!("cannot read: {e}")))?;
    let declared: Vec<(String, DataType)> = table
        .schema
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                parse_type(v.get_ref()).expect("validated with the config"),
            )
        })
        .collect();
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let batch = if matches!(ext, "json" | "jsonl" | "ndjson") {
        if declared.is_empty() {
            return Err(err(
                0,
                "a JSON-lines table needs its columns typed in `schema`".into(),
            ));
        }
        let schema = Arc::new(Schema::new(
            declared
                .iter()
                .map(|(n, t)| Field::new(n, t.clone(), true))
                .collect::<Vec<_>>(),
        ));
        let mut decoder = ReaderBuilder::new(Arc::clone(&schema))
            .build_decoder()
            .map_err(|e| err(0, e.to_string()))?;
        let mut batches = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            decoder
                .decode(format!("{line}\n").as_bytes())
                .map_err(|e| err(i + 1, e.to_string()))?;
            // Flush per line so an error names its line (tables are small, loaded rarely).
            if let Some(b) = decoder.flush().map_err(|e| err(i + 1, e.to_string()))? {
                batches.push(b);
            }
        }
        datafusion::arrow::compute::concat_batches(&schema, &batches)
            .map_err(|e| err(0, e.to_string()))?
    } else {
        read_csv(&text, &declared).map_err(|(line, m)| err(line, m))?
    };
    MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(|e| err(0, e.strip_backtrace()))
}

/// A CSV file with a header into one batch: string columns, cast to declared types.
fn read_csv(text: &str, declared: &[(String, DataType)]) -> Result<RecordBatch, (usize, String)> {
    let mut reader = csv::ReaderBuilder::new().from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| (1, e.to_string()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if header.is_empty() || header.iter().any(String::is_empty) {
        return Err((1, "the first line must name every column".into()));
    }
    for (name, _) in declared {
        if !header.contains(name) {
            return Err((
                1,
                format!("column `{name}` of `schema` is not in the header"),
            ));
        }
    }
    let mut columns: Vec<Vec<Option<String>>> = vec![Vec::new(); header.len()];
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| (i + 2, e.to_string()))?;
        if record.len() != header.len() {
            return Err((
                i + 2,
                format!("{} fields, the header has {}", record.len(), header.len()),
            ));
        }
        for (c, v) in record.iter().enumerate() {
            columns[c].push((!v.is_empty()).then(|| v.to_string()));
        }
    }
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (name, values) in header.iter().zip(columns) {
        let strings: ArrayRef = Arc::new(StringArray::from(values));
        let ty = declared
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
            .unwrap_or(DataType::Utf8);
        let typed = cast_with_options(&strings, &ty, &CastOptions::default())
            .map_err(|e| (0, format!("column `{name}`: {e}")))?;
        // A value the cast could not read became null: name its line.
        if let Some(row) = (0..typed.len()).find(|&r| typed.is_null(r) && strings.is_valid(r)) {
            return Err((
                row + 2,
                format!("column `{name}`: cannot read the value as {ty}"),
            ));
        }
        fields.push(Field::new(name, ty, true));
        arrays.push(typed);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(|e| (0, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_columns_are_typed_and_bad_values_name_their_line() {
        let declared = vec![("zone_id".to_string(), DataType::Int64)];
        let b = read_csv("ip,zone_id\n10.0.0.1,3\n10.0.0.2,\n", &declared).unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.schema().field(1).data_type(), &DataType::Int64);
        assert!(b.column(1).is_null(1), "an empty field is null");
        let e = read_csv("ip,zone_id\n10.0.0.1,3\n10.0.0.2,x\n", &declared).unwrap_err();
        assert_eq!(e.0, 3);
        assert!(e.1.contains("zone_id"), "{}", e.1);
        let e = read_csv("ip,zone\n10.0.0.1\n", &[]).unwrap_err();
        assert_eq!(e.0, 2);
    }
}
