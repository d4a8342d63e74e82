//! The feature server's offline pushes (`/push` with `to: offline | online_and_offline`):
//! the pushed JSON columns become one Arrow batch, typed by the feature view (features and
//! entity columns by their declared types, the batch source's timestamp columns as UTC
//! timestamps, any other column as its JSON values suggest), appended through the
//! repository's offline store — the file engine in-process, or the offline server over
//! Flight. The store checks the columns against the batch source's and casts to its types.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use feast_core::model::FeatureViewExt;
use feast_core::types::{ValueType, value_type_to_arrow};
use feast_offline::{AnyOfflineStore, OfflineError, OfflineStore};
use feast_online::materialize::BoxFuture;
use feast_online::serving::ServeError;
use feast_online::write::{Frame, OfflineWriter};
use feast_proto::core;
use serde_json::{Map, Value as Json};

/// Offline pushes through the repository's offline store.
pub struct StoreWriter(pub Arc<AnyOfflineStore>);

impl OfflineWriter for StoreWriter {
    fn write(
        &self,
        view: &core::FeatureView,
        frame: &Frame,
    ) -> BoxFuture<Result<usize, ServeError>> {
        let batch = frame_to_batch(view, frame);
        let store = self.0.clone();
        let view = view.clone();
        Box::pin(async move {
            let batch = batch?;
            store
                .offline_write_batch(&view, batch.schema(), vec![batch])
                .await
                .map_err(serve_error)
        })
    }
}

fn serve_error(e: OfflineError) -> ServeError {
    match e {
        OfflineError::Feast(e) => ServeError::Feast(e),
        OfflineError::Invalid(m) => ServeError::Unprocessable(m),
        e @ OfflineError::Source { .. } => ServeError::Unprocessable(e.to_string()),
        e => ServeError::Internal(format!("offline write: {e}")),
    }
}

/// The Arrow type of column `name` of a push into `view`, when the view declares it.
fn declared_type(view: &core::FeatureView, name: &str) -> Option<DataType> {
    let spec = view.spec_ref();
    let source = spec.batch_source.as_ref();
    if let Some(source) = source
        && (source.timestamp_field == name || source.created_timestamp_column == name)
    {
        return Some(DataType::Timestamp(
            TimeUnit::Microsecond,
            Some("UTC".into()),
        ));
    }
    // Columns are named as in the source; features are named after its field_mapping.
    let mapped = source
        .and_then(|s| s.field_mapping.get(name))
        .map_or(name, String::as_str);
    spec.features
        .iter()
        .chain(&spec.entity_columns)
        .find(|f| f.name == mapped)
        .and_then(|f| {
            let vt = ValueType::try_from(f.value_type).unwrap_or(ValueType::Invalid);
            value_type_to_arrow(vt).ok()
        })
}

/// The pushed rows as one batch, columns in the order pushed.
fn frame_to_batch(view: &core::FeatureView, frame: &Frame) -> Result<RecordBatch, ServeError> {
    let invalid = |e: arrow_schema::ArrowError| {
        ServeError::Unprocessable(format!("the pushed rows cannot be converted to Arrow: {e}"))
    };
    let mut fields = Vec::new();
    for (name, values) in frame.columns() {
        let data_type = match declared_type(view, name) {
            Some(t) => t,
            None => {
                let rows = values
                    .iter()
                    .map(|v| Ok::<_, arrow_schema::ArrowError>(single(name, v.clone())));
                let inferred =
                    arrow_json::reader::infer_json_schema_from_iterator(rows).map_err(invalid)?;
                inferred
                    .field_with_name(name)
                    .map(|f| f.data_type().clone())
                    .unwrap_or(DataType::Utf8)
            }
        };
        fields.push(Field::new(name, data_type, true));
    }
    let schema = Arc::new(Schema::new(fields));
    let rows: Vec<Map<String, Json>> = (0..frame.rows())
        .map(|i| {
            frame
                .columns()
                .map(|(name, values)| (name.to_owned(), values[i].clone()))
                .collect()
        })
        .collect();
    let mut decoder = arrow_json::ReaderBuilder::new(schema.clone())
        .with_batch_size(rows.len().max(1))
        .build_decoder()
        .map_err(invalid)?;
    decoder.serialize(&rows).map_err(invalid)?;
    Ok(decoder
        .flush()
        .map_err(invalid)?
        .unwrap_or_else(|| RecordBatch::new_empty(schema)))
}

fn single(name: &str, value: Json) -> Json {
    let mut row = Map::new();
    row.insert(name.to_owned(), value);
    Json::Object(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, Float32Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use serde_json::json;

    fn view() -> core::FeatureView {
        let feature = |name: &str, vt: ValueType| core::FeatureSpecV2 {
            name: name.into(),
            value_type: vt as i32,
            ..Default::default()
        };
        core::FeatureView {
            spec: Some(core::FeatureViewSpec {
                name: "stats".into(),
                features: vec![feature("rate", ValueType::Float)],
                entity_columns: vec![feature("driver_id", ValueType::Int64)],
                batch_source: Some(core::DataSource {
                    name: "stats_source".into(),
                    timestamp_field: "event_timestamp".into(),
                    created_timestamp_column: "created".into(),
                    field_mapping: [("conv".to_owned(), "rate".to_owned())].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pushed_columns_take_the_declared_types() {
        let frame = Frame::from_columns(
            json!({
                "driver_id": [1001, 1002],
                "conv": [1, 0.5],
                "event_timestamp": ["2026-11-22T10:00:00Z", "2026-11-22 11:00:00"],
                "created": [null, "2026-11-22T11:00:00+01:00"],
                "note": ["a", null],
            })
            .as_object()
            .unwrap()
            .clone(),
        )
        .unwrap();
        let batch = frame_to_batch(&view(), &frame).unwrap();
        assert_eq!(batch.num_rows(), 2);
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(ids.values(), &[1001, 1002]);
        // `conv` is the source name of feature `rate` (Float32).
        let rates = batch
            .column(1)
            .as_any()
            .downcast_ref::<Float32Array>()
            .unwrap();
        assert_eq!(rates.values(), &[1.0, 0.5]);
        let ts = batch
            .column(2)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        assert_eq!(ts.value(0), 1_795_341_600_000_000);
        assert_eq!(ts.value(1), 1_795_345_200_000_000);
        let created = batch
            .column(3)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        assert!(created.is_null(0));
        assert_eq!(created.value(1), 1_795_341_600_000_000);
        // Undeclared columns keep their JSON types.
        let notes = batch
            .column(4)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!((notes.value(0), notes.is_null(1)), ("a", true));
    }

    #[test]
    fn values_that_do_not_fit_the_declared_type_are_a_422() {
        let frame = Frame::from_columns(
            json!({"driver_id": ["not a number"]})
                .as_object()
                .unwrap()
                .clone(),
        )
        .unwrap();
        let err = frame_to_batch(&view(), &frame).unwrap_err();
        assert!(matches!(err, ServeError::Unprocessable(_)), "{err:?}");
    }
}
