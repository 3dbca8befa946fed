//! The process's server: gRPC listener, health, reflection, and the one shutdown path.
//!
//! [`run`] takes a validated config, a bound listener and a shutdown future, so tests run the
//! whole server in-process on `127.0.0.1:0`. Shutdown: readiness and the overall service go
//! NOT_SERVING, StreamIsActive streams end, in-flight RPCs get `server.shutdown_grace` to
//! finish, then `run` returns.

use std::future::Future;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic_health::{ServingStatus, pb::health_server::HealthServer};
use tracing::{info, warn};

use crate::{
    config::Config,
    engine::{Engine, Limits, SourceEntry},
    proto::{FILE_DESCRIPTOR_SET, external_scaler_server::ExternalScalerServer},
    service::ScalerService,
    trigger::Catalog,
};

/// The named health services. `liveness` stays SERVING while the process runs (a restart
/// does not fix a backend outage); `readiness` is SERVING while at least one source answers.
pub const LIVENESS: &str = "liveness";
pub const READINESS: &str = "readiness";

/// Builds the engine of a validated config. Makes no connection.
pub fn build_engine(config: &Config) -> Engine {
    let entries = config
        .sources
        .iter()
        .map(|source| SourceEntry {
            name: source.name.clone(),
            settings: source.refresh,
            source: source.source.clone(),
        })
        .collect();
    let limits = Limits {
        idle_expiry: config.measurements.idle_expiry,
        max_live: config.measurements.max_live,
    };
    Engine::new(entries, limits)
}

/// Both reflection versions list every service, including each other: grpcurl 1.8 and ghz
/// speak v1alpha, newer clients v1.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
}

/// The health services kubelet probes, kept in step with the engine's readiness.
#[derive(Clone)]
struct Health {
    reporter: tonic_health::server::HealthReporter,
}

impl Health {
    /// `""` and `liveness` SERVING, `readiness` following the engine until `stop`.
    async fn start(
        engine: &Engine,
        stop: CancellationToken,
    ) -> (
        Health,
        HealthServer<impl tonic_health::pb::health_server::Health>,
    ) {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", ServingStatus::Serving)
            .await;
        reporter
            .set_service_status(LIVENESS, ServingStatus::Serving)
            .await;
        let health = Health { reporter };
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
        (health, service)
    }

    async fn set_ready(&self, ready: bool) {
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status(READINESS, status).await;
    }

    /// Readiness and the overall service go NOT_SERVING for good.
    async fn draining(&self) {
        self.set_ready(false).await;
        self.reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
    }
}

/// Serves until `shutdown` resolves, then drains within `server.shutdown_grace`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let engine = build_engine(&config);
    let catalog = Catalog::new(&config.sources);
    let stop = CancellationToken::new();
    let refreshers = engine.start(stop.clone());
    let (health, health_service) = Health::start(&engine, stop.clone()).await;
    let scaler = ScalerService::new(catalog, engine, stop.clone());
    let address = listener
        .local_addr()
        .context("reading the listener address")?;
    info!(%address, "serving externalscaler.ExternalScaler");

    let drain_stop = stop.clone();
    let signal = async move {
        shutdown.await;
        info!("shutting down: readiness NOT_SERVING, draining in-flight RPCs");
        health.draining().await;
        drain_stop.cancel();
    };
    let serve = Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .add_service(health_service)
        .add_service(reflection().build_v1().context("building reflection v1")?)
        .add_service(
            reflection()
                .build_v1alpha()
                .context("building reflection v1alpha")?,
        )
        .add_service(ExternalScalerServer::new(scaler))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal);
    let grace = config.server.shutdown_grace;
    tokio::select! {
        served = serve => served.context("gRPC server failed")?,
        _ = async { stop.cancelled().await; tokio::time::sleep(grace).await } => {
            warn!(?grace, "in-flight RPCs did not finish within shutdown_grace; exiting anyway");
        }
    }
    stop.cancel();
    for refresher in refreshers {
        refresher.abort();
    }
    info!("stopped");
    Ok(())
}
