//! ScaledJobs: the Jobs KEDA creates in one polling interval (kedacore/keda
//! `pkg/scaling/executor/scale_jobs.go` and `pkg/scaling/scaledjob/metrics.go`).
//!
//! Per trigger, KEDA takes the queue length (the metric value) and `maxValue = min(queue /
//! target, maxReplicaCount)`; `multipleScalersCalculation` (`max` by default, `min`, `avg`,
//! `sum`) combines the active triggers into one queue length and one `maxScale =
//! ceil(maxValue)`. Then, with `running` Jobs (and `pending` ones for `accurate` and
//! `eager`):
//!
//! - fewer running than `minReplicaCount`: `minReplicaCount - running` Jobs;
//! - otherwise the `scalingStrategy` gives the effective maximum, with `running` reduced by
//!   `minReplicaCount`: `default` `maxScale - running`; `custom` `min(maxScale -
//!   customScalingQueueLengthDeduction - floor(running × customScalingRunningJobPercentage),
//!   maxReplicaCount)`; `accurate` `maxReplicaCount - running` when `maxScale + running -
//!   pending` exceeds `maxReplicaCount`, else `maxScale - pending`; `eager`
//!   `min(maxReplicaCount - running - pending, maxScale)`;
//! - while active, KEDA creates `min(ceil(queue length), effective maximum)` Jobs (for
//!   `eager`, `min(maxReplicaCount, effective maximum)`), none when the maximum is ≤ 0.
//!
//! Triggers that cannot be read are left out, as KEDA leaves them out.

use std::fmt;

use serde_yaml_ng::{Mapping, Value};

use super::{
    scaledobject::{Ctx, DocumentRef, MetricType, Result, Trigger, describe, get, parse_triggers},
    workload::{ScaleTarget, Workload, parse_container},
};

/// KEDA's default `maxReplicaCount` of a ScaledJob.
const DEFAULT_MAX_REPLICA_COUNT: i64 = 100;

/// The parts of a ScaledJob that decide how many Jobs KEDA creates.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaledJob {
    pub at: DocumentRef,
    pub name: String,
    pub namespace: String,
    pub min_replica_count: i64,
    pub max_replica_count: i64,
    pub strategy: ScalingStrategy,
    /// `scalingStrategy.multipleScalersCalculation`: `max` (default), `min`, `avg` or `sum`.
    pub multiple_scalers_calculation: String,
    pub triggers: Vec<Trigger>,
    /// `spec.jobTargetRef.template`'s containers, where KEDA resolves `*FromEnv` keys, as a
    /// workload of kind `ScaledJob`, and `envSourceContainerName` as its target.
    pub env_source: (ScaleTarget, Workload),
}

/// `spec.scalingStrategy.strategy`, as KEDA's `NewScalingStrategy` selects it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScalingStrategy {
    Default,
    /// `custom` with a `customScalingRunningJobPercentage` that parses as a float (KEDA falls
    /// back to `default` otherwise); a missing deduction is 0.
    Custom {
        deduction: i64,
        percentage: f64,
    },
    Accurate,
    Eager,
}

impl ScalingStrategy {
    fn name(self) -> &'static str {
        match self {
            ScalingStrategy::Default => "default",
            ScalingStrategy::Custom { .. } => "custom",
            ScalingStrategy::Accurate => "accurate",
            ScalingStrategy::Eager => "eager",
        }
    }

    /// KEDA's `GetEffectiveMaxScale`: the effective maximum and the count to scale to.
    pub fn effective_max_scale(
        self,
        max_scale: i64,
        running: i64,
        pending: i64,
        max_replica_count: i64,
        scale_to: i64,
    ) -> (i64, i64) {
        match self {
            ScalingStrategy::Default => (max_scale - running, scale_to),
            ScalingStrategy::Custom {
                deduction,
                percentage,
            } => {
                let result = max_scale - deduction - (running as f64 * percentage) as i64;
                (result.min(max_replica_count), scale_to)
            }
            ScalingStrategy::Accurate if max_scale + running - pending > max_replica_count => {
                (max_replica_count - running, scale_to)
            }
            ScalingStrategy::Accurate => (max_scale - pending, scale_to),
            ScalingStrategy::Eager => (
                (max_replica_count - running - pending).min(max_scale),
                max_replica_count,
            ),
        }
    }
}

/// One trigger's answer for a ScaledJob.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReading {
    pub label: String,
    /// The queue length (the metric value).
    pub value: f64,
    /// The target; KEDA uses it only for `AverageValue` metrics (0 otherwise).
    pub target: f64,
    pub metric_type: MetricType,
    pub active: bool,
}

