//! The server side: [`TraceLayer`] wraps every request of an axum router or a tonic server
//! in a span that continues the caller's trace, and [`TracedFuture`]/[`TracedBody`] keep it
//! open until the response body has been sent (a gRPC status arrives in the trailers).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use opentelemetry::trace::TraceContextExt as _;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Paths polled by orchestrators and scrapers: never traced.
const UNTRACED_PATHS: &[&str] = &[
    "/health",
    "/healthz",
    "/ready",
    "/readyz",
    "/metrics",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
];

/// Tower layer tracing each request of an axum router or a tonic server (both are
/// `http::Request` services). Put it outermost, so that what the inner layers do
/// (authentication) is part of the request's span.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer;

impl TraceLayer {
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService { inner }
    }
}

/// The service [`TraceLayer`] wraps around a router or gRPC server.
#[derive(Debug, Clone)]
pub struct TraceService<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TraceService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<TracedBody<ResBody>>;
    type Error = S::Error;
    type Future = TracedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let path = req.uri().path();
        if !(crate::tracing_enabled() || crate::metrics::enabled())
            || UNTRACED_PATHS.contains(&path)
        {
            return TracedFuture::untraced(self.inner.call(req));
        }
        let call = Call::server(&req);
        let inner = call.span.in_scope(|| self.inner.call(req));
        TracedFuture::traced(inner, call)
    }
}

/// Which end of a call a span stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Server,
    Client,
}

#[derive(Debug)]
enum Protocol {
    Http {
        method: http::Method,
        route: String,
        status: Option<u16>,
    },
    Grpc {
        service: String,
        method: String,
        status: Option<i32>,
    },
}

/// One traced call: its span, and what is recorded on it (and in the metrics) when the
/// call is over — when this is dropped, after the response body ended or was abandoned.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) span: Span,
    side: Side,
    start: Instant,
    protocol: Protocol,
    failed: bool,
}

/// The client span of a gRPC call (`path`: `/package.Service/Method`), child of the
/// current span.
pub(crate) fn grpc_client_span(path: &str) -> Span {
    let (service, method) = grpc_names(path);
    tracing::info_span!(
        target: "feast_telemetry::client",
        "grpc_call",
        otel.name = %path.trim_start_matches('/'),
        otel.kind = "client",
        otel.status_code = Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = Empty,
    )
}

