//! The `[sources.NAME]` section of `type = "postgres"`, parsed once into the connection
//! settings, TLS roots and named queries the source uses as they are.

use std::{path::PathBuf, sync::Arc};

use serde::Deserialize;
use tokio_postgres::config::SslMode;

use super::metrics::NamedQueries;
use crate::{
    credentials::{CaRoots, Secret, SecretRef},
    error::ConfigError,
    sources::Section,
};

/// The keys of a PostgreSQL section, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPostgres {
    url: Option<Secret>,
    url_env: Option<String>,
    url_file: Option<PathBuf>,
    pool_size: Option<usize>,
    queries: Option<NamedQueries>,
    tls_ca_file: Option<PathBuf>,
}

// Two connections: the reads of one refresh run concurrently (pg_stat_activity, one
// pg_stat_statements snapshot and each Dagster or named query, each in its own short
// transaction), so a second connection keeps one slow read from holding up the rest; more
// would make the scaler a noticeable client of the database.
const DEFAULT_POOL_SIZE: usize = 2;

/// A parsed PostgreSQL section.
pub struct PostgresSettings {
    /// Host, port, database, user and password (whose `Debug` tokio-postgres redacts).
    pub connection: tokio_postgres::Config,
    /// With `sslmode=require` or a CA file: rustls with those roots (else the web PKI's).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub pool_size: usize,
    pub queries: NamedQueries,
}

pub fn parse(section: &Section) -> Result<PostgresSettings, ConfigError> {
    let raw: RawPostgres = section.deserialize()?;
    let secret = section.secret(
        "url",
        raw.url.as_ref(),
        raw.url_env.as_deref(),
        raw.url_file.as_deref(),
    );
    let connection = connection_config(
        section,
        secret,
        "a valid PostgreSQL connection URL (postgres://user@host:port/db)",
    )?;
    let pool_size = raw.pool_size.unwrap_or(DEFAULT_POOL_SIZE);
    if pool_size == 0 {
        return Err(ConfigError::at(
            section.key("pool_size"),
            "must be at least 1",
        ));
    }
    let queries = raw.queries.unwrap_or_default();
    if let Some((query, _)) = queries.iter().find(|(_, sql)| sql.trim().is_empty()) {
        return Err(ConfigError::at(
            section.key(&format!("queries.{query}")),
            "is empty",
        ));
    }
    let ca = match &raw.tls_ca_file {
        Some(path) => Some(CaRoots::load(&section.key("tls_ca_file"), path)?),
        None => None,
    };
    let tls = if connection.get_ssl_mode() == SslMode::Require || ca.is_some() {
        Some(Arc::new(tls_config(ca.as_ref())?))
    } else {
        None
    };
    Ok(PostgresSettings {
        connection,
        tls,
        pool_size,
        queries,
    })
}

/// The connection settings of a section's `url` (given inline, by env or by file). A bad URL
/// is refused with `accepted`, never with the parser's message, which may quote the URL and
/// so its password.
pub fn connection_config(
    section: &Section,
    url: SecretRef<'_>,
    accepted: &str,
) -> Result<tokio_postgres::Config, ConfigError> {
    let url = url.resolve()?;
    url.expose()
        .parse()
        .map_err(|_| ConfigError::at(section.key("url"), format!("is not {accepted}")))
}

/// rustls client config: the CA file if given, else the web PKI roots. PgBouncer sources
/// use it too: their admin console speaks the same protocol.
pub fn tls_config(ca: Option<&CaRoots>) -> Result<rustls::ClientConfig, ConfigError> {
    let roots = match ca {
        Some(ca) => ca.root_store()?,
        None => rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError(format!("rustls: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
