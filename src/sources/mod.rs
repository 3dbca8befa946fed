//! Backends behind two small traits.
//!
//! Each backend lives in its own folder and owns everything about it: its config section
//! ([`Backend::configure`]), its metrics with their metadata keys ([`Source::parse`]) and its
//! reads ([`Source::read_batch`]). The engine and the gRPC layer know only these traits and the
//! opaque, hashable [`Query`] a source hands out.
//!
//! # Adding a backend
//!
//! 1. A folder `sources/NAME/` with a `mod.rs` that defines a unit struct implementing
//!    [`Backend`] (the `type` values it serves and how it reads its `[sources.X]` table) and a
//!    source implementing [`Source`] (its metric table and its batched reads). Its query type
//!    implements [`QueryKind`].
//! 2. One line in [`BACKENDS`] below.
//!
//! Nothing else changes: config, trigger parsing, the engine, the server and the docs tables
//! of status codes all work through the traits.

use std::{
    any::Any,
    borrow::Cow,
    collections::HashSet,
    fmt,
    hash::{Hash, Hasher},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::future::BoxFuture;
use serde::Serialize;

use crate::{
    Result,
    credentials::{Secret, SecretRef},
    error::ConfigError,
    metadata::{Metadata, MetricDef, Parsed, parse_metric},
};

pub mod pgbouncer;
pub mod postgres;
pub mod redis;

/// Every backend, one line each.
pub const BACKENDS: &[&dyn Backend] = &[
    &redis::RedisBackend,
    &postgres::PostgresBackend,
    &pgbouncer::PgBouncerBackend,
];

/// A kind of backend, as the config file names it with `type`.
pub trait Backend: Sync {
    /// The `type` values this backend serves (`redis`, `redis-cluster`, …).
    fn types(&self) -> &'static [&'static str];

    /// Builds the source of one `[sources.NAME]` table. `section.table` holds the backend's own
    /// keys (the common ones are removed); unknown keys are errors. Building makes no
    /// connection, so a backend that is down at start-up does not stop the scaler.
    fn configure(&self, section: Section) -> Result<Arc<dyn Source>, ConfigError>;
}

/// One `[sources.NAME]` table, as a backend gets it.
pub struct Section {
    pub name: String,
    /// The `type` value, one of [`Backend::types`].
    pub type_name: String,
    /// The backend's own keys.
    pub table: toml::Table,
    pub refresh: RefreshSettings,
}

impl Section {
    /// The dotted config key of one of the section's fields, for error messages.
    pub fn key(&self, field: &str) -> String {
        format!("sources.{}.{field}", self.name)
    }

    /// The secret of `field`, given inline, as `FIELD_env` or as `FIELD_file`.
    pub fn secret<'a>(
        &self,
        field: &str,
        inline: Option<&'a Secret>,
        env: Option<&'a str>,
        file: Option<&'a std::path::Path>,
    ) -> SecretRef<'a> {
        SecretRef {
            key: self.key(field),
            inline,
            env,
            file,
        }
    }

    /// Deserializes the backend's keys into its own `#[serde(deny_unknown_fields)]` struct.
    pub fn deserialize<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::Value::Table(self.table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| {
                ConfigError::at(format!("sources.{}", self.name), e.message().trim())
            })
    }
}

/// How the engine treats the measurements of one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshSettings {
    pub refresh_interval: Duration,
    pub max_staleness: Duration,
    /// The budget of one backend read (connect + command + one retry).
    pub timeout: Duration,
}

