//! Sidekiq: the job taken next is `LINDEX queue:<name> -1` (clients LPUSH, fetchers BRPOP);
//! its enqueue time is `enqueued_at` in the job's JSON.

use serde::Deserialize;

use super::time::plausible;

#[derive(Deserialize)]
struct SidekiqJob {
    enqueued_at: Option<serde_json::Number>,
}

/// `enqueued_at` of a Sidekiq job's JSON, in Unix milliseconds. As `Sidekiq::Queue#latency`
/// reads it: a float is seconds (Sidekiq ≤ 7: `Time.now.to_f`), an integer milliseconds
/// (Sidekiq 8).
pub fn sidekiq_enqueued_ms(job: &[u8]) -> Option<f64> {
    let job: SidekiqJob = serde_json::from_slice(job).ok()?;
    let time = job.enqueued_at?;
    let ms = if time.is_f64() {
        time.as_f64()? * 1000.0
    } else {
        time.as_f64()?
    };
    plausible(ms)
}
