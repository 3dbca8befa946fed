//! `sslmode` as libpq users write it, for PostgreSQL and PgBouncer sources: which modes and
//! connection parameters are accepted (in a `postgres://` URL or in libpq's keyword=value
//! form), what each means here, and the rustls client config that does it.
//!
//! The driver knows `disable`, `prefer` and `require` only, and refuses anything else with a
//! message that cannot name what it refused; so the parameters are checked here first,
//! each refusal naming the parameter or value and what is accepted, and `verify-ca` /
//! `verify-full` are handed to the driver as `require` with the verification they ask for
//! done by rustls.
//!
//! | `sslmode` | here |
//! | --- | --- |
//! | `disable`, `allow`, `prefer` (the default) | plain text, unless `tls_ca_file` is set |
//! | `require` | TLS; chain and host name verified (stricter than libpq, as it always was) |
//! | `verify-ca` | TLS; chain verified against `tls_ca_file`, else the web PKI; any host name |
//! | `verify-full` | TLS; chain and host name verified |
//!
//! TLS is never downgraded: a server that does not offer it is an error, not a plain session.

use std::sync::Arc;

use rustls::{
    CertificateError, DigitallySignedStruct, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    pki_types::{CertificateDer, ServerName, UnixTime},
};

use crate::{credentials::CaRoots, error::ConfigError};

/// How a source's connections are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// No TLS.
    Plain,
    /// TLS; the certificate chain is verified, the host name is not (`verify-ca`).
    VerifyCa,
    /// TLS; the chain and the host name are verified (`require`, `verify-full`, or a
    /// `tls_ca_file` without `sslmode`).
    VerifyFull,
}

/// The `sslmode` values accepted, for messages.
const SSLMODES: &str = "disable, allow, prefer, require, verify-ca or verify-full";

/// The URL parameters the driver understands (libpq's names).
const PARAMETERS: &[&str] = &[
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "sslmode",
    "sslnegotiation",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

/// Checks a connection string's parameters and its `sslmode`, in either of libpq's forms (a
/// `postgres://` URL, or `keyword=value` pairs); returns the string the driver can parse
/// (`verify-ca`/`verify-full` as `require`, `allow` as `disable`) and the mode asked for
/// (`None` when no TLS was asked for). Errors name the parameter or the value, never other
/// parts of the string (which hold the password). A string that is neither form is returned
/// as it is, for the driver to refuse.
pub fn libpq_url(url: &str) -> Result<(String, Option<TlsMode>), String> {
    let url_form = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if !url_form {
        return match keyword_pairs(url) {
            Some(pairs) if !pairs.is_empty() => keyword_form(&pairs),
            _ => Ok((url.to_string(), None)),
        };
    }
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), None));
    };
    let mut mode = None;
    let mut pairs = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        check_parameter(key, "URL parameter")?;
        if key != "sslmode" {
            pairs.push(pair.to_string());
            continue;
        }
        let driver_value;
        (driver_value, mode) = sslmode(value)?;
        pairs.push(format!("sslmode={driver_value}"));
    }
    Ok((format!("{base}?{}", pairs.join("&")), mode))
}

/// The `keyword=value` form, checked as the URL's parameters are, and written again with
/// every value quoted.
fn keyword_form(pairs: &[(&str, String)]) -> Result<(String, Option<TlsMode>), String> {
    let mut mode = None;
    let mut out = Vec::with_capacity(pairs.len());
    for (key, value) in pairs {
        check_parameter(key, "parameter")?;
        let value = if *key == "sslmode" {
            let driver_value;
            (driver_value, mode) = sslmode(value)?;
            driver_value
        } else {
            value
        };
        let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
        out.push(format!("{key}='{quoted}'"));
    }
    Ok((out.join(" "), mode))
}

