use std::collections::HashMap;

use super::*;
use crate::{
    metadata::{Metadata, parse_metric},
    sources::redis::{RedisQuery, metrics::METRICS},
};

/// 2023-11-14T22:13:20Z.
const NOW_MS: i64 = 1_700_000_000_000;

fn parse(pairs: &[(&str, &str)]) -> Result<RedisQuery> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let metric = map.get("metric").cloned().unwrap_or_default();
    parse_metric(METRICS, &metric, &Metadata::new(&map), &()).map(|parsed| parsed.query)
}

fn latency(pairs: &[(&str, &str)]) -> RedisQuery {
    let mut all = vec![("measure", "latency")];
    all.extend_from_slice(pairs);
    parse(&all).unwrap()
}

fn bulk(text: &str) -> Value {
    Value::BulkString(text.as_bytes().to_vec())
}

/// Runs a refresh as the source does: `first` answers the query's reads; the follow-up
/// reads it then asks for are answered from `store` (Nil for anything else).
fn measure(
    query: &RedisQuery,
    first: &[Value],
    store: &[(RedisRead, Value)],
) -> (Result<f64>, Vec<RedisRead>) {
    let reads = query.reads(NOW_MS);
    assert_eq!(reads.len(), first.len(), "one reply per read: {reads:?}");
    let pairs: Vec<(&RedisRead, &Value)> = reads.iter().zip(first).collect();
    let follow_ups = query.follow_up_reads(&pairs);
    let answers: Vec<Value> = follow_ups
        .iter()
        .map(|read| {
            store
                .iter()
                .find(|(stored, _)| stored == read)
                .map_or(Value::Nil, |(_, value)| value.clone())
        })
        .collect();
    let second: Vec<(&RedisRead, &Value)> = follow_ups.iter().zip(&answers).collect();
    let value = query.combine("s", NOW_MS, &pairs, &second);
    (value, follow_ups)
}

/// A server error reply, as Redis sends it (`-CODE detail`).
fn server_error(line: &str) -> Value {
    let value = redis::parse_redis_value(format!("-{line}\r\n").as_bytes()).unwrap();
    assert!(matches!(value, Value::ServerError(_)), "{value:?}");
    value
}

fn wrongtype() -> Value {
    server_error("WRONGTYPE Operation against a key holding the wrong kind of value")
}

