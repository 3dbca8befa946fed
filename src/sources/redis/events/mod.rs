//! Event-driven reads: Redis tells the source the moment a key its measurements read changes,
//! so the engine re-reads that measurement at once instead of at the next refresh.
//!
//! The mechanism is client-side caching's *default* tracking mode (Redis ≥ 6), on one
//! dedicated RESP3 connection per node (the master of a standalone or Sentinel source, every
//! master of a Cluster): `CLIENT TRACKING ON`, then each key the measurements read is *armed*
//! by reading it once on that connection (`EXISTS`). The server remembers the (key, client)
//! pair and, when the key next changes, pushes one `invalidate` message naming it and forgets
//! the pair; the watcher re-arms the key and reports the measurements that read it to the
//! engine, which re-reads them. Under churn a key therefore costs at most one invalidation,
//! one re-arm and one re-read per [`COALESCE`] window, however often it changes.
//! Why not the alternatives (docs/triggers.md says more): broadcast mode (`BCAST PREFIX`)
//! makes the server compare every written key with every registered prefix and walk them all
//! on each turn of its event loop, a cost on the whole server that grows with the number of
//! watched keys; keyspace notifications are off by default and turning them on costs every
//! client of the server.
//!
//! A key index ([`index`]) maps keys to the live measurements that read them; the engine
//! tells the source when a measurement becomes live and when it expires. When tracking cannot
//! be had (Redis < 6 or a proxy without `HELLO 3`, an ACL without `+client|tracking`) the
//! source polls as before and says why: in `backlog-scaler check`,
//! `backlog_scaler_source_event_driven` and the log. A lost event connection (a restart, a
//! failover) is made again within about a second; meanwhile the refresh polls.

mod index;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use redis::{
    AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind,
    Value, aio::MultiplexedConnection, cluster_routing::Slot,
};
use tokio::{
    sync::{Notify, mpsc},
    time::Instant,
};
use tracing::{info, warn};

use super::{
    RedisQuery,
    config::NodeSettings,
    connections::{Connections, Nodes},
    reply::describe,
};
use crate::sources::{ChangeFeed, Finding, Query, RefreshSettings};
use index::KeyIndex;

/// A key that keeps changing is re-armed (and its measurements reported) at most once per this
/// window; the first change after a quiet spell goes out at once. Each report costs one
/// re-arm and one re-read, so 40 ms bounds a key that changes thousands of times a second to
/// 25 + 25 commands a second, 51 with the refresh's read (the goal: at most 60), and delays a
/// change that falls inside a window by at most 40 ms (the goal for activation: 50 ms).
const COALESCE: Duration = Duration::from_millis(40);

/// After a lost event connection, the first new attempt waits this long, doubling up to
/// [`RECONNECT_MAX`]: a restarted Redis or a promoted replica is followed within about a
/// second of answering again.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(1);

/// A server or ACL that refused tracking is asked again this often (an operator may grant the
/// permission without restarting the scaler).
const REFUSED_RETRY: Duration = Duration::from_secs(30);

/// New keys are armed this long after their measurement became live, all of them in one
/// pipeline: the measurement's first read goes out alone (a cold answer does not wait behind
/// the arming), and a storm of new measurements is armed in a few round trips. A change within
/// this window is seen by the next refresh.
const ARM_DELAY: Duration = Duration::from_millis(5);

/// Keys armed in one pipeline per node.
const ARM_CHUNK: usize = 1_000;

/// Whether the source is event-driven, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// No event connection was tried yet.
    Starting,
    /// Tracking is on at every node.
    EventDriven { nodes: usize },
    /// Polling only; the reason says why and what to do.
    Polling(String),
}

impl Mode {
    /// One line for `check` and the log.
    pub fn describe(&self) -> String {
        match self {
            Mode::Starting => "polling until the event connection is up".into(),
            Mode::EventDriven { nodes } => format!(
                "event-driven: CLIENT TRACKING on {nodes} node{}; changed keys are re-read at once",
                if *nodes == 1 { "" } else { "s" }
            ),
            Mode::Polling(reason) => format!("polling every refresh_interval: {reason}"),
        }
    }
}

