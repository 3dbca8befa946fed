//! Waiting for something to become true, with a deadline and a failure that shows what was
//! last seen: the one poll loop of the tests, async ([`poll_until`]) and blocking
//! ([`poll_until_blocking`], for harness code and `#[test]`s that run outside a runtime).

use std::{
    fmt::{Debug, Display},
    time::{Duration, Instant},
};

/// How often a condition is checked again. Short next to the scaler's 1 s refresh, long
/// enough that polling costs nothing.
pub const POLL_EVERY: Duration = Duration::from_millis(50);

/// Calls `probe` until `done` accepts its answer, and returns that answer. Past `within` it
/// fails with `what` and the last answer, so a failure says what was seen, not just "timeout".
pub async fn poll_until<T: Debug>(
    what: impl Display,
    within: Duration,
    mut probe: impl AsyncFnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        let answer = probe().await;
        if done(&answer) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}; last answer: {answer:?}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// [`poll_until`] for code that runs outside the async runtime (it sleeps the thread).
pub fn poll_until_blocking<T: Debug>(
    what: impl Display,
    within: Duration,
    mut probe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        let answer = probe();
        if done(&answer) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}; last answer: {answer:?}"
        );
        std::thread::sleep(POLL_EVERY);
    }
}

/// Runs `check` (which asserts) again and again for `duration`: for properties that must hold
/// all along, not just eventually. It runs at least once.
pub async fn assert_throughout(duration: Duration, mut check: impl AsyncFnMut()) {
    let end = Instant::now() + duration;
    loop {
        check().await;
        if Instant::now() >= end {
            return;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}
