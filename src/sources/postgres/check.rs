//! `backlog-scaler check` for a PostgreSQL source: what the server is and whether what each
//! metric reads is there, through the same pool and read-only transactions as real reads
//! (so it checks PgBouncer's path too when the source goes through one).
//!
//! Which findings fail the check: only what no metric can work without, i.e. a session (the
//! error of [`check`] itself) and a read-only transaction. Everything only some metrics need
//! (pg_stat_statements, `pg_monitor`, Dagster's tables, each named query) is reported with
//! what will fail and the fix, and leaves the check passing: a scaler used only for
//! pg-activity must not be held back by a missing extension.

use super::{PostgresSource, ReadKind};
use crate::{
    Result,
    sources::{CheckReport, Finding},
};

/// Who and where the scaler is, in one statement: the version, the role's privileges, and
/// whether the transaction really is read-only. `pg_monitor` exists since PostgreSQL 10; the
/// `CASE` keeps older servers answering.
const IDENTITY_SQL: &str = "\
SELECT current_setting('server_version'),
       current_setting('server_version_num')::int8,
       current_user::text,
       current_database()::text,
       coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false),
       CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pg_monitor')
            THEN pg_has_role('pg_monitor', 'USAGE') ELSE false END,
       current_setting('transaction_read_only'),
       (SELECT extversion FROM pg_extension WHERE extname = 'pg_stat_statements'),
       to_regclass('public.runs') IS NOT NULL,
       to_regclass('public.run_tags') IS NOT NULL,
       (SELECT count(*) FROM pg_stat_activity
        WHERE usename = current_user AND pid <> pg_backend_pid()
          AND backend_type = 'client backend'
          AND application_name IS DISTINCT FROM 'backlog-scaler')::int8";

/// A read of pg_stat_statements the way snapshots read it (the function, without texts).
const STATEMENTS_SQL: &str =
    "SELECT count(*)::int8 FROM pg_stat_statements(false) WHERE queryid IS NOT NULL";

/// The findings of one PostgreSQL source. An error: no session (unreachable, credentials
/// refused, no such database) or no read-only transaction.
pub async fn check(source: &PostgresSource) -> Result<CheckReport> {
    let tx = source.begin(ReadKind::Activity).await?;
    let rows = tx.query(IDENTITY_SQL, &[]).await?;
    tx.commit().await?;
    let Some(row) = rows.first() else {
        return Err(crate::Error::Internal(
            "the identity query returned no row".into(),
        ));
    };
    let version: String = row.get(0);
    let version_num: i64 = row.get(1);
    let user: String = row.get(2);
    let database: String = row.get(3);
    let superuser: bool = row.get(4);
    let monitor: bool = row.get(5);
    let read_only: String = row.get(6);
    let statements_version: Option<String> = row.get(7);
    let (runs, run_tags): (bool, bool) = (row.get(8), row.get(9));
    let others_as_user: i64 = row.get(10);

    let mut findings = vec![Finding::new("tls", true, source.tls_description.clone())];
    findings.push(Finding::new(
        "read-only transaction",
        read_only == "on",
        if read_only == "on" {
            format!("BEGIN READ ONLY works for user `{user}` on database `{database}`")
        } else {
            format!("BEGIN READ ONLY left transaction_read_only = {read_only}")
        },
    ));
    if version_num < 130000 {
        findings.push(Finding::new(
            "server_version",
            true,
            format!("PostgreSQL {version}: pg-statements triggers need 13 or newer and will fail"),
        ));
    }
    findings.push(privileges(&user, superuser, monitor));
    findings.push(own_role(&user, others_as_user));
    findings.push(statements(source, statements_version, &database).await);
    findings.push(dagster(runs, run_tags));
    for (name, sql) in &source.queries {
        findings.push(named_query(source, name, sql).await);
    }
    Ok(CheckReport {
        version: Some(version),
        findings,
    })
}

