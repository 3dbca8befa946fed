//! What the HPA is given: one proposal per metric (the HPA's replica calculator for external
//! metrics), or the scalingModifiers composite alone, and the errors on the way. Shared by the
//! measured path ([`super::replicas`]) and KEDA's fallback ([`super::fallback`]), which both
//! build on it and never on each other's internals.

use super::{
    formula::FormulaError,
    scaledobject::{FallbackBehavior, MetricType, ScalingModifiers},
};

/// The HPA's default tolerance: no change while the usage ratio is within 10 % of 1
/// (kube-controller-manager's `--horizontal-pod-autoscaler-tolerance`).
pub const HPA_TOLERANCE: f64 = 0.1;

/// The label of the metric KEDA exposes for scalingModifiers.
pub const COMPOSITE_METRIC: &str = "composite-metric";

/// What the scaler answered for one trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerReading {
    /// How output refers to the trigger, e.g. [`Trigger::label`](super::scaledobject::Trigger::label).
    pub label: String,
    /// The trigger's `name`; only named triggers are formula variables.
    pub name: Option<String>,
    /// The measured value (GetMetrics' `metricValueFloat`).
    pub value: f64,
    /// The value one replica handles (GetMetricSpec's `targetSizeFloat`), > 0.
    pub target: f64,
    /// The trigger's `activationTarget`.
    pub activation_target: f64,
    pub metric_type: MetricType,
}

/// The scalingModifiers formula's result.
#[derive(Debug, Clone, PartialEq)]
pub struct CompositeValue {
    pub formula: String,
    pub value: f64,
    pub activation_target: f64,
    /// `value > activation_target`: with modifiers, this alone decides activity.
    pub active: bool,
}

/// What one metric asks the HPA for.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricProposal {
    /// The trigger's label, or [`COMPOSITE_METRIC`].
    pub label: String,
    pub value: f64,
    pub target: f64,
    pub metric_type: MetricType,
    /// For `Value`: the replicas the ratio multiplies (the current ones, or 1 when unknown).
    pub base_replicas: Option<u32>,
    /// The replicas this metric alone computes to, before the tolerance.
    pub computed: u64,
    /// The HPA's usage ratio; `None` without current replicas (no tolerance then).
    pub usage_ratio: Option<f64>,
    /// The ratio is within [`HPA_TOLERANCE`] of 1, so the HPA keeps the current replicas.
    pub within_tolerance: bool,
    /// What the HPA takes from this metric: `computed`, or the current replicas.
    pub proposal: u64,
}

/// Readings or limits that no replica count can come from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReplicaError {
    #[error("no trigger readings: KEDA needs at least one metric")]
    NoReadings,
    #[error("{label}: {what} is {value}, not a finite number")]
    NotFinite {
        label: String,
        what: &'static str,
        value: f64,
    },
    #[error("{label}: the target must be > 0, got {target}")]
    TargetNotPositive { label: String, target: f64 },
    #[error(
        "{label}: metricType Utilization is for cpu and memory triggers (a percentage of the \
         pods' resource requests), which eval cannot compute"
    )]
    Utilization { label: String },
    #[error("scalingModifiers formula, {0}")]
    Formula(#[from] FormulaError),
    #[error(
        "{} could not be read and the ScaledObject has no `fallback`: KEDA hands the error to \
         the HPA, which computes no count from this metric",
        labels.join(", ")
    )]
    Unreadable { labels: Vec<String> },
    #[error(
        "the scalingModifiers formula gave nil and the ScaledObject has no `fallback`: KEDA \
         sends the HPA no composite metric"
    )]
    NilWithoutFallback,
    #[error("fallback: {0}")]
    Fallback(String),
    #[error("replica limits: {0}")]
    Limits(String),
}

/// What the HPA is given, and whether KEDA considers the ScaledObject active.
pub(super) struct Metrics {
    pub(super) composite: Option<CompositeValue>,
    pub(super) proposals: Vec<MetricProposal>,
    pub(super) active: bool,
    pub(super) fallback: Option<FallbackStep>,
}

pub(super) fn check_target(label: &str, target: f64) -> Result<(), ReplicaError> {
    finite(label, "the target", target)?;
    if target <= 0.0 {
        return Err(ReplicaError::TargetNotPositive {
            label: label.to_owned(),
            target,
        });
    }
    Ok(())
}

