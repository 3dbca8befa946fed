//! Certificates made in the test: a CA, server certificates for `localhost` / `127.0.0.1`
//! and client certificates, written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

/// A certificate authority that signs server and client certificates.
pub struct TestCa {
    pub pem: String,
    pub name: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM text.
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa {
            pem,
            name: name.to_string(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `localhost` and `127.0.0.1`, and the given extra names.
    pub fn server(&self, common_name: &str, extra_names: &[&str]) -> TestCert {
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        names.extend(extra_names.iter().map(|n| n.to_string()));
        self.sign(names, common_name, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A server certificate for exactly `names` (none of the defaults), e.g. one that does not
    /// name the address a client dials.
    pub fn server_for(&self, common_name: &str, names: &[&str]) -> TestCert {
        let names = names.iter().map(|n| n.to_string()).collect();
        self.sign(names, common_name, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate (what KEDA's TriggerAuthentication gives as `tlsClientCert`).
    pub fn client(&self, common_name: &str) -> TestCert {
        self.sign(Vec::new(), common_name, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn sign(
        &self,
        names: Vec<String>,
        common_name: &str,
        usage: ExtendedKeyUsagePurpose,
    ) -> TestCert {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        TestCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("{}-ca.pem", self.name));
        std::fs::write(&path, &self.pem).unwrap();
        path
    }
}

impl TestCert {
    /// Writes `NAME.pem` and `NAME.key`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }
}