/// The Jobs KEDA creates in one polling interval, and how it got there.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDecision {
    pub active: bool,
    /// The combined queue length, rounded up (KEDA's `scaleTo` before the strategy).
    pub queue_length: i64,
    /// `ceil(maxValue)`, bounded by `maxReplicaCount`.
    pub max_scale: i64,
    pub running: i64,
    pub pending: i64,
    /// What the strategy (or `minReplicaCount`) allows, at least 0.
    pub effective_max_scale: i64,
    pub scale_to: i64,
    pub rule: String,
    /// The answer.
    pub jobs: i64,
}

/// Replays KEDA's ScaledJob scaling for one polling interval.
pub fn jobs_to_create(
    job: &ScaledJob,
    readings: &[JobReading],
    running: i64,
    pending: i64,
) -> JobDecision {
    let max = job.max_replica_count;
    let per_trigger: Vec<(f64, f64, bool)> = readings
        .iter()
        .map(|r| (r.value, max_value(r, max), r.active))
        .collect();
    let (mut active, queue, max_value) = combine(&job.multiple_scalers_calculation, &per_trigger);
    if job.min_replica_count > 0 {
        active = true;
    }
    let queue_length = queue.ceil() as i64;
    let max_scale = max_value.min(max as f64).ceil() as i64;
    let min = job.min_replica_count;
    let (effective, scale_to, rule) = if running < min {
        let n = min - running;
        (
            n,
            n,
            format!("{running} running < minReplicaCount {min}: {n}"),
        )
    } else {
        let (effective, scale_to) =
            job.strategy
                .effective_max_scale(max_scale, running - min, pending, max, queue_length);
        let rule = format!(
            "strategy {}: effective maximum {effective}",
            job.strategy.name()
        );
        (effective, scale_to, rule)
    };
    let effective_max_scale = effective.max(0);
    let jobs = if active && effective_max_scale > 0 {
        scale_to.min(effective_max_scale)
    } else {
        0
    };
    JobDecision {
        active,
        queue_length,
        max_scale,
        running,
        pending,
        effective_max_scale,
        scale_to,
        rule,
        jobs,
    }
}

/// KEDA's `CalculateQueueLengthAndMaxValue`: `min(value / target, maxReplicaCount)`, with
/// the target of an `AverageValue` metric only (0, so 0, otherwise).
fn max_value(r: &JobReading, max_replica_count: i64) -> f64 {
    match r.metric_type {
        MetricType::AverageValue if r.target != 0.0 => {
            (r.value / r.target).min(max_replica_count as f64)
        }
        _ => 0.0,
    }
}

/// KEDA's `IsScaledJobActive`: the active triggers' (queue length, maxValue) combined.
fn combine(calculation: &str, triggers: &[(f64, f64, bool)]) -> (bool, f64, f64) {
    let active: Vec<(f64, f64)> = triggers
        .iter()
        .filter(|t| t.2)
        .map(|t| (t.0, t.1))
        .collect();
    let any = !active.is_empty();
    match calculation {
        "min" => {
            let mut best: Option<(f64, f64)> = None;
            for &(q, m) in &active {
                // KEDA: `queueLength == 0 || q < queueLength`, starting from 0.
                if best.is_none_or(|(bq, _)| bq == 0.0 || q < bq) {
                    best = Some((q, m));
                }
            }
            let (q, m) = best.unwrap_or((0.0, 0.0));
            (any, q, m)
        }
        "avg" if any => {
            let n = active.len() as f64;
            let (q, m) = active
                .iter()
                .fold((0.0, 0.0), |a, t| (a.0 + t.0, a.1 + t.1));
            (true, q / n, m / n)
        }
        "sum" => {
            let (q, m) = active
                .iter()
                .fold((0.0, 0.0), |a, t| (a.0 + t.0, a.1 + t.1));
            (any, q, m)
        }
        "avg" => (false, 0.0, 0.0),
        _ => {
            // max: the first strictly longer queue wins.
            let (mut q, mut m, mut is) = (0.0, 0.0, false);
            for &(tq, tm) in &active {
                if tq > q {
                    (q, m, is) = (tq, tm, true);
                }
            }
            (is, q, m)
        }
    }
}

impl fmt::Display for JobDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "queue length {}, maxScale {}, {} running, {} pending",
            self.queue_length, self.max_scale, self.running, self.pending
        )?;
        writeln!(f, "{}", self.rule)?;
        if !self.active {
            return write!(f, "not active: KEDA creates no Job");
        }
        if self.effective_max_scale == 0 {
            return write!(f, "no room under the maximum: KEDA creates no Job");
        }
        write!(
            f,
            "KEDA creates min({}, {}) = {} Jobs this polling interval",
            self.scale_to, self.effective_max_scale, self.jobs
        )
    }
}

