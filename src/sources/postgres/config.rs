//! The `[sources.NAME]` section of `type = "postgres"`, parsed once into the connection
//! settings, TLS roots and named queries the source uses as they are.

use std::{path::PathBuf, sync::Arc, time::Duration};

use serde::Deserialize;

use super::{
    metrics::NamedQueries,
    tls::{self, TlsMode},
};
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
    #[serde(default, with = "humantime_serde")]
    statements_interval: Option<Duration>,
}

// Two connections: the reads of one refresh run concurrently (pg_stat_activity, one
// pg_stat_statements snapshot and each Dagster or named query, each in its own short
// transaction), so a second connection keeps one slow read from holding up the rest; more
// would make the scaler a noticeable client of the database.
const DEFAULT_POOL_SIZE: usize = 2;

// How long one pg_stat_statements window answers before the next snapshot. Ten seconds: a
// rate over one second of a 40 statements/s load is ±16 % of Poisson noise alone, over ten
// seconds ±5 %; KEDA asks every 30 s by default and the HPA every 15 s, so nothing downstream
// sees fresher values; and the snapshot, the scaler's one costly read (milliseconds of
// database time at thousands of entries, see docs/operations.md), runs a tenth as often.
const DEFAULT_STATEMENTS_INTERVAL: Duration = Duration::from_secs(10);

/// The accepted `statements_interval`: at least a second (a shorter window is noise), at most
/// ten minutes (a longer one hides a load that came and went).
const STATEMENTS_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(600));

/// A parsed PostgreSQL section.
pub struct PostgresSettings {
    /// Host, port, database, user and password (whose `Debug` tokio-postgres redacts).
    pub connection: tokio_postgres::Config,
    pub tls: TlsSettings,
    pub pool_size: usize,
    pub queries: NamedQueries,
    /// How long a pg_stat_statements window answers before the next snapshot.
    pub statements_interval: Duration,
}

pub fn parse(section: &Section) -> Result<PostgresSettings, ConfigError> {
    let raw: RawPostgres = section.deserialize()?;
    let secret = section.secret(
        "url",
        raw.url.as_ref(),
        raw.url_env.as_deref(),
        raw.url_file.as_deref(),
    );
    let (connection, asked) = connection_config(
        section,
        secret,
        "a PostgreSQL connection string: a URL (postgres://user@host:port/db) or libpq's \
         keyword=value pairs (host=... user=... dbname=...)",
    )?;
    let pool_size = raw.pool_size.unwrap_or(DEFAULT_POOL_SIZE);
    if pool_size == 0 {
        return Err(ConfigError::at(
            section.key("pool_size"),
            "must be at least 1",
        ));
    }
    let statements_interval = raw
        .statements_interval
        .unwrap_or(DEFAULT_STATEMENTS_INTERVAL);
    let (shortest, longest) = STATEMENTS_INTERVAL_RANGE;
    if !(shortest..=longest).contains(&statements_interval) {
        return Err(ConfigError::at(
            section.key("statements_interval"),
            "must be between 1s and 10m",
        ));
    }
    let queries = raw.queries.unwrap_or_default();
    if let Some((query, _)) = queries.iter().find(|(_, sql)| sql.trim().is_empty()) {
        return Err(ConfigError::at(
            section.key(&format!("queries.{query}")),
            "is empty",
        ));
    }
    let tls = tls_settings(section, asked, raw.tls_ca_file.as_deref())?;
    Ok(PostgresSettings {
        connection,
        tls,
        pool_size,
        queries,
        statements_interval,
    })
}

/// How a source's connections are protected, and the rustls config that does it.
pub struct TlsSettings {
    pub mode: TlsMode,
    /// Whether the roots are the section's `tls_ca_file` (else the web PKI's).
    pub has_ca: bool,
    /// rustls for every mode but [`TlsMode::Plain`].
    pub config: Option<Arc<rustls::ClientConfig>>,
}

impl TlsSettings {
    /// For `check`: encrypted or not, and what is verified.
    pub fn describe(&self) -> String {
        tls::describe(self.mode, self.has_ca)
    }
}

