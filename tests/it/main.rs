//! The integration tests, one crate: each former `tests/*.rs` file is a module here, so the
//! harness in `common/` is compiled once and the tests link into one binary.

mod common;

mod bench_configs;
mod cli;
mod cli_check;
mod cli_dev;
mod cli_eval;
mod faults;
mod grpcurl;
mod k8s_manifests;
mod limits;
mod metadata_properties;
mod module_graph;
mod monitoring;
mod observability;
mod packaging;
mod pgbouncer;
mod postgres;
mod redis_events;
mod redis_latency;
mod redis_list;
mod redis_queues;
mod redis_topology;
mod scaler_footprint;
mod tls;
