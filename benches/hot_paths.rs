//! Criterion micro-benchmarks of the request hot path: decoding a GetMetrics request, finding
//! its parsed trigger (or parsing it), naming the metric, answering a warm measurement from
//! the engine's memory and encoding the answer.
//!
//! `cargo bench --bench hot_paths`

use std::{collections::HashMap, hint::black_box, sync::Arc, time::Duration};

use backlog_scaler::{
    Result,
    config::Config,
    engine::{Engine, Limits, SourceEntry},
    metadata::{Metadata, Parsed},
    metrics::Metrics,
    naming,
    proto::{GetMetricsRequest, GetMetricsResponse, MetricValue, ScaledObjectRef},
    sources::{Query, RefreshSettings, Source},
    trigger::{Catalog, TriggerCache, parse_trigger},
};
use criterion::{Criterion, criterion_group, criterion_main};
use futures::future::BoxFuture;
use prost::Message;

/// Answers every query with 1.0; the benchmark measures the engine, not a backend.
struct ConstantSource;

impl Source for ConstantSource {
    fn family(&self) -> &'static str {
        "a constant"
    }
    fn metrics(&self) -> String {
        String::new()
    }
    fn parse(&self, _: &str, _: &Metadata<'_>) -> Result<Parsed<Query>> {
        unreachable!("triggers are parsed by the configured Redis source")
    }
    fn read_batch<'a>(&'a self, queries: &'a [Query]) -> BoxFuture<'a, Vec<Result<f64>>> {
        Box::pin(async move { vec![Ok(1.0); queries.len()] })
    }
    fn probe(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

fn engine() -> Engine {
    Engine::new(
        vec![SourceEntry {
            name: "redis-main".into(),
            settings: RefreshSettings {
                refresh_interval: Duration::from_secs(1),
                max_staleness: Duration::from_secs(3600),
                timeout: Duration::from_millis(1500),
            },
            source: Arc::new(ConstantSource),
        }],
        Limits {
            idle_expiry: Duration::from_secs(3600),
            max_live: 100_000,
        },
        Metrics::new(100_000),
    )
}

/// The trigger parser of a real Redis source (it makes no connection).
fn catalog() -> Catalog {
    let config = Config::from_toml(
        "[sources.redis-main]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:6379\"",
    )
    .unwrap();
    Catalog::new(&config.sources, &config.server.limits)
}

fn metadata() -> HashMap<String, String> {
    [
        ("scalerAddress", "backlog-scaler.keda.svc:9090"),
        ("source", "redis-main"),
        ("metric", "redis-list"),
        ("keys", "agent:tasks:pending,agent:tasks:retry"),
        ("target", "10"),
        ("activationTarget", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn hot_paths(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let engine = runtime.block_on(async { engine() });
    let metadata = metadata();
    let catalog = catalog();

    c.bench_function("parse_trigger (redis-list, 2 keys)", |b| {
        b.iter(|| parse_trigger(black_box(&metadata), "default", &catalog).unwrap())
    });
    c.bench_function("metric_name", |b| {
        b.iter(|| {
            naming::metric_name(
                black_box("redis-list"),
                black_box("agent:tasks:pending"),
                black_box("{\"id\":1}"),
            )
        })
    });
    let spec = parse_trigger(&metadata, "default", &catalog).unwrap();
    let source = catalog.source_name(spec.source);
    runtime
        .block_on(engine.measure(source, &spec.query))
        .unwrap();
    c.bench_function("engine.measure (warm)", |b| {
        b.iter(|| {
            runtime
                .block_on(engine.measure(black_box(source), black_box(&spec.query)))
                .unwrap()
        })
    });
    let request = GetMetricsRequest {
        scaled_object_ref: Some(ScaledObjectRef {
            name: "worker".into(),
            namespace: "default".into(),
            scaler_metadata: metadata.clone(),
        }),
        metric_name: spec.metric_name(),
    }
    .encode_to_vec();
    c.bench_function("decode GetMetricsRequest (6 metadata entries)", |b| {
        b.iter(|| GetMetricsRequest::decode(black_box(&request[..])).unwrap())
    });
    let cache = TriggerCache::new(1000, Duration::from_secs(3600));
    cache.parse(&metadata, "default", &catalog).unwrap();
    c.bench_function("TriggerCache::parse (warm: a remembered trigger)", |b| {
        b.iter(|| {
            cache
                .parse(black_box(&metadata), "default", &catalog)
                .unwrap()
        })
    });
    c.bench_function("encode GetMetricsResponse", |b| {
        b.iter(|| {
            GetMetricsResponse {
                metric_values: vec![MetricValue {
                    metric_name: spec.metric_name(),
                    metric_value: 1,
                    metric_value_float: black_box(1.0),
                }],
            }
            .encode_to_vec()
        })
    });
    c.bench_function(
        "parse + measure (a whole warm GetMetrics minus gRPC)",
        |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let spec = parse_trigger(black_box(&metadata), "default", &catalog).unwrap();
                    engine
                        .measure(catalog.source_name(spec.source), &spec.query)
                        .await
                        .unwrap()
                })
            })
        },
    );
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
