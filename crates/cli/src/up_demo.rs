//! What `feast-rs up` does on the driver demo once every service listens: materialize
//! through the feature server (which hands the job to the materializer service), then
//! fetch the same drivers' features over HTTP and gRPC and a training frame over Arrow
//! Flight, as any client would, and print them.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow_array::{Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use futures::StreamExt;
use http_body_util::BodyExt;
use serde_json::{Value as Json, json};

use crate::commands::RepoContext;
use crate::output::table;
use crate::up::Endpoints;

const DRIVERS: [i64; 3] = [1001, 1002, 1003];
const FEATURES: [&str; 3] = [
    "driver_hourly_stats:conv_rate",
    "driver_hourly_stats:acc_rate",
    "driver_hourly_stats:avg_daily_trips",
];

pub async fn run(ctx: &RepoContext, at: &Endpoints) -> Result<()> {
    let token = match ctx.token_provider()? {
        Some(provider) => Some(
            provider
                .header_value()
                .await
                .map_err(|e| anyhow::anyhow!("a token for the demo's requests: {e}"))?,
        ),
        None => None,
    };
    let token = token.as_ref();
    let online = format!("{}:{}", at.host, at.online);

    let now = chrono::Utc::now();
    println!(
        "Materializing up to {} (POST /materialize-incremental)",
        now.to_rfc3339()
    );
    let (status, body) = http_post(
        &online,
        "/materialize-incremental",
        &json!({"end_ts": now.to_rfc3339()}),
        token,
    )
    .await?;
    if status != 200 {
        bail!("POST /materialize-incremental answered {status}: {body}");
    }
    print!("{}", materializer_report(at, token).await?);

    println!("\nOnline features over HTTP (POST /get-online-features):");
    let (status, body) = http_post(
        &online,
        "/get-online-features",
        &json!({"features": FEATURES, "entities": {"driver_id": DRIVERS}}),
        token,
    )
    .await?;
    if status != 200 {
        bail!("POST /get-online-features answered {status}: {body}");
    }
    print!("{}", indent(&http_table(&body)?));

    println!("\nOnline features over gRPC (feast.serving.ServingService/GetOnlineFeatures):");
    print!("{}", indent(&grpc_features(&online, token).await?));

    println!("\nTraining frame over Arrow Flight (get_historical_features):");
    print!("{}", indent(&training_frame(ctx, at, now).await?));
    println!();
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// The materializer's account of the job the feature server handed it.
async fn materializer_report(at: &Endpoints, token: Option<&http::HeaderValue>) -> Result<String> {
    use feast_proto::feast_rs::materializer::v1 as pb;
    let channel = channel(&format!("{}:{}", at.host, at.materializer)).await?;
    let mut client = pb::materializer_client::MaterializerClient::new(channel);
    let jobs = client
        .list_jobs(with_token(pb::ListJobsRequest { limit: 0 }, token))
        .await
        .context("ListJobs on the materializer")?
        .into_inner()
        .jobs;
    let Some(job) = jobs
        .iter()
        .max_by_key(|j| j.created.as_ref().map(|t| (t.seconds, t.nanos)))
    else {
        bail!("the materializer ran no job");
    };
    if job.state() != pb::JobState::Succeeded {
        bail!(
            "materialization job {} ended {:?}: {}",
            job.id,
            job.state(),
            job.error
        );
    }
    let rows: Vec<Vec<String>> = job
        .views
        .iter()
        .map(|v| {
            let time = |t: &Option<prost_types::Timestamp>| {
                t.as_ref()
                    .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
                    .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_default()
            };
            vec![
                v.feature_view.clone(),
                format!("{} .. {}", time(&v.start), time(&v.end)),
                v.rows.to_string(),
                v.written.to_string(),
            ]
        })
        .collect();
    Ok(format!(
        "Materializer job {} succeeded:\n{}",
        job.id,
        indent(&table(
            &["view", "window (UTC)", "rows read", "written"],
            &rows
        ))
    ))
}

/// Feast's column-major response as one row per entity.
fn http_table(body: &Json) -> Result<String> {
    let names: Vec<&str> = body["metadata"]["feature_names"]
        .as_array()
        .context("response without metadata.feature_names")?
        .iter()
        .filter_map(Json::as_str)
        .collect();
    let results = body["results"]
        .as_array()
        .context("response without results")?;
    for (name, column) in names.iter().zip(results) {
        let statuses = column["statuses"].as_array().into_iter().flatten();
        if let Some(bad) = statuses.into_iter().find(|s| s.as_str() != Some("PRESENT")) {
            bail!("{name} came back {bad}: materialization did not reach the online store");
        }
    }
    let rows = (0..DRIVERS.len())
        .map(|i| {
            results
                .iter()
                .map(|c| c["values"][i].to_string())
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>();
    Ok(table(&names, &rows))
}

async fn grpc_features(online: &str, token: Option<&http::HeaderValue>) -> Result<String> {
    use feast_proto::serving::get_online_features_request::Kind;
    use feast_proto::serving::serving_service_client::ServingServiceClient;
    use feast_proto::serving::{FeatureList, GetOnlineFeaturesRequest};
    use feast_proto::types::{RepeatedValue, Value, value::Val};
    let mut client = ServingServiceClient::new(channel(online).await?);
    let request = GetOnlineFeaturesRequest {
        kind: Some(Kind::Features(FeatureList {
            val: FEATURES.iter().map(|f| f.to_string()).collect(),
        })),
        entities: [(
            "driver_id".to_owned(),
            RepeatedValue {
                val: DRIVERS
                    .iter()
                    .map(|id| Value {
                        val: Some(Val::Int64Val(*id)),
                    })
                    .collect(),
            },
        )]
        .into(),
        ..Default::default()
    };
    let response = client
        .get_online_features(with_token(request, token))
        .await
        .context("GetOnlineFeatures")?
        .into_inner();
    let names = response
        .metadata
        .and_then(|m| m.feature_names)
        .map(|n| n.val)
        .unwrap_or_default();
    let rows = (0..DRIVERS.len())
        .map(|i| {
            response
                .results
                .iter()
                .map(|c| {
                    c.values
                        .get(i)
                        .map(|v| feast_core::value::value_to_json(v).to_string())
                        .unwrap_or_default()
                })
                .collect()
        })
        .collect::<Vec<_>>();
    let headers: Vec<&str> = names.iter().map(String::as_str).collect();
    Ok(table(&headers, &rows))
}

/// Point-in-time features of three drivers, an hour, a day and a week ago.
async fn training_frame(
    ctx: &RepoContext,
    at: &Endpoints,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String> {
    use feast_offline::{
        EntityTable, FeatureSelection, FlightOfflineClient, HistoricalRequest, OfflineStore,
    };
    let catalog = crate::serve::RegistryAccess::open(ctx)
        .await?
        .load(ctx.project())
        .await?;
    let config = serde_json::from_value(json!({"host": at.host, "port": at.offline}))?;
    let client = FlightOfflineClient::new(&config, None)?.with_token(ctx.token_provider()?);
    let utc: Option<Arc<str>> = Some("UTC".into());
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, utc.clone()),
            false,
        ),
    ]));
    let hours_ago = [1, 24, 24 * 7];
    let times = hours_ago.map(|h| (now - chrono::TimeDelta::hours(h)).timestamp_micros());
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(DRIVERS.to_vec())),
            Arc::new(TimestampMicrosecondArray::from(times.to_vec()).with_timezone_opt(utc)),
        ],
    )?;
    let request = HistoricalRequest {
        features: FeatureSelection::Refs(FEATURES.iter().map(|f| f.to_string()).collect()),
        full_feature_names: false,
    };
    let mut stream = client
        .get_historical_features(
            &catalog,
            ctx.project(),
            EntityTable::new(schema, vec![batch]),
            &request,
        )
        .await?;
    let mut batches = Vec::new();
    while let Some(batch) = stream.next().await {
        batches.push(batch?);
    }
    batches_table(&batches)
}

