//! Closed-loop load on an online feature server (`feast-rs serve` or Feast's `feast serve` /
//! gRPC feature server): N connections, each its own keep-alive HTTP/1.1 connection or HTTP/2
//! channel with one request in flight, sending the same get-online-features request for
//! `--warmup` then `--duration` seconds. Prints one JSON line: requests, errors, req/s and
//! latency percentiles (ms) of the measured window.
//!
//! The first response must be a success with results holding at least one PRESENT value,
//! otherwise the run aborts (exit 2): a server that fails fast must not read as a fast server.
//!
//! Both protocols cost the client the same kind of work, so the two measure the server alike:
//! the request is encoded once (JSON or protobuf bytes) and sent as is, and each response is
//! read whole but not decoded (the first one is decoded, for the check above). Before, a gRPC
//! response was decoded into `GetOnlineFeaturesResponse` messages while an HTTP body was
//! not parsed, which on a 2-core machine charged gRPC with the client's decoding.
//!
//! online-load --url http://127.0.0.1:6566 --protocol http --connections 32 \
//!     --duration 10 --warmup 2 --body request.json

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::{Buf, BufMut, Bytes};
use clap::{Parser, ValueEnum};
use feast_proto::serving::get_online_features_request::Kind;
use feast_proto::serving::{
    FeatureList, FieldStatus, GetOnlineFeaturesRequest, GetOnlineFeaturesResponse,
};
use feast_proto::types::{RepeatedValue, Value, value};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Protocol {
    Http,
    Grpc,
}

/// Which gRPC service to call GetOnlineFeatures on.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GrpcService {
    /// `feast.serving.ServingService` (Feast's Java/Go servers; feast-rs).
    Serving,
    /// `GrpcFeatureServer` (Feast's Python `feast listen`).
    FeatureServer,
}

#[derive(Parser)]
struct Args {
    /// Server base URL (http://host:port). For HTTP, a URL without a path posts to
    /// /get-online-features.
    #[arg(long)]
    url: String,
    #[arg(long, value_enum, default_value = "http")]
    protocol: Protocol,
    /// The gRPC service (with --protocol grpc).
    #[arg(long, value_enum, default_value = "serving")]
    grpc_service: GrpcService,
    /// Concurrent connections, one request in flight on each.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring (not counted).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// The JSON get-online-features request (Feast's HTTP body); converted to a
    /// GetOnlineFeaturesRequest for gRPC.
    #[arg(long)]
    body: std::path::PathBuf,
    /// Client runtime threads (the client shares the machine's cores with the server).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// A name carried into the JSON line.
    #[arg(long, default_value = "")]
    label: String,
    /// Bearer token sent on every request (`authorization: Bearer <token>`), for servers
    /// with `auth:`.
    #[arg(long)]
    token: Option<String>,
    /// Send exactly this many requests per connection (after the first-response check),
    /// instead of --warmup then --duration: a fixed amount of work, for measuring the
    /// server's instructions per request (e.g. under `valgrind --tool=callgrind`).
    #[arg(long)]
    requests: Option<u64>,
}

/// What one connection does: send the request once and say whether it succeeded.
enum Conn {
    Http {
        sender: SendRequest<Full<Bytes>>,
        addr: String,
    },
    Grpc(tonic::client::Grpc<Channel>),
}

/// A unary gRPC call's codec that sends an already encoded message and hands back the
/// response message's bytes undecoded.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The outcome of one request; `Err` carries a description (status and body) of a failure.
type Outcome = std::result::Result<(), String>;

struct Target {
    protocol: Protocol,
    /// host:port, for HTTP connections.
    addr: String,
    uri: hyper::Uri,
    json: Bytes,
    /// The request as an encoded `GetOnlineFeaturesRequest`.
    proto: Bytes,
    /// The gRPC method's path.
    grpc_path: hyper::http::uri::PathAndQuery,
    /// The request's join keys: their columns in a response are echoes, not features.
    join_keys: Vec<String>,
    /// `Bearer <token>`, when the server wants one.
    authorization: Option<hyper::header::HeaderValue>,
}