/// The TLS of a section: the mode the URL asked for (a CA file alone implies full
/// verification) with the CA file's roots, else the web PKI's. PgBouncer sources use it too:
/// their admin console speaks the same protocol.
pub fn tls_settings(
    section: &Section,
    asked: Option<TlsMode>,
    ca_file: Option<&std::path::Path>,
) -> Result<TlsSettings, ConfigError> {
    let ca = match ca_file {
        Some(path) => Some(CaRoots::load(&section.key("tls_ca_file"), path)?),
        None => None,
    };
    let mode = tls::effective_mode(asked, ca.is_some());
    let config = match mode {
        TlsMode::Plain => None,
        mode => Some(Arc::new(tls::client_config(ca.as_ref(), mode)?)),
    };
    Ok(TlsSettings {
        mode,
        has_ca: ca.is_some(),
        config,
    })
}

/// The connection settings of a section's `url` (given inline, by env or by file), and the
/// TLS mode its `sslmode` asks for. A bad URL is refused with `accepted`, never with the
/// parser's message, which may quote the URL and so its password; an unsupported `sslmode`
/// or URL parameter is named.
pub fn connection_config(
    section: &Section,
    url: SecretRef<'_>,
    accepted: &str,
) -> Result<(tokio_postgres::Config, Option<TlsMode>), ConfigError> {
    let url = url.resolve()?;
    let (driver_url, asked) = tls::libpq_url(url.expose())
        .map_err(|reason| ConfigError::at(section.key("url"), reason))?;
    let config = driver_url
        .parse()
        .map_err(|_| ConfigError::at(section.key("url"), format!("is not {accepted}")))?;
    Ok((config, asked))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::RefreshSettings;

    fn parse_toml(toml: &str) -> Result<PostgresSettings, String> {
        parse(&Section {
            name: "pg".into(),
            type_name: "postgres".into(),
            table: toml::from_str(toml).unwrap(),
            refresh: RefreshSettings {
                refresh_interval: Duration::from_secs(1),
                max_staleness: Duration::from_secs(5),
                timeout: Duration::from_millis(1500),
            },
        })
        .map_err(|error| error.0)
    }

    #[test]
    fn statements_interval_defaults_to_ten_seconds_and_is_bounded() {
        let url = r#"url = "postgres://scaler@db/app""#;
        let settings = parse_toml(url).unwrap();
        assert_eq!(settings.statements_interval, Duration::from_secs(10));
        let settings = parse_toml(&format!("{url}\nstatements_interval = \"30s\"")).unwrap();
        assert_eq!(settings.statements_interval, Duration::from_secs(30));
        for bad in ["\"100ms\"", "\"1h\""] {
            let error = parse_toml(&format!("{url}\nstatements_interval = {bad}"))
                .err()
                .unwrap();
            assert!(
                error.contains("`sources.pg.statements_interval`") && error.contains("1s and 10m"),
                "{error}"
            );
        }
        let error = parse_toml(&format!("{url}\nstatements_interval = \"soon\""))
            .err()
            .unwrap();
        assert!(error.contains("\"soon\", expected a duration"), "{error}");
    }

    #[test]
    fn libpq_sslmodes_are_accepted_and_others_named() {
        let full = parse_toml(r#"url = "postgres://s:pw@db/app?sslmode=verify-full""#).unwrap();
        assert_eq!(full.tls.mode, TlsMode::VerifyFull);
        assert!(full.tls.config.is_some());
        let ca = parse_toml(r#"url = "postgres://s:pw@db/app?sslmode=verify-ca""#).unwrap();
        assert_eq!(ca.tls.mode, TlsMode::VerifyCa);
        assert!(ca.tls.describe().contains("host name is not"));
        let plain = parse_toml(r#"url = "postgres://s:pw@db/app?sslmode=disable""#).unwrap();
        assert_eq!(plain.tls.mode, TlsMode::Plain);
        assert!(plain.tls.describe().starts_with("not encrypted"));
        let error = parse_toml(r#"url = "postgres://s:hunter2@db/app?sslmode=verify""#)
            .err()
            .unwrap();
        assert!(
            error.starts_with("`sources.pg.url`") && error.contains("sslmode `verify`"),
            "{error}"
        );
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn the_keyword_form_is_a_connection_string_too() {
        let settings =
            parse_toml(r#"url = "host=db user=scaler password=pw dbname=app sslmode=verify-full""#)
                .unwrap();
        assert_eq!(settings.tls.mode, TlsMode::VerifyFull);
        assert_eq!(settings.connection.get_dbname(), Some("app"));
        let error = parse_toml(r#"url = "db.internal:5432/app""#).err().unwrap();
        assert!(
            error.starts_with("`sources.pg.url`") && error.contains("keyword=value"),
            "{error}"
        );
    }
}
