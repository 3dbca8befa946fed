//! From trigger readings to a replica count, the way KEDA and the HPA compute it.
//!
//! backlog-scaler only answers a metric value and a per-replica target; KEDA and the HPA turn
//! them into replicas. This module replays their rules so `backlog-scaler eval` can say what
//! would happen, and why, step by step ([`Decision`] and its `Display`):
//!
//! 1. **Activity** (KEDA). A trigger is active while its value is above its
//!    `activationTarget`; the ScaledObject is active while any trigger is. With
//!    `scalingModifiers`, only the composite value against the modifiers' `activationTarget`
//!    counts (KEDA's "scaling modifiers" docs).
//! 2. **Idle** (KEDA). Not active: `idleReplicaCount` if set, else 0 when `minReplicaCount` is
//!    0 (KEDA scales to zero itself, after `cooldownPeriod`). Otherwise the HPA decides.
//! 3. **Per metric** (the HPA's replica calculator for external metrics). Without modifiers
//!    each trigger is one metric; with them, the formula's value is the one `composite-metric`
//!    with the modifiers' target and metricType.
//!    - `AverageValue`: `ceil(value / target)`; the value is shared by all replicas.
//!    - `Value`: `ceil(current × value / target)`, the value is compared whole and the
//!      current replicas scaled by the ratio. Without known current replicas (or at 0, where
//!      the HPA does not run) this uses 1 replica: the HPA's first look after KEDA activates.
//! 4. **Tolerance** (the HPA's `--horizontal-pod-autoscaler-tolerance`, default 0.1). With
//!    current replicas N > 0 known, a metric whose usage ratio is within 10 % of 1 proposes N:
//!    ratio = value / (target × N) for `AverageValue`, value / target for `Value`.
//! 5. **Bounds**. The HPA takes the highest proposal over all metrics and clamps it to
//!    `[max(minReplicaCount, 1), maxReplicaCount]` (KEDA creates the HPA with at least 1).
//!
//! Triggers that could not be read go through KEDA's `fallback` ([`super::fallback`]), as if
//! they had failed `failureThreshold` times in a row.
//!
//! Not modelled, because they depend on history rather than on one reading: the HPA's scaling
//! `behavior` (scale-up rate limits, the 5-minute scale-down stabilization window), KEDA's
//! `cooldownPeriod`, how many reads have failed so far, and pods that are not ready (KEDA's
//! fallback for `Value` metrics divides by the ready replicas: the current ones here). The HPA sees values as milli-quantities; this uses the floats, so results can
//! differ only when a value has more than three decimals.
//!
//! Every input is checked: NaN, infinities and non-positive targets are errors, never a panic
//! or a bogus count.

use std::fmt;

use super::{
    fallback::{FailedTrigger, FallbackStep},
    formula::FormulaError,
    scaledobject::{Fallback, MetricType, ReplicaLimits, ScalingModifiers},
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

/// One trigger's value against its activation target.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerActivity {
    pub label: String,
    pub value: f64,
    pub activation_target: f64,
    /// `value > activation_target`.
    pub active: bool,
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

/// How the final count was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Not active and `idleReplicaCount` set: KEDA scales to it.
    Idle,
    /// Not active and `minReplicaCount` 0: KEDA scales to zero (after `cooldownPeriod`).
    ScaleToZero,
    /// The HPA: the highest proposal, clamped to `[lower, upper]`.
    Hpa {
        highest: u64,
        lower: u32,
        upper: u32,
        clamp: Clamp,
    },
}

/// Whether the HPA's bounds changed its highest proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clamp {
    Within,
    /// Raised to `max(minReplicaCount, 1)`.
    RaisedToMin,
    /// Lowered to `maxReplicaCount`.
    LoweredToMax,
}

/// The replicas KEDA and the HPA settle on for one set of readings, and every step to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Each trigger's activity, in reading order (also with modifiers, for information).
    pub triggers: Vec<TriggerActivity>,
    /// With scalingModifiers: the formula's value.
    pub composite: Option<CompositeValue>,
    /// The metrics the HPA sees: one per trigger, or the composite alone.
    pub metrics: Vec<MetricProposal>,
    /// Whether KEDA considers the ScaledObject active.
    pub active: bool,
    /// When some triggers could not be read: the fallback rule KEDA applied.
    pub fallback: Option<FallbackStep>,
    pub current_replicas: Option<u32>,
    pub rule: Rule,
    /// The answer.
    pub replicas: u32,
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