impl Target {
    fn new(args: &Args) -> Result<Self> {
        let json = std::fs::read(&args.body)
            .with_context(|| format!("reading --body {}", args.body.display()))?;
        let parsed: serde_json::Value = serde_json::from_slice(&json)
            .with_context(|| format!("--body {} is not JSON", args.body.display()))?;
        let mut uri: hyper::Uri = args.url.parse().context("--url")?;
        let addr = uri
            .authority()
            .context("--url needs host:port")?
            .as_str()
            .to_string();
        if args.protocol == Protocol::Http && matches!(uri.path(), "" | "/") {
            uri = format!("http://{addr}/get-online-features").parse()?;
        }
        Ok(Self {
            protocol: args.protocol,
            addr,
            uri,
            json: Bytes::from(json),
            join_keys: parsed
                .get("entities")
                .and_then(|e| e.as_object())
                .map(|e| e.keys().cloned().collect())
                .unwrap_or_default(),
            proto: to_proto(&parsed)?.encode_to_vec().into(),
            grpc_path: hyper::http::uri::PathAndQuery::from_static(match args.grpc_service {
                GrpcService::Serving => "/feast.serving.ServingService/GetOnlineFeatures",
                // GrpcServer.proto declares no package.
                GrpcService::FeatureServer => "/GrpcFeatureServer/GetOnlineFeatures",
            }),
            authorization: args
                .token
                .as_ref()
                .map(|t| format!("Bearer {t}").parse())
                .transpose()
                .context("--token")?,
        })
    }

    async fn connect(&self) -> Result<Conn> {
        match self.protocol {
            Protocol::Http => {
                let tcp = tokio::net::TcpStream::connect(&self.addr)
                    .await
                    .with_context(|| format!("connecting to {}", self.addr))?;
                tcp.set_nodelay(true)?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .context("HTTP/1.1 handshake")?;
                tokio::spawn(conn);
                Ok(Conn::Http {
                    sender,
                    addr: self.addr.clone(),
                })
            }
            Protocol::Grpc => {
                let channel = Endpoint::from_shared(format!("http://{}", self.addr))?
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .with_context(|| format!("connecting to {} (gRPC)", self.addr))?;
                Ok(Conn::Grpc(
                    tonic::client::Grpc::new(channel).max_decoding_message_size(64 << 20),
                ))
            }
        }
    }

    fn grpc_request(&self) -> tonic::Request<Bytes> {
        let mut req = tonic::Request::new(self.proto.clone());
        if let Some(value) = &self.authorization
            && let Ok(value) = value.to_str()
            && let Ok(value) = value.parse()
        {
            req.metadata_mut().insert("authorization", value);
        }
        req
    }

    /// One request; with `check`, also that the response holds a PRESENT value.
    async fn call(&self, conn: &mut Conn, check: bool) -> Outcome {
        match conn {
            Conn::Http { sender, addr } => {
                let mut req = hyper::Request::post(self.uri.clone())
                    .header(hyper::header::HOST, addr.as_str())
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(self.json.clone()))
                    .map_err(|e| e.to_string())?;
                if let Some(value) = &self.authorization {
                    req.headers_mut()
                        .insert(hyper::header::AUTHORIZATION, value.clone());
                }
                sender
                    .ready()
                    .await
                    .map_err(|e| format!("connection: {e}"))?;
                let resp = sender
                    .send_request(req)
                    .await
                    .map_err(|e| format!("request: {e}"))?;
                let status = resp.status();
                // Read the whole body, so the connection can carry the next request.
                let body = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| format!("reading the body: {e}"))?
                    .to_bytes();
                if !status.is_success() {
                    return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
                }
                if check {
                    check_json(&body, &self.join_keys)?;
                }
                Ok(())
            }
            Conn::Grpc(grpc) => {
                grpc.ready().await.map_err(|e| format!("connection: {e}"))?;
                let resp = grpc
                    .unary(self.grpc_request(), self.grpc_path.clone(), Raw)
                    .await;
                check_grpc(resp, check.then_some(&self.join_keys[..]))
            }
        }
    }
}

