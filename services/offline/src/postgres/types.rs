//! Postgres column types: Feast's names for them, how the engine reads each one over the
//! wire, and the Arrow arrays the rows become.
//!
//! Feast names a column's type by its type code (`pg_type_code_to_pg_type`) and maps the
//! name to a Feast value type (`pg_type_to_feast_value_type`). The engine reads every
//! column as one of a few wire shapes ([`Wire`]): the `SELECT` casts the others to one of
//! them (`numeric` to `float8`, `uuid`/`json`/unknown types to `text`, timestamps to epoch
//! microseconds), so decoding needs no type features of sqlx beyond the basic ones.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder,
    Int32Builder, Int64Builder, ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use sqlx::Row;
use sqlx::postgres::PgRow;

/// Feast's `pg_type_code_to_pg_type`: the type name of a type code, `"unknown"` otherwise.
pub fn feast_type_name(oid: u32) -> &'static str {
    match oid {
        16 => "boolean",
        17 => "bytea",
        20 => "bigint",
        21 => "smallint",
        23 => "integer",
        25 => "text",
        114 => "json",
        199 => "json[]",
        700 => "real",
        701 => "double precision",
        1000 => "boolean[]",
        1001 => "bytea[]",
        1005 => "smallint[]",
        1007 => "integer[]",
        1009 => "text[]",
        1014 => "character[]",
        1016 => "bigint[]",
        1021 => "real[]",
        1022 => "double precision[]",
        1042 => "character",
        1043 => "character varying",
        1082 => "date",
        1083 => "time without time zone",
        1114 => "timestamp without time zone",
        1115 => "timestamp without time zone[]",
        1182 => "date[]",
        1183 => "time without time zone[]",
        1184 => "timestamp with time zone",
        1185 => "timestamp with time zone[]",
        1231 => "numeric[]",
        1700 => "numeric",
        2950 => "uuid",
        2951 => "uuid[]",
        3802 => "jsonb",
        3807 => "jsonb[]",
        _ => "unknown",
    }
}

/// How a column travels from Postgres to Arrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Bool,
    Int32,
    Int64,
    Float32,
    Float64,
    Text,
    Bytes,
    /// Epoch microseconds; `utc` for `timestamptz`, naive for `timestamp`.
    Timestamp {
        utc: bool,
    },
    /// Days since 1970-01-01.
    Date,
    BoolList,
    Int32List,
    Int64List,
    Float32List,
    Float64List,
    TextList,
}

/// One column of a Postgres source as the engine reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgColumn {
    pub name: String,
    /// The Postgres type code (`pg_type.oid`).
    pub oid: u32,
    pub wire: Wire,
}

impl PgColumn {
    pub fn new(name: impl Into<String>, oid: u32) -> Self {
        Self {
            name: name.into(),
            oid,
            wire: wire_of(oid),
        }
    }

    /// The column as the `SELECT` list reads it (cast to its wire shape).
    pub fn select_expr(&self) -> String {
        let col = quote_ident(&self.name);
        match (self.wire, self.oid) {
            (Wire::Timestamp { .. }, _) => {
                // Postgres 14+ computes the epoch as an exact numeric: no rounding.
                format!("(extract(epoch from {col}) * 1000000)::int8")
            }
            (Wire::Date, _) => format!("({col} - DATE '1970-01-01')::int4"),
            (Wire::Int32, 21) => format!("{col}::int4"),
            (Wire::Int32List, 1005) => format!("{col}::int4[]"),
            (Wire::Float64, 1700) => format!("{col}::float8"),
            (Wire::Float64List, 1231) => format!("{col}::float8[]"),
            (Wire::Text, 25) | (Wire::TextList, 1009) => col,
            (Wire::Text, _) => format!("{col}::text"),
            (Wire::TextList, _) => format!("{col}::text[]"),
            _ => col,
        }
    }

    /// The column in a pushed-down condition: timestamps and dates as themselves (compared
    /// with timestamp literals), everything else as the value the engine reads.
    pub fn filter_expr(&self) -> String {
        match self.wire {
            Wire::Timestamp { .. } | Wire::Date => quote_ident(&self.name),
            _ => self.select_expr(),
        }
    }

