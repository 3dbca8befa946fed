//! PostgreSQL sources: database load from pg_stat_activity and pg_stat_statements, Dagster's
//! run queue, and operator-named queries.
//!
//! One refresh of a source costs at most one pg_stat_activity read, one pg_stat_statements
//! snapshot (and only once per `statements_interval`) and one statement per distinct Dagster
//! or named query, whatever the number of triggers. No measure counts the scaler itself:
//! pg-activity leaves out sessions named [`APPLICATION_NAME`], pg-statements the role the
//! source logs in as ([`statements::SNAPSHOT_SQL`]). Every read runs in its own `BEGIN READ ONLY` transaction with `SET LOCAL`
//! statement and lock timeouts, through unnamed statements (`query_typed`), so it works
//! through PgBouncer in transaction pooling mode and nothing the scaler runs can write or hang.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use futures::future::{BoxFuture, join_all};
use tokio::{sync::Mutex, time::Instant};
use tokio_postgres::{
    NoTls, Row,
    config::SslMode,
    types::{ToSql, Type},
};

use crate::{
    Error, Result,
    error::ConfigError,
    metadata::{Metadata, Parsed, metric_names},
    sources::{Backend, CheckReport, Query, Section, Source, typed},
};

pub mod activity;
pub mod check;
pub mod config;
pub mod metrics;
pub mod query;
pub mod statements;
pub mod tls;

use activity::{ACTIVITY_SQL, ActivitySnapshot, LIMITS_SQL, Session};
use config::PostgresSettings;
use metrics::NamedQueries;
pub use query::PgQuery;
use statements::{SnapshotScope, StatementEntry, StatementKey, StatementSnapshot};

/// The `application_name` of the scaler's sessions; pg-activity never counts them.
pub const APPLICATION_NAME: &str = "backlog-scaler";

/// A snapshot older than this (or three `statements_interval`s, if longer) is no base for a
/// rate (the source was idle); a cold read then takes two snapshots.
const SNAPSHOT_REUSE_LIMIT: Duration = Duration::from_secs(30);

/// The shortest window a rate is computed over: shorter windows make noisy rates.
const MIN_RATE_WINDOW: Duration = Duration::from_millis(250);

/// `type = "postgres"`: a PostgreSQL server, directly or through PgBouncer.
pub struct PostgresBackend;

impl Backend for PostgresBackend {
    fn types(&self) -> &'static [&'static str] {
        &["postgres"]
    }

    fn configure(&self, section: Section) -> Result<Arc<dyn Source>, ConfigError> {
        let settings = config::parse(&section)?;
        let source = PostgresSource::new(&section.name, settings, section.refresh.timeout)
            .map_err(|e| ConfigError::at(format!("sources.{}", section.name), e))?;
        Ok(Arc::new(source))
    }
}

pub struct PostgresSource {
    name: String,
    pool: Pool,
    timeout: Duration,
    queries: NamedQueries,
    /// What `check` says of the connections' TLS.
    tls_description: String,
    /// `server_version_num`, read once (0 until then).
    server_version: AtomicI64,
    /// How long a pg_stat_statements window answers before the next snapshot is taken.
    statements_interval: Duration,
    /// The latest two pg_stat_statements snapshots of each scope: the current rates, and
    /// the base of the next window.
    windows: Mutex<HashMap<SnapshotScope, StatementWindow>>,
}

/// What a read was for, to turn server errors into advice.
#[derive(Clone, Copy)]
enum ReadKind<'a> {
    Activity,
    Statements,
    Dagster(&'a str),
    Named(&'a str),
}

/// What one refresh must read to answer its queries: each view at most once, each Dagster or
/// named query once however many triggers ask for it.
#[derive(Default)]
struct ReadPlan<'q> {
    activity: bool,
    /// What the pg_stat_statements snapshot reads, if a trigger needs one.
    statements: Option<SnapshotScope>,
    singles: Vec<&'q PgQuery>,
}

impl<'q> ReadPlan<'q> {
    fn of(queries: impl Iterator<Item = &'q PgQuery>) -> Self {
        let mut plan = ReadPlan::default();
        let mut seen = HashSet::new();
        let mut statement_filters = Vec::new();
        for query in queries {
            match query {
                PgQuery::Activity { .. } => plan.activity = true,
                PgQuery::Statements { filter, .. } => statement_filters.push(filter),
                single => {
                    if seen.insert(single) {
                        plan.singles.push(single);
                    }
                }
            }
        }
        if !statement_filters.is_empty() {
            plan.statements = Some(SnapshotScope::of(statement_filters.into_iter()));
        }
        plan
    }
}

