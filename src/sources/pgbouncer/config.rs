//! The `[sources.NAME]` section of `type = "pgbouncer"`, parsed once into the admin console's
//! connection settings and TLS roots.

use std::path::PathBuf;

use serde::Deserialize;

use crate::{
    credentials::Secret,
    error::ConfigError,
    sources::{
        Section,
        postgres::config::{TlsSettings, connection_config, tls_settings},
    },
};

/// The keys of a PgBouncer section, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPgBouncer {
    url: Option<Secret>,
    url_env: Option<String>,
    url_file: Option<PathBuf>,
    tls_ca_file: Option<PathBuf>,
}

/// A parsed PgBouncer section.
pub struct PgBouncerSettings {
    /// Host, port, database (`pgbouncer`), user and password (whose `Debug` tokio-postgres
    /// redacts).
    pub connection: tokio_postgres::Config,
    pub tls: TlsSettings,
}

pub fn parse(section: &Section) -> Result<PgBouncerSettings, ConfigError> {
    let raw: RawPgBouncer = section.deserialize()?;
    let secret = section.secret(
        "url",
        raw.url.as_ref(),
        raw.url_env.as_deref(),
        raw.url_file.as_deref(),
    );
    let (connection, asked) = connection_config(
        section,
        secret,
        "a connection string for PgBouncer's admin console: a URL \
         (postgres://user:password@host:port/pgbouncer) or libpq's keyword=value pairs \
         (host=... port=6432 user=... dbname=pgbouncer)",
    )?;
    let tls = tls_settings(section, asked, raw.tls_ca_file.as_deref())?;
    Ok(PgBouncerSettings { connection, tls })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sources::RefreshSettings;

    fn section(toml: &str) -> Section {
        Section {
            name: "bouncer".into(),
            type_name: "pgbouncer".into(),
            table: toml::from_str(toml).unwrap(),
            refresh: RefreshSettings {
                refresh_interval: Duration::from_secs(1),
                max_staleness: Duration::from_secs(5),
                timeout: Duration::from_millis(1500),
            },
        }
    }

    fn error(toml: &str) -> String {
        match parse(&section(toml)) {
            Ok(_) => panic!("{toml} was accepted"),
            Err(error) => error.0,
        }
    }

    #[test]
    fn a_url_to_the_admin_console() {
        let settings = parse(&section(
            r#"url = "postgres://stats:s3cret@10.0.0.1:6432/pgbouncer""#,
        ))
        .unwrap();
        assert_eq!(settings.connection.get_dbname(), Some("pgbouncer"));
        assert_eq!(settings.connection.get_user(), Some("stats"));
        assert!(settings.tls.config.is_none());
        let tls = parse(&section(
            r#"url = "postgres://stats@h:6432/pgbouncer?sslmode=require""#,
        ))
        .unwrap();
        assert!(tls.tls.config.is_some());
    }

    #[test]
    fn bad_sections_name_the_key_and_never_the_secret() {
        let unknown = error(
            r#"url = "postgres://a@h/pgbouncer"
pool_size = 2"#,
        );
        assert!(unknown.contains("unknown field `pool_size`"), "{unknown}");
        let missing = error("");
        assert!(missing.contains("`sources.bouncer.url`"), "{missing}");
        let two = error(
            r#"url = "postgres://a@h/pgbouncer"
url_env = "X""#,
        );
        assert!(two.contains("set only one"), "{two}");
        let bad = error(r#"url = "postgres://a:hunter2@h:notaport/pgbouncer""#);
        assert!(
            bad.contains("admin console") && !bad.contains("hunter2"),
            "{bad}"
        );
        let ca = error(
            r#"url = "postgres://a@h/pgbouncer"
tls_ca_file = "/nonexistent/ca.pem""#,
        );
        assert!(ca.contains("tls_ca_file"), "{ca}");
    }
}
