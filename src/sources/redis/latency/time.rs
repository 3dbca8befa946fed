//! Enqueue times and ages, shared by every library's rule: a time is used only when it is
//! plausible, an unreadable one is skipped with a `debug` line, an age is never negative.

use tracing::debug;

/// Seconds from `since_ms` to `now_ms`; never negative (a producer's clock ahead of ours).
pub fn age_seconds(now_ms: i64, since_ms: f64) -> f64 {
    ((now_ms as f64 - since_ms) / 1000.0).max(0.0)
}

pub(super) fn earliest(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A time that could not be read is skipped, with a `debug` line naming the key.
pub(super) fn logged(source: &str, key: &str, time: Option<f64>) -> Option<f64> {
    if time.is_none() {
        debug!(
            source,
            key, "the oldest waiting job has no readable enqueue time; skipped for latency"
        );
    }
    time
}

/// A Unix time in milliseconds, if it is one: finite and after 1970.
pub(super) fn plausible(ms: f64) -> Option<f64> {
    (ms.is_finite() && ms > 0.0).then_some(ms)
}