type StatementWindow = (Arc<StatementSnapshot>, Arc<StatementSnapshot>);

/// What one refresh read, shared by every query of it.
struct Readings<'q> {
    activity: Option<Result<ActivitySnapshot>>,
    window: Option<Result<StatementWindow>>,
    singles: HashMap<&'q PgQuery, Result<f64>>,
}

impl Readings<'_> {
    fn answer(&self, query: &PgQuery) -> Result<f64> {
        let not_read = || Error::Internal(format!("{query:?} was not read"));
        match query {
            PgQuery::Activity { measure, filter } => match &self.activity {
                Some(Ok(snapshot)) => Ok(snapshot.measure(*measure, filter)),
                Some(Err(error)) => Err(error.clone()),
                None => Err(not_read()),
            },
            PgQuery::Statements { measure, filter } => match &self.window {
                Some(Ok((previous, current))) => {
                    Ok(statements::rate(previous, current, *measure, filter))
                }
                Some(Err(error)) => Err(error.clone()),
                None => Err(not_read()),
            },
            single => self
                .singles
                .get(single)
                .cloned()
                .unwrap_or_else(|| Err(not_read())),
        }
    }
}

impl PostgresSource {
    /// Makes no connection; fails only if the pool cannot be built.
    pub fn new(
        name: &str,
        settings: PostgresSettings,
        timeout: Duration,
    ) -> std::result::Result<Self, String> {
        let mut connection = settings.connection;
        connection.application_name(APPLICATION_NAME);
        connection.connect_timeout(timeout / 2);
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &settings.tls.config {
            Some(tls) => {
                // Never a plain session when TLS was asked for, whatever the URL said.
                connection.ssl_mode(SslMode::Require);
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone());
                Manager::from_config(connection, tls, manager_config)
            }
            None => Manager::from_config(connection, NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout / 2))
            .create_timeout(Some(timeout / 2))
            .recycle_timeout(Some(timeout / 2))
            .build()
            .map_err(|e| format!("cannot build the connection pool: {e}"))?;
        Ok(PostgresSource {
            name: name.to_string(),
            pool,
            timeout,
            queries: settings.queries,
            tls_description: settings.tls.describe(),
            server_version: AtomicI64::new(0),
            statements_interval: settings.statements_interval,
            windows: Mutex::new(HashMap::new()),
        })
    }

    async fn read_all(&self, queries: &[Query]) -> Vec<Result<f64>> {
        let typed: Vec<Result<&PgQuery>> = queries.iter().map(|q| typed(&self.name, q)).collect();
        let plan = ReadPlan::of(typed.iter().filter_map(|q| q.as_ref().ok().copied()));
        let readings = self.read_plan(&plan).await;
        typed
            .into_iter()
            .map(|query| readings.answer(query?))
            .collect()
    }

    /// Runs the reads of a plan concurrently, each in its own transaction.
    async fn read_plan<'q>(&self, plan: &ReadPlan<'q>) -> Readings<'q> {
        let activity = async {
            match plan.activity {
                true => Some(self.read_activity().await),
                false => None,
            }
        };
        let window = async {
            match &plan.statements {
                Some(scope) => Some(self.statement_window(scope).await),
                None => None,
            }
        };
        let singles = join_all(plan.singles.iter().map(|q| self.read_single(q)));
        let (activity, window, values) = tokio::join!(activity, window, singles);
        Readings {
            activity,
            window,
            singles: plan.singles.iter().copied().zip(values).collect(),
        }
    }

    async fn read_activity(&self) -> Result<ActivitySnapshot> {
        let kind = ReadKind::Activity;
        let tx = self.begin(kind).await?;
        let rows = tx.query(ACTIVITY_SQL, &[]).await?;
        let limits = tx.query(LIMITS_SQL, &[]).await?;
        tx.commit().await?;
        let usable_connections = limits
            .first()
            .and_then(|r| r.try_get::<_, i64>(0).ok())
            .unwrap_or(0);
        let sessions = rows
            .iter()
            .map(|row| Session {
                database: row.get(0),
                user: row.get(1),
                application_name: row.get(2),
                state: row.get(3),
                waiting_on_lock: row.get(4),
                query_seconds: row.get(5),
                transaction_seconds: row.get(6),
            })
            .collect();
        Ok(ActivitySnapshot {
            sessions,
            usable_connections,
        })
    }

    /// Two snapshots of pg_stat_statements to compute rates between, the later one of
    /// `scope` (or of a scope that covers it). A window answers for `statements_interval`;
    /// then the next one starts where it ended. A cold source (or a scope no recent snapshot
    /// covers) takes two snapshots, [`MIN_RATE_WINDOW`] apart, so its first answer is a
    /// measured rate too.
    async fn statement_window(&self, scope: &SnapshotScope) -> Result<StatementWindow> {
        let mut windows = self.windows.lock().await;
        let reuse_limit = SNAPSHOT_REUSE_LIMIT.max(self.statements_interval * 3);
        windows.retain(|_, (_, current)| current.taken.elapsed() <= reuse_limit);
        // The latest window that holds everything this scope needs: its own, or a wider one
        // (a trigger new to the source is served by the window of the others).
        let latest = windows
            .iter()
            .filter(|(covering, _)| covering.covers(scope))
            .map(|(_, window)| window)
            .max_by_key(|(_, current)| current.taken);
        let previous = match latest {
            Some(window) if window.1.taken.elapsed() < self.statements_interval => {
                return Ok(window.clone());
            }
            Some((_, current)) => current.clone(),
            None => Arc::new(self.snapshot(scope).await?),
        };
        let age = previous.taken.elapsed();
        if age < MIN_RATE_WINDOW {
            tokio::time::sleep(MIN_RATE_WINDOW - age).await;
        }
        let current = Arc::new(self.snapshot(scope).await?);
        let window = (previous, current);
        windows.insert(scope.clone(), window.clone());
        Ok(window)
    }

    async fn snapshot(&self, scope: &SnapshotScope) -> Result<StatementSnapshot> {
        let kind = ReadKind::Statements;
        let tx = self.begin(kind).await?;
        let version = self.server_version(&tx).await?;
        if version < 130000 {
            return Err(Error::rejected(
                &self.name,
                "pg-statements needs PostgreSQL 13 or newer (total_exec_time)",
            ));
        }
        let sql = if version >= 140000 {
            statements::SNAPSHOT_SQL
        } else {
            statements::SNAPSHOT_SQL_PG13
        };
        let rows = tx
            .query(
                sql,
                &[
                    (&scope.texts, Type::BOOL),
                    (&scope.databases, Type::TEXT_ARRAY),
                    (&scope.users, Type::TEXT_ARRAY),
                    (&scope.query_ids, Type::INT8_ARRAY),
                ],
            )
            .await?;
        let taken = Instant::now();
        let stats_reset = if version >= 140000 {
            tx.query(statements::RESET_SQL, &[])
                .await?
                .first()
                .and_then(|row| row.get::<_, Option<String>>(0))
        } else {
            None
        };
        tx.commit().await?;
        let entries = rows
            .iter()
            .map(|row| {
                (
                    StatementKey {
                        dbid: row.get(0),
                        userid: row.get(1),
                        queryid: row.get(2),
                        toplevel: row.get(3),
                    },
                    StatementEntry {
                        calls: row.get(4),
                        total_exec_time_ms: row.get(5),
                        rows: row.get(6),
                        database: row.get(7),
                        user: row.get(8),
                        query: row.get(9),
                    },
                )
            })
            .collect();
        Ok(StatementSnapshot {
            taken,
            stats_reset,
            entries,
        })
    }

    async fn server_version(&self, tx: &ReadOnly<'_>) -> Result<i64> {
        let known = self.server_version.load(Ordering::Relaxed);
        if known > 0 {
            return Ok(known);
        }
        let rows = tx
            .query("SELECT current_setting('server_version_num')::int8", &[])
            .await?;
        let version = rows.first().map(|row| row.get::<_, i64>(0)).unwrap_or(0);
        self.server_version.store(version, Ordering::Relaxed);
        Ok(version)
    }

    async fn read_single(&self, query: &PgQuery) -> Result<f64> {
        match query {
            PgQuery::DagsterRuns(runs) => {
                let tx = self.begin(ReadKind::Dagster(&runs.schema)).await?;
                // The schema is bound and quoted by the server: no metadata reaches SQL text.
                tx.query(
                    "SELECT set_config('search_path', quote_ident($1), true)",
                    &[(&runs.schema, Type::TEXT)],
                )
                .await?;
                let (tag_keys, tag_values): (Vec<String>, Vec<String>) =
                    runs.tags.iter().cloned().unzip();
                let rows = tx
                    .query(
                        DAGSTER_RUNS_SQL,
                        &[
                            (&runs.statuses, Type::TEXT_ARRAY),
                            (&runs.jobs, Type::TEXT_ARRAY),
                            (&tag_keys, Type::TEXT_ARRAY),
                            (&tag_values, Type::TEXT_ARRAY),
                        ],
                    )
                    .await?;
                tx.commit().await?;
                Ok(rows.first().map(|row| row.get::<_, i64>(0)).unwrap_or(0) as f64)
            }
            PgQuery::Named { query } => {
                let sql = self.queries.get(query).ok_or_else(|| {
                    Error::invalid(
                        "query",
                        format!("no query named `{query}` in source `{}`", self.name),
                    )
                })?;
                let tx = self.begin(ReadKind::Named(query)).await?;
                let rows = tx.query(sql, &[]).await?;
                tx.commit().await?;
                self.single_number(query, &rows)
            }
            _ => Err(Error::Internal("not a single-statement query".into())),
        }
    }

    /// The one numeric value a named query returns.
    fn single_number(&self, query: &str, rows: &[Row]) -> Result<f64> {
        let reject = |what: String| Error::rejected(&self.name, format!("query `{query}` {what}"));
        let [row] = rows else {
            return Err(reject(format!(
                "returned {} rows; it must return exactly one",
                rows.len()
            )));
        };
        let Some(column) = row.columns().first() else {
            return Err(reject("returned no column".into()));
        };
        let value = match *column.type_() {
            Type::INT2 => row.get::<_, Option<i16>>(0).map(f64::from),
            Type::INT4 => row.get::<_, Option<i32>>(0).map(f64::from),
            Type::INT8 => row.get::<_, Option<i64>>(0).map(|v| v as f64),
            Type::FLOAT4 => row.get::<_, Option<f32>>(0).map(f64::from),
            Type::FLOAT8 => row.get::<_, Option<f64>>(0),
            ref other => {
                return Err(reject(format!(
                    "returned type {other}; cast the value to a built-in number, e.g. `::float8` or `::int8`"
                )));
            }
        };
        match value {
            Some(value) if value.is_finite() => Ok(value),
            Some(value) => Err(reject(format!("returned {value}"))),
            None => Err(reject(
                "returned NULL; wrap it in coalesce(..., 0) if none means zero".into(),
            )),
        }
    }

    /// Starts a read-only transaction with statement and lock timeouts inside the read budget.
    async fn begin<'a>(&'a self, kind: ReadKind<'a>) -> Result<ReadOnly<'a>> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| self.pool_error(e, kind))?;
        let budget_ms = (self.timeout.as_millis() * 2 / 3).max(1);
        // Only our own integer goes into this text. SET LOCAL ends with the transaction,
        // so PgBouncer's transaction pooling never carries it to another client.
        let begin = format!(
            "BEGIN READ ONLY; SET LOCAL statement_timeout = {budget_ms}; SET LOCAL lock_timeout = {budget_ms}"
        );
        let tx = ReadOnly {
            source: self,
            kind,
            client: Some(client),
        };
        tx.client()
            .batch_execute(&begin)
            .await
            .map_err(|e| self.pg_error(&e, kind))?;
        Ok(tx)
    }

    fn pool_error(&self, error: PoolError, kind: ReadKind<'_>) -> Error {
        match error {
            PoolError::Backend(error) => self.pg_error(&error, kind),
            PoolError::Timeout(_) => Error::unavailable(
                &self.name,
                format!("no database connection within {:?}", self.timeout / 2),
            ),
            other => Error::unavailable(&self.name, format!("connection pool: {other}")),
        }
    }

    /// Turns a driver error into the crate's error, with advice where the fix is known.
    fn pg_error(&self, error: &tokio_postgres::Error, kind: ReadKind<'_>) -> Error {
        let Some(db) = error.as_db_error() else {
            if error.is_closed() {
                return Error::unavailable(&self.name, "the database connection closed");
            }
            // Connection-level errors (refused, reset, TLS); they carry no credentials. The
            // cause chain holds the useful part (e.g. "invalid peer certificate: UnknownIssuer").
            let mut reason = format!("cannot reach the database: {error}");
            let mut cause = std::error::Error::source(error);
            while let Some(inner) = cause {
                reason.push_str(&format!(": {inner}"));
                cause = inner.source();
            }
            return Error::unavailable(&self.name, reason);
        };
        let code = db.code().code();
        let message = db.message();
        let unavailable = |reason: String| Error::unavailable(&self.name, reason);
        let rejected = |reason: String| Error::rejected(&self.name, reason);
        match (code, kind) {
            ("57014", _) => unavailable("the read hit statement_timeout".into()),
            ("55P03", _) => unavailable("the read hit lock_timeout".into()),
            ("28P01" | "28000", _) => {
                Error::credentials_refused(&self.name, "check the source's user and password")
            }
            (c, _) if c.starts_with("08") || c.starts_with("57P") || c == "53300" => unavailable(
                format!("the server refused the session ({code}: {message})"),
            ),
            ("25006", ReadKind::Named(query)) => rejected(format!(
                "query `{query}` tries to write; named queries run in a READ ONLY transaction"
            )),
            ("42501", ReadKind::Statements | ReadKind::Activity) => rejected(format!(
                "permission denied ({message}): run GRANT pg_monitor TO the scaler's user"
            )),
            ("42P01" | "42883" | "55000", ReadKind::Statements) => rejected(format!(
                "pg_stat_statements is not available ({message}): add it to \
                 shared_preload_libraries and run CREATE EXTENSION pg_stat_statements"
            )),
            ("42P01", ReadKind::Dagster(schema)) => rejected(format!(
                "no Dagster run storage in schema `{schema}` ({message}): check `schema` and the source's database"
            )),
            (_, ReadKind::Named(query)) => {
                rejected(format!("query `{query}` failed ({code}: {message})"))
            }
            _ => rejected(format!("PostgreSQL error {code}: {message}")),
        }
    }
}