fn batches_table(batches: &[RecordBatch]) -> Result<String> {
    use arrow_cast::display::{ArrayFormatter, FormatOptions};
    let Some(first) = batches.first() else {
        bail!("the offline server returned no rows");
    };
    let schema = first.schema();
    let headers: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let options = FormatOptions::default().with_null("null");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for i in 0..batch.num_rows() {
            rows.push(formatters.iter().map(|f| f.value(i).to_string()).collect());
        }
    }
    Ok(table(&headers, &rows))
}

async fn channel(target: &str) -> Result<tonic::transport::Channel> {
    tonic::transport::Endpoint::from_shared(format!("http://{target}"))?
        .connect()
        .await
        .with_context(|| format!("connecting to {target}"))
}

fn with_token<T>(message: T, token: Option<&http::HeaderValue>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = token.and_then(|t| t.to_str().ok()?.parse().ok()) {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// One JSON POST over a new HTTP/1.1 connection.
async fn http_post(
    authority: &str,
    path: &str,
    body: &Json,
    token: Option<&http::HeaderValue>,
) -> Result<(u16, Json)> {
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("connecting to {authority}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = http::Request::post(path)
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, token);
    }
    let request = request.body(http_body_util::Full::new(bytes::Bytes::from(
        body.to_string(),
    )))?;
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("POST {path}"))?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    let json = if bytes.is_empty() {
        Json::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Json::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Ok((status, json))
}