/// libpq's `keyword = value` pairs (whitespace between pairs and around `=`; a value in
/// single quotes may hold spaces; a backslash takes the next character as it is). `None`
/// when the text is not of that form.
fn keyword_pairs(text: &str) -> Option<Vec<(&str, String)>> {
    let mut pairs = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let key_end = rest.find(|c: char| c == '=' || c.is_whitespace())?;
        let key = &rest[..key_end];
        rest = rest[key_end..].trim_start().strip_prefix('=')?.trim_start();
        if key.is_empty() {
            return None;
        }
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let quoted = rest.starts_with('\'');
        if quoted {
            chars.next();
        }
        let mut end = rest.len();
        let mut closed = !quoted;
        while let Some((at, c)) = chars.next() {
            match c {
                '\\' => value.push(chars.next()?.1),
                '\'' if quoted => {
                    (end, closed) = (at + 1, true);
                    break;
                }
                c if !quoted && c.is_whitespace() => {
                    end = at;
                    break;
                }
                c => value.push(c),
            }
        }
        if !closed {
            return None;
        }
        pairs.push((key, value));
        rest = rest[end..].trim_start();
    }
    Some(pairs)
}

/// Refuses a parameter the driver does not know, naming it (`kind`: how the form calls it).
fn check_parameter(key: &str, kind: &str) -> Result<(), String> {
    if PARAMETERS.contains(&key) {
        Ok(())
    } else {
        Err(unsupported_parameter(key, kind))
    }
}

/// The driver's `sslmode` for a libpq one, and the TLS mode it asks for.
fn sslmode(value: &str) -> Result<(&'static str, Option<TlsMode>), String> {
    Ok(match value {
        "disable" | "allow" => ("disable", None),
        "prefer" => ("prefer", None),
        "require" | "verify-full" => ("require", Some(TlsMode::VerifyFull)),
        "verify-ca" => ("require", Some(TlsMode::VerifyCa)),
        other => {
            let shown: String = other.chars().take(20).collect();
            return Err(format!(
                "sslmode `{shown}` is not supported; use {SSLMODES}"
            ));
        }
    })
}

fn unsupported_parameter(key: &str, kind: &str) -> String {
    let named = if key.len() <= 40 && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        format!("{kind} `{key}`")
    } else {
        format!("a {kind}")
    };
    let hint = match key {
        "sslrootcert" => "; give the CA file as the source's `tls_ca_file`",
        "sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir" => {
            "; client certificates and CRLs are not supported"
        }
        _ => "",
    };
    format!(
        "{named} is not supported{hint}; supported: {}",
        PARAMETERS.join(", ")
    )
}

/// The mode of a source: what the URL asked for, else full verification when a CA file is
/// given (it implies TLS), else plain text.
pub fn effective_mode(asked: Option<TlsMode>, has_ca: bool) -> TlsMode {
    match (asked, has_ca) {
        (Some(mode), _) => mode,
        (None, true) => TlsMode::VerifyFull,
        (None, false) => TlsMode::Plain,
    }
}

/// What `check` prints about a source's connections.
pub fn describe(mode: TlsMode, has_ca: bool) -> String {
    let roots = if has_ca {
        "tls_ca_file"
    } else {
        "the web PKI roots"
    };
    match mode {
        TlsMode::Plain => "not encrypted (no sslmode that asks for TLS, no tls_ca_file)".into(),
        TlsMode::VerifyCa => format!(
            "encrypted; the server certificate is verified against {roots}, its host name is \
             not (sslmode=verify-ca)"
        ),
        TlsMode::VerifyFull => format!(
            "encrypted; the server certificate is verified against {roots} and must name the \
             URL's host"
        ),
    }
}

/// rustls client config for `mode` (not [`TlsMode::Plain`]): the CA file if given, else the
/// web PKI roots.
pub fn client_config(
    ca: Option<&CaRoots>,
    mode: TlsMode,
) -> Result<rustls::ClientConfig, ConfigError> {
    let roots = match ca {
        Some(ca) => ca.root_store()?,
        None => rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError(format!("rustls: {e}")))?;
    let config = match mode {
        TlsMode::VerifyCa => {
            let chain = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ConfigError(format!("rustls: {e}")))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(chain)))
                .with_no_client_auth()
        }
        TlsMode::VerifyFull | TlsMode::Plain => {
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(config)
}