const DAGSTER_RUNS_SQL: &str = "\
SELECT count(*)::int8 FROM runs r
WHERE r.status = ANY($1::text[])
  AND (cardinality($2::text[]) = 0 OR r.pipeline_name = ANY($2::text[]))
  AND NOT EXISTS (
    SELECT 1 FROM unnest($3::text[], $4::text[]) AS wanted(key, value)
    WHERE NOT EXISTS (
      SELECT 1 FROM run_tags t
      WHERE t.run_id = r.run_id AND t.key = wanted.key AND t.value = wanted.value))";

/// An open read-only transaction. Dropped without [`commit`](Self::commit) (an error, or the
/// engine's timeout cancelling the read), its connection is closed rather than returned to
/// the pool mid-transaction.
struct ReadOnly<'a> {
    source: &'a PostgresSource,
    kind: ReadKind<'a>,
    client: Option<deadpool_postgres::Client>,
}

impl ReadOnly<'_> {
    fn client(&self) -> &deadpool_postgres::Client {
        self.client.as_ref().expect("present until commit or drop")
    }

    async fn query(&self, sql: &str, params: &[(&(dyn ToSql + Sync), Type)]) -> Result<Vec<Row>> {
        self.client()
            .query_typed(sql, params)
            .await
            .map_err(|e| self.source.pg_error(&e, self.kind))
    }

    async fn commit(mut self) -> Result<()> {
        let client = self.client.take().expect("present until commit or drop");
        match client.batch_execute("COMMIT").await {
            Ok(()) => Ok(()),
            Err(error) => {
                let _ = deadpool_postgres::Object::take(client);
                Err(self.source.pg_error(&error, self.kind))
            }
        }
    }
}

impl Drop for ReadOnly<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Closing the connection rolls the transaction back on the server.
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

impl Source for PostgresSource {
    fn family(&self) -> &'static str {
        "a PostgreSQL"
    }

    fn metrics(&self) -> String {
        metric_names(metrics::METRICS)
    }

    fn parse(&self, metric: &str, md: &Metadata<'_>) -> Result<Parsed<Query>> {
        super::parse_query(metrics::METRICS, metric, md, &self.queries)
    }

    fn read_batch<'a>(&'a self, queries: &'a [Query]) -> BoxFuture<'a, Vec<Result<f64>>> {
        Box::pin(self.read_all(queries))
    }

    fn probe(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let tx = self.begin(ReadKind::Activity).await?;
            tx.query("SELECT 1", &[]).await?;
            tx.commit().await
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<CheckReport>> {
        Box::pin(check::check(self))
    }
}
