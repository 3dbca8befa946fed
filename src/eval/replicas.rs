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
    fallback,
    proposal::{
        CompositeValue, FailedTrigger, FallbackStep, MetricProposal, Metrics, ReplicaError,
        TriggerReading, check_target, composite_metrics, finite, propose,
    },
    scaledobject::{Fallback, ReplicaLimits, ScalingModifiers},
};

/// One trigger's value against its activation target.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerActivity {
    pub label: String,
    pub value: f64,
    pub activation_target: f64,
    /// `value > activation_target`.
    pub active: bool,
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
        (_, Some(fallback)) => fallback::apply(
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
                None => fallback::nil_formula(modifiers, fallback, current_replicas, &[]),
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
