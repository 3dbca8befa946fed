//! TLS and mTLS as KEDA's client dials them (kedacore/keda `pkg/scalers/external_scaler.go`):
//! the server certificate is verified against the `scalerAddress` host, ALPN must be `h2`, and
//! under mTLS the client sends its certificate only if the server's CertificateRequest names
//! its CA. Certificates are made in the test; rotation happens in place, as cert-manager does.

use crate::common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use backlog_scaler::proto::{ScaledObjectRef, external_scaler_client::ExternalScalerClient};
use common::{Scaler, assert_throughout, certs::TestCa, free_port, poll::poll_until};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// The scaler with `[server.tls]` from files in `dir`, and a plaintext health port.
async fn tls_scaler(dir: &std::path::Path, client_ca: bool, health_port: u16) -> Scaler {
    let client_ca = if client_ca {
        format!("client_ca = \"{}\"\n", dir.join("clients-ca.pem").display())
    } else {
        String::new()
    };
    Scaler::start(&format!(
        r#"
        [server]
        health_listen = "127.0.0.1:{health_port}"
        [server.tls]
        cert = "{dir}/server.pem"
        key = "{dir}/server.key"
        {client_ca}reload_interval = "100ms"
        [sources.redis-main]
        type = "redis"
        url = "redis://127.0.0.1:1/0"
        "#,
        dir = dir.display(),
    ))
    .await
}

fn spec_request() -> ScaledObjectRef {
    common::scaled_object(&[
        ("source", "redis-main"),
        ("metric", "redis-list"),
        ("keys", "jobs"),
        ("target", "5"),
    ])
}

/// A gRPC call over TLS as KEDA makes it: CA from `caCert`, optional client certificate.
async fn call_with(
    scaler: &Scaler,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<i64, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(format!("https://localhost:{}", scaler.address.port()))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    ExternalScalerClient::new(channel)
        .get_metric_spec(spec_request())
        .await
        .map(|r| r.into_inner().metric_specs[0].target_size)
        .map_err(|status| format!("{status:?}"))
}

/// What a raw rustls client sees of the server: ALPN, the certificate it was served and the
/// CA names the server's CertificateRequest advertised.
struct Handshake {
    alpn: Option<Vec<u8>>,
    served: Vec<u8>,
    hints: Vec<Vec<u8>>,
}

#[derive(Debug)]
struct RecordHints {
    hints: Mutex<Vec<Vec<u8>>>,
    key: Arc<rustls::sign::CertifiedKey>,
}

