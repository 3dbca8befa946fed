//! ScaledJobs in `eval`: each trigger measured as for a ScaledObject, then the Jobs KEDA would
//! create in one polling interval ([`jobs_to_create`]), given the Jobs already running and
//! pending (`--running-jobs`, `--pending-jobs`).

use futures::future::join_all;
use serde::Serialize;

use super::{Context, TriggerReport, evaluate_trigger, render_triggers};
use crate::eval::{JobReading, ScaledJob, jobs_to_create};

/// `--running-jobs` and `--pending-jobs`: the Jobs of the ScaledJob that exist now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobCounts {
    pub running: u32,
    pub pending: u32,
}

/// One ScaledJob: its triggers and the Jobs KEDA would create now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobReport {
    pub file: String,
    pub document: String,
    pub namespace: String,
    pub name: String,
    pub triggers: Vec<TriggerReport>,
    /// Jobs created in one polling interval; `None` when a trigger is one this command cannot
    /// measure.
    pub jobs: Option<i64>,
    /// How `jobs` was reached, one step per line; or why there is no count.
    pub explanation: String,
}

pub(super) async fn evaluate_job(
    file: &str,
    job: &ScaledJob,
    context: &Context<'_>,
    counts: JobCounts,
) -> JobReport {
    // KEDA resolves `*FromEnv` keys from the Job template's containers.
    let (target, workload) = &job.env_source;
    let context = Context {
        workloads: std::slice::from_ref(workload),
        ..*context
    };
    let triggers: Vec<TriggerReport> =
        join_all(job.triggers.iter().enumerate().map(|(index, trigger)| {
            evaluate_trigger(&job.namespace, Some(target), index, trigger, &context)
        }))
        .await;
    let (jobs, explanation) = decide(job, &triggers, counts);
    JobReport {
        file: file.to_string(),
        document: job.at.to_string(),
        namespace: job.namespace.clone(),
        name: job.name.clone(),
        triggers,
        jobs,
        explanation,
    }
}

/// KEDA leaves out the triggers that fail (GetMetricSpec or GetMetrics); one this command
/// cannot measure leaves no count.
fn decide(job: &ScaledJob, triggers: &[TriggerReport], counts: JobCounts) -> (Option<i64>, String) {
    if triggers
        .iter()
        .any(|t| t.code.as_deref() == Some("NotEvaluated"))
    {
        return (
            None,
            "no Job count: a trigger is measured by KEDA itself, not by backlog-scaler".to_owned(),
        );
    }
    let readings: Vec<JobReading> = job
        .triggers
        .iter()
        .zip(triggers)
        .filter_map(|(trigger, report)| {
            Some(JobReading {
                label: report.label.clone(),
                value: report.value?,
                target: report.target?,
                metric_type: trigger.metric_type,
                active: report.active?,
            })
        })
        .collect();
    let decision = jobs_to_create(
        job,
        &readings,
        i64::from(counts.running),
        i64::from(counts.pending),
    );
    let left_out: Vec<&str> = triggers
        .iter()
        .filter(|t| t.value.is_none())
        .map(|t| t.label.as_str())
        .collect();
    let mut explanation = String::new();
    if !left_out.is_empty() {
        explanation.push_str(&format!(
            "{} failed: KEDA leaves failing triggers out of a ScaledJob\n",
            left_out.join(", ")
        ));
    }
    explanation.push_str(&decision.to_string());
    (Some(decision.jobs), explanation)
}

/// Per ScaledJob: a header, one line per trigger, the Jobs and the explanation.
pub(super) fn render_text(jobs: &[JobReport], out: &mut String) {
    for job in jobs {
        out.push_str(&format!(
            "ScaledJob {}/{} ({}, {})\n",
            job.namespace, job.name, job.file, job.document
        ));
        render_triggers(&job.triggers, out);
        match job.jobs {
            Some(n) => out.push_str(&format!("  jobs: {n}\n")),
            None => out.push_str("  jobs: none\n"),
        }
        for line in job.explanation.lines() {
            out.push_str(&format!("    {line}\n"));
        }
    }
}