/// The event side of one Redis source: the key index and the current mode.
pub struct Events {
    /// Credentials and TLS of every node.
    node: NodeSettings,
    timeout: Duration,
    refresh_interval: Duration,
    index: Mutex<KeyIndex>,
    /// Keys were added to the index since the watcher last armed.
    new_keys: Notify,
    mode: Mutex<Mode>,
    event_driven: AtomicBool,
}

impl Events {
    pub fn new(node: NodeSettings, refresh: RefreshSettings) -> Events {
        let RefreshSettings {
            refresh_interval,
            timeout,
            ..
        } = refresh;
        Events {
            node,
            timeout,
            refresh_interval,
            index: Mutex::default(),
            new_keys: Notify::new(),
            mode: Mutex::new(Mode::Starting),
            event_driven: AtomicBool::new(false),
        }
    }

    pub fn event_driven(&self) -> bool {
        self.event_driven.load(Ordering::Relaxed)
    }

    pub fn mode(&self) -> Mode {
        self.mode.lock().expect("lock poisoned").clone()
    }

    fn set_mode(&self, source: &str, mode: Mode) {
        let mut current = self.mode.lock().expect("lock poisoned");
        if *current != mode {
            match &mode {
                Mode::EventDriven { .. } => info!(source, mode = %mode.describe(), "Redis events"),
                _ => warn!(source, mode = %mode.describe(), "Redis events"),
            }
        }
        self.event_driven
            .store(matches!(mode, Mode::EventDriven { .. }), Ordering::Relaxed);
        *current = mode;
    }

    /// The engine's live measurements changed: `added` became live, `removed` expired.
    pub fn live(&self, added: &[Query], removed: &[Query]) {
        let mut index = self.index();
        let mut fresh = false;
        for query in added {
            if let Some(typed) = query.downcast::<RedisQuery>() {
                fresh |= index.add(query, typed);
            }
        }
        for query in removed {
            if let Some(typed) = query.downcast::<RedisQuery>() {
                index.remove(query, typed);
            }
        }
        drop(index);
        if fresh {
            self.new_keys.notify_one();
        }
    }

    fn index(&self) -> std::sync::MutexGuard<'_, KeyIndex> {
        self.index.lock().expect("lock poisoned")
    }
}

/// The event connections of one session, and which of them serves each hash slot.
struct Connected {
    nodes: Vec<Node>,
    owners: Owners,
}

/// Which node serves a key.
enum Owners {
    /// One node serves every slot (a standalone or Sentinel master, a Cluster of one master):
    /// no table. A table of all 16,384 slots is half a MiB, and one made again for every
    /// session (after each Redis restart) stays in the heap for good.
    One,
    /// A Cluster's masters, by index in `nodes`, per slot.
    BySlot(HashMap<Slot, u16>),
}

impl Owners {
    fn of(nodes: &[Node]) -> Owners {
        if let [node] = nodes
            && node.slots == [ALL_SLOTS]
        {
            return Owners::One;
        }
        let mut owners = HashMap::with_capacity(usize::from(SLOTS));
        for (index, node) in nodes.iter().enumerate() {
            let index = u16::try_from(index).unwrap_or(u16::MAX);
            for (from, to) in &node.slots {
                owners.extend(
                    (*from..=*to)
                        .filter_map(Slot::new)
                        .map(|slot| (slot, index)),
                );
            }
        }
        Owners::BySlot(owners)
    }

    /// The index in `nodes` of the node that serves `key`, if any does.
    fn node(&self, key: &str) -> Option<usize> {
        match self {
            Owners::One => Some(0),
            Owners::BySlot(owners) => owners
                .get(&Slot::for_key(key.as_bytes()))
                .map(|index| usize::from(*index)),
        }
    }
}

