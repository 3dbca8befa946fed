//! The process's server: gRPC listener, health, reflection, the http port, TLS, glibc's
//! malloc setting, and the one shutdown path.
//!
//! [`run`] takes a validated config, a bound gRPC listener and a shutdown future, so tests run
//! the whole server in-process on `127.0.0.1:0` ([`serve`] also takes the other listeners).
//! Shutdown: readiness and the overall service go NOT_SERVING, StreamIsActive streams end,
//! idle connections are closed, in-flight RPCs get `server.shutdown_grace` to finish, then
//! `run` returns. Every task the server starts is owned: its own in a `TaskTracker`
//! (listeners, accept loops, handshakes, streams, the TLS watcher, the readiness follower),
//! the engine's in the engine's (refreshers, cold reads), and `run` returns only once both
//! are empty, or, should something hang, at the end of the grace with a warning.

mod allocator;
mod health;
mod http;
mod listener;
mod rpc;
mod tls;

use std::{future::Future, sync::Arc};

use anyhow::Context;
use prometheus_client::metrics::gauge::Gauge;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
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

/// Serves on `listeners` until `shutdown` resolves, then drains within `server.shutdown_grace`:
/// returns once the listeners, the StreamIsActive streams, the refreshers and every other task
/// it started have ended (or, past the grace, with a warning saying how many of its own tasks
/// were left).
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    allocator::fix_mmap_threshold();
    let (shared, refreshers) = Shared::start(&config).await;
    let grace = config.server.shutdown_grace;
    let served_and_joined = async {
        let served = shared.serve_listeners(&config, listeners, shutdown).await;
        // Also when the gRPC server failed by itself: nothing the server started outlives it.
        shared.stop.cancel();
        shared.joined().await;
        served
    };
    tokio::select! {
        served = served_and_joined => served?,
        _ = async { shared.stop.cancelled().await; tokio::time::sleep(grace).await } => {
            let tasks_left = shared.tasks.len();
            warn!(?grace, tasks_left, "in-flight RPCs or background tasks did not finish within shutdown_grace; exiting anyway");
            // The refreshers stopped at the token unless a read hung; end them anyway.
            for refresher in refreshers {
                refresher.abort();
            }
        }
    }
    info!("stopped");
    Ok(())
}

/// What the listeners of one server share. Cloning is shallow: `Arc`s, handles and tokens.
#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    engine: Engine,
    health: Health,
    limits: ServerLimits,
    /// Cancelled when the server drains: listeners stop accepting, streams end, refreshers
    /// stop.
    stop: CancellationToken,
    /// Every task the server spawns outside the engine (listeners, accept loops, handshakes,
    /// streams, the TLS watcher, the readiness follower).
    tasks: TaskTracker,
}

impl Shared {
    /// Metrics, the engine with its refreshers (their handles, to abort past the grace) and
    /// health.
    async fn start(config: &Config) -> (Shared, Vec<JoinHandle<()>>) {
        let max_live = config.measurements.max_live;
        let metrics = match config.server.http_listen {
            Some(_) => Metrics::new(max_live),
            None => Metrics::without_rpc_series(max_live),
        };
        let engine = build_engine(config, metrics.clone());
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let refreshers = engine.start(stop.clone());
        let health = Health::start(&engine, stop.clone(), &tasks).await;
        let shared = Shared {
            metrics,
            engine,
            health,
            limits: config.server.limits.clone(),
            stop,
            tasks,
        };
        (shared, refreshers)
    }

    /// Waits for every task: the server's and the engine's.
    async fn joined(&self) {
        self.tasks.close();
        tokio::join!(self.tasks.wait(), self.engine.stopped());
    }

    fn listener_settings(&self, tls: Option<Arc<ReloadableTls>>, gauge: Gauge) -> ListenerSettings {
        ListenerSettings {
            tls,
            max_connections: self.limits.max_connections,
            handshake_timeout: self.limits.handshake_timeout,
            gauge,
            tasks: self.tasks.clone(),
        }
    }