/// `/package.Service/Method` as (`package.Service`, `Method`).
fn grpc_names(path: &str) -> (&str, &str) {
    let path = path.trim_start_matches('/');
    path.rsplit_once('/').unwrap_or((path, ""))
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

impl Call {
    /// The span of a request this server received, child of the caller's span when the
    /// request carries a W3C `traceparent`.
    fn server<B>(req: &Request<B>) -> Self {
        let path = req.uri().path();
        let (span, protocol) = if is_grpc(req.headers()) {
            let (service, method) = grpc_names(path);
            let span = tracing::info_span!(
                target: "feast_telemetry::server",
                "grpc_request",
                otel.name = %path.trim_start_matches('/'),
                otel.kind = "server",
                otel.status_code = Empty,
                rpc.system = "grpc",
                rpc.service = service,
                rpc.method = method,
                rpc.grpc.status_code = Empty,
            );
            let protocol = Protocol::Grpc {
                service: service.to_owned(),
                method: method.to_owned(),
                status: None,
            };
            (span, protocol)
        } else {
            let method = req.method();
            let span = tracing::info_span!(
                target: "feast_telemetry::server",
                "http_request",
                otel.name = %format_args!("{method} {path}"),
                otel.kind = "server",
                otel.status_code = Empty,
                http.request.method = %method,
                url.path = path,
                http.route = path,
                http.response.status_code = Empty,
            );
            let protocol = Protocol::Http {
                method: method.clone(),
                route: path.to_owned(),
                status: None,
            };
            (span, protocol)
        };
        // A server span continues its caller's trace or starts one: never the child of
        // whatever span the serving thread is in.
        let parent = crate::extract_headers(req.headers());
        let _ = span.set_parent(if parent.span().span_context().is_valid() {
            parent
        } else {
            opentelemetry::Context::new()
        });
        Self {
            span,
            side: Side::Server,
            start: Instant::now(),
            protocol,
            failed: false,
        }
    }

    /// A gRPC call this process makes (`path`: `/package.Service/Method`), its span a child
    /// of the current span.
    pub(crate) fn grpc_client(path: &str) -> Self {
        let (service, method) = grpc_names(path);
        Self {
            span: grpc_client_span(path),
            side: Side::Client,
            start: Instant::now(),
            protocol: Protocol::Grpc {
                service: service.to_owned(),
                method: method.to_owned(),
                status: None,
            },
            failed: false,
        }
    }

    fn response_headers(&mut self, status: http::StatusCode, headers: &HeaderMap) {
        match &mut self.protocol {
            Protocol::Http { status: s, .. } => *s = Some(status.as_u16()),
            Protocol::Grpc { status: s, .. } => {
                // A trailers-only response (an error before any message) carries its
                // status in the headers; otherwise it comes in the trailers.
                if let Some(code) = grpc_status(headers) {
                    *s = Some(code);
                } else if !status.is_success() {
                    self.failed = true;
                }
            }
        }
    }

    fn trailers(&mut self, trailers: &HeaderMap) {
        if let Protocol::Grpc { status, .. } = &mut self.protocol
            && let Some(code) = grpc_status(trailers)
        {
            *status = Some(code);
        }
    }

    /// Whether a gRPC status is an error of this side (the semantic conventions count only
    /// server faults against a server: UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED,
    /// INTERNAL, UNAVAILABLE, DATA_LOSS).
    fn grpc_error(&self, code: i32) -> bool {
        match self.side {
            Side::Client => code != 0,
            Side::Server => matches!(code, 2 | 4 | 12 | 13 | 14 | 15),
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let error = match &self.protocol {
            Protocol::Http { status, .. } => {
                if let Some(status) = status {
                    self.span.record("http.response.status_code", status);
                }
                let limit = if self.side == Side::Server { 500 } else { 400 };
                self.failed || status.is_some_and(|s| s >= limit)
            }
            Protocol::Grpc { status, .. } => {
                if let Some(code) = status {
                    self.span.record("rpc.grpc.status_code", code);
                }
                self.failed || status.is_some_and(|c| self.grpc_error(c))
            }
        };
        if error {
            self.span.record("otel.status_code", "ERROR");
        }
        if self.side == Side::Server {
            let seconds = self.start.elapsed().as_secs_f64();
            match &self.protocol {
                Protocol::Http {
                    method,
                    route,
                    status,
                } => crate::metrics::http_server(seconds, method.as_str(), route, *status),
                Protocol::Grpc {
                    service,
                    method,
                    status,
                } => crate::metrics::rpc_server(seconds, service, method, *status),
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of a traced call: polls the inner future inside the call's
    /// span, then hands the span on to the response body.
    pub struct TracedFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F> TracedFuture<F> {
    pub(crate) fn untraced(inner: F) -> Self {
        Self { inner, call: None }
    }

    pub(crate) fn traced(inner: F, call: Call) -> Self {
        Self {
            inner,
            call: Some(call),
        }
    }
}

impl<F, B, E> Future for TracedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TracedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _entered = this.call.as_ref().map(|c| c.span.enter());
            ready!(this.inner.poll(cx))
        };
        let mut call = this.call.take();
        Poll::Ready(match result {
            Ok(response) => {
                if let Some(call) = &mut call {
                    call.response_headers(response.status(), response.headers());
                }
                Ok(response.map(|inner| TracedBody { inner, call }))
            }
            Err(e) => {
                if let Some(call) = &mut call {
                    call.failed = true;
                }
                Err(e)
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that ends its call's span when it ends (or is dropped), reading the
    /// gRPC status from the trailers on the way.
    pub struct TracedBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B: Body> Body for TracedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        // A streamed response (Flight's record batches) is computed as it is polled: that
        // work belongs to the call's span too.
        let frame = {
            let _entered = this.call.as_ref().map(|c| c.span.enter());
            ready!(this.inner.poll_frame(cx))
        };
        match &frame {
            Some(Ok(frame)) => {
                if let (Some(call), Some(trailers)) = (this.call.as_mut(), frame.trailers_ref()) {
                    call.trailers(trailers);
                }
            }
            Some(Err(_)) => {
                if let Some(call) = this.call.as_mut() {
                    call.failed = true;
                }
            }
            None => {
                // The end: close the span now rather than when the body is dropped.
                this.call.take();
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A body of ready frames.
    struct Frames(VecDeque<Frame<&'static [u8]>>);

    impl Body for Frames {
        type Data = &'static [u8];
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    /// Answers with one message and `grpc-status: 0` in the trailers.
    struct Answer;

    impl Service<Request<()>> for Answer {
        type Response = Response<Frames>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<()>) -> Self::Future {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            let frames = VecDeque::from([Frame::data(&b"message"[..]), Frame::trailers(trailers)]);
            std::future::ready(Ok(Response::new(Frames(frames))))
        }
    }

    fn ready<T>(mut f: Pin<&mut impl Future<Output = T>>) -> T {
        match f
            .as_mut()
            .poll(&mut Context::from_waker(std::task::Waker::noop()))
        {
            Poll::Ready(t) => t,
            Poll::Pending => panic!("not ready"),
        }
    }

    /// With tracing off the layer hands the response and every frame through unchanged.
    #[test]
    fn passes_through_while_tracing_is_off() {
        assert!(!crate::tracing_enabled());
        let mut service = TraceLayer::new().layer(Answer);
        let request = Request::builder()
            .uri("/feast.registry.RegistryServer/GetEntity")
            .header("content-type", "application/grpc")
            .header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .body(())
            .unwrap();
        let future = std::pin::pin!(service.call(request));
        let response = ready(future).unwrap();
        let mut body = std::pin::pin!(response.into_body());
        assert!(body.call.is_none(), "no span while tracing is off");
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let Poll::Ready(Some(Ok(data))) = body.as_mut().poll_frame(&mut cx) else {
            panic!("a data frame first");
        };
        assert_eq!(data.into_data().ok(), Some(&b"message"[..]));
        let Poll::Ready(Some(Ok(trailers))) = body.as_mut().poll_frame(&mut cx) else {
            panic!("then the trailers");
        };
        assert_eq!(trailers.trailers_ref().unwrap()["grpc-status"], "0");
        assert!(matches!(
            body.as_mut().poll_frame(&mut cx),
            Poll::Ready(None)
        ));
    }

    /// A call's outcome comes from the trailers when the headers do not carry it.
    #[test]
    fn grpc_status_from_headers_or_trailers() {
        let mut call = Call::grpc_client("/feast.registry.RegistryServer/GetEntity");
        call.response_headers(http::StatusCode::OK, &HeaderMap::new());
        let Protocol::Grpc { status, .. } = &call.protocol else {
            unreachable!()
        };
        assert_eq!(*status, None);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "14".parse().unwrap());
        call.trailers(&trailers);
        let Protocol::Grpc { status, .. } = &call.protocol else {
            unreachable!()
        };
        assert_eq!(*status, Some(14));
        assert!(call.grpc_error(14));

        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", "5".parse().unwrap());
        let mut call = Call::grpc_client("/feast.registry.RegistryServer/GetEntity");
        call.side = Side::Server;
        call.response_headers(http::StatusCode::OK, &headers);
        let Protocol::Grpc { status, .. } = &call.protocol else {
            unreachable!()
        };
        assert_eq!(*status, Some(5));
        assert!(!call.grpc_error(5), "NOT_FOUND is not a server fault");
    }

    #[test]
    fn grpc_path_names() {
        assert_eq!(
            grpc_names("/feast.registry.RegistryServer/ApplyMaterialization"),
            ("feast.registry.RegistryServer", "ApplyMaterialization")
        );
        assert_eq!(grpc_names("/odd"), ("odd", ""));
    }
}