/// With `join_keys`, the check of a first response: some feature (a result column that is
/// not one of the request's join keys) has a PRESENT value.
fn check_grpc(
    resp: std::result::Result<tonic::Response<Bytes>, tonic::Status>,
    join_keys: Option<&[String]>,
) -> Outcome {
    let resp = resp.map_err(|s| format!("gRPC {:?}: {}", s.code(), s.message()))?;
    let Some(join_keys) = join_keys else {
        return Ok(());
    };
    let resp = GetOnlineFeaturesResponse::decode(resp.into_inner())
        .map_err(|e| format!("the first response is not a GetOnlineFeaturesResponse ({e})"))?;
    let names = resp
        .metadata
        .as_ref()
        .and_then(|m| m.feature_names.as_ref())
        .map(|n| n.val.as_slice())
        .unwrap_or_default();
    let present = resp.results.iter().enumerate().any(|(i, r)| {
        // Without metadata, Feast's order: the join keys' columns come first.
        let is_key = names
            .get(i)
            .map_or(i < join_keys.len(), |n| join_keys.contains(n));
        !is_key && r.statuses.contains(&(FieldStatus::Present as i32))
    });
    if !present {
        return Err(format!(
            "the first response has no PRESENT feature value ({} result vectors)",
            resp.results.len()
        ));
    }
    Ok(())
}

fn check_json(body: &[u8], join_keys: &[String]) -> Outcome {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("the first response is not JSON ({e})"))?;
    let results = v
        .get("results")
        .and_then(|r| r.as_array())
        .filter(|r| !r.is_empty())
        .ok_or_else(|| format!("the first response has no results: {v}"))?;
    let names = v
        .pointer("/metadata/feature_names")
        .and_then(|n| n.as_array())
        .cloned()
        .unwrap_or_default();
    let present = results.iter().enumerate().any(|(i, r)| {
        let is_key = names.get(i).map_or(i < join_keys.len(), |n| {
            n.as_str().is_some_and(|n| join_keys.iter().any(|k| k == n))
        });
        !is_key
            && r.get("statuses")
                .and_then(|s| s.as_array())
                .is_some_and(|s| s.iter().any(|s| s == "PRESENT"))
    });
    if !present {
        let mut text = v.to_string();
        text.truncate(500);
        return Err(format!(
            "the first response has no PRESENT feature value: {text}"
        ));
    }
    Ok(())
}

/// Feast's JSON request body as a GetOnlineFeaturesRequest: JSON integers become int64
/// values, strings string values, other numbers doubles, booleans bools.
fn to_proto(body: &serde_json::Value) -> Result<GetOnlineFeaturesRequest> {
    let kind = match (body.get("features"), body.get("feature_service")) {
        (Some(f), _) => Kind::Features(FeatureList {
            val: serde_json::from_value(f.clone()).context("\"features\" must be strings")?,
        }),
        (None, Some(s)) => Kind::FeatureService(
            s.as_str()
                .context("\"feature_service\" must be a string")?
                .to_string(),
        ),
        (None, None) => bail!("the body names neither \"features\" nor \"feature_service\""),
    };
    let repeated = |field: &str| -> Result<BTreeMap<String, RepeatedValue>> {
        let Some(obj) = body.get(field) else {
            return Ok(BTreeMap::new());
        };
        let obj = obj
            .as_object()
            .with_context(|| format!("\"{field}\" must be an object"))?;
        obj.iter()
            .map(|(k, vs)| {
                let vs = vs
                    .as_array()
                    .with_context(|| format!("\"{field}.{k}\" must be a list"))?;
                let val = vs.iter().map(to_value).collect::<Result<_>>()?;
                Ok((k.clone(), RepeatedValue { val }))
            })
            .collect()
    };
    Ok(GetOnlineFeaturesRequest {
        kind: Some(kind),
        entities: repeated("entities")?,
        full_feature_names: body
            .get("full_feature_names")
            .and_then(|b| b.as_bool())
            .unwrap_or(false),
        request_context: repeated("request_context")?,
        include_feature_view_version_metadata: false,
    })
}

