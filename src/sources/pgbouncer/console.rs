//! The connection to PgBouncer's admin console: one per source, kept between refreshes.
//!
//! The console (database `pgbouncer`) speaks only the simple query protocol, one command per
//! query, so every command goes out through `simple_query` on its own; the commands of one
//! refresh are pipelined on the connection (one round trip). Every wait is bounded: the
//! connection, the console lock and the commands all finish within [`READ_SHARE`] of the
//! source's `timeout`. A connection that failed or timed out is dropped, and the next read
//! opens a new one, so the source recovers without a restart.

use std::{collections::HashMap, time::Duration};

use futures::future::join_all;
use tokio::{
    sync::{Mutex, MutexGuard},
    time::{Instant, timeout, timeout_at},
};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage, config::SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{config::PgBouncerSettings, own::APPLICATION_NAME};
use crate::{Error, Result};

/// The part of the source's `timeout` a read may use, as a fraction (numerator, denominator).
/// The engine cuts a read at the whole `timeout`; finishing at 4/5 leaves room for this
/// module's own, clearer error and for dropping a connection that stopped answering.
const READ_SHARE: (u32, u32) = (4, 5);

/// The part of the source's `timeout` that opening a connection may use: half of the read's
/// share, so a connection that opens slowly still leaves time for the commands.
const CONNECT_SHARE: (u32, u32) = (2, 5);

/// What to do when the URL does not reach the admin console as a monitoring user.
pub const ADVICE: &str = "point the source's URL at PgBouncer's admin console (database \
    `pgbouncer`) as a user listed in PgBouncer's `stats_users` or `admin_users`";

pub struct Console {
    source: String,
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    timeout: Duration,
    connection: Mutex<Connection>,
}

/// The kept connection, and how many were opened (a snapshot is only compared with one of
/// the same connection: see [`super::stats`]).
#[derive(Default)]
struct Connection {
    client: Option<Client>,
    opened: u64,
}

/// Exclusive use of the console for one read, until its deadline.
pub struct Session<'a> {
    console: &'a Console,
    connection: MutexGuard<'a, Connection>,
    deadline: Instant,
}

impl Console {
    /// Makes no connection.
    pub fn new(source: &str, settings: PgBouncerSettings, timeout: Duration) -> Console {
        let mut config = settings.connection;
        config.application_name(APPLICATION_NAME);
        config.connect_timeout(share(timeout, CONNECT_SHARE));
        let tls = settings.tls.config.map(|tls| {
            config.ssl_mode(SslMode::Require);
            MakeRustlsConnect::new((*tls).clone())
        });
        Console {
            source: source.to_string(),
            config,
            tls,
            timeout,
            connection: Mutex::new(Connection::default()),
        }
    }

    /// The console for one read: the kept connection, or a new one.
    pub async fn session(&self) -> Result<Session<'_>> {
        let started = Instant::now();
        let deadline = started + share(self.timeout, READ_SHARE);
        let mut connection = timeout_at(deadline, self.connection.lock())
            .await
            .map_err(|_| self.unavailable("another read held the console connection too long"))?;
        if connection.client.as_ref().is_none_or(Client::is_closed) {
            connection.client = None;
            let bound = share(self.timeout, CONNECT_SHARE)
                .min(deadline.saturating_duration_since(Instant::now()));
            let client = match timeout(bound, self.connect()).await {
                Ok(Ok(client)) => client,
                Ok(Err(error)) => return Err(self.connect_error(&error)),
                Err(_) => {
                    return Err(self.unavailable(format!(
                        "no console session within {:?}",
                        started.elapsed()
                    )));
                }
            };
            connection.client = Some(client);
            connection.opened += 1;
            tracing::info!(source = %self.source, "connected to PgBouncer's admin console");
        }
        Ok(Session {
            console: self,
            connection,
            deadline,
        })
    }

    async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        let client = match &self.tls {
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                tokio::spawn(connection);
                client
            }
            None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                tokio::spawn(connection);
                client
            }
        };
        Ok(client)
    }

    fn unavailable(&self, reason: impl Into<String>) -> Error {
        Error::unavailable(&self.source, reason)
    }

    fn rejected(&self, reason: impl Into<String>) -> Error {
        Error::rejected(&self.source, reason)
    }

    /// A failed connection attempt. PgBouncer answers most login failures with SQLSTATE
    /// 08P01 whatever the cause, so its messages decide.
    fn connect_error(&self, error: &tokio_postgres::Error) -> Error {
        let Some(db) = error.as_db_error() else {
            return self.unreachable(error);
        };
        let (code, message) = (db.code().code(), db.message());
        if message.contains("not allowed") {
            // PgBouncer's answer to a user outside stats_users/admin_users on `pgbouncer`.
            self.rejected(format!(
                "PgBouncer refused the console session ({message}): {ADVICE}"
            ))
        } else if matches!(code, "28P01" | "28000") || message.contains("authentication failed") {
            Error::credentials_refused(
                &self.source,
                "check the user and password of the source's URL \
                 (PgBouncer's auth_file or auth_query)",
            )
        } else if code == "3D000"
            || message.contains("does not exist")
            || message.contains("no such database")
        {
            self.rejected(format!("{message}: {ADVICE}"))
        } else {
            self.unavailable(format!("PgBouncer refused the session ({code}: {message})"))
        }
    }

    /// A failure without a server answer: refused, reset, TLS, closed. These carry no
    /// credentials; the cause chain holds the useful part (e.g. "invalid peer certificate").
    fn unreachable(&self, error: &tokio_postgres::Error) -> Error {
        if error.is_closed() {
            return self.unavailable("the console connection closed");
        }
        let mut reason = format!("cannot reach PgBouncer: {error}");
        let mut cause = std::error::Error::source(error);
        while let Some(inner) = cause {
            reason.push_str(&format!(": {inner}"));
            cause = inner.source();
        }
        self.unavailable(reason)
    }
}