/// Replays KEDA's and the HPA's rules (see the module docs) for one set of readings.
///
/// `readings` are in trigger order; `current_replicas` enables the HPA's tolerance and is the
/// base of `Value` metrics.
pub fn desired_replicas(
    readings: &[TriggerReading],
    scaling_modifiers: Option<&ScalingModifiers>,
    limits: ReplicaLimits,
    current_replicas: Option<u32>,
) -> Result<Decision, ReplicaError> {
    desired_replicas_with_fallback(
        readings,
        &[],
        scaling_modifiers,
        limits,
        current_replicas,
        None,
    )
}

/// [`desired_replicas`] when some triggers could not be read (`failed`: the scaler answered
/// GetMetrics with an error, after GetMetricSpec succeeded), assuming the failures last past
/// `fallback.failureThreshold`: KEDA's `fallback` as its `pkg/fallback` computes it (see
/// [`fallback`](super::fallback)). Without a fallback there is no count: KEDA hands the
/// error to the HPA.
pub fn desired_replicas_with_fallback(
    readings: &[TriggerReading],
    failed: &[FailedTrigger],
    scaling_modifiers: Option<&ScalingModifiers>,
    limits: ReplicaLimits,
    current_replicas: Option<u32>,
    fallback: Option<&Fallback>,
) -> Result<Decision, ReplicaError> {
    check_limits(limits)?;
    check_readings(readings, failed)?;
    let triggers: Vec<TriggerActivity> = readings
        .iter()
        .map(|r| TriggerActivity {
            label: r.label.clone(),
            value: r.value,
            activation_target: r.activation_target,
            active: r.value > r.activation_target,
        })
        .collect();
    let metrics = match (failed, fallback) {
        ([], _) => measured_metrics(readings, scaling_modifiers, current_replicas, fallback)?,
        (_, None) => {
            return Err(ReplicaError::Unreadable {
                labels: failed.iter().map(|f| f.label.clone()).collect(),
            });
        }
        (_, Some(fallback)) => super::fallback::apply(
            readings,
            failed,
            scaling_modifiers,
            current_replicas,
            fallback,
        )?,
    };
    let (rule, replicas) = match (metrics.active, limits.idle_replica_count) {
        (false, Some(idle)) => (Rule::Idle, idle),
        (false, None) if limits.min_replica_count == 0 => (Rule::ScaleToZero, 0),
        _ => hpa(&metrics.proposals, limits),
    };
    Ok(Decision {
        triggers,
        composite: metrics.composite,
        metrics: metrics.proposals,
        active: metrics.active,
        fallback: metrics.fallback,
        current_replicas,
        rule,
        replicas,
    })
}

/// What the HPA is given, and whether KEDA considers the ScaledObject active.
pub(super) struct Metrics {
    pub(super) composite: Option<CompositeValue>,
    pub(super) proposals: Vec<MetricProposal>,
    pub(super) active: bool,
    pub(super) fallback: Option<FallbackStep>,
}

