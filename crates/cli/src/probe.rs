//! `feast-rs probe URL`: one health check of a feast-rs service and nothing else, for
//! container `HEALTHCHECK`s (the images have no curl) and for `doctor --*-url`.
//!
//! - `http://host:port/path`, `https://...`: GET; healthy on a 2xx answer (the feature
//!   server's `/readyz` is readiness, `/healthz` liveness).
//! - `grpc://host:port`, `grpcs://...` (TLS): `grpc.health.v1.Health/Check` of `--service`
//!   (`""`, the default, is every feast-rs server's readiness; `liveness` its liveness);
//!   healthy when the answer is SERVING.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Seconds a probe waits when not told otherwise: well under Docker's default 30 s
/// HEALTHCHECK timeout, long enough for a server busy with a registry refresh.
pub const DEFAULT_TIMEOUT_SECS: f64 = 3.0;

#[derive(clap::Args)]
pub struct ProbeArgs {
    /// `http(s)://host:port/path` (GET, healthy on 2xx) or `grpc(s)://host:port`
    /// (grpc.health.v1 Check, healthy when SERVING).
    pub url: String,
    /// The gRPC health service asked about: "" (readiness: the registry is loaded) or
    /// `liveness`.
    #[arg(long, default_value = "", value_name = "NAME")]
    pub service: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_SECS, value_name = "SECS")]
    pub timeout: f64,
    /// CA certificate (PEM) to trust for https:// and grpcs:// (default: the system's).
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
}