    pub fn arrow_type(&self) -> DataType {
        self.wire.arrow_type()
    }
}

/// The wire shape of a type code: numbers and timestamps keep their meaning, everything
/// else is read as its text.
pub fn wire_of(oid: u32) -> Wire {
    match oid {
        16 => Wire::Bool,
        21 | 23 => Wire::Int32,
        20 => Wire::Int64,
        700 => Wire::Float32,
        701 | 1700 => Wire::Float64,
        17 => Wire::Bytes,
        1114 => Wire::Timestamp { utc: false },
        1184 => Wire::Timestamp { utc: true },
        1082 => Wire::Date,
        1000 => Wire::BoolList,
        1005 | 1007 => Wire::Int32List,
        1016 => Wire::Int64List,
        1021 => Wire::Float32List,
        1022 | 1231 => Wire::Float64List,
        1009 | 1014 | 1015 | 2951 => Wire::TextList,
        _ => Wire::Text,
    }
}

fn item(ty: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", ty, true)))
}

impl Wire {
    pub fn arrow_type(self) -> DataType {
        match self {
            Wire::Bool => DataType::Boolean,
            Wire::Int32 => DataType::Int32,
            Wire::Int64 => DataType::Int64,
            Wire::Float32 => DataType::Float32,
            Wire::Float64 => DataType::Float64,
            Wire::Text => DataType::Utf8,
            Wire::Bytes => DataType::Binary,
            Wire::Timestamp { utc } => {
                DataType::Timestamp(TimeUnit::Microsecond, utc.then(|| "UTC".into()))
            }
            Wire::Date => DataType::Date32,
            Wire::BoolList => item(DataType::Boolean),
            Wire::Int32List => item(DataType::Int32),
            Wire::Int64List => item(DataType::Int64),
            Wire::Float32List => item(DataType::Float32),
            Wire::Float64List => item(DataType::Float64),
            Wire::TextList => item(DataType::Utf8),
        }
    }
}

