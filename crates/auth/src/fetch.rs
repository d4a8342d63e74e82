//! A small HTTP(S) GET client for the identity provider's discovery document and JWKS: one
//! request per connection over hyper's HTTP/1.1 client and rustls (the tree's ring provider),
//! with Feast's `verify_ssl` / `ca_cert_path` semantics and a timeout. Fetches happen at
//! start-up, on JWKS expiry and on key rotation, never per request, so no pooling.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use crate::error::AuthError;

/// TLS settings for fetches (`verify_ssl`, `ca_cert_path`).
#[derive(Debug, Clone)]
pub struct FetchClient {
    tls: Arc<ClientConfig>,
    timeout: Duration,
}

fn unavailable(what: impl std::fmt::Display) -> AuthError {
    AuthError::ProviderUnavailable(what.to_string())
}

impl FetchClient {
    /// `verify_ssl = false` accepts any server certificate (as Feast's `CERT_NONE`);
    /// a non-empty `ca_cert_path` that exists replaces the system roots.
    pub fn new(verify_ssl: bool, ca_cert_path: &str, timeout: Duration) -> Result<Self, AuthError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| AuthError::Config(format!("TLS: {e}")))?;
        let config = if !verify_ssl {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
                .with_no_client_auth()
        } else {
            let mut roots = RootCertStore::empty();
            if !ca_cert_path.is_empty() && std::path::Path::new(ca_cert_path).exists() {
                use rustls::pki_types::CertificateDer;
                use rustls::pki_types::pem::PemObject;
                let certs = CertificateDer::pem_file_iter(ca_cert_path)
                    .map_err(|e| AuthError::Config(format!("ca_cert_path {ca_cert_path}: {e}")))?;
                for cert in certs {
                    let cert = cert.map_err(|e| {
                        AuthError::Config(format!("ca_cert_path {ca_cert_path}: {e}"))
                    })?;
                    roots.add(cert).map_err(|e| {
                        AuthError::Config(format!("ca_cert_path {ca_cert_path}: {e}"))
                    })?;
                }
            } else {
                let native = rustls_native_certs::load_native_certs();
                for error in &native.errors {
                    tracing::warn!(message = "could not load a system CA certificate", %error);
                }
                roots.add_parsable_certificates(native.certs);
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        Ok(Self {
            tls: Arc::new(config),
            timeout,
        })
    }

    /// GET `url` and parse the body as JSON; any non-2xx status is an error.
    pub async fn get_json(&self, url: &str) -> Result<serde_json::Value, AuthError> {
        let body = tokio::time::timeout(self.timeout, self.request(url, None))
            .await
            .map_err(|_| unavailable(format!("GET {url}: timed out after {:?}", self.timeout)))??;
        serde_json::from_slice(&body)
            .map_err(|e| unavailable(format!("GET {url}: invalid JSON: {e}")))
    }

    /// GET `url` and return the body as is; any non-2xx status is an error naming it and
    /// the start of the body (the CLI's `probe` of HTTP health routes).
    pub async fn get(&self, url: &str) -> Result<Bytes, AuthError> {
        tokio::time::timeout(self.timeout, self.request(url, None))
            .await
            .map_err(|_| unavailable(format!("GET {url}: timed out after {:?}", self.timeout)))?
    }

    /// POST a form (`application/x-www-form-urlencoded`) and parse the JSON answer.
    pub async fn post_form_json(
        &self,
        url: &str,
        form: &str,
    ) -> Result<serde_json::Value, AuthError> {
        let body = tokio::time::timeout(self.timeout, self.request(url, Some(form.to_owned())))
            .await
            .map_err(|_| {
                unavailable(format!("POST {url}: timed out after {:?}", self.timeout))
            })??;
        serde_json::from_slice(&body)
            .map_err(|e| unavailable(format!("POST {url}: invalid JSON: {e}")))
    }

    async fn request(&self, url: &str, form: Option<String>) -> Result<Bytes, AuthError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| AuthError::Config(format!("invalid URL {url}: {e}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(AuthError::Config(format!("URL {url} is not http(s)"))),
        };
        let host = uri
            .host()
            .ok_or_else(|| AuthError::Config(format!("URL {url} has no host")))?
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_else(|| host.clone());
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());

        let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| unavailable(format!("connect {authority}: {e}")))?;
        let method = if form.is_some() { "POST" } else { "GET" };
        let builder = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, authority.as_str())
            .header(http::header::USER_AGENT, "feast-rs")
            .header(http::header::ACCEPT, "application/json");
        if https {
            let name =
                rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                    .map_err(|e| AuthError::Config(format!("URL {url}: {e}")))?;
            let tls = TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| unavailable(format!("TLS handshake with {authority}: {e}")))?;
            send(TokioIo::new(tls), builder, form, url).await
        } else {
            send(TokioIo::new(tcp), builder, form, url).await
        }
    }
}

async fn send<I>(
    io: I,
    builder: http::request::Builder,
    form: Option<String>,
    url: &str,
) -> Result<Bytes, AuthError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| unavailable(format!("{url}: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = match form {
        Some(form) => builder
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(Full::new(Bytes::from(form))),
        None => builder.body(Full::new(Bytes::new())),
    }
    .map_err(|e| AuthError::Config(format!("{url}: {e}")))?;
    let response = sender
        .send_request(req)
        .await
        .map_err(|e| unavailable(format!("{url}: {e}")))?;
    read_body(response, url).await
}

async fn read_body(
    response: http::Response<hyper::body::Incoming>,
    url: &str,
) -> Result<Bytes, AuthError> {
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| unavailable(format!("{url}: {e}")))?
        .to_bytes();
    if !status.is_success() {
        // OAuth endpoints explain refusals in the body (`{"error": "invalid_client"}`).
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        let detail = if text.trim().is_empty() {
            String::new()
        } else {
            format!(": {}", text.trim())
        };
        return Err(unavailable(format!("{url}: HTTP {status}{detail}")));
    }
    Ok(body)
}

/// `verify_ssl: false`: accept any certificate (signatures are still checked for the handshake).
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
