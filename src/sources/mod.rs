//! Backends behind one small trait.
//!
//! The engine knows only [`Source`]: "read these queries, sharing backend work where you
//! can". Each backend module owns its connections, its typed queries and how one refresh
//! turns many queries into as few backend round trips as possible.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Serialize;

use crate::{
    Result,
    config::{BackendConfig, SourceConfig},
};

pub mod postgres;
pub mod redis;

/// A typed measurement of one source: the engine's cache key (per source).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Query {
    Redis(redis::RedisQuery),
    Postgres(postgres::PgQuery),
}

impl Query {
    /// The most telling part of the query, for the readable half of the metric name.
    pub fn subject(&self) -> String {
        match self {
            Query::Redis(query) => query.subject(),
            Query::Postgres(query) => query.subject(),
        }
    }
}

/// Families of sources: which `metric` values a source accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Redis,
    Postgres,
}

impl SourceKind {
    pub fn label(self) -> &'static str {
        match self {
            SourceKind::Redis => "a Redis",
            SourceKind::Postgres => "a PostgreSQL",
        }
    }

    /// The `metric` values this family serves, for error messages.
    pub fn metrics_accepted(self) -> &'static str {
        match self {
            SourceKind::Redis => redis::METRICS,
            SourceKind::Postgres => postgres::METRICS,
        }
    }
}

/// Something that can measure queries against one backend.
pub trait Source: Send + Sync + 'static {
    /// Reads every query of one refresh and answers in the same order. Implementations share
    /// backend work between queries (one pipeline per node, one aggregated read per view) and
    /// bound their own waits; the engine bounds the whole call as well.
    fn read_batch<'a>(&'a self, queries: &'a [Query]) -> BoxFuture<'a, Vec<Result<f64>>>;

    /// Checks that the backend answers, when the source has no live measurement to read.
    fn probe(&self) -> BoxFuture<'_, Result<()>>;
}

/// Builds the source of a validated config. Connections are made lazily, so a backend that
/// is down at start-up does not stop the scaler from starting.
pub fn build(config: &SourceConfig) -> Result<(SourceKind, Arc<dyn Source>)> {
    match &config.backend {
        BackendConfig::Redis(redis_config) => Ok((
            SourceKind::Redis,
            Arc::new(redis::RedisSource::new(
                &config.name,
                redis_config,
                config.refresh.timeout,
            )?),
        )),
        BackendConfig::Postgres(pg_config) => Ok((
            SourceKind::Postgres,
            Arc::new(postgres::PostgresSource::new(
                &config.name,
                pg_config,
                config.refresh.timeout,
            )?),
        )),
    }
}
