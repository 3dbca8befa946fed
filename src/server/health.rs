//! The health the process reports: gRPC `grpc.health.v1.Health` (for kubelet's gRPC probes)
//! and the same states for `/healthz` and `/readyz`.
//!
//! `liveness` stays SERVING while the process runs (a restart does not fix a backend outage);
//! `readiness` follows the engine (SERVING while at least one source answers) until shutdown;
//! `""`, the overall service, is SERVING until shutdown.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use tokio_util::sync::CancellationToken;
use tonic_health::{
    ServingStatus,
    pb::health_server::HealthServer,
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
}

impl Health {
    /// Starts following the engine's readiness until `stop`.
    pub async fn start(engine: &Engine, stop: CancellationToken) -> Health {
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
        };
        health.set_ready(false).await;
        let mut ready = engine.readiness();
        let follower = health.clone();
        tokio::spawn(async move {
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
    pub fn service(&self) -> HealthServer<HealthService> {
        HealthServer::new(HealthService::from_health_reporter(self.reporter.clone()))
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
