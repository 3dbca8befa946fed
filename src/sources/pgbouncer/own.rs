//! The scaler's own footprint in PgBouncer's pools, read from `SHOW CLIENTS` and
//! `SHOW SERVERS`, so pool measures count the application and never the scaler.
//!
//! Every replica's PostgreSQL sources that go through this PgBouncer are clients of its pools
//! (an idle pooled connection counts in `cl_active`), and while one of their reads runs, a
//! server connection is linked to it (`sv_active`). `SHOW POOLS` cannot tell them apart;
//! `SHOW CLIENTS` can: each client carries the `application_name` it logged in with, and
//! every scaler connection logs in as `backlog-scaler`. A server connection is the scaler's
//! while it is linked to one of those clients (its `link` is the client's `ptr`), or while
//! PgBouncer has set its `application_name` to the scaler's for the linked client.
//!
//! The commands of one refresh are pipelined on one console connection and PgBouncer answers
//! them in one pass of its single thread, so the pools and the clients agree; a count that
//! would still go below zero is clamped at zero.

use std::collections::{HashMap, HashSet};

use super::console::Record;

pub const SHOW_CLIENTS: &str = "SHOW CLIENTS";
pub const SHOW_SERVERS: &str = "SHOW SERVERS";

/// The `application_name` every scaler connection logs in with (its console sessions too).
pub use crate::sources::postgres::APPLICATION_NAME;

/// What the scaler's own connections hold in one pool (a (database, user) pair).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OwnUse {
    pub clients_active: i64,
    pub clients_waiting: i64,
    pub servers_active: i64,
}

/// The scaler's use of every pool, and the longest wait of each pool's other clients.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OwnFootprint {
    pub pools: HashMap<(String, String), OwnUse>,
    /// The longest current wait of the application's clients per pool, in seconds, for the
    /// pools where a scaler client waits too (elsewhere `SHOW POOLS`' `maxwait` is theirs).
    pub others_max_wait: HashMap<(String, String), f64>,
}

/// Builds the footprint from the answers to `SHOW CLIENTS` and `SHOW SERVERS`.
pub fn footprint(clients: &[Record], servers: &[Record]) -> Result<OwnFootprint, String> {
    let mut own = OwnFootprint::default();
    let mut own_clients = HashSet::new();
    let mut waits: HashMap<(String, String), f64> = HashMap::new();
    for client in clients {
        let pool = pool_of(SHOW_CLIENTS, client)?;
        let state = client.text(SHOW_CLIENTS, "state")?;
        let ours = client.text(SHOW_CLIENTS, "application_name").ok() == Some(APPLICATION_NAME);
        if !ours {
            if state.starts_with("waiting") {
                let wait = client.int(SHOW_CLIENTS, "wait")? as f64
                    + client.int(SHOW_CLIENTS, "wait_us").unwrap_or(0) as f64 / 1e6;
                let longest = waits.entry(pool).or_default();
                *longest = longest.max(wait);
            }
            continue;
        }
        if let Ok(ptr) = client.text(SHOW_CLIENTS, "ptr") {
            own_clients.insert(ptr.to_string());
        }
        let usage = own.pools.entry(pool).or_default();
        match state {
            "active" => usage.clients_active += 1,
            s if s.starts_with("waiting") => usage.clients_waiting += 1,
            _ => {}
        }
    }
    for server in servers {
        if server.text(SHOW_SERVERS, "state")? != "active" {
            continue;
        }
        let linked_to_us = server
            .text(SHOW_SERVERS, "link")
            .is_ok_and(|link| own_clients.contains(link));
        let named_ours =
            server.text(SHOW_SERVERS, "application_name").ok() == Some(APPLICATION_NAME);
        if linked_to_us || named_ours {
            let pool = pool_of(SHOW_SERVERS, server)?;
            own.pools.entry(pool).or_default().servers_active += 1;
        }
    }
    for (pool, usage) in &own.pools {
        if usage.clients_waiting > 0 {
            let longest = waits.get(pool).copied().unwrap_or(0.0);
            own.others_max_wait.insert(pool.clone(), longest);
        }
    }
    Ok(own)
}

fn pool_of(command: &str, record: &Record) -> Result<(String, String), String> {
    Ok((
        record.text(command, "database")?.to_string(),
        record.text(command, "user")?.to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(app: &str, state: &str, ptr: &str, wait: &str) -> Record {
        Record::from_pairs(&[
            ("type", "C"),
            ("user", "web"),
            ("database", "app"),
            ("state", state),
            ("wait", wait),
            ("wait_us", "500000"),
            ("ptr", ptr),
            ("link", ""),
            ("application_name", app),
        ])
    }

    fn server(state: &str, link: &str, app: &str) -> Record {
        Record::from_pairs(&[
            ("type", "S"),
            ("user", "web"),
            ("database", "app"),
            ("state", state),
            ("ptr", "0xs"),
            ("link", link),
            ("application_name", app),
        ])
    }

    #[test]
    fn counts_only_the_scalers_clients_and_their_server_links() {
        let clients = [
            client(APPLICATION_NAME, "active", "0x1", "0"),
            client(APPLICATION_NAME, "waiting", "0x2", "4"),
            client("web-worker", "active", "0x3", "0"),
            client("web-worker", "waiting", "0x4", "2"),
        ];
        let servers = [
            server("active", "0x1", "web-worker"),
            server("active", "0x3", "web-worker"),
            server("active", "", APPLICATION_NAME),
            server("idle", "", APPLICATION_NAME),
        ];
        let own = footprint(&clients, &servers).unwrap();
        let pool = ("app".to_string(), "web".to_string());
        assert_eq!(
            own.pools[&pool],
            OwnUse {
                clients_active: 1,
                clients_waiting: 1,
                servers_active: 2,
            }
        );
        // The scaler's client waited 4.5 s, the application's 2.5 s: the latter counts.
        assert_eq!(own.others_max_wait[&pool], 2.5);
        let only_apps = footprint(&clients[2..], &servers[1..2]).unwrap();
        assert!(only_apps.pools.is_empty());
        assert!(only_apps.others_max_wait.is_empty());
    }
}
