//! KEDA's `fallback`: what the HPA is given for triggers that cannot be read, once they have
//! failed more than `failureThreshold` times in a row (kedacore/keda `pkg/fallback/fallback.go`
//! and, for `behavior: scalingModifiers`, `pkg/scaling/modifiers/formula.go`).
//!
//! - `static`, `currentReplicas`, `currentReplicasIfHigher`, `currentReplicasIfLower`: KEDA
//!   answers the failed metric with `target × replicas`, the replicas chosen by the behavior,
//!   so the HPA computes those replicas from it. For a `Value` metric it divides by the ready
//!   replicas first (the HPA multiplies by them again), and gives up when none is ready. With
//!   `scalingModifiers` the composite metric as a whole is replaced, its target the modifiers'
//!   target. KEDA sends the value as a milli-quantity, truncated, and so does this.
//! - `scalingModifiers`: a failed trigger is nil in the formula, so `a ?? b ?? 8` picks the
//!   first one that could be read. A formula that gives nil (it must contain `??` to) makes
//!   KEDA use `fallback.replicas × target` as the composite value; a formula that fails gives
//!   the HPA no metric at all.
//!
//! A formula that gives nil while every trigger is read gets `fallback.replicas × target` too,
//! whatever the behavior: KEDA only checks that a fallback is set.

use super::{
    replicas::{
        COMPOSITE_METRIC, Metrics, ReplicaError, TriggerReading, check_target, composite_metrics,
        propose,
    },
    scaledobject::{Fallback, FallbackBehavior, MetricType, ScalingModifiers},
};

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

/// The metrics KEDA gives the HPA when `failed` could not be read and `fallback` is set.
pub(super) fn apply(
    readings: &[TriggerReading],
    failed: &[FailedTrigger],
    modifiers: Option<&ScalingModifiers>,
    current_replicas: Option<u32>,
    fallback: &Fallback,
) -> Result<Metrics, ReplicaError> {
    let labels: Vec<String> = failed.iter().map(|f| f.label.clone()).collect();
    if fallback.behavior == FallbackBehavior::ScalingModifiers {
        let modifiers = modifiers.ok_or_else(|| {
            ReplicaError::Fallback(
                "behavior scalingModifiers needs advanced.scalingModifiers.formula".to_owned(),
            )
        })?;
        return with_nil_triggers(readings, failed, modifiers, current_replicas, fallback);
    }
    let (replicas, chosen) = fallback_replicas(fallback, current_replicas)?;
    let step = |metric: &str| FallbackStep {
        failed: labels.clone(),
        behavior: fallback.behavior,
        rule: format!("{chosen}; KEDA answers {metric} with target × {replicas}"),
    };
    if let Some(modifiers) = modifiers {
        let value = metric_value(
            modifiers.target,
            replicas,
            modifiers.metric_type,
            current_replicas,
        )?;
        let step = step(COMPOSITE_METRIC);
        return composite_metrics(value, modifiers, current_replicas, Some(step));
    }
    let mut proposals = readings
        .iter()
        .map(|r| propose(&r.label, r.value, r.target, r.metric_type, current_replicas))
        .collect::<Result<Vec<_>, _>>()?;
    for f in failed {
        let value = metric_value(f.target, replicas, f.metric_type, current_replicas)?;
        proposals.push(propose(
            &f.label,
            value,
            f.target,
            f.metric_type,
            current_replicas,
        )?);
    }
    Ok(Metrics {
        composite: None,
        proposals,
        // A trigger on fallback counts as active.
        active: true,
        fallback: Some(step("each failed metric")),
    })
}

