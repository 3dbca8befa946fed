//! Faults, bounds and hostile input: every `[server.limits]` bound at its stated default and
//! at a configured value, sockets that never speak and streams that stay open without crowding
//! out new requests, and SIGTERM with RPCs in flight.
//!
//! RPCs are held in flight honestly: their cold reads wait on a Redis frozen with SIGSTOP
//! (the kernel accepts the bytes, nothing answers), and the http port's
//! `backlog_scaler_measurements` shows the server side holding every one of them.

use crate::common;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use backlog_scaler::{
    config::{Config, ServerLimits},
    proto::{
        GetMetricsRequest, IsActiveResponse, ScaledObjectRef,
        external_scaler_client::ExternalScalerClient,
    },
};
use common::{
    RedisServer, Scaler, ScalerProcess,
    connections::{Http2Connection, closed_by_server, idle_sockets, raise_fd_limit},
    free_port,
    http::scraped,
    poll_until, project, push, scaled_object, wait_for_port,
};
use tokio::task::JoinSet;
use tonic::{Code, Status, Streaming, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// A request refused by a bound is refused at once: no queueing, no backend round trip. Far
/// above the few milliseconds it takes, far below KEDA's 3 s HPA deadline.
const REFUSED_WITHIN: Duration = Duration::from_millis(500);

/// How long the server side may take to see requests the test has sent (they cross loopback
/// and a shared 2-core machine).
const ARRIVES_WITHIN: Duration = Duration::from_secs(5);

const MEASUREMENTS: &str = r#"backlog_scaler_measurements{source="redis-main"}"#;

/// A config for one Redis source `redis-main`, with TOML lines added to `[server]`,
/// `[server.limits]` and `[measurements]`.
fn scaler_config(
    redis_url: &str,
    server: &[String],
    limits: &[&str],
    measurements: &[&str],
) -> String {
    format!(
        "[server]\n{}\n[server.limits]\n{}\n[measurements]\n{}\n\
         [sources.redis-main]\ntype = \"redis\"\nurl = \"{redis_url}\"\n",
        server.join("\n"),
        limits.join("\n"),
        measurements.join("\n"),
    )
}

fn http_listen(port: u16) -> String {
    format!("http_listen = \"127.0.0.1:{port}\"")
}

/// A redis-list trigger on `keys`, as KEDA sends it.
fn list_trigger(keys: &str) -> ScaledObjectRef {
    scaled_object(&[
        ("source", "redis-main"),
        ("metric", "redis-list"),
        ("keys", keys),
        ("target", "1"),
    ])
}

type Client = ExternalScalerClient<Channel>;

/// `count` clients, each on its own connection.
async fn clients(address: SocketAddr, count: usize) -> Vec<Client> {
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        clients.push(
            ExternalScalerClient::connect(format!("http://{address}"))
                .await
                .expect("connecting to the scaler"),
        );
    }
    clients
}

async fn value_of(client: &mut Client, trigger: ScaledObjectRef) -> Result<f64, Status> {
    let response = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(trigger),
            metric_name: String::new(),
        })
        .await?;
    Ok(response.into_inner().metric_values[0].metric_value_float)
}

/// Opens a StreamIsActive stream; the server's first message (the current activity) is
/// read by [`first_message`].
async fn open_stream(
    client: &mut Client,
    trigger: ScaledObjectRef,
) -> Result<Streaming<IsActiveResponse>, Status> {
    Ok(client.stream_is_active(trigger).await?.into_inner())
}

async fn first_message(stream: &mut Streaming<IsActiveResponse>) -> bool {
    tokio::time::timeout(ARRIVES_WITHIN, stream.message())
        .await
        .expect("a stream sends the current activity at once")
        .expect("the stream's first message")
        .expect("the stream is open")
        .result
}

async fn channel(address: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .expect("connecting to the scaler")
}

async fn health_on(channel: Channel, service: &str) -> Result<ServingStatus, Status> {
    let request = HealthCheckRequest {
        service: service.to_string(),
    };
    let response = HealthClient::new(channel).check(request).await?;
    Ok(response.into_inner().status())
}

async fn health(address: SocketAddr, service: &str) -> Result<ServingStatus, Status> {
    let channel = Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("connecting: {e}")))?;
    health_on(channel, service).await
}

async fn wait_until_ready(address: SocketAddr) {
    poll_until(
        "readiness is SERVING",
        Duration::from_secs(10),
        async || health(address, "readiness").await,
        |status| matches!(status, Ok(ServingStatus::Serving)),
    )
    .await
    .expect("polled until SERVING");
}

/// An answer with its status as `code: message`, so answers compare with `assert_eq!`.
fn plain<T>(answer: Result<T, Status>) -> Result<T, String> {
    answer.map_err(|status| format!("{:?}: {}", status.code(), status.message()))
}

