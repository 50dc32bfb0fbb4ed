//! Every gRPC call counted by method and status, and timed until its response begins (a
//! unary call's answer; a stream's first message): `quipu_grpc_requests_total{method,code}` and
//! `quipu_grpc_request_duration_seconds{method}` (`docs/operations/metrics.md`). A tower layer
//! in front of the services, so no handler can forget it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// The layer of [`Recorded`] services.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RecordCalls;

impl<S> tower::Layer<S> for RecordCalls {
    type Service = Recorded<S>;

    fn layer(&self, inner: S) -> Recorded<S> {
        Recorded { inner }
    }
}

/// A service whose calls are counted and timed.
#[derive(Debug, Clone)]
pub(crate) struct Recorded<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for Recorded<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_of(request.uri().path()).to_owned();
        let started = Instant::now();
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await;
            let code = match &response {
                Ok(response) => code_of(response.headers()),
                Err(_) => tonic::Code::Internal,
            };
            // An unknown method or service is one label, whatever the client sent.
            let method = if code == tonic::Code::Unimplemented {
                "unknown".to_owned()
            } else {
                method
            };
            metrics::histogram!("quipu_grpc_request_duration_seconds", "method" => method.clone())
                .record(started.elapsed().as_secs_f64());
            metrics::counter!("quipu_grpc_requests_total", "method" => method, "code" => code_name(code))
                .increment(1);
            response
        })
    }
}

/// `Service/Method` of a gRPC path `/package.Service/Method` (`Data/Produce`).
fn method_of(path: &str) -> &str {
    let path = path.trim_start_matches('/');
    match path.split_once('/') {
        Some((service, method)) => {
            let service_start = service.rfind('.').map_or(0, |dot| dot + 1);
            &path[service_start..service.len() + 1 + method.len()]
        }
        None => "unknown",
    }
}

/// The status of a call whose response has begun: an error answered at once carries its
/// `grpc-status` in the headers (trailers-only); otherwise the call is under way or done, OK.
fn code_of(headers: &http::HeaderMap) -> tonic::Code {
    headers
        .get("grpc-status")
        .map_or(tonic::Code::Ok, |status| {
            tonic::Code::from_bytes(status.as_bytes())
        })
}

/// gRPC's canonical status names, as other servers' metrics spell them.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_method_label_is_service_and_method() {
        assert_eq!(method_of("/quipu.v1.Data/Produce"), "Data/Produce");
        assert_eq!(method_of("/Admin/CreateTopic"), "Admin/CreateTopic");
        assert_eq!(method_of("/nothing"), "unknown");
    }

    #[test]
    fn an_error_answered_at_once_is_read_from_the_headers() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(code_of(&headers), tonic::Code::Ok);
        headers.insert("grpc-status", http::HeaderValue::from_static("7"));
        assert_eq!(code_name(code_of(&headers)), "PERMISSION_DENIED");
    }
}