/// A configured source: parses the metrics it serves and reads them in batches.
pub trait Source: Send + Sync + 'static {
    /// The family, for messages: "a Redis", "a PostgreSQL".
    fn family(&self) -> &'static str;

    /// The `metric` values it serves, for messages.
    fn metrics(&self) -> String;

    /// Parses the metric-specific keys of a trigger into the source's query.
    fn parse(&self, metric: &str, md: &Metadata<'_>) -> Result<Parsed<Query>>;

    /// Reads every query of one refresh and answers in the same order. Implementations share
    /// backend work between queries (one pipeline per node, one aggregated read per view) and
    /// bound their own waits; the engine bounds the whole call as well.
    fn read_batch<'a>(&'a self, queries: &'a [Query]) -> BoxFuture<'a, Vec<Result<f64>>>;

    /// Checks that the backend answers, when the source has no live measurement to read.
    fn probe(&self) -> BoxFuture<'_, Result<()>>;

    /// What `backlog-scaler check` reports: the backend's version and whether what the
    /// source's metrics need is there (privileges, extensions, topology). An error means the
    /// backend could not be reached or refused the credentials. The default only probes.
    fn check(&self) -> BoxFuture<'_, Result<CheckReport>> {
        Box::pin(async move {
            self.probe().await?;
            Ok(CheckReport::default())
        })
    }

    /// For a source that can learn of changes as they happen: runs until dropped, reporting
    /// the measurements whose data changed to `changes`, so the engine re-reads them at once
    /// instead of at the next refresh. `None` (the default): the source is only polled.
    fn watch(&self, changes: Arc<ChangeFeed>) -> Option<BoxFuture<'_, ()>> {
        let _ = changes;
        None
    }

    /// True while the source learns of changes as they happen (see [`watch`](Self::watch));
    /// false while it is only polled.
    fn event_driven(&self) -> bool {
        false
    }

    /// The engine's live measurements of this source changed: `added` became live (before
    /// their first read), `removed` expired. Called under the engine's lock on its
    /// measurements, so calls are in the order of the changes: keep it short and never call
    /// the engine from it. A watching source follows the data of the live measurements only.
    fn live(&self, added: &[Query], removed: &[Query]) {
        let _ = (added, removed);
    }
}

/// The measurements an event-driven source reported as changed and the engine has not re-read
/// yet. A set, so a key that changes a thousand times before the next re-read costs one read.
#[derive(Default)]
pub struct ChangeFeed {
    pending: Mutex<HashSet<Query>>,
    ready: tokio::sync::Notify,
    /// Change events reported since the engine last took the set.
    events: AtomicU64,
}

impl ChangeFeed {
    /// Reports `events` change events (changed keys, say) touching `queries`.
    pub fn mark(&self, queries: impl IntoIterator<Item = Query>, events: u64) {
        self.pending.lock().expect("lock poisoned").extend(queries);
        self.events.fetch_add(events, Ordering::Relaxed);
        self.ready.notify_one();
    }

    /// Waits until something was marked since the last [`take`](Self::take).
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// The changed measurements and the number of change events since the last take.
    pub fn take(&self) -> (Vec<Query>, u64) {
        let pending = std::mem::take(&mut *self.pending.lock().expect("lock poisoned"));
        (
            pending.into_iter().collect(),
            self.events.swap(0, Ordering::Relaxed),
        )
    }
}

/// The findings of [`Source::check`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CheckReport {
    /// The server's version, as it reports it.
    pub version: Option<String>,
    /// One line per thing a metric needs, e.g. "pg_stat_statements installed and visible".
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// What was checked, e.g. `pg_stat_statements`, `role`, `cluster_state`.
    pub what: String,
    /// False when no metric of the source can work as found (the check fails). A missing
    /// optional feature (an extension, a privilege, tables only some metrics read) is `ok`,
    /// with a `detail` naming the metrics that will fail and the fix.
    pub ok: bool,
    /// What was found, or what to do about it.
    pub detail: String,
}

impl Finding {
    pub fn new(what: &str, ok: bool, detail: impl Into<String>) -> Finding {
        Finding {
            what: what.to_string(),
            ok,
            detail: detail.into(),
        }
    }
}

/// The words every source's refused-credentials messages begin with (also where a refusal
/// is only part of a longer reason, as behind a Sentinel).
pub use crate::error::AUTHENTICATION_FAILED;

/// What a backend's typed query must be to serve as the engine's cache key.
pub trait QueryKind: Any + Send + Sync + fmt::Debug + Eq + Hash + Serialize {
    /// The family tag in the measurement identity that metric names hash. Changing it renames
    /// every metric of the backend, so it never changes.
    const TAG: &'static str;

    /// The most telling part of the query, for the readable half of the metric name (built
    /// again for each answer that carries the name, so borrowed where it can be).
    fn subject(&self) -> Cow<'_, str>;
}

/// One measurement of a source, opaque to everything but the source that made it. Cloning is
/// an atomic reference count increment.
#[derive(Clone)]
pub struct Query(Arc<dyn DynQuery>);

impl Query {
    pub fn new<T: QueryKind>(query: T) -> Query {
        Query(Arc::new(query))
    }