fn to_value(v: &serde_json::Value) -> Result<Value> {
    use serde_json::Value as J;
    let val = match v {
        J::Number(n) => match n.as_i64() {
            Some(i) => value::Val::Int64Val(i),
            None => value::Val::DoubleVal(n.as_f64().context("number out of range")?),
        },
        J::String(s) => value::Val::StringVal(s.clone()),
        J::Bool(b) => value::Val::BoolVal(*b),
        other => bail!("entity value {other} is not an int, string, double or bool"),
    };
    Ok(Value { val: Some(val) })
}

struct Tally {
    hist: Histogram<u64>,
    errors: u64,
}

/// One connection's closed loop: samples taken from `measure_from` until `end`.
async fn run_connection(
    target: Arc<Target>,
    mut conn: Conn,
    measure_from: Instant,
    end: Instant,
    requests: Option<u64>,
    first_error: Arc<AtomicBool>,
) -> Result<Tally> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0u64;
    let mut sent = 0u64;
    loop {
        let start = Instant::now();
        match requests {
            Some(n) if sent >= n => break,
            None if start >= end => break,
            _ => {}
        }
        sent += 1;
        let outcome = target.call(&mut conn, false).await;
        let measured = start >= measure_from;
        if measured {
            hist.saturating_record(start.elapsed().as_micros() as u64);
        }
        if let Err(e) = outcome {
            if measured {
                errors += 1;
            }
            if !first_error.swap(true, Ordering::Relaxed) {
                eprintln!("first error: {e}");
            }
            // A closed HTTP/1.1 connection is unusable; open a new one.
            if matches!(&conn, Conn::Http { sender, .. } if sender.is_closed()) {
                conn = target.connect().await?;
            }
        }
    }
    Ok(Tally { hist, errors })
}

async fn run(args: Args) -> Result<()> {
    ensure!(args.connections > 0, "--connections must be at least 1");
    let target = Arc::new(Target::new(&args)?);

    let mut conns = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        conns.push(target.connect().await?);
    }
    // The first response decides whether the server is worth measuring.
    if let Err(e) = target.call(&mut conns[0], true).await {
        eprintln!("online-load: first response check failed: {e}");
        std::process::exit(2);
    }

    let now = Instant::now();
    let (measure_from, end) = match args.requests {
        // A fixed number of requests: every one is measured, none is warm-up.
        Some(_) => (now, now),
        None => {
            let measure_from = now + Duration::from_secs_f64(args.warmup);
            (
                measure_from,
                measure_from + Duration::from_secs_f64(args.duration),
            )
        }
    };
    let first_error = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|conn| {
            tokio::spawn(run_connection(
                target.clone(),
                conn,
                measure_from,
                end,
                args.requests,
                first_error.clone(),
            ))
        })
        .collect();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for t in tasks {
        let tally = t.await??;
        hist.add(&tally.hist)?;
        errors += tally.errors;
    }

    let elapsed = now.elapsed().as_secs_f64();
    let duration = match args.requests {
        Some(_) => elapsed,
        None => args.duration,
    };
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1e3;
    let line = serde_json::json!({
        "label": args.label,
        "protocol": match args.protocol { Protocol::Http => "http", Protocol::Grpc => "grpc" },
        "connections": args.connections,
        "duration_s": duration,
        "requests": hist.len(),
        "errors": errors,
        "rps": (hist.len() as f64 / duration).round(),
        "p50_ms": ms(0.50),
        "p90_ms": ms(0.90),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "max_ms": hist.max() as f64 / 1e3,
    });
    println!("{line}");
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?
        .block_on(run(args))
}