/// Every reading's value, target and activation target finite, targets > 0; at least one
/// trigger.
fn check_readings(
    readings: &[TriggerReading],
    failed: &[FailedTrigger],
) -> Result<(), ReplicaError> {
    if readings.is_empty() && failed.is_empty() {
        return Err(ReplicaError::NoReadings);
    }
    for reading in readings {
        finite(&reading.label, "the value", reading.value)?;
        check_target(&reading.label, reading.target)?;
        finite(
            &reading.label,
            "the activationTarget",
            reading.activation_target,
        )?;
    }
    for f in failed {
        check_target(&f.label, f.target)?;
    }
    Ok(())
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

/// Every trigger read: one metric per trigger, or the composite alone.
fn measured_metrics(
    readings: &[TriggerReading],
    scaling_modifiers: Option<&ScalingModifiers>,
    current_replicas: Option<u32>,
    fallback: Option<&Fallback>,
) -> Result<Metrics, ReplicaError> {
    match scaling_modifiers {
        Some(modifiers) => {
            let values = readings
                .iter()
                .filter_map(|r| Some((r.name.clone()?, Some(r.value))))
                .collect();
            match modifiers.formula.evaluate_nullable(&values)? {
                Some(value) => composite_metrics(value, modifiers, current_replicas, None),
                None => super::fallback::nil_formula(modifiers, fallback, current_replicas, &[]),
            }
        }
        None => {
            let proposals = readings
                .iter()
                .map(|r| propose(&r.label, r.value, r.target, r.metric_type, current_replicas))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Metrics {
                composite: None,
                proposals,
                active: readings.iter().any(|r| r.value > r.activation_target),
                fallback: None,
            })
        }
    }
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

fn check_limits(limits: ReplicaLimits) -> Result<(), ReplicaError> {
    let ReplicaLimits {
        min_replica_count: min,
        max_replica_count: max,
        idle_replica_count: idle,
    } = limits;
    if max == 0 {
        return Err(ReplicaError::Limits(
            "maxReplicaCount must be at least 1".to_owned(),
        ));
    }
    if min > max {
        return Err(ReplicaError::Limits(format!(
            "minReplicaCount {min} is more than maxReplicaCount {max}"
        )));
    }
    if let Some(idle) = idle
        && idle >= min
    {
        return Err(ReplicaError::Limits(format!(
            "idleReplicaCount {idle} must be less than minReplicaCount {min}"
        )));
    }
    Ok(())
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

/// The HPA: the highest proposal within `[max(min, 1), max]`.
fn hpa(metrics: &[MetricProposal], limits: ReplicaLimits) -> (Rule, u32) {
    let lower = limits.min_replica_count.max(1);
    let upper = limits.max_replica_count;
    let highest = metrics.iter().map(|m| m.proposal).max().unwrap_or(0);
    let (clamp, replicas) = if highest < u64::from(lower) {
        (Clamp::RaisedToMin, lower)
    } else if highest > u64::from(upper) {
        (Clamp::LoweredToMax, upper)
    } else {
        // highest <= upper, a u32.
        (Clamp::Within, u32::try_from(highest).unwrap_or(upper))
    };
    let rule = Rule::Hpa {
        highest,
        lower,
        upper,
        clamp,
    };
    (rule, replicas)
}

// === explanation ===

/// A number for people: at most three decimals, no trailing zeros.
fn num(x: f64) -> String {
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

fn activity(value: f64, activation_target: f64, active: bool) -> String {
    let (op, state) = if active {
        (">", "active")
    } else {
        ("<=", "not active")
    };
    format!(
        "{} {op} activationTarget {}: {state}",
        num(value),
        num(activation_target)
    )
}

impl fmt::Display for Decision {
    /// One line per step, in the order KEDA and the HPA take them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_inputs(f)?;
        match self.rule {
            Rule::Idle => write!(
                f,
                "not active: KEDA scales to idleReplicaCount: {} replicas",
                self.replicas
            ),
            Rule::ScaleToZero => write!(
                f,
                "not active and minReplicaCount 0: KEDA scales to 0 replicas (after \
                 cooldownPeriod)"
            ),
            Rule::Hpa {
                highest,
                lower,
                upper,
                clamp,
            } => {
                for m in &self.metrics {
                    write_metric(f, m, self.current_replicas)?;
                }
                let bound = match clamp {
                    Clamp::Within => format!("within [{lower}, {upper}]"),
                    Clamp::RaisedToMin => {
                        format!("raised to the lower bound of [{lower}, {upper}]")
                    }
                    Clamp::LoweredToMax => {
                        format!("lowered to maxReplicaCount of [{lower}, {upper}]")
                    }
                };
                let inactive = if self.active {
                    ""
                } else {
                    " (not active, but minReplicaCount > 0 keeps the HPA in charge)"
                };
                write!(
                    f,
                    "HPA: highest proposal {highest}, {bound}: {} replicas{inactive}",
                    self.replicas
                )
            }
        }
    }
}

impl Decision {
    /// The lines before the HPA: each trigger's activity, the fallback, the composite value.
    fn write_inputs(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for t in &self.triggers {
            writeln!(
                f,
                "trigger {}: {}",
                t.label,
                activity(t.value, t.activation_target, t.active)
            )?;
        }
        if let Some(step) = &self.fallback {
            writeln!(f, "{step}")?;
        }
        if let Some(c) = &self.composite {
            writeln!(
                f,
                "scalingModifiers: {} = {}",
                c.formula,
                activity(c.value, c.activation_target, c.active)
            )?;
        }
        Ok(())
    }
}

/// One metric's line: the HPA's computation and its tolerance.
fn write_metric(
    f: &mut fmt::Formatter<'_>,
    m: &MetricProposal,
    current_replicas: Option<u32>,
) -> fmt::Result {
    let formula = match m.base_replicas {
        Some(base) => format!("ceil({base} × {} / {})", num(m.value), num(m.target)),
        None => format!("ceil({} / {})", num(m.value), num(m.target)),
    };
    write!(
        f,
        "metric {} ({}): {formula} = {}",
        m.label, m.metric_type, m.computed
    )?;
    if let (Some(ratio), Some(current)) = (m.usage_ratio, current_replicas) {
        if m.within_tolerance {
            write!(
                f,
                "; usage ratio {} is within the HPA's 10 % tolerance: keeps {current}",
                num(ratio)
            )?;
        } else {
            write!(
                f,
                "; usage ratio {} is outside the HPA's 10 % tolerance",
                num(ratio)
            )?;
        }
    }
    writeln!(f)
}

#[cfg(test)]
mod tests;
