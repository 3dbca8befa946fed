//! `[server.tls]` with certificates that can change under a running server.
//!
//! cert-manager rotates a mounted Secret in place; the files are checked every
//! `reload_interval` (and on SIGHUP) and, when they changed, read again. New connections get
//! the new certificate; open connections and streams keep theirs. A bad new file is logged
//! and the previous certificate kept, so a botched rotation never takes the scaler down.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use arc_swap::ArcSwap;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

use crate::config::TlsConfig;

/// A TLS server config that [`watch`](ReloadableTls::watch) keeps in step with its files.
pub struct ReloadableTls {
    settings: TlsConfig,
    alpn: Vec<&'static [u8]>,
    current: ArcSwap<rustls::ServerConfig>,
    /// Modification time and length of each file, as last read.
    stamps: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl ReloadableTls {
    /// Reads the files once. `client_auth: false` serves the certificate without asking for
    /// client certificates (the http port: Prometheus and kubelet hold none).
    pub fn load(
        settings: &TlsConfig,
        client_auth: bool,
        alpn: Vec<&'static [u8]>,
    ) -> Result<Arc<ReloadableTls>, String> {
        let mut settings = settings.clone();
        if !client_auth {
            settings.client_ca = None;
        }
        let stamps = stamps(&files(&settings));
        let config = settings.load(&alpn)?;
        Ok(Arc::new(ReloadableTls {
            settings,
            alpn,
            current: ArcSwap::from_pointee(config),
            stamps: Mutex::new(stamps),
        }))
    }

    /// The config new connections are served with.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        self.current.load_full()
    }

    /// Reads the files again if they changed (or if `force`). Returns whether the served
    /// certificate changed.
    pub fn reload(&self, force: bool) -> bool {
        let now = stamps(&files(&self.settings));
        {
            let mut seen = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
            if !force && *seen == now {
                return false;
            }
            *seen = now;
        }
        match self.settings.load(&self.alpn) {
            Ok(config) => {
                self.current.store(Arc::new(config));
                info!(cert = %self.settings.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(error) => {
                warn!(%error, "the new TLS files are not usable; still serving the previous certificate");
                false
            }
        }
    }

    /// Checks the files every `reload_interval` and on SIGHUP, until `stop`, as a task of
    /// `tasks`.
    pub fn watch(self: &Arc<Self>, stop: CancellationToken, tasks: &TaskTracker) {
        let tls = self.clone();
        tasks.spawn(async move {
            let mut hangup = signal(SignalKind::hangup()).ok();
            let mut ticker = tokio::time::interval(tls.settings.reload_interval);
            loop {
                let forced = tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticker.tick() => false,
                    _ = async {
                        match hangup.as_mut() {
                            Some(hangup) => { hangup.recv().await; }
                            None => std::future::pending::<()>().await,
                        }
                    } => true,
                };
                tls.reload(forced);
            }
        });
    }
}

fn files(settings: &TlsConfig) -> Vec<PathBuf> {
    let mut files = vec![settings.cert.clone(), settings.key.clone()];
    files.extend(settings.client_ca.clone());
    files
}

fn stamps(files: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    files
        .iter()
        .map(|file| {
            let meta = std::fs::metadata(file).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}