#[test]
fn sidekiq_reads_both_timestamp_formats() {
    // Sidekiq ≤ 7: float seconds; Sidekiq 8: integer milliseconds.
    assert_eq!(
        sidekiq_enqueued_ms(br#"{"class":"W","enqueued_at":1700000000.25}"#),
        Some(1_700_000_000_250.0)
    );
    assert_eq!(
        sidekiq_enqueued_ms(br#"{"enqueued_at":1700000000250,"args":[1]}"#),
        Some(1_700_000_000_250.0)
    );
    // A float that happens to be whole is still seconds, as Ruby writes `1700000000.0`.
    assert_eq!(
        sidekiq_enqueued_ms(br#"{"enqueued_at":1700000000.0}"#),
        Some(1_700_000_000_000.0)
    );
    for unreadable in [
        &br#"{"class":"W"}"#[..],
        br#"{"enqueued_at":null}"#,
        br#"{"enqueued_at":"yesterday"}"#,
        br#"{"enqueued_at":-5.0}"#,
        br#"{"enqueued_at":0}"#,
        b"not json",
        b"",
    ] {
        assert_eq!(
            sidekiq_enqueued_ms(unreadable),
            None,
            "{}",
            String::from_utf8_lossy(unreadable)
        );
    }
}

#[test]
fn sidekiq_latency_is_the_age_of_the_job_taken_next() {
    let query = latency(&[("metric", "sidekiq"), ("queue", "default")]);
    assert_eq!(
        query.reads(NOW_MS),
        vec![RedisRead::Lindex("queue:default".into(), -1)]
    );
    let job = |enqueued_at: &str| bulk(&format!(r#"{{"enqueued_at":{enqueued_at}}}"#));
    let cases = [
        (job("1699999990.5"), 9.5),
        (job("1699999990500"), 9.5),
        // Clock skew: a producer ahead of the scaler makes a future time; never negative.
        (job("1700000003.0"), 0.0),
        (job("1700000003000"), 0.0),
        // Nothing waits.
        (Value::Nil, 0.0),
        // No readable time: skipped, not made up.
        (bulk(r#"{"class":"W"}"#), 0.0),
        (bulk("garbage"), 0.0),
    ];
    for (head, expected) in cases {
        let (value, follow_ups) = measure(&query, std::slice::from_ref(&head), &[]);
        assert_eq!(value.unwrap(), expected, "{head:?}");
        assert!(follow_ups.is_empty(), "the job JSON holds its time");
    }
    let (value, _) = measure(&query, &[wrongtype()], &[]);
    let error = value.unwrap_err().to_string();
    assert!(
        error.contains("`queue:default`") && error.contains("a list"),
        "{error}"
    );

    let namespaced = latency(&[
        ("metric", "sidekiq"),
        ("queue", "default"),
        ("namespace", "app"),
    ]);
    assert_eq!(
        namespaced.reads(0),
        vec![RedisRead::Lindex("app:queue:default".into(), -1)]
    );
}

#[test]
fn rq_timestamps() {
    assert_eq!(
        rq_enqueued_ms(b"2023-11-14T22:13:10.250000Z"),
        Some(1_699_999_990_250.0)
    );
    // RQ before 1.0 wrote no fraction.
    assert_eq!(
        rq_enqueued_ms(b"2023-11-14T22:13:10Z"),
        Some(1_699_999_990_000.0)
    );
    for unreadable in [&b"2023-11-14 22:13:10"[..], b"", b"1699999990", b"\xff"] {
        assert_eq!(rq_enqueued_ms(unreadable), None);
    }
}

#[test]
fn rq_latency_is_the_age_of_the_first_job_that_exists() {
    let query = latency(&[("metric", "rq"), ("queue", "high")]);
    assert_eq!(
        query.reads(0),
        vec![RedisRead::Lrange("rq:queue:high".into(), 0, 3)]
    );
    let hash = |id: &str| RedisRead::Hget(format!("rq:job:{id}"), "enqueued_at");
    let ids = Value::Array(vec![bulk("a"), bulk("b"), bulk("c")]);
    let store = [
        (hash("a"), bulk("2023-11-14T22:13:08.000000Z")),
        (hash("b"), bulk("2023-11-14T22:13:18.000000Z")),
        (hash("c"), bulk("2023-11-14T22:13:00.000000Z")),
    ];
    let (value, follow_ups) = measure(&query, std::slice::from_ref(&ids), &store);
    assert_eq!(follow_ups, vec![hash("a"), hash("b"), hash("c")]);
    // The first job, the one RQ dequeues next (not the oldest of the three).
    assert_eq!(value.unwrap(), 12.0);
    // Its hash expired (`ttl`) or its time is unreadable: RQ skips it, so does latency.
    let (value, _) = measure(&query, std::slice::from_ref(&ids), &store[1..]);
    assert_eq!(value.unwrap(), 2.0);
    let garbled = [(hash("a"), bulk("soon")), store[1].clone()];
    let (value, _) = measure(&query, std::slice::from_ref(&ids), &garbled);
    assert_eq!(value.unwrap(), 2.0);
    let (value, _) = measure(&query, std::slice::from_ref(&ids), &[]);
    assert_eq!(value.unwrap(), 0.0);
    // An empty queue asks for nothing more.
    let (value, follow_ups) = measure(&query, &[Value::Array(vec![])], &[]);
    assert_eq!((value.unwrap(), follow_ups), (0.0, vec![]));
    let (value, _) = measure(&query, &[wrongtype()], &[]);
    assert!(value.unwrap_err().to_string().contains("`rq:queue:high`"));
}

fn bullmq_job(id: &str, timestamp: &str) -> (RedisRead, Value) {
    (
        RedisRead::Hget(format!("bull:mail:{id}"), "timestamp"),
        bulk(timestamp),
    )
}

#[test]
fn bullmq_latency_is_the_oldest_head() {
    let query = latency(&[("metric", "bullmq"), ("queue", "mail")]);
    assert_eq!(
        query.reads(NOW_MS),
        vec![
            RedisRead::Hexists("bull:mail:meta".into(), "paused"),
            RedisRead::Lindex("bull:mail:wait".into(), -1),
            RedisRead::Lindex("bull:mail:paused".into(), -1),
            RedisRead::ZrangeFirst("bull:mail:prioritized".into()),
            RedisRead::ZrangeFirst("bull:mail:delayed".into()),
        ]
    );
    let store = [
        bullmq_job("1", "1699999995000"),
        bullmq_job("7", "1699999980000"),
        bullmq_job("9", "1699999999000"),
    ];
    let empty = Value::Array(vec![]);
    // Due 3 s ago (score = due_ms · 0x1000 + counter), and due in an hour.
    let due = |ms: i64| bulk(&(ms * 0x1000 + 5).to_string());
    let delayed = |ms: i64| Value::Array(vec![bulk("d"), due(ms)]);
    let not_paused = Value::Int(0);

    // wait head 1 (5 s), prioritized 7 (20 s): the older one.
    let first = [
        not_paused.clone(),
        bulk("1"),
        Value::Nil,
        Value::Array(vec![bulk("7"), bulk("4294967297")]),
        empty.clone(),
    ];
    let (value, follow_ups) = measure(&query, &first, &store);
    assert_eq!(value.unwrap(), 20.0);
    assert_eq!(follow_ups, vec![store[0].0.clone(), store[1].0.clone()]);

    // A due delayed job waits from its due time, not from when it was added.
    let first = [
        not_paused.clone(),
        bulk("9"),
        Value::Nil,
        empty.clone(),
        delayed(NOW_MS - 3000),
    ];
    assert_eq!(measure(&query, &first, &store).0.unwrap(), 3.0);
    // One not due yet does not wait.
    let first = [
        not_paused.clone(),
        bulk("9"),
        Value::Nil,
        empty.clone(),
        delayed(NOW_MS + 3_600_000),
    ];
    assert_eq!(measure(&query, &first, &store).0.unwrap(), 1.0);
    let first = [
        not_paused.clone(),
        Value::Nil,
        Value::Nil,
        empty.clone(),
        delayed(NOW_MS + 3_600_000),
    ];
    let (value, follow_ups) = measure(&query, &first, &store);
    assert_eq!((value.unwrap(), follow_ups), (0.0, vec![]));

    // RESP3's [[member, score]] form, and a BullMQ 4 marker in the wait list.
    let first = [
        not_paused.clone(),
        bulk("0:0"),
        Value::Nil,
        Value::Array(vec![Value::Array(vec![bulk("7"), Value::Double(2.0)])]),
        Value::Array(vec![Value::Array(vec![
            bulk("d"),
            Value::Double(((NOW_MS - 500) * 0x1000) as f64),
        ])]),
    ];
    let (value, follow_ups) = measure(&query, &first, &store);
    assert_eq!(value.unwrap(), 20.0);
    assert_eq!(follow_ups, vec![store[1].0.clone()], "markers are not jobs");

    // A head whose hash is gone or has no timestamp is skipped; the others still count.
    let first = [
        not_paused.clone(),
        bulk("gone"),
        bulk("1"),
        empty.clone(),
        empty.clone(),
    ];
    assert_eq!(measure(&query, &first, &store).0.unwrap(), 5.0);
    let first = [not_paused, bulk("gone"), Value::Nil, empty.clone(), empty];
    assert_eq!(measure(&query, &first, &store).0.unwrap(), 0.0);
}

#[test]
fn a_paused_bullmq_queue_follows_count_when_paused() {
    let paused = [
        Value::Int(1),
        Value::Nil,
        bulk("1"),
        Value::Array(vec![]),
        Value::Array(vec![]),
    ];
    let store = [bullmq_job("1", "1699999990000")];
    let query = latency(&[("metric", "bullmq"), ("queue", "mail")]);
    let (value, follow_ups) = measure(&query, &paused, &store);
    assert_eq!((value.unwrap(), follow_ups), (0.0, vec![]));
    let counted = latency(&[
        ("metric", "bullmq"),
        ("queue", "mail"),
        ("countWhenPaused", "true"),
    ]);
    assert_eq!(measure(&counted, &paused, &store).0.unwrap(), 10.0);
}

#[test]
fn bullmq_timestamps() {
    assert_eq!(bullmq_ms(b"1700000000123"), Some(1_700_000_000_123.0));
    assert_eq!(bullmq_ms(b"soon"), None);
    assert_eq!(bullmq_ms(b"-1"), None);
    assert_eq!(
        bullmq_due_ms((1_700_000_000_123_i64 * 0x1000 + 0xfff) as f64),
        Some(1_700_000_000_123.0)
    );
}

fn groups(last_delivered: &str) -> Value {
    Value::Array(vec![Value::Array(vec![
        bulk("name"),
        bulk("workers"),
        bulk("last-delivered-id"),
        bulk(last_delivered),
    ])])
}

#[test]
fn stream_latency_is_the_oldest_unfinished_entry() {
    let query = latency(&[
        ("metric", "redis-stream"),
        ("stream", "events"),
        ("group", "workers"),
    ]);
    assert_eq!(
        query.reads(0),
        vec![
            RedisRead::XinfoGroups("events".into()),
            RedisRead::XpendingSummary("events".into(), "workers".into()),
        ]
    );
    // Pending entries: the oldest of them, from the summary alone.
    let pending = Value::Array(vec![
        Value::Int(3),
        bulk("1699999996000-0"),
        bulk("1699999999000-2"),
        Value::Array(vec![]),
    ]);
    let (value, follow_ups) = measure(&query, &[groups("1699999999000-2"), pending], &[]);
    assert_eq!((value.unwrap(), follow_ups), (4.0, vec![]));

    // Nothing pending: the first entry after the group's last-delivered-id.
    let none_pending = Value::Array(vec![Value::Int(0), Value::Nil, Value::Nil, Value::Nil]);
    let next = RedisRead::XrangeFirst("events".into(), "1699999990000-4".into());
    let entry = Value::Array(vec![Value::Array(vec![
        bulk("1699999992000-0"),
        Value::Array(vec![bulk("n"), bulk("1")]),
    ])]);
    let (value, follow_ups) = measure(
        &query,
        &[groups("1699999990000-3"), none_pending.clone()],
        &[(next.clone(), entry)],
    );
    assert_eq!(follow_ups, vec![next.clone()]);
    assert_eq!(value.unwrap(), 8.0);
    // Everything delivered and acknowledged.
    let (value, _) = measure(
        &query,
        &[groups("1699999990000-3"), none_pending.clone()],
        &[(next, Value::Array(vec![]))],
    );
    assert_eq!(value.unwrap(), 0.0);
    // A sequence at its maximum moves to the next millisecond.
    assert_eq!(
        next_entry_id("5-18446744073709551615").as_deref(),
        Some("6-0")
    );

    // A stream that does not exist waits for nothing; a missing group is an error.
    let no_stream = server_error("ERR no such key");
    let (value, follow_ups) = measure(&query, &[no_stream, none_pending.clone()], &[]);
    assert_eq!((value.unwrap(), follow_ups), (0.0, vec![]));
    let other_group = Value::Array(vec![Value::Array(vec![
        bulk("name"),
        bulk("others"),
        bulk("last-delivered-id"),
        bulk("0-0"),
    ])]);
    let error = measure(&query, &[other_group, none_pending], &[])
        .0
        .unwrap_err()
        .to_string();
    assert!(error.contains("no consumer group `workers`"), "{error}");
}

#[test]
fn entry_ids() {
    assert_eq!(entry_id_ms("1700000000000-3"), Some(1_700_000_000_000.0));
    assert_eq!(entry_id_ms("0-1"), None);
    assert_eq!(entry_id_ms("x-1"), None);
    assert_eq!(entry_id_ms("17"), None);
}

#[test]
fn ages_never_go_negative() {
    assert_eq!(age_seconds(NOW_MS, (NOW_MS - 1500) as f64), 1.5);
    assert_eq!(age_seconds(NOW_MS, (NOW_MS + 60_000) as f64), 0.0);
}

fn invalid_key(pairs: &[(&str, &str)]) -> (String, String) {
    match parse(pairs) {
        Err(Error::InvalidMetadata { key, reason }) => (key, reason),
        other => panic!("{pairs:?}: {other:?}"),
    }
}

#[test]
fn measure_is_checked_per_metric() {
    for metric in ["sidekiq", "rq", "bullmq"] {
        let query = latency(&[("metric", metric), ("queue", "q")]);
        assert!(matches!(query, RedisQuery::Latency { .. }), "{query:?}");
        let backlog = parse(&[("metric", metric), ("queue", "q"), ("measure", "backlog")]);
        assert_eq!(
            backlog.unwrap(),
            parse(&[("metric", metric), ("queue", "q")]).unwrap()
        );
        let (key, message) = invalid_key(&[("metric", metric), ("queue", "q"), ("measure", "age")]);
        assert_eq!(key, "measure");
        assert!(message.contains("accepted: backlog, latency"), "{message}");
    }
    let (key, message) =
        invalid_key(&[("metric", "celery"), ("queue", "q"), ("measure", "latency")]);
    assert_eq!(key, "measure");
    assert!(
        message.contains("kombu") && message.contains("redis-stream"),
        "{message}"
    );
    let (key, message) = invalid_key(&[
        ("metric", "redis-list"),
        ("keys", "a"),
        ("measure", "latency"),
    ]);
    assert_eq!(key, "measure");
    assert!(
        message.contains("plain list items carry no enqueue time"),
        "{message}"
    );
    let (_, message) = invalid_key(&[("metric", "redis-list"), ("keys", "a"), ("measure", "age")]);
    assert!(message.contains("accepted: backlog"), "{message}");
    assert!(parse(&[("metric", "celery"), ("queue", "q"), ("measure", "backlog")]).is_ok());

    let stream = [
        ("metric", "redis-stream"),
        ("stream", "s"),
        ("measure", "latency"),
    ];
    assert_eq!(invalid_key(&stream).0, "group");
    let mut with_mode = stream.to_vec();
    with_mode.extend([("group", "g"), ("mode", "lag")]);
    assert_eq!(invalid_key(&with_mode).0, "mode");
    let (key, _) = invalid_key(&[
        ("metric", "bullmq"),
        ("queue", "q"),
        ("measure", "latency"),
        ("includeActive", "true"),
    ]);
    assert_eq!(key, "includeActive");
}