/// Reads a `keda.sh/v1alpha1` ScaledJob.
pub(super) fn parse_scaled_job(map: &Mapping, at: DocumentRef) -> Result<ScaledJob> {
    let mut ctx = Ctx { at, object: None };
    let metadata = get(map, "metadata").ok_or_else(|| ctx.error("metadata", "required"))?;
    let metadata = ctx.mapping(metadata, "metadata")?;
    let text = |key: &str| match get(metadata, key) {
        Some(v) => ctx.string(v, &format!("metadata.{key}")).map(str::to_owned),
        None => Ok(String::new()),
    };
    let name = text("name")?;
    if name.is_empty() {
        return Err(ctx.error("metadata.name", "required"));
    }
    let namespace = Some(text("namespace")?)
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| "default".to_owned());
    ctx.object = Some(format!("ScaledJob {namespace}/{name}"));
    let spec = get(map, "spec").ok_or_else(|| ctx.error("spec", "required"))?;
    let spec = ctx.mapping(spec, "spec")?;
    let count = |key: &str, default: i64| -> Result<i64> {
        get(spec, key)
            .map(|v| ctx.replica_count(v, &format!("spec.{key}")).map(i64::from))
            .unwrap_or(Ok(default))
    };
    let min_replica_count = count("minReplicaCount", 0)?;
    let max_replica_count = count("maxReplicaCount", DEFAULT_MAX_REPLICA_COUNT)?;
    let (strategy, multiple_scalers_calculation) = parse_strategy(&ctx, spec)?;
    let env_source = job_env_source(spec, &name, &namespace);
    Ok(ScaledJob {
        at,
        name,
        namespace,
        min_replica_count,
        max_replica_count,
        strategy,
        multiple_scalers_calculation,
        triggers: parse_triggers(&ctx, spec)?,
        env_source,
    })
}

/// The Job template's containers, as the workload whose env `*FromEnv` keys come from.
fn job_env_source(spec: &Mapping, name: &str, namespace: &str) -> (ScaleTarget, Workload) {
    let containers = get(spec, "jobTargetRef")
        .and_then(|r| {
            r.get("template")?
                .get("spec")?
                .get("containers")?
                .as_sequence()
        })
        .into_iter()
        .flatten()
        .filter_map(parse_container)
        .collect();
    let target = ScaleTarget {
        kind: "ScaledJob".to_owned(),
        name: name.to_owned(),
        env_source_container: get(spec, "envSourceContainerName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
    };
    let workload = Workload {
        kind: "ScaledJob".to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        containers,
    };
    (target, workload)
}

/// `spec.scalingStrategy`, as KEDA's `NewScalingStrategy` reads it.
fn parse_strategy(ctx: &Ctx, spec: &Mapping) -> Result<(ScalingStrategy, String)> {
    const PATH: &str = "spec.scalingStrategy";
    let Some(value) = get(spec, "scalingStrategy") else {
        return Ok((ScalingStrategy::Default, "max".to_owned()));
    };
    let map = ctx.mapping(value, PATH)?;
    let text = |key: &str| -> Result<String> {
        match get(map, key) {
            Some(v) => Ok(ctx.string(v, &format!("{PATH}.{key}"))?.to_owned()),
            None => Ok(String::new()),
        }
    };
    let calculation = match text("multipleScalersCalculation")?.as_str() {
        "" | "max" => "max".to_owned(),
        c @ ("min" | "avg" | "sum") => c.to_owned(),
        other => {
            return Err(ctx.error(
                &format!("{PATH}.multipleScalersCalculation"),
                format!("expected max, min, avg or sum, got `{other}`"),
            ));
        }
    };
    let strategy = match text("strategy")?.as_str() {
        "custom" => match text("customScalingRunningJobPercentage")?.parse::<f64>() {
            Ok(percentage) => ScalingStrategy::Custom {
                deduction: deduction(ctx, map)?,
                percentage,
            },
            // KEDA selects the default strategy then.
            Err(_) => ScalingStrategy::Default,
        },
        "accurate" => ScalingStrategy::Accurate,
        "eager" => ScalingStrategy::Eager,
        _ => ScalingStrategy::Default,
    };
    Ok((strategy, calculation))
}

/// `customScalingQueueLengthDeduction`: an integer, 0 when unset.
fn deduction(ctx: &Ctx, map: &Mapping) -> Result<i64> {
    const FIELD: &str = "spec.scalingStrategy.customScalingQueueLengthDeduction";
    match get(map, "customScalingQueueLengthDeduction") {
        None => Ok(0),
        Some(Value::Number(n)) if n.as_i64().is_some_and(|n| i32::try_from(n).is_ok()) => {
            Ok(n.as_i64().unwrap_or(0))
        }
        Some(other) => Err(ctx.error(
            FIELD,
            format!("must be a 32-bit integer, got {}", describe(other)),
        )),
    }
}

#[cfg(test)]
mod tests;
