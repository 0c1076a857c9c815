//! Trace context across processes, so that one granule is one trace from the listener through the
//! worker to the committer:
//! - [`inject`] puts the current span's context into an outgoing gRPC request as W3C
//!   `traceparent`/`tracestate` metadata;
//! - [`RpcLayer`] (a tower layer for tonic servers) gives every incoming RPC a server span whose
//!   parent is the caller's context, and counts it in the standard
//!   `grpc_server_handled_total{grpc_service,grpc_method,grpc_code}` and
//!   `grpc_server_handling_seconds` metrics;
//! - [`parent_from_attributes`] reads the same context from SQS message attributes;
//! - [`record_trace_id`] writes a span's trace id into its `trace_id` field, so JSON log lines
//!   within it carry the id the traces are stored under.
//!
//! Without an OpenTelemetry layer installed (no OTLP endpoint configured) every context is empty
//! and these do nothing.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use imerg_metrics as m;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value),
        ) {
            self.0.insert(k, v);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct MapExtractor<'a>(&'a HashMap<String, String>);

impl Extractor for MapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Puts the current span's trace context into `req`'s metadata (`traceparent`).
pub fn inject<T>(req: &mut tonic::Request<T>) {
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(req.metadata_mut()));
}

/// A request carrying the current trace context.
pub fn request<T>(message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    inject(&mut req);
    req
}

/// The trace context in a message's attributes (`traceparent`, `tracestate`), if it has one.
pub fn parent_from_attributes(
    attributes: &HashMap<String, String>,
) -> Option<opentelemetry::Context> {
    let cx = TraceContextPropagator::new()
        .extract_with_context(&opentelemetry::Context::new(), &MapExtractor(attributes));
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `cx` the parent of `span` (a no-op without an OpenTelemetry layer).
pub fn set_parent(span: &tracing::Span, cx: opentelemetry::Context) {
    let _ = span.set_parent(cx);
}

/// Records the span's trace id in its `trace_id` field (declared `trace_id =
/// tracing::field::Empty`), when it has one.
pub fn record_trace_id(span: &tracing::Span) {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.record("trace_id", tracing::field::display(sc.trace_id()));
    }
}

/// `/pkg.Service/Method` → (`pkg.Service`, `Method`).
fn rpc_names(path: &str) -> (String, String) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default().to_string();
    let method = parts.next().unwrap_or_default().to_string();
    (service, method)
}

/// The tower layer for tonic servers (see the crate documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcLayer;

impl<S> tower::Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService { inner }
    }
}

/// [`RpcLayer`]'s service.
#[derive(Debug, Clone)]
pub struct RpcService<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for RpcService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let (service, method) = rpc_names(req.uri().path());
        let span = tracing::info_span!(
            "rpc",
            otel.name = %format!("{service}/{method}"),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            trace_id = tracing::field::Empty,
        );
        let parent = TraceContextPropagator::new().extract_with_context(
            &opentelemetry::Context::new(),
            &HeaderExtractor(req.headers()),
        );
        if parent.span().span_context().is_valid() {
            set_parent(&span, parent);
        }
        record_trace_id(&span);
        // The clone that was made ready is the one that serves (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let started = Instant::now();
        Box::pin(
            async move {
                let res = inner.call(req).await;
                // Unary errors and trailers-only answers carry grpc-status in the headers; a
                // response that starts is OK at this point (streams end later).
                let code = match &res {
                    Ok(r) => r
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .map_or("OK", |c| code_name(tonic::Code::from(c))),
                    Err(_) => "UNKNOWN",
                };
                metrics::counter!(m::GRPC_SERVER_HANDLED, "grpc_service" => service.clone(),
                    "grpc_method" => method.clone(), "grpc_code" => code)
                .increment(1);
                metrics::histogram!(m::GRPC_SERVER_HANDLING_SECONDS, "grpc_service" => service,
                    "grpc_method" => method)
                .record(started.elapsed().as_secs_f64());
                res
            }
            .instrument(span),
        )
    }
}

/// The canonical upper-case name of a gRPC status code (as go-grpc-prometheus labels it).
fn code_name(c: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match c {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[test]
    fn rpc_paths_split_into_service_and_method() {
        assert_eq!(
            rpc_names("/imerg.ingest.v1.IngestService/GetStatus"),
            ("imerg.ingest.v1.IngestService".into(), "GetStatus".into())
        );
        assert_eq!(rpc_names("/x"), ("x".into(), String::new()));
    }

    /// A context injected into a request's metadata comes back out of the same headers, and out
    /// of message attributes, with the same trace id.
    #[test]
    fn the_context_survives_metadata_and_attributes() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("t")));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("root", trace_id = tracing::field::Empty);
            let _e = span.enter();
            let id = span.context().span().span_context().trace_id();
            assert_ne!(id, opentelemetry::trace::TraceId::INVALID);
            let req = request(());
            let headers = req.metadata().clone().into_headers();
            let tp = headers["traceparent"].to_str().unwrap().to_string();
            assert!(tp.contains(&id.to_string()), "{tp}");
            let back = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
            assert_eq!(back.span().span_context().trace_id(), id);
            let attrs = HashMap::from([("traceparent".to_string(), tp)]);
            let cx = parent_from_attributes(&attrs).unwrap();
            assert_eq!(cx.span().span_context().trace_id(), id);
            assert!(parent_from_attributes(&HashMap::new()).is_none());
        });
    }
}
