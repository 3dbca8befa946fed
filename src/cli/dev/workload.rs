//! `dev`'s synthetic workload: work arriving and draining in the shapes the sample triggers
//! measure, so every row of the table moves.
//!
//! - a Redis list that gets bursts of jobs every few seconds and drains steadily;
//! - a Celery queue with kombu's priority sub-queues (`queue`, `queue\x06\x163`, …), busy and
//!   quiet in turns, drained highest priority first;
//! - a stream with a consumer group: XADD, XREADGROUP, and XACK a beat later (so some entries
//!   are always pending);
//! - PostgreSQL sessions running `pg_sleep` (active sessions come and go), a session running
//!   statements (calls per second), and Dagster-shaped runs queued and started.
//!
//! Every task stops when the token is cancelled, and never panics: a failed command is
//! retried on the next beat (the backends stop before the tasks when `dev` is killed).

use std::time::Duration;

use redis::{
    AsyncCommands,
    aio::MultiplexedConnection,
    streams::{StreamReadOptions, StreamReadReply},
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::sources::redis::libraries::CELERY_SEPARATOR;

pub const JOBS_KEY: &str = "dev:jobs";
pub const CELERY_QUEUE: &str = "dev-celery";
pub const STREAM_KEY: &str = "dev:events";
pub const STREAM_GROUP: &str = "workers";
/// The `application_name` of the workload's PostgreSQL sessions.
pub const APPLICATION_NAME: &str = "dev-workload";

/// kombu's default priority steps: 0 is the queue key itself.
const CELERY_STEPS: &[u8] = &[0, 3, 6, 9];

/// Concurrent sessions running `pg_sleep`.
const SLEEPERS: u64 = 3;

/// Dagster's run storage, reduced to the columns dagster-runs reads, with a few queued runs.
pub const SCHEMA_SQL: &str = "\
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
CREATE TABLE runs (run_id text PRIMARY KEY, pipeline_name text NOT NULL, status text NOT NULL);
CREATE TABLE run_tags (run_id text NOT NULL, key text NOT NULL, value text NOT NULL);
INSERT INTO runs SELECT 'seed-' || n, 'etl', 'QUEUED' FROM generate_series(1, 3) AS n;";

/// Starts every workload task.
pub fn start(redis_url: &str, postgres_url: &str, stop: CancellationToken) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    let redis = redis::Client::open(redis_url).ok();
    if let Some(client) = redis {
        tasks.push(spawn(&stop, list_bursts(client.clone())));
        tasks.push(spawn(&stop, celery(client.clone())));
        tasks.push(spawn(&stop, stream(client)));
    }
    for seed in 0..SLEEPERS {
        tasks.push(spawn(&stop, sleeper(postgres_url.to_string(), seed)));
    }
    tasks.push(spawn(&stop, statements(postgres_url.to_string())));
    tasks
}

fn spawn(
    stop: &CancellationToken,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    let stop = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = task => {}
        }
    })
}

/// A small deterministic generator (xorshift): the workload needs variety, not randomness.
struct Dice(u64);

