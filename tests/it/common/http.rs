//! The scaler's http port (`server.http_listen`) as a test reads it: a plain HTTP/1.1 GET, and
//! one sample of a `/metrics` scrape.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A plain HTTP/1.1 GET on 127.0.0.1: status code and body.
pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    http_get_accepting(port, path, "*/*").await
}

/// [`http_get`] with an `Accept` header, e.g. OpenMetrics' content type.
pub async fn http_get_accepting(port: u16, path: &str, accept: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connecting to the http port");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of one sample, matched by its name and labels as they are printed
/// (`backlog_scaler_measurements{source="redis-main"}`).
pub fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
}

/// One sample of a fresh `/metrics` scrape of the http port.
pub async fn scraped(port: u16, series: &str) -> Option<f64> {
    let (status, body) = http_get(port, "/metrics").await;
    assert_eq!(status, 200, "GET /metrics: {body}");
    sample(&body, series)
}
