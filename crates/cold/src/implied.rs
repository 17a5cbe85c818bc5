//! Columns a cold read does not decode, because the statistics of the row
//! groups it reads already say every value: the batch-level columns that
//! hold one value throughout (timestamp type, producer id, epoch and
//! sequence: the same in every row of a topic written without idempotence
//! or transactions), and the offsets when they run on by one with no gap
//! (every file of a topic that is neither compacted nor transactional).
//!
//! Parquet decodes such a column like any other, a page at a time, into a
//! buffer it first zeroes; for 100-byte records those columns were a fifth
//! of the decoding thread's instructions. Here a constant column is one
//! array of [`ARROW_BATCH_ROWS`] copies of its value, sliced (shared, not
//! copied) for each Arrow batch, and the offsets are counted.
//!
//! Invariant: a batch with implied columns holds, column for column (by
//! name and type), the values the reader would have decoded; only the
//! columns' order differs, and the rebuild finds columns by name. A column
//! is implied only from statistics that state its values exactly (a
//! missing or inexact statistic means it is decoded), so files written
//! before, or by other writers, read as they did.

use crate::cursor::ARROW_BATCH_ROWS;
use crate::read::leaf_index;
use crate::schema::read_schema;
use crate::ColdError;
use arrow_array::{Array, ArrayRef, Int16Array, Int32Array, Int64Array, Int8Array, RecordBatch};
use arrow_schema::{DataType, FieldRef, Schema, SchemaRef};
use parquet::file::metadata::{ParquetMetaData, RowGroupMetaData};
use parquet::file::statistics::Statistics;
use std::sync::Arc;

/// The batch-level columns that may be implied when constant.
const CONSTANT_CANDIDATES: [&str; 4] = [
    "timestamp_type",
    "producer_id",
    "producer_epoch",
    "sequence",
];

/// What a reader leaves undecoded and adds to each batch it returns.
#[derive(Default)]
pub(crate) struct Implied {
    /// Columns with one value in every row read: the field, the value, and
    /// the value repeated at least as many times as a batch has rows.
    constants: Vec<(FieldRef, i64, ArrayRef)>,
    /// The offset of the next row the reader returns, when the offsets of
    /// the rows read run on by one (then counted, not decoded).
    next_offset: Option<i64>,
    /// The schema of the batches returned: the reader's, then the implied
    /// columns (made at the first batch).
    schema: Option<SchemaRef>,
}

impl Implied {
    /// What a read of row groups `groups` of `md`, skipping the first
    /// `skip` rows of the first, can leave undecoded (by the groups'
    /// statistics).
    pub(crate) fn plan(md: &ParquetMetaData, groups: &[usize], skip: usize) -> Self {
        let Some(rgs) = groups
            .iter()
            .map(|&g| md.row_groups().get(g))
            .collect::<Option<Vec<_>>>()
            .filter(|rgs| !rgs.is_empty())
        else {
            return Self::default();
        };
        let read = read_schema();
        let constants = CONSTANT_CANDIDATES
            .iter()
            .filter_map(|name| {
                let col = leaf(md, name)?;
                let field = read.field_with_name(name).ok()?;
                let value = constant(&rgs, col)?;
                let array = repeated(field.data_type(), value, ARROW_BATCH_ROWS)?;
                Some((Arc::new(field.clone()), value, array))
            })
            .collect();
        let next_offset = leaf(md, "offset")
            .and_then(|col| dense_from(&rgs, col))
            .and_then(|first| first.checked_add(i64::try_from(skip).ok()?));
        Self {
            constants,
            next_offset,
            schema: None,
        }
    }

    /// Whether the reader leaves the top-level column `name` undecoded.
    pub(crate) fn implies(&self, name: &str) -> bool {
        (name == "offset" && self.next_offset.is_some())
            || self.constants.iter().any(|(f, _, _)| f.name() == name)
    }