/// Every hash slot of a Cluster, which a standalone server or a Sentinel master serves alone.
const ALL_SLOTS: (u16, u16) = (0, SLOTS - 1);
const SLOTS: u16 = 16_384;

/// One node's event connection and the hash slots it serves.
struct Node {
    address: String,
    connection: MultiplexedConnection,
    slots: Vec<(u16, u16)>,
}

/// Why a session of event connections ended.
enum Ended {
    /// A connection failed or closed (a restart, a failover, a moved slot): try again soon.
    Lost(String),
    /// The server or its ACL refuses what events need: poll, and ask again later.
    Refused(String),
}

/// Follows the source's changes until dropped, reporting changed measurements to `feed`.
pub(super) async fn run(source: &Connections, events: &Events, feed: Arc<ChangeFeed>) {
    let mut wait = RECONNECT_MIN;
    loop {
        let started = Instant::now();
        let ended = session(source, events, &feed).await;
        events.event_driven.store(false, Ordering::Relaxed);
        let pause = match ended {
            Ended::Lost(reason) => {
                events.set_mode(
                    &source.name,
                    Mode::Polling(format!("event connection: {reason}")),
                );
                // A session that lasted resets the backoff.
                if started.elapsed() > RECONNECT_MAX * 5 {
                    wait = RECONNECT_MIN;
                }
                let pause = wait;
                wait = (wait * 2).min(RECONNECT_MAX);
                pause
            }
            Ended::Refused(reason) => {
                events.set_mode(&source.name, Mode::Polling(reason));
                REFUSED_RETRY
            }
        };
        tokio::time::sleep(pause).await;
    }
}

/// What `backlog-scaler check` says of events: tries tracking on every node once.
pub(super) async fn check(source: &Connections, events: &Events) -> Finding {
    let (tx, _rx) = mpsc::unbounded_channel();
    let mode = match connect_all(source, events, tx).await {
        Ok(connected) => Mode::EventDriven {
            nodes: connected.nodes.len(),
        },
        Err(Ended::Lost(reason) | Ended::Refused(reason)) => Mode::Polling(reason),
    };
    Finding::new("events", true, mode.describe())
}

/// One life of the event connections: connect, enable tracking, arm every key, then follow
/// invalidations until something breaks.
async fn session(source: &Connections, events: &Events, feed: &ChangeFeed) -> Ended {
    let (tx, pushes) = mpsc::unbounded_channel::<PushInfo>();
    let connected = match connect_all(source, events, tx).await {
        Ok(connected) => connected,
        Err(ended) => return ended,
    };
    let ended = follow(source, events, feed, connected, pushes).await;
    events.index().stop();
    ended
}

/// Arms every key, then follows invalidations until something breaks.
async fn follow(
    source: &Connections,
    events: &Events,
    feed: &ChangeFeed,
    connected: Connected,
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
) -> Ended {
    let keys = events.index().start();
    if let Err(ended) = arm(&connected, events, keys).await {
        return ended;
    }
    let nodes = connected.nodes.len();
    events.set_mode(&source.name, Mode::EventDriven { nodes });
    // Whatever changed while no connection watched is read once now.
    let readers = events.index().all_readers();
    feed.mark(readers, 0);
    let mut pending = Pending::default();
    let mut master_check = tokio::time::interval(events.refresh_interval);
    let mut arm_at: Option<Instant> = None;
    loop {
        let step = tokio::select! {
            push = pushes.recv() => match push {
                Some(push) => pending.record(&push, events),
                None => Err(Ended::Lost("closed".into())),
            },
            _ = sleep_until(pending.due()) => pending.flush(events, &connected, feed).await,
            _ = events.new_keys.notified() => {
                arm_at.get_or_insert_with(|| Instant::now() + ARM_DELAY);
                Ok(())
            }
            _ = sleep_until(arm_at) => {
                arm_at = None;
                let fresh = events.index().take_fresh();
                arm(&connected, events, fresh).await
            }
            _ = master_check.tick() => match master_moved(source, &connected.nodes).await {
                Some(reason) => Err(Ended::Lost(reason)),
                None => Ok(()),
            },
        };
        if let Err(ended) = step {
            return ended;
        }
    }
}

