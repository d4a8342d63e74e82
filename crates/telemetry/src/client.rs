//! The client side: a client span per outgoing call, its context sent as `traceparent`.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;
use tracing::Span;

use crate::server::{Call, TracedBody, TracedFuture};

/// A tonic channel (any `http::Request` service) whose calls carry the caller's trace: each
/// call made inside a span gets a client span (`otel.kind = client`, named after the gRPC
/// method) whose context goes out as `traceparent`/`tracestate`, so the server's span
/// becomes its child. Calls made outside any span (background refreshes) are sent as they
/// are. Composes with `feast_auth::WithBearer` (either may wrap the other).
#[derive(Debug, Clone)]
pub struct WithTraceContext<S> {
    inner: S,
}

impl<S> WithTraceContext<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for WithTraceContext<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<TracedBody<ResBody>>;
    type Error = S::Error;
    type Future = TracedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        if !crate::tracing_enabled() || !crate::in_traced_span() {
            return TracedFuture::untraced(self.inner.call(req));
        }
        let call = Call::grpc_client(req.uri().path());
        crate::inject_headers(&call.span, req.headers_mut());
        let inner = call.span.in_scope(|| self.inner.call(req));
        TracedFuture::traced(inner, call)
    }
}

/// A client span for a call that is not made through [`WithTraceContext`] (the Flight
/// client sets its headers per call): child of the current span, named after the gRPC
/// method `path` (`/package.Service/Method`). Disabled — and free — while tracing is off or
/// outside any span. Send its context with [`crate::inject_metadata`] or
/// [`crate::inject_headers`], and keep it alive for the duration of the call.
pub fn client_span(path: &str) -> Span {
    if !crate::tracing_enabled() || !crate::in_traced_span() {
        return Span::none();
    }
    crate::server::grpc_client_span(path)
}
