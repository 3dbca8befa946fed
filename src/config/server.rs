//! `[server]`: listeners, TLS, shutdown and the bounds that keep one client from taking the
//! process down.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::positive;
use crate::error::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_grpc_listen")]
    pub grpc_listen: SocketAddr,
    /// Prometheus `/metrics`, `/healthz` and `/readyz`; off when unset.
    #[serde(default)]
    pub http_listen: Option<SocketAddr>,
    /// A plaintext listener serving only the gRPC health service, for kubelet's gRPC probes
    /// when `grpc_listen` is TLS (kubelet's gRPC probe does not speak TLS); off when unset.
    #[serde(default)]
    pub health_listen: Option<SocketAddr>,
    /// How long in-flight RPCs may take to finish after SIGTERM before the process exits.
    /// Keep it below the pod's `terminationGracePeriodSeconds` (30 s by default).
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Serve gRPC (and the http port) over TLS; absent: plaintext.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub limits: ServerLimits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            grpc_listen: default_grpc_listen(),
            http_listen: None,
            health_listen: None,
            shutdown_grace: default_shutdown_grace(),
            tls: None,
            limits: ServerLimits::default(),
        }
    }
}

fn default_grpc_listen() -> SocketAddr {
    "0.0.0.0:9090".parse().expect("valid literal")
}

fn default_shutdown_grace() -> Duration {
    Duration::from_secs(10)
}

/// `[server.tls]`: PEM files, re-read when they change (cert-manager rotates mounted Secrets
/// in place) and on SIGHUP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain. Its SANs must carry the host of KEDA's `scalerAddress`
    /// (KEDA verifies it, with no override).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// With it, gRPC clients must present a certificate signed by this CA (mTLS); the server
    /// advertises it, so KEDA's client sends its `tlsClientCert`.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// How often the files are checked for changes.
    #[serde(default = "default_reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl TlsConfig {
    /// Reads the files into a rustls config that offers `alpn`.
    pub fn load(&self, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, String> {
        crate::credentials::server_tls(&self.cert, &self.key, self.client_ca.as_deref(), alpn)
    }
}

// cert-manager renews well before expiry and kubelet syncs mounted Secrets within about a
// minute; checking every 10 s adds little to that and costs three stat calls.
fn default_reload_interval() -> Duration {
    Duration::from_secs(10)
}

/// `[server.limits]`: bounds with defaults sized for one KEDA operator and its metrics server
/// polling thousands of ScaledObjects.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerLimits {
    /// RPCs answered at once; past it, RESOURCE_EXHAUSTED at once (no queueing). Health
    /// checks are not counted: probes must be answered while RPCs wait on a hung backend.
    pub max_concurrent_rpcs: usize,
    /// StreamIsActive streams open at once; past it, RESOURCE_EXHAUSTED.
    pub max_streams: usize,
    /// Client connections open at once on the gRPC listener; past it, new ones are closed.
    pub max_connections: usize,
    /// A new connection must send its first byte (and finish its TLS handshake) within this,
    /// or it is closed: idle sockets cannot pile up.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// HTTP/2 PING interval on idle connections, and how long to wait for the answer before
    /// closing the connection. KEDA's one long-lived connection answers them.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// The largest request accepted, in bytes; larger ones get OUT_OF_RANGE.
    pub max_request_bytes: usize,
    /// Entries of one trigger's metadata map.
    pub max_metadata_entries: usize,
    /// Bytes of one metadata key or value.
    pub max_metadata_value_bytes: usize,
    /// Items of one comma-separated list (`keys`, `statuses`, …).
    pub max_list_items: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            // KEDA's operator and metrics server poll serially per ScaledObject; a thousand
            // answers in flight at once is far beyond that and still a few MiB of memory.
            max_concurrent_rpcs: 1_000,
            // One per ScaledObject that uses StreamIsActive (KEDA does not today).
            max_streams: 1_000,
            // Two KEDA pods hold one connection each; probes and scrapes add a few.
            max_connections: 1_000,
            handshake_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            // tonic's default; a trigger's metadata is a few hundred bytes.
            max_request_bytes: 4 * 1024 * 1024,
            // The widest trigger (pg-statements with KEDA's keys) has about fifteen.
            max_metadata_entries: 64,
            // Long enough for a PEM certificate KEDA forwards as `caCert`.
            max_metadata_value_bytes: 16 * 1024,
            // A read per key per refresh: a hundred keys is already a large pipeline share.
            max_list_items: 100,
        }
    }
}

impl ServerConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("server.shutdown_grace", self.shutdown_grace)?;
        let l = &self.limits;
        positive("server.limits.handshake_timeout", l.handshake_timeout)?;
        positive("server.limits.keepalive_interval", l.keepalive_interval)?;
        positive("server.limits.keepalive_timeout", l.keepalive_timeout)?;
        for (key, value) in [
            ("max_concurrent_rpcs", l.max_concurrent_rpcs),
            ("max_streams", l.max_streams),
            ("max_connections", l.max_connections),
            ("max_request_bytes", l.max_request_bytes),
            ("max_metadata_entries", l.max_metadata_entries),
            ("max_metadata_value_bytes", l.max_metadata_value_bytes),
            ("max_list_items", l.max_list_items),
        ] {
            if value == 0 {
                return Err(ConfigError::at(
                    format!("server.limits.{key}"),
                    "must be at least 1",
                ));
            }
        }
        if let Some(tls) = &self.tls {
            positive("server.tls.reload_interval", tls.reload_interval)?;
            tls.load(&[b"h2"])
                .map_err(|e| ConfigError::at("server.tls", e))?;
        }
        Ok(())
    }
}
