//! A trigger as KEDA sends it, its value, and what KEDA sees when the backend behind it goes
//! away and comes back.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use backlog_scaler::proto::{
    GetMetricsRequest, ScaledObjectRef, external_scaler_client::ExternalScalerClient,
};
use tonic::{Code, Status};

use super::{Scaler, poll::poll_until};

/// Every answer, even about a backend that is down, comes within this (README: "Backend
/// trouble is an `UNAVAILABLE` answer within 2 s").
pub const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// A dead backend is reported at the latest once its last value is `max_staleness` (5 s by
/// default) old; a refused connection at the next refresh. Plus one answer's bound.
pub const OUTAGE_REPORTED_WITHIN: Duration = Duration::from_secs(7);

/// How long a test waits for the scaler to follow a change. A backlog change is visible within
/// 2 s (the 1 s default `refresh_interval` is chosen for that, and one test pins it); failovers,
/// resharding and reconnects after an outage take longer on a shared 2-core machine. Only a
/// failing test waits this long.
pub const SETTLES_WITHIN: Duration = Duration::from_secs(10);

/// Where a running scaler answers gRPC: the in-process [`Scaler`], or the address of the
/// binary started by [`ScalerProcess`](super::ScalerProcess).
pub trait Endpoint {
    fn address(&self) -> SocketAddr;
}

impl Endpoint for Scaler {
    fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Endpoint for SocketAddr {
    fn address(&self) -> SocketAddr {
        *self
    }
}

/// A ScaledObjectRef as KEDA sends it.
pub fn scaled_object(pairs: &[(&str, &str)]) -> ScaledObjectRef {
    ScaledObjectRef {
        name: "worker".into(),
        namespace: "default".into(),
        scaler_metadata: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// The value of a trigger on `source` with the metadata `pairs` (and `target: 1`), asked as
/// KEDA asks it (GetMetrics): the float value, or the status.
pub async fn trigger_value(
    scaler: &impl Endpoint,
    source: &str,
    pairs: &[(&str, &str)],
) -> Result<f64, Status> {
    let mut all = vec![("source", source), ("target", "1")];
    all.extend_from_slice(pairs);
    let mut client = ExternalScalerClient::connect(format!("http://{}", scaler.address()))
        .await
        .expect("connecting to the scaler");
    let response = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(scaled_object(&all)),
            metric_name: String::new(),
        })
        .await?;
    let values = response.into_inner().metric_values;
    assert_eq!(values.len(), 1, "one value per trigger: {values:?}");
    Ok(values[0].metric_value_float)
}

/// Whether a trigger on `source` with the metadata `pairs` (and `target: 1`) is active, asked
/// as KEDA asks it (IsActive).
pub async fn trigger_active(
    scaler: &impl Endpoint,
    source: &str,
    pairs: &[(&str, &str)],
) -> Result<bool, Status> {
    let mut all = vec![("source", source), ("target", "1")];
    all.extend_from_slice(pairs);
    let mut client = ExternalScalerClient::connect(format!("http://{}", scaler.address()))
        .await
        .expect("connecting to the scaler");
    let response = client.is_active(scaled_object(&all)).await?;
    Ok(response.into_inner().result)
}

/// The value of a trigger once `accept` holds for it, within [`SETTLES_WITHIN`]; fails with
/// the last answer otherwise.
pub async fn trigger_value_until(
    scaler: &impl Endpoint,
    source: &str,
    pairs: &[(&str, &str)],
    accept: impl Fn(f64) -> bool,
) -> f64 {
    poll_until(
        format!("{source} {pairs:?}"),
        SETTLES_WITHIN,
        async || trigger_value(scaler, source, pairs).await,
        |answer| matches!(answer, Ok(value) if accept(*value)),
    )
    .await
    .expect("accepted")
}

/// Call right after the backend behind `source` went down. Checks what KEDA then sees: every
/// answer within [`ANSWER_WITHIN`]; `last_value` (the value before the outage) until the
/// outage is noticed and nothing else; then, within [`OUTAGE_REPORTED_WITHIN`], UNAVAILABLE
/// naming the source. Returns that status.
pub async fn assert_outage_reported(
    scaler: &impl Endpoint,
    source: &str,
    pairs: &[(&str, &str)],
    last_value: f64,
) -> Status {
    let answer = poll_until(
        format!("{source} {pairs:?}: the outage is reported"),
        OUTAGE_REPORTED_WITHIN,
        async || {
            let answer = timed_answer(scaler, source, pairs).await;
            if let Ok(value) = answer {
                assert_eq!(
                    value, last_value,
                    "{source}: before the outage is noticed only the last real value is served"
                );
            }
            answer
        },
        Result::is_err,
    )
    .await;
    let status = answer.expect_err("polled until an error");
    assert_eq!(status.code(), Code::Unavailable, "{source}: {status:?}");
    assert!(status.message().contains(source), "{status:?}");
    status
}

/// Call right after the backend behind `source` came back. Every answer is UNAVAILABLE
/// naming the source until the scaler has reconnected, within [`SETTLES_WITHIN`]; the first
/// value served after the outage is `value`.
pub async fn assert_recovers_to(
    scaler: &impl Endpoint,
    source: &str,
    pairs: &[(&str, &str)],
    value: f64,
) {
    let answer = poll_until(
        format!("{source} {pairs:?}: recovers"),
        SETTLES_WITHIN,
        async || {
            let answer = timed_answer(scaler, source, pairs).await;
            if let Err(status) = &answer {
                assert_eq!(status.code(), Code::Unavailable, "{source}: {status:?}");
                assert!(status.message().contains(source), "{status:?}");
            }
            answer
        },
        Result::is_ok,
    )
    .await;
    assert_eq!(
        answer.expect("polled until a value"),
        value,
        "{source}: the first value after the outage"
    );
}

/// [`trigger_value`], asserting that the answer came within [`ANSWER_WITHIN`].
async fn timed_answer(
    scaler: &impl Endpoint,
    source: &str,
    pairs: &[(&str, &str)],
) -> Result<f64, Status> {
    let started = Instant::now();
    let answer = trigger_value(scaler, source, pairs).await;
    assert!(
        started.elapsed() <= ANSWER_WITHIN,
        "{source}: answered in {:?}: {answer:?}",
        started.elapsed()
    );
    answer
}