    /// The backend's own query, if this query is of type `T`.
    pub fn downcast<T: QueryKind>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref()
    }

    /// The same query, not only an equal one: a clone of it.
    pub fn same(&self, other: &Query) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    pub fn subject(&self) -> Cow<'_, str> {
        self.0.subject()
    }

    /// A canonical rendering of the query (with its family tag), for the metric-name hash.
    pub fn identity(&self, source: &str) -> String {
        self.0.identity(source)
    }
}

impl fmt::Debug for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl PartialEq for Query {
    fn eq(&self, other: &Self) -> bool {
        self.0.dyn_eq(other.0.as_any())
    }
}

impl Eq for Query {}

impl Hash for Query {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.as_any().type_id().hash(state);
        self.0.dyn_hash(state);
    }
}

/// The object-safe face of a [`QueryKind`].
trait DynQuery: Send + Sync + fmt::Debug {
    fn as_any(&self) -> &dyn Any;
    fn dyn_eq(&self, other: &dyn Any) -> bool;
    fn dyn_hash(&self, state: &mut dyn Hasher);
    fn subject(&self) -> Cow<'_, str>;
    fn identity(&self, source: &str) -> String;
}

impl<T: QueryKind> DynQuery for T {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn dyn_eq(&self, other: &dyn Any) -> bool {
        other.downcast_ref::<T>() == Some(self)
    }

    fn dyn_hash(&self, mut state: &mut dyn Hasher) {
        self.hash(&mut state);
    }

    fn subject(&self) -> Cow<'_, str> {
        QueryKind::subject(self)
    }

    fn identity(&self, source: &str) -> String {
        // `["source",{"Tag":{…}}]`: the shape the names of existing triggers were hashed from
        // (a tuple of the source name and an externally tagged enum), kept byte for byte.
        serde_json::to_string(&(source, Tagged(T::TAG, self)))
            .unwrap_or_else(|_| format!("{source}:{self:?}"))
    }
}

/// Serializes as `{"TAG": value}`.
struct Tagged<'a, T>(&'static str, &'a T);

impl<T: Serialize> Serialize for Tagged<'_, T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(self.0, self.1)?;
        map.end()
    }
}

/// [`Source::parse`] of a backend whose metrics are `table`: the metric's keys parsed into the
/// backend's query, made opaque.
pub fn parse_query<Q: QueryKind, C: ?Sized>(
    table: &'static [MetricDef<Q, C>],
    metric: &str,
    md: &Metadata<'_>,
    context: &C,
) -> Result<Parsed<Query>> {
    let parsed = parse_metric(table, metric, md, context)?;
    Ok(Parsed {
        query: Query::new(parsed.query),
        metric: parsed.metric,
        keys: parsed.keys,
    })
}

/// The typed query of a batch, for a source that was handed a query of another source.
pub fn typed<'q, T: QueryKind>(source: &str, query: &'q Query) -> Result<&'q T> {
    query.downcast().ok_or_else(|| {
        crate::Error::Internal(format!(
            "source `{source}` got a query of another source: {query:?}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[derive(Debug, PartialEq, Eq, Hash, Serialize)]
    struct A {
        keys: Vec<String>,
    }
    impl QueryKind for A {
        const TAG: &'static str = "A";
        fn subject(&self) -> Cow<'_, str> {
            self.keys.join(",").into()
        }
    }

    #[derive(Debug, PartialEq, Eq, Hash, Serialize)]
    struct B {
        keys: Vec<String>,
    }
    impl QueryKind for B {
        const TAG: &'static str = "B";
        fn subject(&self) -> Cow<'_, str> {
            Cow::Borrowed("")
        }
    }

    #[test]
    fn queries_of_different_backends_never_compare_equal() {
        let a = Query::new(A {
            keys: vec!["x".into()],
        });
        let b = Query::new(B {
            keys: vec!["x".into()],
        });
        assert_ne!(a, b);
        let set: HashSet<Query> = [a.clone(), b.clone(), a.clone()].into_iter().collect();
        assert_eq!(set.len(), 2);
        assert!(a.downcast::<A>().is_some());
        assert!(a.downcast::<B>().is_none());
        assert!(typed::<B>("s", &a).is_err());
    }

    #[test]
    fn identity_is_the_source_and_the_tagged_query() {
        let a = Query::new(A {
            keys: vec!["x".into()],
        });
        assert_eq!(a.identity("main"), r#"["main",{"A":{"keys":["x"]}}]"#);
    }
}
