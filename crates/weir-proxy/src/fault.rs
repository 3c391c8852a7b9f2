//! `faultInjection` of a BackendTrafficPolicy (chaos testing): an abort answers a share of
//! the requests itself in phase 2 (synchronous request phases), without reaching the
//! backend; a delay holds a share of the requests for a fixed time before they take an
//! upstream connection (the start of the policy's exchange, before breaker admission and
//! connecting: a delayed request holds no connection and no breaker place). A request
//! that is aborted is not delayed too. Only routes whose policy has the block pay anything.
//!
//! Each injected fault is counted (`weir_fault_injected_total{route,kind}`) and flagged in
//! the access log (`fault_abort`, Envoy's `FI`; `fault_delay`, Envoy's `DI`).

use std::time::Duration;

use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use weir_snapshot::{AbortStatus, BackendPolicy, FaultInjection};

use crate::body::{empty_body, text_body, ProxyBody};
use crate::metrics::Metrics;

/// The access-log flag of a response a fault shaped (in its extensions).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FaultFlag(pub(crate) &'static str);

const ABORT_BODY: &str = "fault filter abort\n";

/// Phase 2: the abort, when this request's roll falls in its share.
pub(crate) fn abort(
    metrics: &Metrics,
    fault: &FaultInjection,
    route: &str,
) -> Option<Response<ProxyBody>> {
    let abort = fault.abort?;
    if !abort.share.hit(rand::random()) {
        return None;
    }
    metrics.record_fault(route, "abort");
    let mut response = match abort.status {
        AbortStatus::Http(status) => {
            let mut r = Response::new(text_body(ABORT_BODY));
            *r.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            h.insert(CONTENT_LENGTH, HeaderValue::from(ABORT_BODY.len()));
            r
        }
        // A trailers-only gRPC answer: HTTP 200, the status in the headers.
        AbortStatus::Grpc(code) => {
            let mut r = Response::new(empty_body());
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            h.insert("grpc-status", HeaderValue::from(code));
            h.insert(
                "grpc-message",
                HeaderValue::from_static("fault filter abort"),
            );
            r
        }
    };
    response.extensions_mut().insert(FaultFlag("fault_abort"));
    Some(response)
}

/// The delay for this request, when its roll falls in the share (counted).
pub(crate) fn delay(metrics: &Metrics, policy: &BackendPolicy, route: &str) -> Option<Duration> {
    let delay = policy.fault?.delay?;
    if !delay.share.hit(rand::random()) {
        return None;
    }
    metrics.record_fault(route, "delay");
    Some(delay.fixed_delay)
}

/// The flag a fault left on a response, if any.
pub(crate) fn flag<B>(response: &Response<B>) -> Option<&'static str> {
    response.extensions().get::<FaultFlag>().map(|f| f.0)
}

/// Whether the answer is a gRPC one (for tests and logs).
#[cfg(test)]
fn grpc_status(headers: &http::HeaderMap) -> Option<&str> {
    headers.get("grpc-status")?.to_str().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_snapshot::{FaultAbort, Share};

    #[test]
    fn aborts_answer_with_their_status_and_flag() {
        let metrics =
            Metrics::register(&prometheus::Registry::new()).unwrap_or_else(|e| panic!("{e}"));
        let grpc = FaultInjection {
            delay: None,
            abort: Some(FaultAbort {
                status: AbortStatus::Grpc(14),
                share: Share::ALL,
            }),
        };
        let r = abort(&metrics, &grpc, "ns/r").unwrap_or_else(|| panic!("an abort"));
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(grpc_status(r.headers()), Some("14"));
        assert_eq!(flag(&r), Some("fault_abort"));
        let never = FaultInjection {
            delay: None,
            abort: Some(FaultAbort {
                status: AbortStatus::Http(503),
                share: Share(0),
            }),
        };
        assert!(abort(&metrics, &never, "ns/r").is_none());
    }
}