/// Without `pg_monitor` (or superuser), other roles' sessions show no state and their
/// statements no queryid: values undercount, nothing errors.
fn privileges(user: &str, superuser: bool, monitor: bool) -> Finding {
    let detail = match (superuser, monitor) {
        (true, _) => format!("`{user}` is a superuser: every session and statement is visible"),
        (false, true) => format!("`{user}` has pg_monitor: every session and statement is visible"),
        (false, false) => format!(
            "not granted: `{user}` sees other roles' sessions without their state and their \
             statements without a queryid, so pg-activity and pg-statements undercount; run \
             GRANT pg_monitor TO \"{user}\""
        ),
    };
    Finding::new("pg_monitor", true, detail)
}

/// pg-statements leaves out every statement recorded under the scaler's role (its own, of
/// every replica). Sessions of that role that are not the scaler's mean the role is shared,
/// and their statements are left out too.
fn own_role(user: &str, others: i64) -> Finding {
    let detail = match others {
        0 => format!(
            "`{user}`: no other application's session uses it now; pg-statements leaves \
             this role's statements (the scaler's own) out"
        ),
        n => format!(
            "`{user}` is shared: {n} session(s) not named backlog-scaler use it, and \
             pg-statements leaves every statement of this role out, theirs too; give the \
             scaler a role of its own (docs/SECURITY.md)"
        ),
    };
    Finding::new("scaler role", true, detail)
}

/// The extension must exist in the source's database and its view must be readable (the
/// library loaded through `shared_preload_libraries`).
async fn statements(
    source: &PostgresSource,
    extension_version: Option<String>,
    database: &str,
) -> Finding {
    const WHAT: &str = "pg_stat_statements";
    let Some(extension_version) = extension_version else {
        return Finding::new(
            WHAT,
            true,
            format!(
                "absent from database `{database}`: pg-statements triggers will fail; add it to \
                 shared_preload_libraries and run CREATE EXTENSION pg_stat_statements"
            ),
        );
    };
    let read = async {
        let tx = source.begin(ReadKind::Statements).await?;
        let rows = tx.query(STATEMENTS_SQL, &[]).await?;
        tx.commit().await?;
        Ok::<i64, crate::Error>(rows.first().map_or(0, |row| row.get(0)))
    };
    match read.await {
        Ok(visible) => Finding::new(
            WHAT,
            true,
            format!("{extension_version} installed and readable ({visible} statements visible)"),
        ),
        Err(error) => Finding::new(
            WHAT,
            true,
            format!(
                "{extension_version} installed but not readable, pg-statements triggers will \
                 fail: {error}"
            ),
        ),
    }
}

/// Dagster's run storage, where dagster-runs triggers look by default (`schema: public`).
fn dagster(runs: bool, run_tags: bool) -> Finding {
    let detail = match (runs, run_tags) {
        (true, true) => "runs and run_tags present in schema public".to_string(),
        _ => {
            let missing: Vec<&str> = [("runs", runs), ("run_tags", run_tags)]
                .into_iter()
                .filter_map(|(table, present)| (!present).then_some(table))
                .collect();
            format!(
                "absent ({} not in schema public): dagster-runs triggers on this database will \
                 fail unless they name another `schema`",
                missing.join(", ")
            )
        }
    };
    Finding::new("dagster tables", true, detail)
}

/// A named query is planned (EXPLAIN, never run) in a read-only transaction of its own, so a
/// missing table or a typo shows now rather than at the first trigger.
async fn named_query(source: &PostgresSource, name: &str, sql: &str) -> Finding {
    let what = format!("query {name}");
    let plan = async {
        let tx = source.begin(ReadKind::Named(name)).await?;
        tx.query(&format!("EXPLAIN {sql}"), &[]).await?;
        tx.commit().await
    };
    match plan.await {
        Ok(()) => Finding::new(&what, true, "plans"),
        Err(error) => Finding::new(
            &what,
            true,
            format!("fails, pg-query triggers naming it will fail: {error}"),
        ),
    }
}