    /// `rb`, as the reader returned it, with the implied columns added.
    pub(crate) fn apply(&mut self, rb: RecordBatch) -> Result<RecordBatch, ColdError> {
        if self.constants.is_empty() && self.next_offset.is_none() {
            return Ok(rb);
        }
        let rows = rb.num_rows();
        let schema = match &self.schema {
            Some(s) => s.clone(),
            None => {
                let read = read_schema();
                let mut fields: Vec<FieldRef> = rb.schema().fields().iter().cloned().collect();
                if self.next_offset.is_some() {
                    fields.push(Arc::new(read.field_with_name("offset")?.clone()));
                }
                fields.extend(self.constants.iter().map(|(f, _, _)| f.clone()));
                let s = Arc::new(Schema::new(fields));
                self.schema = Some(s.clone());
                s
            }
        };
        let mut columns = rb.columns().to_vec();
        if let Some(next) = &mut self.next_offset {
            // (Within the statistics' range, which `plan` checked, unless
            // the file holds more rows than its metadata says: an error.)
            let end = i64::try_from(rows)
                .ok()
                .and_then(|n| next.checked_add(n))
                .ok_or_else(|| {
                    ColdError::Schema(format!("{rows} rows after offset {next} overflow"))
                })?;
            columns.push(Arc::new(Int64Array::from_iter_values(*next..end)));
            *next = end;
        }
        for (field, value, array) in &mut self.constants {
            if array.len() < rows {
                // (Not with the reader's batch size; kept correct anyway.)
                *array = repeated(field.data_type(), *value, rows)
                    .ok_or_else(|| ColdError::Schema(format!("implied column {}", field.name())))?;
            }
            columns.push(array.slice(0, rows));
        }
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

/// The index of the leaf column at top-level `name` (a flat column).
fn leaf(md: &ParquetMetaData, name: &str) -> Option<usize> {
    leaf_index(md, &[name])
}

/// An integer column chunk's exact minimum and maximum, widened to i64.
fn min_max(rg: &RowGroupMetaData, col: usize) -> Option<(i64, i64)> {
    let st = rg.columns().get(col)?.statistics()?;
    if !st.min_is_exact() || !st.max_is_exact() || st.null_count_opt().unwrap_or(1) != 0 {
        return None;
    }
    match st {
        Statistics::Int32(s) => Some(((*s.min_opt()?).into(), (*s.max_opt()?).into())),
        Statistics::Int64(s) => Some((*s.min_opt()?, *s.max_opt()?)),
        _ => None,
    }
}

/// The one value column `col` holds in every row of `rgs`, if it does.
fn constant(rgs: &[&RowGroupMetaData], col: usize) -> Option<i64> {
    let (first, _) = min_max(rgs.first()?, col)?;
    rgs.iter()
        .all(|rg| min_max(rg, col) == Some((first, first)))
        .then_some(first)
}

/// The first offset of `rgs` when their offsets (column `col`) run on by
/// one from there, across the groups too: each group's span of offsets is
/// exactly its row count (offsets strictly increase in a segment file, so
/// then none is missing), and each starts one past the last.
fn dense_from(rgs: &[&RowGroupMetaData], col: usize) -> Option<i64> {
    let mut next = None;
    let mut first = None;
    for rg in rgs {
        let (min, max) = min_max(rg, col)?;
        let span = max.checked_sub(min)?.checked_add(1)?;
        if span != rg.num_rows() || next.is_some_and(|n| n != min) {
            return None;
        }
        first.get_or_insert(min);
        next = Some(max.checked_add(1)?);
    }
    first
}

/// `value` `n` times, as an array of integer type `dt`; None if the type
/// is not an integer one or the value does not fit it.
fn repeated(dt: &DataType, value: i64, n: usize) -> Option<ArrayRef> {
    Some(match dt {
        DataType::Int8 => Arc::new(Int8Array::from_value(i8::try_from(value).ok()?, n)),
        DataType::Int16 => Arc::new(Int16Array::from_value(i16::try_from(value).ok()?, n)),
        DataType::Int32 => Arc::new(Int32Array::from_value(i32::try_from(value).ok()?, n)),
        DataType::Int64 => Arc::new(Int64Array::from_value(value, n)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