/// The composite metric of `value`: activity against the modifiers' activationTarget, and
/// the one proposal.
pub(super) fn composite_metrics(
    value: f64,
    modifiers: &ScalingModifiers,
    current_replicas: Option<u32>,
    fallback: Option<FallbackStep>,
) -> Result<Metrics, ReplicaError> {
    // The formula never returns a non-finite value; the target is checked at parse time, but
    // `ScalingModifiers` can be built by hand.
    check_target(COMPOSITE_METRIC, modifiers.target)?;
    finite(
        COMPOSITE_METRIC,
        "the activationTarget",
        modifiers.activation_target,
    )?;
    let composite = CompositeValue {
        formula: modifiers.formula.source().to_owned(),
        value,
        activation_target: modifiers.activation_target,
        active: value > modifiers.activation_target,
    };
    let proposal = propose(
        COMPOSITE_METRIC,
        value,
        modifiers.target,
        modifiers.metric_type,
        current_replicas,
    )?;
    Ok(Metrics {
        active: composite.active,
        composite: Some(composite),
        proposals: vec![proposal],
        fallback,
    })
}

pub(super) fn finite(label: &str, what: &'static str, value: f64) -> Result<(), ReplicaError> {
    if value.is_finite() {
        return Ok(());
    }
    Err(ReplicaError::NotFinite {
        label: label.to_owned(),
        what,
        value,
    })
}

/// `ceil(x)` as a replica count: 0 for zero or negative values (a formula can go below 0),
/// saturating at `u64::MAX` for huge ones (the bounds clamp it afterwards).
fn ceil_count(x: f64) -> u64 {
    if x.is_nan() || x <= 0.0 {
        0
    } else if x >= u64::MAX as f64 {
        u64::MAX
    } else {
        x.ceil() as u64
    }
}

/// One metric's proposal: the HPA's replica calculator for external metrics.
pub(super) fn propose(
    label: &str,
    value: f64,
    target: f64,
    metric_type: MetricType,
    current_replicas: Option<u32>,
) -> Result<MetricProposal, ReplicaError> {
    // The HPA does not run at 0 replicas (KEDA activates the workload first), so 0 current
    // replicas means no tolerance, like unknown ones.
    let current = current_replicas.filter(|&n| n > 0);
    let (base_replicas, computed, usage_ratio) = match metric_type {
        MetricType::AverageValue => (
            None,
            ceil_count(value / target),
            current.map(|n| value / (target * f64::from(n))),
        ),
        MetricType::Value => {
            let base = current.unwrap_or(1);
            let ratio = value / target;
            (
                Some(base),
                ceil_count(ratio * f64::from(base)),
                current.map(|_| ratio),
            )
        }
        MetricType::Utilization => {
            return Err(ReplicaError::Utilization {
                label: label.to_owned(),
            });
        }
    };
    // Values and targets are finite and targets > 0, so the ratio is a number or ±inf, and
    // ±inf is never within the tolerance.
    let within_tolerance = usage_ratio.is_some_and(|r| (r - 1.0).abs() <= HPA_TOLERANCE);
    let proposal = match current {
        Some(n) if within_tolerance => u64::from(n),
        _ => computed,
    };
    Ok(MetricProposal {
        label: label.to_owned(),
        value,
        target,
        metric_type,
        base_replicas,
        computed,
        usage_ratio,
        within_tolerance,
        proposal,
    })
}

/// A trigger whose GetMetricSpec answered (so its target is known) but whose GetMetrics
/// failed.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedTrigger {
    pub label: String,
    /// The trigger's `name`; a named trigger is nil in a formula.
    pub name: Option<String>,
    /// The value one replica handles (GetMetricSpec's `targetSizeFloat`), > 0.
    pub target: f64,
    pub metric_type: MetricType,
}

/// Which fallback rule KEDA applied, for the explanation.
#[derive(Debug, Clone, PartialEq)]
pub struct FallbackStep {
    /// The triggers that could not be read (empty when only the formula gave nil).
    pub failed: Vec<String>,
    pub behavior: FallbackBehavior,
    /// The rule and its numbers, for people.
    pub rule: String,
}