impl rustls::client::ResolvesClientCert for RecordHints {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        *self.hints.lock().unwrap() = root_hint_subjects.iter().map(|h| h.to_vec()).collect();
        Some(self.key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

async fn handshake(port: u16, ca_pem: &str, client: (&str, &str)) -> Handshake {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(client.0.as_bytes())
        .map(|c| c.unwrap())
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(client.1.as_bytes()).unwrap();
    let signing = provider.key_provider.load_private_key(key).unwrap();
    let resolver = Arc::new(RecordHints {
        hints: Mutex::default(),
        key: Arc::new(rustls::sign::CertifiedKey::new(chain, signing)),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let (_, session) = tls.get_ref();
    Handshake {
        alpn: session.alpn_protocol().map(|p| p.to_vec()),
        served: session.peer_certificates().unwrap()[0].to_vec(),
        hints: resolver.hints.lock().unwrap().clone(),
    }
}

fn der_of(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn mtls_serves_a_client_with_the_right_certificate_and_refuses_others() {
    let dir = tempfile::tempdir().unwrap();
    let servers = TestCa::new("servers");
    let clients = TestCa::new("clients");
    let strangers = TestCa::new("strangers");
    servers
        .server("backlog-scaler", &[])
        .write(dir.path(), "server");
    clients.write(dir.path());
    let scaler = tls_scaler(dir.path(), true, free_port()).await;
    let keda = clients.client("keda-operator");
    let outsider = strangers.client("keda-operator");

    let served = call_with(&scaler, &servers.pem, Some((&keda.cert_pem, &keda.key_pem))).await;
    assert_eq!(served, Ok(5));
    let anonymous = call_with(&scaler, &servers.pem, None).await;
    assert!(anonymous.is_err(), "no client certificate: {anonymous:?}");
    let foreign = call_with(
        &scaler,
        &servers.pem,
        Some((&outsider.cert_pem, &outsider.key_pem)),
    )
    .await;
    assert!(foreign.is_err(), "a certificate of another CA: {foreign:?}");
    // KEDA verifies the server against the scalerAddress host with the caCert it was given.
    let wrong_ca = call_with(
        &scaler,
        &strangers.pem,
        Some((&keda.cert_pem, &keda.key_pem)),
    )
    .await;
    assert!(
        wrong_ca.is_err(),
        "a server certificate of an untrusted CA: {wrong_ca:?}"
    );
}

#[tokio::test]
async fn the_handshake_offers_h2_and_names_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let servers = TestCa::new("servers");
    let clients = TestCa::new("clients");
    servers
        .server("backlog-scaler", &[])
        .write(dir.path(), "server");
    clients.write(dir.path());
    let scaler = tls_scaler(dir.path(), true, free_port()).await;
    let keda = clients.client("keda-operator");
    let seen = handshake(
        scaler.address.port(),
        &servers.pem,
        (&keda.cert_pem, &keda.key_pem),
    )
    .await;
    assert_eq!(
        seen.alpn.as_deref(),
        Some(&b"h2"[..]),
        "grpc-go refuses a server without h2"
    );
    // The hint is the DER of the CA's subject; its common name is readable inside it.
    assert!(
        seen.hints
            .iter()
            .any(|h| h.windows(7).any(|w| w == b"clients")),
        "the CertificateRequest must name the client CA: {:?}",
        seen.hints
    );
}

#[tokio::test]
async fn a_rotated_certificate_is_served_to_new_connections_and_a_bad_one_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let servers = TestCa::new("servers");
    let clients = TestCa::new("clients");
    let first = servers.server("first", &[]);
    first.write(dir.path(), "server");
    clients.write(dir.path());
    let scaler = tls_scaler(dir.path(), true, free_port()).await;
    let keda = clients.client("keda-operator");
    let identity = (keda.cert_pem.as_str(), keda.key_pem.as_str());
    let port = scaler.address.port();
    assert_eq!(
        handshake(port, &servers.pem, identity).await.served,
        der_of(&first.cert_pem)
    );

    // cert-manager writes the renewed certificate into the same files.
    let second = servers.server("second", &[]);
    second.write(dir.path(), "server");
    poll_until(
        "the rotated certificate to be served",
        Duration::from_secs(5),
        || async { handshake(port, &servers.pem, identity).await.served },
        |served| *served == der_of(&second.cert_pem),
    )
    .await;

    // A broken rotation (a key that does not match) keeps the last good certificate: every
    // handshake for five reload intervals (100 ms) after it serves the second one.
    std::fs::write(dir.path().join("server.key"), servers.client("x").key_pem).unwrap();
    assert_throughout(Duration::from_millis(500), async || {
        assert_eq!(
            handshake(port, &servers.pem, identity).await.served,
            der_of(&second.cert_pem)
        );
    })
    .await;
    assert_eq!(
        call_with(&scaler, &servers.pem, Some(identity)).await,
        Ok(5)
    );
}

#[tokio::test]
async fn plaintext_to_the_tls_port_fails_fast_and_probes_use_the_plaintext_health_port() {
    let dir = tempfile::tempdir().unwrap();
    let servers = TestCa::new("servers");
    servers
        .server("backlog-scaler", &[])
        .write(dir.path(), "server");
    let health_port = free_port();
    let scaler = tls_scaler(dir.path(), false, health_port).await;
    // Server TLS without client_ca: any client that trusts the CA is served.
    assert_eq!(call_with(&scaler, &servers.pem, None).await, Ok(5));

    let started = Instant::now();
    let plaintext = async {
        let channel = Channel::from_shared(scaler.endpoint())
            .unwrap()
            .connect()
            .await?;
        ExternalScalerClient::new(channel)
            .get_metric_spec(spec_request())
            .await
            .map_err(|s| s.into())
            .map(drop)
    };
    let outcome: Result<(), Box<dyn std::error::Error>> =
        tokio::time::timeout(Duration::from_secs(5), plaintext)
            .await
            .expect("no hang");
    assert!(
        outcome.is_err(),
        "plaintext must not be served on the TLS port"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // kubelet's gRPC probe speaks plaintext: the health-only port answers it.
    let channel = Channel::from_shared(format!("http://127.0.0.1:{health_port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "liveness".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, 1, "liveness SERVING on the plaintext health port");
}