/// Changed keys not reported to the engine yet.
#[derive(Default)]
struct Pending {
    keys: HashSet<String>,
    /// The database was flushed: every key changed.
    all: bool,
    /// Change events since the last report.
    events: u64,
    last_flush: Option<Instant>,
}

impl Pending {
    /// Takes in one push: an invalidation disarms its keys and marks them changed.
    fn record(&mut self, push: &PushInfo, events: &Events) -> Result<(), Ended> {
        match push.kind {
            PushKind::Invalidate => match invalidated_keys(&push.data) {
                Some(keys) => {
                    self.events += keys.len() as u64;
                    events
                        .index()
                        .set_armed(keys.iter().map(String::as_str), false);
                    self.keys.extend(keys);
                }
                None => {
                    self.events += 1;
                    events.index().disarm_all();
                    self.all = true;
                }
            },
            PushKind::Disconnection => return Err(Ended::Lost("disconnected".into())),
            _ => {}
        }
        Ok(())
    }

    /// When the changes are to be reported: at once after a quiet spell, else when the
    /// window of the latest report ends; never with nothing to report.
    fn due(&self) -> Option<Instant> {
        (!self.keys.is_empty() || self.all).then(|| {
            self.last_flush
                .map_or_else(Instant::now, |at| at + COALESCE)
        })
    }