impl Session<'_> {
    /// Which connection this session uses (a new number after every reconnection).
    pub fn connection(&self) -> u64 {
        self.connection.opened
    }

    /// Runs `commands` pipelined, one query each, and answers their rows in the same order.
    /// A failure without a server answer, or no answer in time, drops the connection.
    pub async fn show(&mut self, commands: &[&str]) -> Result<Vec<Vec<Record>>> {
        let console = self.console;
        let client = self
            .connection
            .client
            .as_ref()
            .ok_or_else(|| console.unavailable("the console connection was dropped"))?;
        let answers = join_all(commands.iter().map(|command| client.simple_query(command)));
        let answers = match timeout_at(self.deadline, answers).await {
            Ok(answers) => answers,
            Err(_) => {
                self.connection.client = None;
                return Err(console.unavailable(format!(
                    "the console did not answer `{}` within {:?}",
                    commands.join("`, `"),
                    share(console.timeout, READ_SHARE)
                )));
            }
        };
        let mut results = Vec::with_capacity(commands.len());
        for (command, answer) in commands.iter().zip(answers) {
            match answer {
                Ok(messages) => results.push(records(&messages)),
                Err(error) => {
                    let error = self.command_error(command, &error);
                    if error.is_unavailable() {
                        self.connection.client = None;
                    }
                    return Err(error);
                }
            }
        }
        Ok(results)
    }

    /// A failed command. An ERROR from the server means the URL does not reach the console
    /// (PostgreSQL behind PgBouncer answers `SHOW POOLS` with "unrecognized configuration
    /// parameter"); a FATAL ends the session, as PgBouncer's shutdown does.
    fn command_error(&self, command: &str, error: &tokio_postgres::Error) -> Error {
        let console = self.console;
        match error.as_db_error() {
            Some(db) if db.severity() == "ERROR" => console.rejected(format!(
                "`{command}` failed ({}: {}): {ADVICE}",
                db.code().code(),
                db.message()
            )),
            Some(db) => console.unavailable(format!(
                "PgBouncer ended the console session ({}: {})",
                db.code().code(),
                db.message()
            )),
            None => console.unreachable(error),
        }
    }
}

/// `timeout` × `fraction`.
fn share(timeout: Duration, (numerator, denominator): (u32, u32)) -> Duration {
    timeout * numerator / denominator
}

/// The rows of a simple-query answer.
fn records(messages: &[SimpleQueryMessage]) -> Vec<Record> {
    messages
        .iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(Record(
                row.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, column)| (column.name().to_string(), row.get(i).map(str::to_string)))
                    .collect(),
            )),
            _ => None,
        })
        .collect()
}

/// One row of a console answer, its values (all text in the simple protocol) by column name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record(HashMap<String, Option<String>>);

impl Record {
    #[cfg(test)]
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Record {
        Record(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Some(v.to_string())))
                .collect(),
        )
    }

    /// The value of `column`; an error naming the command and the column when it has none.
    pub fn text(&self, command: &str, column: &str) -> Result<&str, String> {
        match self.0.get(column) {
            Some(Some(value)) => Ok(value),
            Some(None) => Err(format!("`{command}` answered NULL for `{column}`")),
            None => Err(format!("`{command}` answered no `{column}` column")),
        }
    }

    /// The integer value of `column`.
    pub fn int(&self, command: &str, column: &str) -> Result<i64, String> {
        let value = self.text(command, column)?;
        value.trim().parse().map_err(|_| {
            format!(
                "`{command}` answered `{}` for `{column}`, not an integer",
                crate::metadata::shorten(value)
            )
        })
    }
}