/// `verify-ca`: the full verification, with a certificate that is valid except for not
/// naming the host accepted. The chain and validity are checked before the name, so a
/// name error means everything else held.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_modes_reach_the_driver_as_require_and_others_are_named() {
        let (url, mode) = libpq_url("postgres://u:pw@h:5432/db?sslmode=verify-full").unwrap();
        assert_eq!(url, "postgres://u:pw@h:5432/db?sslmode=require");
        assert_eq!(mode, Some(TlsMode::VerifyFull));
        let (url, mode) =
            libpq_url("postgresql://u@h/db?application_name=x&sslmode=verify-ca").unwrap();
        assert_eq!(
            url,
            "postgresql://u@h/db?application_name=x&sslmode=require"
        );
        assert_eq!(mode, Some(TlsMode::VerifyCa));
        let (_, mode) = libpq_url("postgres://u@h/db?sslmode=require").unwrap();
        assert_eq!(mode, Some(TlsMode::VerifyFull));
        let (url, mode) = libpq_url("postgres://u@h/db?sslmode=allow").unwrap();
        assert_eq!(
            (url.as_str(), mode),
            ("postgres://u@h/db?sslmode=disable", None)
        );
        assert_eq!(libpq_url("postgres://u@h/db").unwrap().1, None);

        let error = libpq_url("postgres://u:hunter2@h/db?sslmode=verify-maybe").unwrap_err();
        assert!(
            error.contains("`verify-maybe`") && error.contains("verify-full"),
            "{error}"
        );
        let error = libpq_url("postgres://u:hunter2@h/db?sslrootcert=/ca.pem").unwrap_err();
        assert!(
            error.contains("`sslrootcert`") && error.contains("tls_ca_file"),
            "{error}"
        );
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn the_keyword_form_follows_the_same_sslmode_and_parameter_rules() {
        let (driver, mode) =
            libpq_url("host=db.internal port=5432 user=scaler dbname=app sslmode=verify-full")
                .unwrap();
        assert_eq!(mode, Some(TlsMode::VerifyFull));
        let config: tokio_postgres::Config = driver.parse().unwrap();
        assert_eq!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(config.get_user(), Some("scaler"));
        assert_eq!(config.get_dbname(), Some("app"));
        assert_eq!(config.get_ports(), [5432]);
        let (_, mode) = libpq_url("host=db sslmode = verify-ca").unwrap();
        assert_eq!(mode, Some(TlsMode::VerifyCa));
        assert_eq!(libpq_url("host=db user=scaler").unwrap().1, None);

        let error = libpq_url("host=db password=hunter2 sslmode=verify-maybe").unwrap_err();
        assert!(error.contains("`verify-maybe`"), "{error}");
        let error = libpq_url("host=db password=hunter2 sslrootcert=/ca.pem").unwrap_err();
        assert!(
            error.contains("parameter `sslrootcert`") && error.contains("tls_ca_file"),
            "{error}"
        );
        assert!(
            !error.contains("URL") && !error.contains("hunter2"),
            "{error}"
        );
    }

    #[test]
    fn keyword_values_keep_their_quotes_spaces_and_escapes() {
        let text = r"host=db user=scaler password='it''s a \'secret\' \\ x' dbname = app";
        assert_eq!(keyword_pairs(text), None, "'' is not an escape in libpq");
        let text = r"host=db user=scaler password='it\'s a \\ secret' dbname = app";
        let pairs = keyword_pairs(text).unwrap();
        assert_eq!(
            pairs,
            [
                ("host", "db".to_string()),
                ("user", "scaler".to_string()),
                ("password", r"it's a \ secret".to_string()),
                ("dbname", "app".to_string()),
            ]
        );
        // Written again for the driver, the password reaches it unchanged.
        let (driver, _) = libpq_url(text).unwrap();
        let config: tokio_postgres::Config = driver.parse().unwrap();
        assert_eq!(config.get_password(), Some(&br"it's a \ secret"[..]));
        assert_eq!(config.get_dbname(), Some("app"));
        // Not the keyword form: left for the driver to refuse.
        for text in ["db.internal", "host=db user", "host='db", "=db", ""] {
            assert_eq!(
                libpq_url(text).unwrap(),
                (text.to_string(), None),
                "{text:?}"
            );
        }
    }

    #[test]
    fn a_ca_file_alone_means_full_verification() {
        assert_eq!(effective_mode(None, true), TlsMode::VerifyFull);
        assert_eq!(effective_mode(None, false), TlsMode::Plain);
        assert_eq!(
            effective_mode(Some(TlsMode::VerifyCa), true),
            TlsMode::VerifyCa
        );
    }
}
