//! The http port (`server.http_listen`): Prometheus `/metrics`, `/healthz` and `/readyz`.
//!
//! A scrape reads the engine's in-memory state and encodes it: it sends no backend command and
//! takes no lock an RPC waits on for long. `/healthz` mirrors gRPC `liveness` (200 while the
//! process runs), `/readyz` mirrors `readiness` (200 while a source answers, 503 otherwise and
//! after SIGTERM), for environments without gRPC probes.

use std::sync::Arc;

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio::net::TcpListener;
use tracing::{info, warn};

use super::{Shared, health::Health, listener};
use crate::{engine::Engine, metrics::Metrics};

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    engine: Engine,
    health: Health,
}

/// OpenMetrics text, as Prometheus asks for it.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text format, for everything else (curl, promtool).
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves until the server's `stop`.
pub async fn serve(listener: TcpListener, settings: listener::ListenerSettings, shared: Shared) {
    let Shared {
        metrics,
        engine,
        health,
        stop,
        ..
    } = shared;
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(HttpState {
            metrics,
            engine,
            health,
        });
    if let Ok(address) = listener.local_addr() {
        info!(%address, "serving /metrics, /healthz and /readyz");
    }
    let incoming = listener::incoming(listener, settings, stop.clone());
    let served = axum::serve(IncomingListener::new(incoming), app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(error) = served {
        warn!(%error, "the http port stopped");
    }
}

/// OpenMetrics when the scraper accepts it (Prometheus does), else the Prometheus text format.
async fn scrape(
    State(state): State<HttpState>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let text = state.metrics.encode(&state.engine.stats());
    let wants_openmetrics = headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("application/openmetrics-text"));
    if wants_openmetrics {
        ([(axum::http::header::CONTENT_TYPE, OPENMETRICS)], text)
    } else {
        let text = crate::metrics::to_prometheus_text(&text);
        ([(axum::http::header::CONTENT_TYPE, PROMETHEUS_TEXT)], text)
    }
}

async fn ready(State(state): State<HttpState>) -> impl IntoResponse {
    if state.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// The accept loop's connections as an axum listener.
struct IncomingListener {
    incoming: tokio_stream::wrappers::ReceiverStream<std::io::Result<listener::Connection>>,
}

impl IncomingListener {
    fn new(
        incoming: tokio_stream::wrappers::ReceiverStream<std::io::Result<listener::Connection>>,
    ) -> Self {
        IncomingListener { incoming }
    }
}

impl axum::serve::Listener for IncomingListener {
    type Io = listener::Connection;
    type Addr = Option<std::net::SocketAddr>;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        use tokio_stream::StreamExt;
        use tonic::transport::server::Connected;
        loop {
            match self.incoming.next().await {
                Some(Ok(connection)) => {
                    let address = connection.connect_info().remote_addr;
                    return (connection, address);
                }
                Some(Err(_)) => continue,
                // The accept loop ended (shutdown): wait for the graceful shutdown to stop us.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(None)
    }
}