    /// Starts the http and health ports, then serves gRPC until it has drained.
    async fn serve_listeners(
        &self,
        config: &Config,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let tls = load_tls(config, true, b"h2", self)?;
        if let Some(listener) = listeners.http {
            let tls = load_tls(config, false, b"http/1.1", self)?;
            let settings = self.listener_settings(tls, Gauge::default());
            self.tasks
                .spawn(http::serve(listener, settings, self.clone()));
        }
        if let Some(listener) = listeners.health {
            self.tasks.spawn(serve_health(listener, self.clone()));
        }
        self.serve_grpc(config, listeners.grpc, tls, shutdown).await
    }

    /// The ExternalScaler, health and reflection on the gRPC listener, until `shutdown` and
    /// the drain that follows it.
    async fn serve_grpc(
        &self,
        config: &Config,
        listener: TcpListener,
        tls: Option<Arc<ReloadableTls>>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let limits = &self.limits;
        let catalog = Catalog::new(&config.sources, limits);
        let scaler = ScalerService::new(catalog, self.engine.clone(), self.stop.clone())
            .with_stream_limit(limits.max_streams, self.metrics.streams_open.clone())
            .with_stream_tasks(self.tasks.clone())
            .with_trigger_cache(
                config.measurements.max_live.saturating_mul(4),
                config.measurements.idle_expiry,
            );
        let address = listener
            .local_addr()
            .context("reading the listener address")?;
        info!(%address, tls = tls.is_some(), "serving externalscaler.ExternalScaler");
        let settings = self.listener_settings(tls, self.metrics.connections_open.clone());
        let incoming = listener::incoming(listener, settings, self.stop.clone());
        let (health, stop) = (self.health.clone(), self.stop.clone());
        let signal = async move {
            shutdown.await;
            info!("shutting down: readiness NOT_SERVING, draining in-flight RPCs");
            health.draining().await;
            stop.cancel();
        };
        Server::builder()
            .http2_keepalive_interval(Some(limits.keepalive_interval))
            .http2_keepalive_timeout(Some(limits.keepalive_timeout))
            .layer(RpcLayer::new(
                self.metrics.clone(),
                limits.max_concurrent_rpcs,
            ))
            .add_service(self.health.service())
            .add_service(reflection().build_v1().context("building reflection v1")?)
            .add_service(
                reflection()
                    .build_v1alpha()
                    .context("building reflection v1alpha")?,
            )
            .add_service(
                ExternalScalerServer::new(scaler)
                    .max_decoding_message_size(limits.max_request_bytes),
            )
            .serve_with_incoming_shutdown(incoming, signal)
            .await
            .context("gRPC server failed")
    }
}

/// The TLS config of `[server.tls]`, watched for changes, or `None` for plaintext.
fn load_tls(
    config: &Config,
    client_auth: bool,
    alpn: &'static [u8],
    shared: &Shared,
) -> anyhow::Result<Option<Arc<ReloadableTls>>> {
    let Some(settings) = &config.server.tls else {
        return Ok(None);
    };
    let tls = ReloadableTls::load(settings, client_auth, vec![alpn])
        .map_err(|e| anyhow::anyhow!("server.tls: {e}"))?;
    tls.watch(shared.stop.clone(), &shared.tasks);
    Ok(Some(tls))
}

/// `health_listen`: the gRPC health service alone, in plaintext, for kubelet's gRPC probes.
async fn serve_health(listener: TcpListener, shared: Shared) {
    let settings = shared.listener_settings(None, Gauge::default());
    let incoming = listener::incoming(listener, settings, shared.stop.clone());
    let served = Server::builder()
        .layer(RpcLayer::new(
            shared.metrics.clone(),
            shared.limits.max_concurrent_rpcs,
        ))
        .add_service(shared.health.service())
        .serve_with_incoming_shutdown(incoming, shared.stop.cancelled_owned())
        .await;
    if let Err(error) = served {
        warn!(%error, "the health port stopped");
    }
}