    /// Re-arms the changed keys, then reports their measurements.
    async fn flush(
        &mut self,
        events: &Events,
        connected: &Connected,
        feed: &ChangeFeed,
    ) -> Result<(), Ended> {
        self.last_flush = Some(Instant::now());
        let keys: Vec<String> = if self.all {
            events.index().unarmed()
        } else {
            self.keys.iter().cloned().collect()
        };
        // Armed before the engine re-reads, so a change after the re-read is seen.
        arm(connected, events, keys).await?;
        let readers = if self.all {
            events.index().all_readers()
        } else {
            events.index().readers(&self.keys)
        };
        feed.mark(readers, std::mem::take(&mut self.events));
        self.keys.clear();
        self.all = false;
        Ok(())
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// For a Sentinel source: the Sentinels now name another master than the one watched.
async fn master_moved(source: &Connections, nodes: &[Node]) -> Option<String> {
    let Nodes::Sentinel(sentinel) = &source.nodes else {
        return None;
    };
    let (host, port) = sentinel.master_address().await.ok()?;
    let now = format!("{host}:{port}");
    (nodes.first()?.address != now).then(|| format!("the master moved to {now}"))
}

/// The keys named by an `invalidate` push; `None` for a flush (a null instead of keys).
fn invalidated_keys(data: &[Value]) -> Option<Vec<String>> {
    match data.first()? {
        Value::Array(keys) | Value::Set(keys) => Some(
            keys.iter()
                .filter_map(|key| match key {
                    Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
                    Value::SimpleString(text) => Some(text.clone()),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
}

/// Reads each key once on its node's event connection, so the node reports its next change.
async fn arm(connected: &Connected, events: &Events, keys: Vec<String>) -> Result<(), Ended> {
    let mut per_node: Vec<Vec<String>> = vec![Vec::new(); connected.nodes.len()];
    for key in keys {
        if let Some(node) = connected.owners.node(&key) {
            per_node[node].push(key);
        }
    }
    for (node, keys) in connected.nodes.iter().zip(per_node) {
        for chunk in keys.chunks(ARM_CHUNK) {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for key in chunk {
                pipe.cmd("EXISTS").arg(key);
            }
            let mut connection = node.connection.clone();
            let replies: Vec<Value> = pipe
                .query_async(&mut connection)
                .await
                .map_err(|e| Ended::Lost(format!("{}: {}", node.address, describe(&e))))?;
            let mut armed: Vec<&str> = Vec::with_capacity(chunk.len());
            for (key, reply) in chunk.iter().zip(replies) {
                match reply {
                    Value::ServerError(error) if matches!(error.code(), "MOVED" | "ASK") => {
                        return Err(Ended::Lost("the cluster's slots moved".into()));
                    }
                    // A key the ACL hides: its measurements are polled.
                    Value::ServerError(_) => {}
                    _ => armed.push(key),
                }
            }
            events.index().set_armed(armed, true);
        }
    }
    Ok(())
}

/// An event connection with tracking on at every node of the source.
async fn connect_all(
    source: &Connections,
    events: &Events,
    pushes: mpsc::UnboundedSender<PushInfo>,
) -> Result<Connected, Ended> {
    let targets = nodes(source, &events.node).await?;
    let mut nodes = Vec::with_capacity(targets.len());
    for target in targets {
        let connection = connect(events, &target.address, target.info, pushes.clone()).await?;
        nodes.push(Node {
            address: target.address,
            connection,
            slots: target.slots,
        });
    }
    Ok(Connected {
        owners: Owners::of(&nodes),
        nodes,
    })
}

/// A node to watch: its address, its connection info and the hash slots it serves.
struct Target {
    address: String,
    info: redis::ConnectionInfo,
    slots: Vec<(u16, u16)>,
}

/// Every node to watch: the server, the master the Sentinels name, or every Cluster master.
async fn nodes(source: &Connections, node: &NodeSettings) -> Result<Vec<Target>, Ended> {
    match &source.nodes {
        Nodes::Standalone { client, .. } => {
            let info = client.get_connection_info().clone();
            Ok(vec![Target {
                address: info.addr().to_string(),
                info,
                slots: vec![ALL_SLOTS],
            }])
        }
        Nodes::Sentinel(sentinel) => {
            let (host, port) = sentinel
                .master_address()
                .await
                .map_err(|e| Ended::Lost(e.to_string()))?;
            Ok(vec![Target {
                address: format!("{host}:{port}"),
                info: node_info(node, &host, port)?,
                slots: vec![ALL_SLOTS],
            }])
        }
        Nodes::Cluster { client, connection } => {
            let mut connection = source
                .cluster(client, connection)
                .await
                .map_err(|e| Ended::Lost(e.to_string()))?;
            let mut slots = redis::cmd("CLUSTER");
            slots.arg("SLOTS");
            let reply: Value = slots
                .query_async(&mut connection)
                .await
                .map_err(|e| Ended::Lost(format!("CLUSTER SLOTS: {}", describe(&e))))?;
            let mut masters: Vec<Target> = Vec::new();
            for (host, port, range) in cluster_slots(&reply) {
                let address = format!("{host}:{port}");
                match masters.iter_mut().find(|t| t.address == address) {
                    Some(target) => target.slots.push(range),
                    None => masters.push(Target {
                        info: node_info(node, &host, port)?,
                        address,
                        slots: vec![range],
                    }),
                }
            }
            Ok(masters)
        }
    }
}

/// The masters of a `CLUSTER SLOTS` reply: host, port and slot range.
fn cluster_slots(reply: &Value) -> Vec<(String, u16, (u16, u16))> {
    let Value::Array(ranges) = reply else {
        return Vec::new();
    };
    ranges
        .iter()
        .filter_map(|range| {
            let Value::Array(fields) = range else {
                return None;
            };
            let (Value::Int(from), Value::Int(to), Value::Array(master)) =
                (fields.first()?, fields.get(1)?, fields.get(2)?)
            else {
                return None;
            };
            let host = match master.first()? {
                Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                Value::SimpleString(text) => text.clone(),
                _ => return None,
            };
            let Value::Int(port) = master.get(1)? else {
                return None;
            };
            Some((host, *port as u16, (*from as u16, *to as u16)))
        })
        .collect()
}

/// The connection info of a node named by address, with the source's credentials and TLS.
fn node_info(node: &NodeSettings, host: &str, port: u16) -> Result<redis::ConnectionInfo, Ended> {
    let addr = if node.tls {
        ConnectionAddr::TcpTls {
            host: host.to_string(),
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host.to_string(), port)
    };
    let info = format!("redis://{host}:{port}")
        .into_connection_info()
        .map_err(|_| Ended::Lost(format!("a node address that is not valid: {host}:{port}")))?
        .set_addr(addr);
    let settings = node.apply(info.redis_settings().clone());
    Ok(info.set_redis_settings(settings))
}

/// A RESP3 connection to one node with tracking on, its pushes sent to `pushes`.
async fn connect(
    events: &Events,
    address: &str,
    info: redis::ConnectionInfo,
    pushes: mpsc::UnboundedSender<PushInfo>,
) -> Result<MultiplexedConnection, Ended> {
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    let info = info.set_redis_settings(settings);
    let client = events
        .node
        .client(info)
        .map_err(|e| Ended::Lost(format!("{address}: {}", describe(&e))))?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(events.timeout / 2))
        .set_response_timeout(Some(events.timeout / 2))
        .set_push_sender(pushes);
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| match refusal(&e) {
            Some(reason) => Ended::Refused(format!("{address}: RESP3 (HELLO 3) {reason}")),
            None => Ended::Lost(format!("{address}: {}", describe(&e))),
        })?;
    let mut tracking = redis::cmd("CLIENT");
    tracking.arg("TRACKING").arg("ON");
    let answer: redis::RedisResult<()> = tracking.query_async(&mut connection).await;
    answer.map_err(|e| match refusal(&e) {
        Some(reason) => Ended::Refused(format!("{address}: CLIENT TRACKING {reason}")),
        None => Ended::Lost(format!("{address}: {}", describe(&e))),
    })?;
    Ok(connection)
}

/// How a server refuses what events need, with the fix; `None` for other errors.
fn refusal(error: &redis::RedisError) -> Option<String> {
    match error.code() {
        Some("NOPERM") => Some(
            "refused by the ACL (NOPERM): grant the user +client|tracking (docs/SECURITY.md)"
                .into(),
        ),
        Some("ERR") | Some("NOPROTO")
            if error
                .detail()
                .is_some_and(|d| d.to_lowercase().contains("unknown")) =>
        {
            Some(format!(
                "is not supported ({}): Redis 6 or later, without a proxy in between, is needed",
                error.detail().unwrap_or_default().trim()
            ))
        }
        Some("NOPROTO") => Some("is not supported (NOPROTO): Redis 6 or later is needed".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidations_name_keys_or_flush_everything() {
        let keys = [Value::Array(vec![
            Value::BulkString(b"a".to_vec()),
            Value::BulkString(b"b".to_vec()),
        ])];
        assert_eq!(
            invalidated_keys(&keys),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(invalidated_keys(&[Value::Nil]), None);
    }

    #[test]
    fn cluster_slots_name_each_master_and_range() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(7000), bulk("id1")]),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(10922),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(7001), bulk("id2")]),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(7004), bulk("id5")]),
            ]),
        ]);
        assert_eq!(
            cluster_slots(&reply),
            vec![
                ("127.0.0.1".into(), 7000, (0, 5460)),
                ("127.0.0.1".into(), 7001, (5461, 10922)),
            ]
        );
    }

    #[test]
    fn modes_say_what_they_mean() {
        assert!(
            Mode::EventDriven { nodes: 3 }
                .describe()
                .starts_with("event-driven: CLIENT TRACKING on 3 nodes")
        );
        assert!(
            Mode::Polling("NOPERM".into())
                .describe()
                .contains("polling every refresh_interval: NOPERM")
        );
    }
}
