//! The segment schema, column for column as DESIGN §4 fixes it.

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use std::sync::Arc;

/// Value of the `strata.format.version` file metadata key.
pub const FORMAT_VERSION: &str = "1";

pub(crate) fn header_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Binary, true),
    ])
}

pub(crate) fn header_item() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Struct(header_fields()), false))
}

pub fn segment_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("timestamp_type", DataType::Int8, false),
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, true),
        Field::new("headers", DataType::List(header_item()), false),
        Field::new("producer_id", DataType::Int64, false),
        Field::new("producer_epoch", DataType::Int16, false),
        Field::new("sequence", DataType::Int32, false),
    ]))
}

/// The segment schema as cold reads decode it: keys and values as
/// `BinaryView`, views into the decompressed pages, which the Parquet
/// reader builds without copying each value (the rebuilt batch is the one
/// copy). Engines read the files with the schema the file declares.
pub(crate) fn read_schema() -> SchemaRef {
    let fields: Vec<Field> = segment_schema()
        .fields()
        .iter()
        .map(|f| match f.name().as_str() {
            "key" | "value" => f.as_ref().clone().with_data_type(DataType::BinaryView),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}
