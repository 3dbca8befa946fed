//! The process's server: gRPC listener, health, reflection, the http port, TLS, and the one
//! shutdown path.
//!
//! [`run`] takes a validated config, a bound gRPC listener and a shutdown future, so tests run
//! the whole server in-process on `127.0.0.1:0` ([`serve`] also takes the other listeners).
//! Shutdown: readiness and the overall service go NOT_SERVING, StreamIsActive streams end,
//! idle connections are closed, in-flight RPCs get `server.shutdown_grace` to finish, then
//! `run` returns.

mod health;
mod http;
mod listener;
mod rpc;
mod tls;

use std::{future::Future, sync::Arc};

use anyhow::Context;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tracing::{info, warn};

pub use health::{LIVENESS, READINESS};

use crate::{
    config::{Config, ServerLimits},
    engine::{Engine, Limits, SourceEntry},
    metrics::Metrics,
    proto::{FILE_DESCRIPTOR_SET, wire::external_scaler_server::ExternalScalerServer},
    service::ScalerService,
    trigger::Catalog,
};
use health::Health;
use listener::ListenerSettings;
use rpc::RpcLayer;
use tls::ReloadableTls;

/// Builds the engine of a validated config. Makes no connection.
pub fn build_engine(config: &Config, metrics: Arc<Metrics>) -> Engine {
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
    Engine::new(entries, limits, metrics)
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

/// The listeners of a server: gRPC, and the optional http and plaintext health ports.
pub struct Listeners {
    pub grpc: TcpListener,
    pub http: Option<TcpListener>,
    pub health: Option<TcpListener>,
}

impl Listeners {
    /// Binds `http_listen` and `health_listen` of `config` beside a bound gRPC listener.
    pub async fn bind_others(config: &Config, grpc: TcpListener) -> anyhow::Result<Listeners> {
        async fn bind(
            address: Option<std::net::SocketAddr>,
            key: &str,
        ) -> anyhow::Result<Option<TcpListener>> {
            match address {
                None => Ok(None),
                Some(address) => TcpListener::bind(address)
                    .await
                    .map(Some)
                    .map_err(|e| anyhow::anyhow!("cannot bind {key} {address}: {e}")),
            }
        }
        Ok(Listeners {
            grpc,
            http: bind(config.server.http_listen, "server.http_listen").await?,
            health: bind(config.server.health_listen, "server.health_listen").await?,
        })
    }
}

/// Serves until `shutdown` resolves, binding `http_listen` and `health_listen` from the config.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listeners = Listeners::bind_others(&config, listener).await?;
    serve(config, listeners, shutdown).await
}

/// Serves on `listeners` until `shutdown` resolves, then drains within `server.shutdown_grace`.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let limits = &config.server.limits;
    let max_live = config.measurements.max_live;
    let metrics = match config.server.http_listen {
        Some(_) => Metrics::new(max_live),
        None => Metrics::without_rpc_series(max_live),
    };
    let engine = build_engine(&config, metrics.clone());
    let stop = CancellationToken::new();
    let refreshers = engine.start(stop.clone());
    let health = Health::start(&engine, stop.clone()).await;
    let tls = load_tls(&config, true, b"h2", &stop)?;
    if let Some(http) = listeners.http {
        let settings = ListenerSettings {
            tls: load_tls(&config, false, b"http/1.1", &stop)?,
            max_connections: limits.max_connections,
            handshake_timeout: limits.handshake_timeout,
            gauge: Gauge::default(),
        };
        let parts = (
            metrics.clone(),
            engine.clone(),
            health.clone(),
            stop.clone(),
        );
        tokio::spawn(http::serve(
            http, settings, parts.0, parts.1, parts.2, parts.3,
        ));
    }
    if let Some(plain) = listeners.health {
        let parts = (
            limits.clone(),
            health.clone(),
            metrics.clone(),
            stop.clone(),
        );
        tokio::spawn(serve_health(plain, parts.0, parts.1, parts.2, parts.3));
    }
    let catalog = Catalog::new(&config.sources, limits);
    let scaler = ScalerService::new(catalog, engine, stop.clone())
        .with_stream_limit(limits.max_streams, metrics.streams_open.clone())
        .with_trigger_cache(
            config.measurements.max_live.saturating_mul(4),
            config.measurements.idle_expiry,
        );
    let address = listeners
        .grpc
        .local_addr()
        .context("reading the listener address")?;
    info!(%address, tls = tls.is_some(), "serving externalscaler.ExternalScaler");
    let settings = ListenerSettings {
        tls,
        max_connections: limits.max_connections,
        handshake_timeout: limits.handshake_timeout,
        gauge: metrics.connections_open.clone(),
    };
    let incoming = listener::incoming(listeners.grpc, settings, stop.clone());
    let drain_stop = stop.clone();
    let drain_health = health.clone();
    let signal = async move {
        shutdown.await;
        info!("shutting down: readiness NOT_SERVING, draining in-flight RPCs");
        drain_health.draining().await;
        drain_stop.cancel();
    };
    let serve = Server::builder()
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .layer(RpcLayer::new(metrics.clone(), limits.max_concurrent_rpcs))
        .add_service(health.service())
        .add_service(reflection().build_v1().context("building reflection v1")?)
        .add_service(
            reflection()
                .build_v1alpha()
                .context("building reflection v1alpha")?,
        )
        .add_service(
            ExternalScalerServer::new(scaler).max_decoding_message_size(limits.max_request_bytes),
        )
        .serve_with_incoming_shutdown(incoming, signal);
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

/// The TLS config of `[server.tls]`, watched for changes, or `None` for plaintext.
fn load_tls(
    config: &Config,
    client_auth: bool,
    alpn: &'static [u8],
    stop: &CancellationToken,
) -> anyhow::Result<Option<Arc<ReloadableTls>>> {
    let Some(settings) = &config.server.tls else {
        return Ok(None);
    };
    let tls = ReloadableTls::load(settings, client_auth, vec![alpn])
        .map_err(|e| anyhow::anyhow!("server.tls: {e}"))?;
    tls.watch(stop.clone());
    Ok(Some(tls))
}

/// `health_listen`: the gRPC health service alone, in plaintext, for kubelet's gRPC probes.
async fn serve_health(
    listener: TcpListener,
    limits: ServerLimits,
    health: Health,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let settings = ListenerSettings {
        tls: None,
        max_connections: limits.max_connections,
        handshake_timeout: limits.handshake_timeout,
        gauge: Gauge::default(),
    };
    let incoming = listener::incoming(listener, settings, stop.clone());
    let served = Server::builder()
        .layer(RpcLayer::new(metrics, limits.max_concurrent_rpcs))
        .add_service(health.service())
        .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
        .await;
    if let Err(error) = served {
        warn!(%error, "the health port stopped");
    }
}