impl Dice {
    fn new(seed: u64) -> Dice {
        Dice(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// A number in `0..n`.
    fn roll(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// A connection, retried every second until the server answers.
async fn connect(client: &redis::Client) -> MultiplexedConnection {
    loop {
        if let Ok(connection) = client.get_multiplexed_async_connection().await {
            return connection;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Bursts of 10-50 jobs every 6 s; 4 jobs a second done.
async fn list_bursts(client: redis::Client) {
    let mut connection = connect(&client).await;
    let mut dice = Dice::new(1);
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    let mut serial = 0u64;
    for beat in 0u64.. {
        ticker.tick().await;
        if beat % 24 == 0 {
            let jobs: Vec<String> = (0..10 + dice.roll(41))
                .map(|_| {
                    serial += 1;
                    format!("job-{serial}")
                })
                .collect();
            let _: redis::RedisResult<()> = connection.rpush(JOBS_KEY, jobs).await;
        }
        let _: redis::RedisResult<Option<String>> = connection.lpop(JOBS_KEY, None).await;
    }
}

/// Ten busy seconds (0-3 tasks every 500 ms, on a random priority) and ten quiet ones; one
/// task done every 500 ms, highest priority (step 0) first, as a Celery worker takes them.
async fn celery(client: redis::Client) {
    let mut connection = connect(&client).await;
    let mut dice = Dice::new(2);
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let keys: Vec<String> = CELERY_STEPS
        .iter()
        .map(|step| match step {
            0 => CELERY_QUEUE.to_string(),
            n => format!("{CELERY_QUEUE}{CELERY_SEPARATOR}{n}"),
        })
        .collect();
    for beat in 0u64.. {
        ticker.tick().await;
        if (beat / 20) % 2 == 0 {
            for _ in 0..dice.roll(4) {
                let key = &keys[dice.roll(keys.len() as u64) as usize];
                let _: redis::RedisResult<()> = connection.lpush(key, "{\"task\":\"dev\"}").await;
            }
        }
        for key in &keys {
            let taken: redis::RedisResult<Option<String>> = connection.rpop(key, None).await;
            if matches!(taken, Ok(Some(_))) {
                break;
            }
        }
    }
}

/// Entries added in waves; a consumer reads two every 200 ms and acknowledges them on the
/// next beat.
async fn stream(client: redis::Client) {
    let mut connection = connect(&client).await;
    let _: redis::RedisResult<()> = connection
        .xgroup_create_mkstream(STREAM_KEY, STREAM_GROUP, "$")
        .await;
    let mut dice = Dice::new(3);
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    let options = StreamReadOptions::default()
        .group(STREAM_GROUP, "dev-consumer")
        .count(2);
    let mut unacked: Vec<String> = Vec::new();
    for beat in 0u64.. {
        ticker.tick().await;
        let adds = if (beat / 40) % 2 == 0 {
            dice.roll(5)
        } else {
            0
        };
        for _ in 0..adds {
            let _: redis::RedisResult<String> = connection
                .xadd_maxlen(
                    STREAM_KEY,
                    redis::streams::StreamMaxlen::Approx(1000),
                    "*",
                    &[("kind", "dev")],
                )
                .await;
        }
        if !unacked.is_empty() {
            let _: redis::RedisResult<u64> =
                connection.xack(STREAM_KEY, STREAM_GROUP, &unacked).await;
            unacked.clear();
        }
        let read: redis::RedisResult<StreamReadReply> = connection
            .xread_options(&[STREAM_KEY], &[">"], &options)
            .await;
        if let Ok(reply) = read {
            unacked = reply
                .keys
                .into_iter()
                .flat_map(|key| key.ids)
                .map(|entry| entry.id)
                .collect();
        }
    }
}

/// A session connected with the workload's application_name, retried until it connects.
async fn session(url: &str) -> tokio_postgres::Client {
    loop {
        if let Ok((client, connection)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await
        {
            tokio::spawn(connection);
            return client;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A session that is active (in `pg_sleep`) 0.3-2 s at a time, idle up to 1.5 s between.
async fn sleeper(url: String, seed: u64) {
    let client = session(&url).await;
    let mut dice = Dice::new(10 + seed);
    loop {
        tokio::time::sleep(Duration::from_millis(dice.roll(1500))).await;
        let seconds = 0.3 + dice.roll(17) as f64 / 10.0;
        if client
            .execute("SELECT pg_sleep($1)", &[&seconds])
            .await
            .is_err()
            && client.is_closed()
        {
            return;
        }
    }
}

/// Statements at 20 a second for ten seconds, then 4 a second; Dagster runs queued every 3 s
/// (0-3 at a time, at most 12 waiting) and one started every 2 s.
async fn statements(url: String) {
    let client = session(&url).await;
    let mut dice = Dice::new(20);
    let mut serial = 0u64;
    let started = tokio::time::Instant::now();
    let mut queue_at = started;
    let mut start_at = started + Duration::from_secs(1);
    loop {
        let busy = (started.elapsed().as_secs() / 10).is_multiple_of(2);
        tokio::time::sleep(Duration::from_millis(if busy { 50 } else { 250 })).await;
        let _ = client
            .query("SELECT count(*) FROM runs WHERE status = $1", &[&"QUEUED"])
            .await;
        let now = tokio::time::Instant::now();
        if now >= queue_at {
            queue_at = now + Duration::from_secs(3);
            for _ in 0..dice.roll(4) {
                serial += 1;
                let run_id = format!("dev-{serial}");
                let _ = client
                    .execute(
                        "INSERT INTO runs (run_id, pipeline_name, status)
                         SELECT $1, 'etl', 'QUEUED'
                         WHERE (SELECT count(*) FROM runs WHERE status = 'QUEUED') < 12",
                        &[&run_id],
                    )
                    .await;
            }
        }
        if now >= start_at {
            start_at = now + Duration::from_secs(2);
            let _ = client
                .execute(
                    "UPDATE runs SET status = 'STARTED' WHERE run_id = (
                         SELECT run_id FROM runs WHERE status = 'QUEUED' ORDER BY run_id LIMIT 1)",
                    &[],
                )
                .await;
        }
    }
}
