//! A tower layer around every gRPC service: bounds the RPCs in flight and records each one's
//! method, status code and duration.
//!
//! Past `server.limits.max_concurrent_rpcs` a request is answered RESOURCE_EXHAUSTED at once:
//! queueing would only turn overload into KEDA-side timeouts. Health checks take no place:
//! they answer from memory, and the RPCs that fill the places are the ones waiting on a hung
//! backend, exactly when kubelet's liveness probe must still be answered (a restart would not
//! make the backend answer). For unary RPCs the code is read
//! from the response: tonic puts an error's `grpc-status` in the headers (a trailers-only
//! response), and a response without one is OK. For streams the code and duration are those
//! of opening the stream.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::BoxFuture;
use tokio::{sync::Semaphore, time::Instant};
use tonic::{Code, Status};
use tower::{Layer, Service};

use crate::metrics::{METHODS, Metrics};

#[derive(Clone)]
pub struct RpcLayer {
    metrics: Arc<Metrics>,
    permits: Arc<Semaphore>,
    max: usize,
}

impl RpcLayer {
    pub fn new(metrics: Arc<Metrics>, max_concurrent_rpcs: usize) -> Self {
        RpcLayer {
            metrics,
            permits: Arc::new(Semaphore::new(max_concurrent_rpcs)),
            max: max_concurrent_rpcs,
        }
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> RpcService<S> {
        RpcService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcService<S> {
    inner: S,
    layer: RpcLayer,
}

type HttpResponse = http::Response<tonic::body::Body>;

impl<S, B> Service<http::Request<B>> for RpcService<S>
where
    S: Service<http::Request<B>, Response = HttpResponse> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<HttpResponse, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let method = method_of(request.uri().path());
        let metrics = self.layer.metrics.clone();
        let permit = if is_health_check(request.uri().path()) {
            None
        } else {
            let Ok(permit) = self.layer.permits.clone().try_acquire_owned() else {
                metrics.record_rpc(method, Code::ResourceExhausted, 0.0);
                let status = Status::resource_exhausted(format!(
                    "too many RPCs in flight: server.limits.max_concurrent_rpcs = {} is reached",
                    self.layer.max
                ));
                return Box::pin(std::future::ready(Ok(status.into_http())));
            };
            Some(permit)
        };
        // The clone that was polled ready serves this call; the fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let answer = inner.call(request);
        Box::pin(async move {
            let response = answer.await;
            drop(permit);
            let code = match &response {
                Ok(response) => code_of(response),
                Err(_) => Code::Unknown,
            };
            metrics.record_rpc(method, code, started.elapsed().as_secs_f64());
            response
        })
    }
}

/// `grpc.health.v1.Health` RPCs, which answer from memory and are not bounded.
fn is_health_check(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
}

/// The method name of a gRPC path (`/package.Service/Method`), or `other`.
fn method_of(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or_default();
    METHODS
        .iter()
        .find(|method| **method == name)
        .copied()
        .unwrap_or("other")
}

fn code_of(response: &HttpResponse) -> Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map_or(Code::Ok, Code::from_i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_come_from_a_fixed_list() {
        assert_eq!(
            method_of("/externalscaler.ExternalScaler/GetMetrics"),
            "GetMetrics"
        );
        assert_eq!(method_of("/grpc.health.v1.Health/Check"), "Check");
        assert_eq!(method_of("/x.Y/Anything-Else"), "other");
        assert_eq!(method_of(""), "other");
    }

    #[test]
    fn only_the_health_service_is_exempt_from_the_bound() {
        assert!(is_health_check("/grpc.health.v1.Health/Check"));
        assert!(is_health_check("/grpc.health.v1.Health/Watch"));
        assert!(!is_health_check(
            "/externalscaler.ExternalScaler/GetMetrics"
        ));
        assert!(!is_health_check("/grpc.health.v1.HealthX/Check"));
    }

    #[test]
    fn an_error_status_in_the_headers_is_the_code() {
        let response: HttpResponse = Status::unavailable("down").into_http();
        assert_eq!(code_of(&response), Code::Unavailable);
        let ok: HttpResponse = http::Response::new(tonic::body::Body::default());
        assert_eq!(code_of(&ok), Code::Ok);
    }
}