/// `"name"`, with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, with embedded quotes doubled (standard_conforming_strings: backslashes are
/// literal).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Builds one Arrow column from rows.
pub enum ColumnBuilder {
    Bool(BooleanBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Text(StringBuilder),
    Bytes(BinaryBuilder),
    Timestamp(TimestampMicrosecondBuilder, bool),
    Date(Date32Builder),
    BoolList(ListBuilder<BooleanBuilder>),
    Int32List(ListBuilder<Int32Builder>),
    Int64List(ListBuilder<Int64Builder>),
    Float32List(ListBuilder<Float32Builder>),
    Float64List(ListBuilder<Float64Builder>),
    TextList(ListBuilder<StringBuilder>),
}

type DecodeResult = Result<(), sqlx::Error>;

fn push_list<T, B>(b: &mut ListBuilder<B>, v: Option<Vec<Option<T>>>)
where
    B: datafusion::arrow::array::ArrayBuilder + Extend<Option<T>>,
{
    match v {
        Some(items) => {
            b.values().extend(items);
            b.append(true);
        }
        None => b.append(false),
    }
}

impl ColumnBuilder {
    pub fn new(wire: Wire, capacity: usize) -> Self {
        match wire {
            Wire::Bool => Self::Bool(BooleanBuilder::with_capacity(capacity)),
            Wire::Int32 => Self::Int32(Int32Builder::with_capacity(capacity)),
            Wire::Int64 => Self::Int64(Int64Builder::with_capacity(capacity)),
            Wire::Float32 => Self::Float32(Float32Builder::with_capacity(capacity)),
            Wire::Float64 => Self::Float64(Float64Builder::with_capacity(capacity)),
            Wire::Text => Self::Text(StringBuilder::with_capacity(capacity, capacity * 8)),
            Wire::Bytes => Self::Bytes(BinaryBuilder::with_capacity(capacity, capacity * 8)),
            Wire::Timestamp { utc } => {
                Self::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity), utc)
            }
            Wire::Date => Self::Date(Date32Builder::with_capacity(capacity)),
            Wire::BoolList => Self::BoolList(ListBuilder::new(BooleanBuilder::new())),
            Wire::Int32List => Self::Int32List(ListBuilder::new(Int32Builder::new())),
            Wire::Int64List => Self::Int64List(ListBuilder::new(Int64Builder::new())),
            Wire::Float32List => Self::Float32List(ListBuilder::new(Float32Builder::new())),
            Wire::Float64List => Self::Float64List(ListBuilder::new(Float64Builder::new())),
            Wire::TextList => Self::TextList(ListBuilder::new(StringBuilder::new())),
        }
    }

    /// Appends column `i` of `row`.
    pub fn push(&mut self, row: &PgRow, i: usize) -> DecodeResult {
        match self {
            Self::Bool(b) => b.append_option(row.try_get::<Option<bool>, _>(i)?),
            Self::Int32(b) => b.append_option(row.try_get::<Option<i32>, _>(i)?),
            Self::Int64(b) => b.append_option(row.try_get::<Option<i64>, _>(i)?),
            Self::Float32(b) => b.append_option(row.try_get::<Option<f32>, _>(i)?),
            Self::Float64(b) => b.append_option(row.try_get::<Option<f64>, _>(i)?),
            Self::Text(b) => b.append_option(row.try_get::<Option<&str>, _>(i)?),
            Self::Bytes(b) => b.append_option(row.try_get::<Option<&[u8]>, _>(i)?),
            Self::Timestamp(b, _) => b.append_option(row.try_get::<Option<i64>, _>(i)?),
            Self::Date(b) => b.append_option(row.try_get::<Option<i32>, _>(i)?),
            Self::BoolList(b) => push_list(b, row.try_get::<Option<Vec<Option<bool>>>, _>(i)?),
            Self::Int32List(b) => push_list(b, row.try_get::<Option<Vec<Option<i32>>>, _>(i)?),
            Self::Int64List(b) => push_list(b, row.try_get::<Option<Vec<Option<i64>>>, _>(i)?),
            Self::Float32List(b) => push_list(b, row.try_get::<Option<Vec<Option<f32>>>, _>(i)?),
            Self::Float64List(b) => push_list(b, row.try_get::<Option<Vec<Option<f64>>>, _>(i)?),
            Self::TextList(b) => push_list(b, row.try_get::<Option<Vec<Option<String>>>, _>(i)?),
        }
        Ok(())
    }

    pub fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Bool(b) => Arc::new(b.finish()),
            Self::Int32(b) => Arc::new(b.finish()),
            Self::Int64(b) => Arc::new(b.finish()),
            Self::Float32(b) => Arc::new(b.finish()),
            Self::Float64(b) => Arc::new(b.finish()),
            Self::Text(b) => Arc::new(b.finish()),
            Self::Bytes(b) => Arc::new(b.finish()),
            Self::Timestamp(b, utc) => {
                let array = b.finish();
                if *utc {
                    Arc::new(array.with_timezone("UTC"))
                } else {
                    Arc::new(array)
                }
            }
            Self::Date(b) => Arc::new(b.finish()),
            Self::BoolList(b) => Arc::new(b.finish()),
            Self::Int32List(b) => Arc::new(b.finish()),
            Self::Int64List(b) => Arc::new(b.finish()),
            Self::Float32List(b) => Arc::new(b.finish()),
            Self::Float64List(b) => Arc::new(b.finish()),
            Self::TextList(b) => Arc::new(b.finish()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_named_and_read_as_feast_maps_them() {
        assert_eq!(feast_type_name(20), "bigint");
        assert_eq!(feast_type_name(1184), "timestamp with time zone");
        assert_eq!(feast_type_name(600), "unknown");
        assert_eq!(PgColumn::new("v", 1700).arrow_type(), DataType::Float64);
        assert_eq!(PgColumn::new("v", 21).arrow_type(), DataType::Int32);
        assert_eq!(
            PgColumn::new("ts", 1184).arrow_type(),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(PgColumn::new("u", 2950).select_expr(), "\"u\"::text");
        assert_eq!(PgColumn::new("a\"b", 20).select_expr(), "\"a\"\"b\"");
    }
}
