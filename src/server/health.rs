//! The health the process reports: gRPC `grpc.health.v1.Health` (for kubelet's gRPC probes)
//! and the same states for `/healthz` and `/readyz`.
//!
//! `liveness` stays SERVING while the process runs (a restart does not fix a backend outage);
//! `readiness` follows the engine (SERVING while at least one source answers) until shutdown;
//! `""`, the overall service, is SERVING until shutdown.
//!
//! Watch streams end when the server drains, right after they carry the NOT_SERVING that
//! draining set: a client watching health (gRPC client-side health checking does) would
//! otherwise hold the drain up until `shutdown_grace`. The protocol tells clients to retry a
//! Watch that ends.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use futures::{FutureExt, Stream, StreamExt};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{Request, Response, Status};
use tonic_health::{
    ServingStatus,
    pb::{
        HealthCheckRequest, HealthCheckResponse,
        health_server::{Health as HealthRpc, HealthServer},
    },
    server::{HealthReporter, HealthService},
};

use crate::engine::Engine;

/// The named health services.
pub const LIVENESS: &str = "liveness";
pub const READINESS: &str = "readiness";

/// The process's health, shared by the gRPC health service and the http port.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    ready: Arc<AtomicBool>,
    draining: Arc<AtomicBool>,
    /// Cancelled when the server drains, after [`Health::draining`].
    stop: CancellationToken,
}

impl Health {
    /// Starts following the engine's readiness until `stop`, as a task of `tasks`.
    pub async fn start(engine: &Engine, stop: CancellationToken, tasks: &TaskTracker) -> Health {
        let reporter = HealthReporter::new();
        reporter
            .set_service_status("", ServingStatus::Serving)
            .await;
        reporter
            .set_service_status(LIVENESS, ServingStatus::Serving)
            .await;
        let health = Health {
            reporter,
            ready: Arc::default(),
            draining: Arc::default(),
            stop: stop.clone(),
        };
        health.set_ready(false).await;
        let mut ready = engine.readiness();
        let follower = health.clone();
        tasks.spawn(async move {
            loop {
                let now_ready = *ready.borrow_and_update();
                follower.set_ready(now_ready).await;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    changed = ready.changed() => if changed.is_err() { return },
                }
            }
        });
        health
    }

    /// The gRPC health service (one per listener; they share the states).
    pub fn service(&self) -> HealthServer<EndingWatches> {
        HealthServer::new(EndingWatches {
            inner: HealthService::from_health_reporter(self.reporter.clone()),
            stop: self.stop.clone(),
        })
    }

    async fn set_ready(&self, ready: bool) {
        let ready = ready && !self.draining.load(Ordering::SeqCst);
        self.ready.store(ready, Ordering::SeqCst);
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status(READINESS, status).await;
    }

    /// Readiness and the overall service go NOT_SERVING for good.
    pub async fn draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.set_ready(false).await;
        self.reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
    }

    /// What `/readyz` answers.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// tonic-health's service, with Watch streams that end when the server drains.
pub struct EndingWatches {
    inner: HealthService,
    stop: CancellationToken,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl HealthRpc for EndingWatches {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let statuses = self.inner.watch(request).await?.into_inner();
        Ok(Response::new(until_drained(
            Box::pin(statuses),
            self.stop.clone(),
        )))
    }
}

/// The statuses of a Watch until `stop`; then the status draining set, if the client has not
/// been sent it yet (draining sets it before `stop` is cancelled), and the end.
fn until_drained(statuses: WatchStream, stop: CancellationToken) -> WatchStream {
    let stream = futures::stream::unfold(Some(statuses), move |statuses| {
        let stop = stop.clone();
        async move {
            let mut statuses = statuses?;
            tokio::select! {
                biased;
                status = statuses.next() => status.map(|status| (status, Some(statuses))),
                _ = stop.cancelled() => {
                    let last = statuses.next().now_or_never().flatten();
                    last.map(|status| (status, None))
                }
            }
        }
    });
    Box::pin(stream)
}

#[cfg(test)]
mod tests {
    use tonic_health::pb::health_check_response::ServingStatus as WireStatus;

    use super::*;

    fn answer(status: WireStatus) -> Result<HealthCheckResponse, Status> {
        Ok(HealthCheckResponse {
            status: status as i32,
        })
    }

    #[tokio::test]
    async fn a_watch_ends_when_the_server_drains_after_the_last_status() {
        let stop = CancellationToken::new();
        let (sender, receiver) = futures::channel::mpsc::unbounded();
        let mut watch = until_drained(Box::pin(receiver), stop.clone());
        sender.unbounded_send(answer(WireStatus::Serving)).unwrap();
        let first = watch.next().await.unwrap().unwrap();
        assert_eq!(first.status(), WireStatus::Serving);
        // Draining: NOT_SERVING is set, then the stop; the stream carries it, then ends.
        sender
            .unbounded_send(answer(WireStatus::NotServing))
            .unwrap();
        stop.cancel();
        let last = watch.next().await.unwrap().unwrap();
        assert_eq!(last.status(), WireStatus::NotServing);
        assert!(watch.next().await.is_none(), "the watch ends");
        drop(sender);
    }

    #[tokio::test]
    async fn a_watch_that_has_sent_everything_ends_at_once_on_drain() {
        let stop = CancellationToken::new();
        let (_sender, receiver) =
            futures::channel::mpsc::unbounded::<Result<HealthCheckResponse, Status>>();
        let mut watch = until_drained(Box::pin(receiver), stop.clone());
        stop.cancel();
        assert!(watch.next().await.is_none());
    }
}
