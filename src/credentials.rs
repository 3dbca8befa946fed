//! Secrets and trust roots, resolved once while the config is loaded.
//!
//! A leaf module (it depends only on [`crate::error`]): the config resolves `*_env` and
//! `*_file` indirections and reads CA files here, and the backends take the results as they
//! are — no second parse, no "impossible" error after the port is bound. [`Secret`]'s `Debug`
//! never shows the value, so a config or a source can be logged whole.

use std::{fmt, path::Path, path::PathBuf};

use rustls_pki_types::{CertificateDer, pem::PemObject};
use serde::Deserialize;

use crate::error::ConfigError;

/// A value that must never be logged: a URL with a password, a password.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself. Call sites are few and obvious: building a client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where a secret comes from: written inline, an environment variable, or a file (a mounted
/// Kubernetes Secret). The config keys are `FIELD`, `FIELD_env` and `FIELD_file`.
pub struct SecretRef<'a> {
    /// The dotted key of the field, e.g. `sources.redis-main.url`.
    pub key: String,
    pub inline: Option<&'a Secret>,
    pub env: Option<&'a str>,
    pub file: Option<&'a Path>,
}

impl SecretRef<'_> {
    /// The secret, if one of the three is given; an error if more than one is.
    pub fn resolve_optional(&self) -> Result<Option<Secret>, ConfigError> {
        let given = [
            self.inline.is_some(),
            self.env.is_some(),
            self.file.is_some(),
        ];
        match given.iter().filter(|g| **g).count() {
            0 => return Ok(None),
            1 => {}
            _ => {
                return Err(ConfigError::at(
                    &self.key,
                    format!(
                        "set only one of `{0}`, `{0}_env` and `{0}_file`",
                        self.field()
                    ),
                ));
            }
        }
        let value = if let Some(value) = self.inline {
            value.0.clone()
        } else if let Some(var) = self.env {
            std::env::var(var).map_err(|_| {
                ConfigError::at(
                    format!("{}_env", self.key),
                    format!("environment variable `{var}` is not set (or not UTF-8)"),
                )
            })?
        } else {
            self.read_file()?
        };
        if value.is_empty() {
            return Err(ConfigError::at(&self.key, "is empty"));
        }
        Ok(Some(Secret(value)))
    }

    /// The secret; an error naming the three keys if none is given.
    pub fn resolve(&self) -> Result<Secret, ConfigError> {
        self.resolve_optional()?.ok_or_else(|| {
            ConfigError::at(
                &self.key,
                format!(
                    "missing: set one of `{0}`, `{0}_env` or `{0}_file`",
                    self.field()
                ),
            )
        })
    }

    fn field(&self) -> &str {
        self.key.rsplit('.').next().unwrap_or(&self.key)
    }

    fn read_file(&self) -> Result<String, ConfigError> {
        let path = self.file.unwrap_or(Path::new(""));
        std::fs::read_to_string(path)
            .map(|text| text.trim().to_string())
            .map_err(|e| {
                ConfigError::at(
                    format!("{}_file", self.key),
                    format!("cannot read {}: {}", path.display(), e.kind()),
                )
            })
    }
}

/// The certificates of a PEM CA file: parsed once, used by every connection of a source.
#[derive(Clone)]
pub struct CaRoots {
    pub path: PathBuf,
    pub pem: Vec<u8>,
    pub certificates: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for CaRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaRoots")
            .field("path", &self.path)
            .field("certificates", &self.certificates.len())
            .finish()
    }
}

impl CaRoots {
    /// Reads a PEM file that holds at least one certificate; errors name `key`.
    pub fn load(key: &str, path: &Path) -> Result<CaRoots, ConfigError> {
        let pem = std::fs::read(path)
            .map_err(|e| ConfigError::at(key, format!("cannot read {}: {e}", path.display())))?;
        let certificates = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::at(key, format!("{} is not PEM: {e}", path.display())))?;
        if certificates.is_empty() {
            return Err(ConfigError::at(
                key,
                format!("{} holds no PEM certificate", path.display()),
            ));
        }
        Ok(CaRoots {
            path: path.to_path_buf(),
            pem,
            certificates,
        })
    }

    /// A rustls root store of these certificates.
    pub fn root_store(&self) -> Result<rustls::RootCertStore, ConfigError> {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in &self.certificates {
            roots.add(certificate.clone()).map_err(|e| {
                ConfigError(format!(
                    "{} holds a certificate rustls rejects: {e}",
                    self.path.display()
                ))
            })?;
        }
        Ok(roots)
    }
}

/// The rustls server config of `[server.tls]`: TLS 1.2 and 1.3, ALPN `h2` (grpc-go refuses a
/// server without it) and, with a client CA, mandatory client certificates signed by it (the
/// CA is advertised in the CertificateRequest, so KEDA's client sends its certificate).
/// Errors name the file; they never include key material.
pub fn server_tls(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, String> {
    use rustls_pki_types::PrivateKeyDer;
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read {}: {e}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not PEM: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no PEM certificate", cert.display()));
    }
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("{} holds no usable PEM private key: {e}", key.display()))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let roots = CaRoots::load("client_ca", path)
                .map_err(|e| e.0)?
                .root_store()
                .map_err(|e| e.0)?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                std::sync::Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("{}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, private_key).map_err(|e| {
        format!(
            "{} and {} do not make a certificate and key pair: {e}",
            cert.display(),
            key.display()
        )
    })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference<'a>(
        inline: Option<&'a Secret>,
        env: Option<&'a str>,
        file: Option<&'a Path>,
    ) -> SecretRef<'a> {
        SecretRef {
            key: "sources.a.url".into(),
            inline,
            env,
            file,
        }
    }

    #[test]
    fn exactly_one_of_inline_env_and_file() {
        let secret = Secret("x".into());
        let none = reference(None, None, None).resolve().unwrap_err().0;
        assert!(
            none.contains("missing: set one of `url`, `url_env` or `url_file`"),
            "{none}"
        );
        let two = reference(Some(&secret), Some("X"), None)
            .resolve()
            .unwrap_err()
            .0;
        assert!(two.contains("set only one"), "{two}");
        assert_eq!(reference(None, None, None).resolve_optional(), Ok(None));
    }

    #[test]
    fn files_are_trimmed_and_unset_variables_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("url");
        std::fs::write(&path, "redis://secret@host:6379\n").unwrap();
        let secret = reference(None, None, Some(&path)).resolve().unwrap();
        assert_eq!(secret.expose(), "redis://secret@host:6379");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        let error = reference(None, Some("BACKLOG_SCALER_TEST_UNSET_VAR"), None)
            .resolve()
            .unwrap_err()
            .0;
        assert!(error.starts_with("`sources.a.url_env`"), "{error}");
    }

    #[test]
    fn ca_files_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let error = CaRoots::load("sources.a.tls_ca_file", &path).unwrap_err().0;
        assert!(error.contains("holds no PEM certificate"), "{error}");
        let missing = CaRoots::load("k", &dir.path().join("nope")).unwrap_err().0;
        assert!(missing.contains("cannot read"), "{missing}");
    }
}
