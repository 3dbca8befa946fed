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
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::{
    config::Config,
    engine::{Engine, Limits, SourceEntry},
    proto::{FILE_DESCRIPTOR_SET, external_scaler_server::ExternalScalerServer},
    service::ScalerService,
    sources,
};

/// The named health services. `liveness` stays SERVING while the process runs (a restart
/// does not fix a backend outage); `readiness` is SERVING while at least one source answers.
pub const LIVENESS: &str = "liveness";
pub const READINESS: &str = "readiness";

/// Builds the engine of a validated config. Makes no connection.
pub fn build_engine(config: &Config) -> anyhow::Result<Engine> {
    let mut entries = Vec::with_capacity(config.resolved_sources.len());
    for source_config in &config.resolved_sources {
        // Errors name the source already.
        let (kind, source) = sources::build(source_config)?;
        entries.push(SourceEntry {
            name: source_config.name.clone(),
            kind,
            settings: source_config.refresh,
            source,
            query_names: match &source_config.backend {
                crate::config::BackendConfig::Postgres(pg) => pg.queries.keys().cloned().collect(),
                _ => Vec::new(),
            },
        });
    }
    let limits = Limits {
        idle_expiry: config.measurements.idle_expiry,
        max_live: config.measurements.max_live,
    };
    Ok(Engine::new(entries, limits))
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

/// Serves until `shutdown` resolves, then drains within `server.shutdown_grace`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let engine = build_engine(&config)?;
    let stop = CancellationToken::new();
    let refreshers = engine.start(stop.clone());

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::Serving).await;
    health
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;
    health
        .set_service_status(READINESS, ServingStatus::NotServing)
        .await;
    let mut ready = engine.readiness();
    let readiness_health = health.clone();
    let readiness_stop = stop.clone();
    tokio::spawn(async move {
        loop {
            let status = if *ready.borrow_and_update() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            readiness_health.set_service_status(READINESS, status).await;
            tokio::select! {
                _ = readiness_stop.cancelled() => return,
                changed = ready.changed() => if changed.is_err() { return },
            }
        }
    });

    let reflection_v1 = reflection()
        .build_v1()
        .context("building the reflection service (v1)")?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .context("building the reflection service (v1alpha)")?;

    let scaler = ScalerService::new(engine, stop.clone());
    let address = listener
        .local_addr()
        .context("reading the listener address")?;
    info!(%address, "serving externalscaler.ExternalScaler");

    let drain_health = health.clone();
    let drain_stop = stop.clone();
    let signal = async move {
        shutdown.await;
        info!("shutting down: readiness NOT_SERVING, draining in-flight RPCs");
        drain_health
            .set_service_status(READINESS, ServingStatus::NotServing)
            .await;
        drain_health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        drain_stop.cancel();
    };
    let serve = Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ExternalScalerServer::new(scaler))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal);
    tokio::pin!(serve);
    let grace = config.server.shutdown_grace;
    tokio::select! {
        served = &mut serve => served.context("gRPC server failed")?,
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