/// `behavior: scalingModifiers`: the failed named triggers are nil in the formula.
fn with_nil_triggers(
    readings: &[TriggerReading],
    failed: &[FailedTrigger],
    modifiers: &ScalingModifiers,
    current_replicas: Option<u32>,
    fallback: &Fallback,
) -> Result<Metrics, ReplicaError> {
    let labels: Vec<String> = failed.iter().map(|f| f.label.clone()).collect();
    let read = readings
        .iter()
        .filter_map(|r| Some((r.name.clone()?, Some(r.value))));
    let nil = failed.iter().filter_map(|f| Some((f.name.clone()?, None)));
    let values = read.chain(nil).collect();
    match modifiers.formula.evaluate_nullable(&values) {
        Ok(Some(value)) => {
            let step = FallbackStep {
                failed: labels,
                behavior: fallback.behavior,
                rule: "nil in the formula, which gives a value".to_owned(),
            };
            composite_metrics(value, modifiers, current_replicas, Some(step))
        }
        Ok(None) => nil_formula(modifiers, Some(fallback), current_replicas, &labels),
        Err(e) => Err(ReplicaError::Fallback(format!(
            "{} could not be read, so nil in the formula (behavior scalingModifiers), and the \
             formula fails ({e}): KEDA sends the HPA no composite metric",
            labels.join(", ")
        ))),
    }
}

/// The formula gave nil: KEDA's composite value is `fallback.replicas × target`.
pub(super) fn nil_formula(
    modifiers: &ScalingModifiers,
    fallback: Option<&Fallback>,
    current_replicas: Option<u32>,
    failed: &[String],
) -> Result<Metrics, ReplicaError> {
    let fallback = fallback.ok_or(ReplicaError::NilWithoutFallback)?;
    check_target(COMPOSITE_METRIC, modifiers.target)?;
    let value = milli(modifiers.target * f64::from(fallback.replicas));
    let step = FallbackStep {
        failed: failed.to_vec(),
        behavior: fallback.behavior,
        rule: format!(
            "the formula gives nil: KEDA uses fallback.replicas × target = {} × {}",
            fallback.replicas, modifiers.target
        ),
    };
    composite_metrics(value, modifiers, current_replicas, Some(step))
}

/// The replicas the behavior chooses, and how it chose them.
fn fallback_replicas(
    fallback: &Fallback,
    current_replicas: Option<u32>,
) -> Result<(u32, String), ReplicaError> {
    let behavior = fallback.behavior.as_str();
    let fixed = fallback.replicas;
    let Some(replicas) = fallback.replicas_for(current_replicas) else {
        return Err(ReplicaError::Fallback(format!(
            "behavior {behavior} depends on the current replicas: pass --current-replicas"
        )));
    };
    let current = current_replicas.unwrap_or(0);
    let chosen = match fallback.behavior {
        FallbackBehavior::Static => format!("fallback.replicas {fixed}"),
        FallbackBehavior::CurrentReplicas => format!("the current {current} replicas"),
        _ => format!("{replicas} of the current {current} and fallback.replicas {fixed}"),
    };
    Ok((replicas, chosen))
}

/// What KEDA answers for a failed metric: `target × replicas`, for a `Value` metric divided
/// by the ready replicas (taken to be the current ones), as a truncated milli-quantity.
fn metric_value(
    target: f64,
    replicas: u32,
    metric_type: MetricType,
    current_replicas: Option<u32>,
) -> Result<f64, ReplicaError> {
    let mut replicas = f64::from(replicas);
    if metric_type == MetricType::Value {
        let ready = current_replicas.filter(|&n| n > 0).ok_or_else(|| {
            ReplicaError::Fallback(
                "for a Value metric KEDA divides the fallback replicas by the ready replicas, \
                 and gives up at 0 (pass --current-replicas N, N > 0)"
                    .to_owned(),
            )
        })?;
        replicas /= f64::from(ready);
    }
    Ok(milli(target * replicas))
}

/// `x` as KEDA's `resource.NewMilliQuantity(int64(x * 1000))` keeps it.
fn milli(x: f64) -> f64 {
    (x * 1000.0).trunc() / 1000.0
}

impl std::fmt::Display for FallbackStep {
    /// `fallback (behavior static): jobs could not be read; fallback.replicas 6; ...`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fallback (behavior {}): ", self.behavior.as_str())?;
        if !self.failed.is_empty() {
            write!(
                f,
                "{} could not be read (taken as past failureThreshold); ",
                self.failed.join(", ")
            )?;
        }
        f.write_str(&self.rule)
    }
}

#[cfg(test)]
mod tests;