/// `probe`: Ok (exit 0) when healthy; otherwise the reason, which `main` prints to stderr
/// before exiting 1.
pub fn run(args: &ProbeArgs) -> Result<()> {
    let timeout = seconds(args.timeout).context("--timeout")?;
    let ca = match &args.ca_cert {
        Some(p) => {
            Some(std::fs::read(p).with_context(|| format!("reading --ca-cert {}", p.display()))?)
        }
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the Tokio runtime")?;
    let ca_path = args.ca_cert.as_deref();
    match runtime.block_on(probe(
        &args.url,
        &args.service,
        timeout,
        ca_path,
        ca.as_deref(),
    )) {
        Ok(answer) => {
            println!("{}: {answer}", args.url);
            Ok(())
        }
        Err(reason) => bail!("{}: {reason}", args.url),
    }
}

/// A positive, finite number of seconds.
pub fn seconds(secs: f64) -> Result<Duration> {
    if !(secs.is_finite() && secs > 0.0) {
        bail!("{secs} is not a positive number of seconds");
    }
    Ok(Duration::from_secs_f64(secs))
}

/// What a URL asks for.
#[derive(Debug)]
enum Target<'a> {
    Http { url: &'a str, tls: bool },
    Grpc { authority: &'a str, tls: bool },
}

fn target(url: &str) -> Result<Target<'_>, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("expected http://, https://, grpc:// or grpcs:// followed by host:port")?;
    match scheme.to_ascii_lowercase().as_str() {
        s @ ("http" | "https") => Ok(Target::Http {
            url,
            tls: s == "https",
        }),
        s @ ("grpc" | "grpcs") => {
            let authority = rest.trim_end_matches('/');
            if authority.is_empty() || authority.contains('/') {
                return Err(format!("a {s}:// URL is just {s}://host:port"));
            }
            Ok(Target::Grpc {
                authority,
                tls: s == "grpcs",
            })
        }
        other => Err(format!(
            "unknown scheme {other:?}: expected http, https, grpc or grpcs"
        )),
    }
}

/// One probe of `url`: Ok with what the server answered, or why it is not healthy. Never
/// takes longer than `timeout`. `ca_path`/`ca_pem` is the CA to trust for TLS (the same
/// certificate, as a path for HTTPS and as PEM for gRPC), else the system's roots.
pub async fn probe(
    url: &str,
    service: &str,
    timeout: Duration,
    ca_path: Option<&Path>,
    ca_pem: Option<&[u8]>,
) -> Result<String, String> {
    let work = async {
        match target(url)? {
            Target::Http { url, tls } => http_get(url, tls, timeout, ca_path).await,
            Target::Grpc { authority, tls } => {
                grpc_health(authority, tls, ca_pem, service, timeout).await
            }
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {:.1}s", timeout.as_secs_f64())),
    }
}

async fn http_get(
    url: &str,
    tls: bool,
    timeout: Duration,
    ca_path: Option<&Path>,
) -> Result<String, String> {
    // `verify_ssl` only matters for https://; off for http:// so that a plain probe does
    // not load the system's CA certificates for nothing.
    let ca = ca_path.map(|p| p.to_string_lossy().into_owned());
    // The caller's timeout ends the probe (with the same message for every scheme); the
    // client's own is only a backstop.
    let backstop = timeout + Duration::from_secs(1);
    let client = feast_auth::FetchClient::new(tls, ca.as_deref().unwrap_or(""), backstop)
        .map_err(auth_text)?;
    // The fetch errors start with the URL, which the caller prints already.
    let body = client.get(url).await.map_err(|e| {
        let text = auth_text(e);
        text.strip_prefix(&format!("{url}: "))
            .map(str::to_owned)
            .unwrap_or(text)
    })?;
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    Ok(format!("healthy {}", text.trim()))
}

/// The text of a fetch error without feast-auth's "Identity provider unavailable" framing.
fn auth_text(e: feast_auth::AuthError) -> String {
    match e {
        feast_auth::AuthError::ProviderUnavailable(s) | feast_auth::AuthError::Config(s) => s,
        other => other.to_string(),
    }
}

/// An error and its sources (tonic's transport errors say "transport error" on top).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

async fn grpc_health(
    authority: &str,
    tls: bool,
    ca_pem: Option<&[u8]>,
    service: &str,
    timeout: Duration,
) -> Result<String, String> {
    let scheme = if tls { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{authority}"))
        .map_err(|e| format!("invalid address {authority:?}: {e}"))?
        // Backstops: the caller's timeout ends the probe first, with one message.
        .connect_timeout(timeout + Duration::from_secs(1))
        .timeout(timeout + Duration::from_secs(1));
    if tls {
        let config = match ca_pem {
            Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
            None => ClientTlsConfig::new().ca_certificates(system_roots()),
        };
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| format!("TLS: {}", error_chain(&e)))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {}", error_chain(&e)))?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await;
    let what = match service {
        "" => "readiness".to_owned(),
        "liveness" => "liveness".to_owned(),
        other => format!("service {other:?}"),
    };
    match answer {
        Ok(response) => {
            let status = ServingStatus::try_from(response.into_inner().status)
                .unwrap_or(ServingStatus::Unknown);
            if status == ServingStatus::Serving {
                Ok(format!("SERVING ({what})"))
            } else {
                Err(format!("{} ({what})", status.as_str_name()))
            }
        }
        Err(status) if status.code() == tonic::Code::NotFound => Err(format!(
            "the server has no health status for {what} (grpc.health.v1 NOT_FOUND)"
        )),
        Err(status) => Err(format!(
            "health check failed: {:?}: {}",
            status.code(),
            status.message()
        )),
    }
}

/// The system's CA certificates as tonic wants them (PEM); tonic is built without its own
/// root stores here.
fn system_roots() -> Vec<Certificate> {
    use base64::Engine;
    rustls_native_certs::load_native_certs()
        .certs
        .iter()
        .map(|der| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
            let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
            for line in b64.as_bytes().chunks(64) {
                pem.push_str(std::str::from_utf8(line).unwrap_or_default());
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
            Certificate::from_pem(pem)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(matches!(
            target("grpc://127.0.0.1:6570/"),
            Ok(Target::Grpc {
                authority: "127.0.0.1:6570",
                tls: false
            })
        ));
        assert!(matches!(
            target("GRPCS://h:1"),
            Ok(Target::Grpc { tls: true, .. })
        ));
        assert!(matches!(
            target("https://h:1/readyz"),
            Ok(Target::Http { tls: true, .. })
        ));
        assert!(target("grpc://h:1/x").is_err());
        assert!(target("h:1").is_err());
        assert!(target("ftp://h:1").unwrap_err().contains("unknown scheme"));
    }

    #[test]
    fn timeouts_must_be_positive() {
        assert!(seconds(0.0).is_err());
        assert!(seconds(f64::NAN).is_err());
        assert_eq!(seconds(1.5).unwrap(), Duration::from_millis(1500));
    }
}