/// Runs `request`, asserting it was answered within [`REFUSED_WITHIN`].
async fn at_once<T>(what: &str, request: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let answer = request.await;
    assert!(
        started.elapsed() < REFUSED_WITHIN,
        "{what}: answered in {:?}",
        started.elapsed()
    );
    answer
}

// === the stated defaults ===

#[test]
fn the_limits_documented_in_configuration_md_are_the_defaults() {
    let docs = std::fs::read_to_string(project().join("docs/configuration.md")).unwrap();
    let table = docs
        .split("### `[server.limits]`")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/configuration.md has a [server.limits] section");
    // `| `key`, `key` | `value`, `value` (note) | meaning |` rows.
    let mut documented = HashMap::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let ticked = |cell: &str| -> Vec<String> {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect()
        };
        let (keys, values) = (ticked(cells[1]), ticked(cells[2]));
        assert_eq!(keys.len(), values.len(), "one default per key: {row}");
        documented.extend(keys.into_iter().zip(values));
    }
    let config =
        Config::from_toml("[sources.r]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:1/0\"\n")
            .unwrap();
    let l: &ServerLimits = &config.server.limits;
    let duration = |d: Duration| format!("\"{}\"", humantime::format_duration(d));
    let defaults = [
        ("max_concurrent_rpcs", l.max_concurrent_rpcs.to_string()),
        ("max_streams", l.max_streams.to_string()),
        ("max_connections", l.max_connections.to_string()),
        ("handshake_timeout", duration(l.handshake_timeout)),
        ("keepalive_interval", duration(l.keepalive_interval)),
        ("keepalive_timeout", duration(l.keepalive_timeout)),
        ("max_request_bytes", l.max_request_bytes.to_string()),
        ("max_metadata_entries", l.max_metadata_entries.to_string()),
        (
            "max_metadata_value_bytes",
            l.max_metadata_value_bytes.to_string(),
        ),
        ("max_list_items", l.max_list_items.to_string()),
    ];
    assert_eq!(documented.len(), defaults.len(), "{documented:?}");
    for (key, value) in defaults {
        assert_eq!(documented.get(key), Some(&value), "`{key}`: {documented:?}");
    }
}

// === max_concurrent_rpcs ===

/// Fills `bound` RPC places with GetMetrics waiting on cold reads of a frozen Redis, then
/// checks what one more RPC gets, and that the waiting ones are answered once Redis thaws.
async fn assert_rpcs_bounded_at(limits: &[&str], bound: usize) {
    let redis = RedisServer::start();
    let http = free_port();
    let config = scaler_config(
        &redis.url(),
        &[http_listen(http)],
        limits,
        &[
            // Longer than the test holds Redis frozen: the reads wait, they do not fail.
            "timeout = \"20s\"",
        ],
    );
    let scaler = Scaler::start(&config).await;
    wait_until_ready(scaler.address).await;
    redis.freeze(true);

    let connections = clients(scaler.address, 10).await;
    let mut in_flight = JoinSet::new();
    for i in 0..bound {
        let mut client = connections[i % connections.len()].clone();
        in_flight
            .spawn(async move { value_of(&mut client, list_trigger(&format!("held-{i}"))).await });
    }
    poll_until(
        format!("the server holds {bound} RPCs, each on its own cold read"),
        ARRIVES_WITHIN,
        async || scraped(http, MEASUREMENTS).await,
        |live| *live == Some(bound as f64),
    )
    .await;

    // One more RPC, of any method, on a new connection: refused at once, naming the bound.
    let mut fresh = scaler.client().await;
    let refusals = [
        at_once("GetMetrics", value_of(&mut fresh, list_trigger("one-more")))
            .await
            .map(drop),
        at_once("IsActive", fresh.is_active(list_trigger("one-more")))
            .await
            .map(drop),
        at_once("GetMetricSpec", fresh.get_metric_spec(list_trigger("x")))
            .await
            .map(drop),
    ];
    for refused in refusals {
        let status = refused.expect_err("past max_concurrent_rpcs");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(
            status
                .message()
                .contains(&format!("server.limits.max_concurrent_rpcs = {bound}")),
            "{status:?}"
        );
    }
    // Probes are not RPCs that wait on a backend: kubelet's liveness probe is answered while
    // the bound is reached (a restart would not make a hung backend answer).
    for service in ["liveness", ""] {
        let status = at_once("health Check", health_on(scaler.channel().await, service)).await;
        assert_eq!(plain(status), Ok(ServingStatus::Serving), "{service:?}");
    }

    // Every RPC that was let in is answered (the keys do not exist: 0), then the places are
    // free again.
    redis.freeze(false);
    let mut answered = 0;
    while let Some(answer) = in_flight.join_next().await {
        assert_eq!(plain(answer.unwrap()), Ok(0.0), "an RPC let in is answered");
        answered += 1;
    }
    assert_eq!(answered, bound);
    assert_eq!(
        plain(value_of(&mut fresh, list_trigger("after")).await),
        Ok(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpcs_past_a_configured_max_concurrent_rpcs_are_resource_exhausted_at_once() {
    assert_rpcs_bounded_at(&["max_concurrent_rpcs = 16"], 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpcs_past_the_default_1000_in_flight_are_resource_exhausted_at_once() {
    assert_rpcs_bounded_at(&[], 1000).await;
}

// === max_streams ===

async fn assert_streams_bounded_at(limits: &[&str], bound: usize) {
    let redis = RedisServer::start();
    push(&mut redis.connection().await, "streamed", 2).await;
    let scaler = Scaler::start(&scaler_config(&redis.url(), &[], limits, &[])).await;
    let connections = clients(scaler.address, bound.div_ceil(50)).await;
    let mut streams = Vec::with_capacity(bound);
    // One after the other: opening a stream is an RPC too, and the configured case allows
    // fewer RPCs at once than streams.
    for i in 0..bound {
        let mut client = connections[i % connections.len()].clone();
        let stream = open_stream(&mut client, list_trigger("streamed"))
            .await
            .unwrap_or_else(|status| panic!("stream {i} of {bound}: {status:?}"));
        streams.push(stream);
    }
    for stream in &mut streams {
        assert!(first_message(stream).await, "2 items: active");
    }

    let mut fresh = scaler.client().await;
    let status = at_once(
        "StreamIsActive",
        open_stream(&mut fresh, list_trigger("streamed")),
    )
    .await
    .expect_err("past max_streams");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains(&format!("server.limits.max_streams = {bound}")),
        "{status:?}"
    );
    // Open streams are not RPCs in flight: other RPCs are served.
    let value = at_once("GetMetrics", value_of(&mut fresh, list_trigger("streamed"))).await;
    assert_eq!(plain(value), Ok(2.0));

    // A stream the client closes gives its place back.
    drop(streams.pop());
    let mut reopened = poll_until(
        "a closed stream's place is taken again",
        Duration::from_secs(5),
        async || open_stream(&mut fresh, list_trigger("streamed")).await,
        Result::is_ok,
    )
    .await
    .unwrap();
    assert!(first_message(&mut reopened).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_a_configured_max_streams_are_resource_exhausted() {
    // More streams than RPCs at once: streams do not hold RPC places.
    assert_streams_bounded_at(&["max_streams = 8", "max_concurrent_rpcs = 4"], 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_default_1000_are_resource_exhausted() {
    assert_streams_bounded_at(&[], 1000).await;
}

// === max_request_bytes ===

/// A redis-list trigger whose GetMetrics request encodes to at least `bytes` bytes.
fn padded_trigger(bytes: usize) -> ScaledObjectRef {
    let mut trigger = list_trigger("jobs");
    trigger
        .scaler_metadata
        .insert("padding".into(), "x".repeat(bytes));
    trigger
}

async fn assert_request_bounded_at(limits: &[&str], max_request_bytes: usize) {
    let redis = RedisServer::start();
    let scaler = Scaler::start(&scaler_config(&redis.url(), &[], limits, &[])).await;
    let mut client = scaler.client().await;

    let status = value_of(&mut client, padded_trigger(max_request_bytes))
        .await
        .expect_err("larger than max_request_bytes");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains(&max_request_bytes.to_string()),
        "names the limit: {status:?}"
    );
    let status = client
        .is_active(padded_trigger(max_request_bytes))
        .await
        .expect_err("larger than max_request_bytes");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");

    // Just under the bound, the request is decoded, and the metadata bound answers it.
    let status = value_of(&mut client, padded_trigger(max_request_bytes - 1024))
        .await
        .expect_err("a value longer than max_metadata_value_bytes");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("`padding`"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_a_configured_max_request_bytes_is_out_of_range() {
    assert_request_bounded_at(&["max_request_bytes = 65536"], 65536).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_default_4_mib_is_out_of_range() {
    assert_request_bounded_at(&[], 4 * 1024 * 1024).await;
}

// === metadata bounds ===

/// The bounds a config sets on one trigger's metadata.
struct MetadataBounds {
    entries: usize,
    value_bytes: usize,
    list_items: usize,
}

/// Commands the harness itself sends to Redis (`INFO commandstats` on a new connection).
fn harness_command(name: &str) -> bool {
    matches!(name, "info" | "hello" | "select" | "ping") || name.starts_with("client")
}

/// Calls of every command except the harness's own.
async fn backend_commands(redis: &RedisServer) -> HashMap<String, u64> {
    let mut calls = redis.command_calls().await;
    calls.retain(|name, _| !harness_command(name));
    calls
}

/// Every RPC that parses a trigger rejects `metadata` at once with INVALID_ARGUMENT whose
/// message names `key` and `bound`, and does not echo long values.
async fn assert_rejected(
    client: &mut Client,
    metadata: &HashMap<String, String>,
    key: &str,
    bound: &str,
) {
    let trigger = ScaledObjectRef {
        name: "worker".into(),
        namespace: "default".into(),
        scaler_metadata: metadata.clone(),
    };
    let what = format!("{} entries, `{key}` over {bound}", metadata.len());
    let answers = [
        at_once(&what, client.get_metric_spec(trigger.clone()))
            .await
            .map(drop),
        at_once(&what, client.is_active(trigger.clone()))
            .await
            .map(drop),
        at_once(&what, value_of(client, trigger.clone()))
            .await
            .map(drop),
        at_once(&what, open_stream(client, trigger.clone()))
            .await
            .map(drop),
    ];
    for answer in answers {
        let status = answer.expect_err(&what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        let message = status.message();
        assert!(message.contains(&format!("`{key}`")), "{what}: {message}");
        assert!(message.contains(bound), "{what}: {message}");
        assert!(message.len() < 400, "{what}: echoes the value: {message}");
    }
}

fn metadata(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn list_metadata(keys: &str) -> HashMap<String, String> {
    metadata(&[
        ("source", "redis-main"),
        ("metric", "redis-list"),
        ("keys", keys),
        ("target", "1"),
    ])
}

fn names(count: usize) -> String {
    (0..count)
        .map(|i| format!("queue:{i}"))
        .collect::<Vec<_>>()
        .join(",")
}

async fn assert_metadata_bounded_at(limits: &[&str], bounds: MetadataBounds) {
    let redis = RedisServer::start();
    // No background reads during the test: a probe now and then an hour of quiet, so every
    // command Redis counts comes from a request.
    let quiet = ["refresh_interval = \"1h\"", "max_staleness = \"2h\""];
    let scaler = Scaler::start(&scaler_config(&redis.url(), &[], limits, &quiet)).await;
    wait_until_ready(scaler.address).await;
    let mut client = scaler.client().await;
    let before = backend_commands(&redis).await;

    // Too many entries (KEDA's own keys count too).
    let mut crowded = list_metadata("jobs");
    for i in crowded.len()..=bounds.entries {
        crowded.insert(format!("extra-{i}"), "1".into());
    }
    assert_eq!(crowded.len(), bounds.entries + 1);
    assert_rejected(
        &mut client,
        &crowded,
        "scalerMetadata",
        "server.limits.max_metadata_entries",
    )
    .await;

    // A value, or a key, one byte too long.
    let long_value = list_metadata(&"k".repeat(bounds.value_bytes + 1));
    assert_rejected(
        &mut client,
        &long_value,
        "keys",
        "server.limits.max_metadata_value_bytes",
    )
    .await;
    let mut long_key = list_metadata("jobs");
    long_key.insert("k".repeat(bounds.value_bytes + 1), "1".into());
    let status = client
        .get_metric_spec(ScaledObjectRef {
            name: "worker".into(),
            namespace: "default".into(),
            scaler_metadata: long_key,
        })
        .await
        .expect_err("a key longer than max_metadata_value_bytes");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("server.limits.max_metadata_value_bytes")
            && status.message().len() < 400,
        "{status:?}"
    );

    // One list item too many, and a hostile 50,000: whichever bound it meets first.
    assert_rejected(
        &mut client,
        &list_metadata(&names(bounds.list_items + 1)),
        "keys",
        "server.limits.max_list_items",
    )
    .await;
    let hostile = names(50_000);
    let first_bound = if hostile.len() > bounds.value_bytes {
        "server.limits.max_metadata_value_bytes"
    } else {
        "server.limits.max_list_items"
    };
    assert_rejected(&mut client, &list_metadata(&hostile), "keys", first_bound).await;

    assert_eq!(
        backend_commands(&redis).await,
        before,
        "rejected metadata sent no command to Redis"
    );

    // At the bounds exactly, a trigger is measured (and that is seen in the counts).
    let at_bounds = [
        list_metadata(&names(bounds.list_items)),
        list_metadata(&"k".repeat(bounds.value_bytes)),
    ];
    for metadata in at_bounds {
        let trigger = ScaledObjectRef {
            name: "worker".into(),
            namespace: "default".into(),
            scaler_metadata: metadata,
        };
        assert_eq!(plain(value_of(&mut client, trigger).await), Ok(0.0));
    }
    // Exactly `entries` entries: whatever else is wrong, it is not their number.
    let mut at_entries = list_metadata("jobs");
    at_entries.insert("activationTarget".into(), "0".into());
    at_entries.insert(
        "scalerAddress".into(),
        "backlog-scaler.keda.svc:9090".into(),
    );
    for i in at_entries.len()..bounds.entries {
        at_entries.insert(format!("extra-{i}"), "1".into());
    }
    let padded = at_entries.len() > 6;
    let answer = client
        .get_metric_spec(ScaledObjectRef {
            name: "worker".into(),
            namespace: "default".into(),
            scaler_metadata: at_entries,
        })
        .await;
    match answer {
        Ok(_) => assert!(!padded, "unknown keys are rejected"),
        Err(status) => {
            assert!(padded, "{status:?}");
            assert!(
                status.message().contains("`extra-") && !status.message().contains("entries"),
                "{status:?}"
            );
        }
    }
    assert_ne!(
        backend_commands(&redis).await,
        before,
        "a measured trigger is read from Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_metadata_past_configured_bounds_is_invalid_argument_without_a_backend_command() {
    let limits = [
        "max_metadata_entries = 6",
        "max_metadata_value_bytes = 1048576",
        "max_list_items = 10",
    ];
    let bounds = MetadataBounds {
        entries: 6,
        value_bytes: 1024 * 1024,
        list_items: 10,
    };
    assert_metadata_bounded_at(&limits, bounds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_metadata_past_the_default_bounds_is_invalid_argument_without_a_backend_command()
{
    let bounds = MetadataBounds {
        entries: 64,
        value_bytes: 16 * 1024,
        list_items: 100,
    };
    assert_metadata_bounded_at(&[], bounds).await;
}

// === connections: handshake_timeout, keepalive, max_connections ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_speak_are_closed_after_handshake_timeout_and_pinged_ones_stay() {
    let redis = RedisServer::start();
    let limits = [
        "handshake_timeout = \"500ms\"",
        "keepalive_interval = \"300ms\"",
        "keepalive_timeout = \"300ms\"",
    ];
    let scaler = Scaler::start(&scaler_config(&redis.url(), &[], &limits, &[])).await;

    // Sockets that never send a byte: closed by the server at handshake_timeout, not before.
    let opened = Instant::now();
    let mut silent = idle_sockets(scaler.address, 3).await;
    for socket in &mut silent {
        let closed = closed_by_server(socket, Duration::from_secs(3)).await;
        let after = closed.expect("a silent connection is closed") - opened;
        assert!(
            after >= Duration::from_millis(450),
            "closed after {after:?}"
        );
    }

    // An HTTP/2 client that opens no stream but answers PINGs, as KEDA's idle connection
    // does: open long past handshake_timeout and several keepalive intervals.
    let mut answering = Http2Connection::open(scaler.address).await;
    let held = answering.hold(Duration::from_secs(3), true).await;
    assert_eq!(held.closed_after, None, "{held:?}");
    assert!(!held.goaway, "{held:?}");
    assert!(
        held.pings >= 2,
        "the server pings idle connections: {held:?}"
    );

    // One that does not answer is closed after keepalive_interval + keepalive_timeout.
    let mut deaf = Http2Connection::open(scaler.address).await;
    let held = deaf.hold(Duration::from_secs(5), false).await;
    let closed = held
        .closed_after
        .expect("an unanswered PING closes the connection");
    assert!(held.pings >= 1, "{held:?}");
    assert!(
        closed >= Duration::from_millis(500) && closed < Duration::from_secs(3),
        "{held:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_new_connections_are_closed_until_idle_ones_time_out() {
    let redis = RedisServer::start();
    let limits = ["max_connections = 8", "handshake_timeout = \"2s\""];
    let http = free_port();
    let config = scaler_config(&redis.url(), &[http_listen(http)], &limits, &[]);
    let scaler = Scaler::start(&config).await;
    tokio::task::spawn_blocking(move || wait_for_port(http, "the http port", ARRIVES_WITHIN))
        .await
        .unwrap();
    let mut idle = idle_sockets(scaler.address, 8).await;
    // The accept loop has counted all eight before the ninth arrives.
    poll_until(
        "the scaler holds the eight idle connections",
        ARRIVES_WITHIN,
        async || scraped(http, CONNECTIONS_OPEN).await,
        |open| *open == Some(8.0),
    )
    .await;
    let opened = Instant::now();
    let mut ninth = idle_sockets(scaler.address, 1).await.remove(0);
    let closed = closed_by_server(&mut ninth, Duration::from_secs(1)).await;
    assert!(
        closed.is_some(),
        "the connection past max_connections is closed at once, not after handshake_timeout"
    );
    let refused = health(scaler.address, "liveness").await;
    assert!(refused.is_err(), "no RPC past max_connections: {refused:?}");

    // The idle ones time out, and their places serve new clients again.
    for socket in &mut idle {
        closed_by_server(socket, Duration::from_secs(4))
            .await
            .expect("an idle connection is closed after handshake_timeout");
    }
    assert!(
        opened.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        opened.elapsed()
    );
    assert_eq!(
        plain(health(scaler.address, "liveness").await),
        Ok(ServingStatus::Serving)
    );
}

// === many idle sockets and open streams, and SIGTERM under load (the binary) ===

/// A new client's RPC is served within this while the server holds thousands of sockets and
/// streams: an answer from memory takes milliseconds.
const SERVED_WITHIN: Duration = Duration::from_secs(1);

const CONNECTIONS_OPEN: &str = "backlog_scaler_connections_open";

/// The next message of every stream is its end: a clean end of stream, within `within`.
async fn assert_streams_end(streams: &mut [Streaming<IsActiveResponse>], within: Duration) {
    for (i, stream) in streams.iter_mut().enumerate() {
        let end = tokio::time::timeout(within, stream.message())
            .await
            .unwrap_or_else(|_| panic!("stream {i} is still open after {within:?}"));
        assert!(matches!(end, Ok(None)), "stream {i} ends cleanly: {end:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_silent_connections_and_500_open_streams_do_not_stop_new_requests() {
    const SILENT: usize = 2000;
    const STREAMS: usize = 500;
    const STREAM_CONNECTIONS: usize = 10;
    // This process and the scaler each hold one end of every socket.
    raise_fd_limit(3 * SILENT as u64);
    let redis = RedisServer::start();
    push(&mut redis.connection().await, "streamed", 3).await;
    let (port, http) = (free_port(), free_port());
    let server = [
        format!("grpc_listen = \"127.0.0.1:{port}\""),
        http_listen(http),
    ];
    // Room for every socket of the test: it is not max_connections that is tested here.
    let limits = ["max_connections = 2100"];
    let mut process =
        ScalerProcess::spawn(&scaler_config(&redis.url(), &server, &limits, &[]), &[]);
    let address = process.wait_until_listening(port);
    wait_until_ready(address).await;

    let connections = clients(address, STREAM_CONNECTIONS).await;
    let mut streams = Vec::with_capacity(STREAMS);
    for i in 0..STREAMS {
        let mut client = connections[i % STREAM_CONNECTIONS].clone();
        streams.push(
            open_stream(&mut client, list_trigger("streamed"))
                .await
                .unwrap(),
        );
    }
    for stream in &mut streams {
        assert!(first_message(stream).await, "3 items: active");
    }
    let opened = Instant::now();
    let mut silent = idle_sockets(address, SILENT).await;
    poll_until(
        "the scaler holds every silent connection",
        ARRIVES_WITHIN,
        async || scraped(http, CONNECTIONS_OPEN).await,
        |open| open.is_some_and(|n| n >= (SILENT + STREAM_CONNECTIONS) as f64),
    )
    .await;

    // A new client, on a new connection, is served at once: its value and readiness.
    let started = Instant::now();
    let mut fresh = clients(address, 1).await.remove(0);
    assert_eq!(
        plain(value_of(&mut fresh, list_trigger("streamed")).await),
        Ok(3.0)
    );
    assert_eq!(
        plain(health_on(channel(address).await, "readiness").await),
        Ok(ServingStatus::Serving)
    );
    assert!(
        started.elapsed() < SERVED_WITHIN,
        "served in {:?}",
        started.elapsed()
    );

    // The silent connections are closed at the default handshake_timeout (10 s), not before;
    // the streams' connections, which spoke, stay open.
    for (i, socket) in silent.iter_mut().enumerate() {
        let closed = closed_by_server(socket, Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("silent connection {i} is still open after 15 s"));
        let after = closed - opened;
        assert!(
            after >= Duration::from_secs(9) && after < Duration::from_secs(14),
            "silent connection {i} closed after {after:?}"
        );
    }
    poll_until(
        "only the connections that spoke are left",
        ARRIVES_WITHIN,
        async || scraped(http, CONNECTIONS_OPEN).await,
        |open| open.is_some_and(|n| n < 20.0),
    )
    .await;
    let _: () = redis::cmd("DEL")
        .arg("streamed")
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();
    for stream in &mut streams {
        assert!(
            !first_message(stream).await,
            "every stream is live: the change arrives"
        );
    }

    // SIGTERM ends every stream and the process at once, not after shutdown_grace (10 s).
    let terminated = Instant::now();
    process.terminate();
    assert_streams_end(&mut streams, Duration::from_secs(2)).await;
    let status = process.wait_for_exit();
    assert!(status.success(), "{status}: {}", process.stderr());
    assert!(
        terminated.elapsed() < Duration::from_secs(3),
        "exited {:?} after SIGTERM: {}",
        terminated.elapsed(),
        process.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_200_rpcs_in_flight_goes_not_serving_ends_streams_answers_every_rpc_and_exits_0()
 {
    const IN_FLIGHT: usize = 200;
    const STREAMS: usize = 20;
    let grace = Duration::from_secs(8);
    let redis = RedisServer::start();
    let mut connection = redis.connection().await;
    let backlog = |i: usize| i % 5 + 1;
    for i in 0..IN_FLIGHT {
        push(&mut connection, &format!("drain-{i}"), backlog(i)).await;
    }
    push(&mut connection, "streamed", 1).await;
    let (port, http) = (free_port(), free_port());
    let server = [
        format!("grpc_listen = \"127.0.0.1:{port}\""),
        http_listen(http),
        format!("shutdown_grace = \"{}s\"", grace.as_secs()),
    ];
    // Reads wait for the frozen Redis rather than fail: its response timeout is half of this.
    let measurements = ["timeout = \"12s\""];
    let config = scaler_config(&redis.url(), &server, &[], &measurements);
    let mut process = ScalerProcess::spawn(&config, &[]);
    let address = process.wait_until_listening(port);
    wait_until_ready(address).await;

    // A client watching readiness, as gRPC client-side health checking does.
    let request = HealthCheckRequest {
        service: "readiness".into(),
    };
    let mut readiness = HealthClient::new(channel(address).await)
        .watch(request)
        .await
        .unwrap()
        .into_inner();
    let first = readiness.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    let connections = clients(address, 2).await;
    let mut streams = Vec::with_capacity(STREAMS);
    for i in 0..STREAMS {
        let mut client = connections[i % 2].clone();
        let mut stream = open_stream(&mut client, list_trigger("streamed"))
            .await
            .unwrap();
        assert!(first_message(&mut stream).await);
        streams.push(stream);
    }

    // 200 GetMetrics, each on its own cold read of a Redis that does not answer.
    redis.freeze(true);
    let answered = Arc::new(AtomicUsize::new(0));
    let connections = clients(address, 4).await;
    let mut in_flight = JoinSet::new();
    for i in 0..IN_FLIGHT {
        let (mut client, answered) = (connections[i % 4].clone(), answered.clone());
        in_flight.spawn(async move {
            let answer = value_of(&mut client, list_trigger(&format!("drain-{i}"))).await;
            answered.fetch_add(1, Ordering::SeqCst);
            (i, answer)
        });
    }
    poll_until(
        format!("the scaler holds {IN_FLIGHT} RPCs on their cold reads"),
        ARRIVES_WITHIN,
        async || scraped(http, MEASUREMENTS).await,
        |live| *live == Some((IN_FLIGHT + 1) as f64),
    )
    .await;

    let terminated = Instant::now();
    process.terminate();
    // Readiness goes NOT_SERVING first, while every RPC is still in flight.
    let next = tokio::time::timeout(Duration::from_secs(1), readiness.message())
        .await
        .expect("readiness changes at once on SIGTERM");
    let status = next.unwrap().expect("the watch is still open").status();
    assert_eq!(status, ServingStatus::NotServing);
    assert_eq!(
        answered.load(Ordering::SeqCst),
        0,
        "NOT_SERVING comes first"
    );
    // Streams end, and the listener takes no new connection, while Redis is still frozen.
    assert_streams_end(&mut streams, Duration::from_secs(2)).await;
    let end = tokio::time::timeout(Duration::from_secs(2), readiness.message()).await;
    assert!(
        matches!(end, Ok(Ok(None))),
        "the readiness watch ends after NOT_SERVING: {end:?}"
    );
    let refused = health(address, "liveness").await;
    assert!(
        refused.is_err(),
        "a new connection after SIGTERM: {refused:?}"
    );
    assert_eq!(answered.load(Ordering::SeqCst), 0, "nothing answered yet");

    // Redis answers again: every RPC in flight gets its value, not a transport error.
    redis.freeze(false);
    let thawed = Instant::now();
    while let Some(joined) = in_flight.join_next().await {
        let (i, answer) = joined.unwrap();
        assert_eq!(plain(answer), Ok(backlog(i) as f64), "RPC {i}");
    }
    let status = process.wait_for_exit();
    let stderr = process.stderr();
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        terminated.elapsed() < grace,
        "exited {:?} after SIGTERM",
        terminated.elapsed()
    );
    // Drained, it exits: the readiness watch does not hold it to the grace.
    assert!(
        thawed.elapsed() < Duration::from_secs(3),
        "exited {:?} after the last RPC could finish: {stderr}",
        thawed.elapsed()
    );
    assert!(
        !stderr.contains("did not finish within shutdown_grace"),
        "{stderr}"
    );
}

/// The scaler's connections in Redis's CLIENT LIST: every client but the one asking.
async fn scaler_clients(redis: &RedisServer) -> Vec<String> {
    let mut connection = redis.connection().await;
    let own: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut connection)
        .await
        .unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut connection)
        .await
        .unwrap();
    let own = format!("id={own} ");
    list.lines()
        .filter(|line| !line.starts_with(&own))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_returns_after_every_listener_stream_and_refresher_it_started_has_ended() {
    // Long, so returning by joining (well within it) cannot be mistaken for giving up at it.
    let grace = Duration::from_secs(20);
    let redis = RedisServer::start();
    push(&mut redis.connection().await, "owned", 2).await;
    let (http, health_port) = (free_port(), free_port());
    let server = [
        http_listen(http),
        format!("health_listen = \"127.0.0.1:{health_port}\""),
        format!("shutdown_grace = \"{}s\"", grace.as_secs()),
    ];
    // A read of the frozen Redis below ends at this timeout, not before: the Redis source
    // waits for an answer half of `measurements.timeout`.
    let read_timeout = Duration::from_secs(2);
    let measurements = [format!("timeout = \"{}s\"", 2 * read_timeout.as_secs())];
    let measurements: Vec<&str> = measurements.iter().map(String::as_str).collect();
    let config = scaler_config(&redis.url(), &server, &[], &measurements);
    let mut scaler = Scaler::start(&config).await;
    wait_until_ready(scaler.address).await;

    // A stream, a kept-alive http connection, a health check on the plaintext port, and the
    // refresher's connection in Redis.
    let mut client = clients(scaler.address, 1).await.remove(0);
    let mut stream = open_stream(&mut client, list_trigger("owned"))
        .await
        .unwrap();
    assert!(first_message(&mut stream).await);
    let mut kept_alive = tokio::net::TcpStream::connect(("127.0.0.1", http))
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut kept_alive,
        b"GET /healthz HTTP/1.1\r\nHost: scaler\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = [0u8; 64];
    let read = tokio::io::AsyncReadExt::read(&mut kept_alive, &mut answer)
        .await
        .unwrap();
    assert!(answer[..read].starts_with(b"HTTP/1.1 200"), "{answer:?}");
    let plain_health = SocketAddr::from(([127, 0, 0, 1], health_port));
    assert_eq!(
        plain(health(plain_health, "liveness").await),
        Ok(ServingStatus::Serving)
    );
    let before = scaler_clients(&redis).await;
    assert!(!before.is_empty(), "the scaler reads Redis: {before:?}");
    // A cold read whose request KEDA gave up on goes on in an engine task: on a frozen Redis
    // it lasts until its timeout, so `run` must wait for it.
    redis.freeze(true);
    let read_started = Instant::now();
    let given_up = tokio::time::timeout(
        Duration::from_millis(300),
        value_of(&mut client, list_trigger("read-while-stopping")),
    )
    .await;
    assert!(given_up.is_err(), "the frozen Redis answered: {given_up:?}");

    scaler.shut_down().await.expect("run returns Ok");
    let took = read_started.elapsed();
    redis.freeze(false);
    assert!(
        took >= read_timeout - Duration::from_millis(200),
        "run returned {took:?} after the cold read began, before its {read_timeout:?} timeout: \
         it did not wait for the task reading it"
    );
    assert!(
        took < read_timeout + Duration::from_secs(3),
        "run returned {took:?} after the cold read began: it joined its tasks, not waited out \
         the {grace:?} grace"
    );

    // When `run` has returned, everything it started has ended.
    assert_streams_end(
        std::slice::from_mut(&mut stream),
        Duration::from_millis(500),
    )
    .await;
    assert!(
        closed_by_server(&mut kept_alive, Duration::from_millis(500))
            .await
            .is_some(),
        "the http connection is closed"
    );
    for (port, what) in [(http, "http_listen"), (health_port, "health_listen")] {
        let refused = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
        assert!(refused.is_err(), "{what} still accepts after run returned");
    }
    let refused = tokio::net::TcpStream::connect(scaler.address).await;
    assert!(
        refused.is_err(),
        "grpc_listen still accepts after run returned"
    );
    // The sockets close as the dropped clients' I/O drivers finish; Redis sees it next.
    poll_until(
        "the scaler's Redis connections are gone",
        Duration::from_secs(2),
        async || scaler_clients(&redis).await,
        |clients| clients.is_empty(),
    )
    .await;
}
