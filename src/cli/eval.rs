//! `backlog-scaler eval --config FILE --scaledobject so.yaml [--current-replicas N]`: a dry
//! run of ScaledObjects against the live backends.
//!
//! Every ScaledObject of every file (several documents, `kind: List`) is evaluated the way
//! KEDA would see it through this scaler: each `type: external` trigger's metadata, its
//! `*FromEnv` keys resolved from the scale target's manifest when it is among the files
//! ([`resolve_from_env`]), is parsed by [`parse_trigger`] exactly as the server parses
//! `scalerMetadata` (so an invalid trigger shows the gRPC status KEDA would get), measured
//! through an [`Engine`] built from the same config as the server's, and the readings go through [`desired_replicas_with_fallback`]:
//! KEDA's and the HPA's replica math, explained step by step. A trigger that cannot be
//! measured goes through the ScaledObject's `fallback`, as if it had failed past
//! `failureThreshold`. Triggers of other types are listed as not evaluated; a ScaledObject
//! with one has no replica count, since the HPA would take the highest over metrics this
//! command cannot read.
//!
//! Exit 0 when every ScaledObject got a replica count and every trigger answered, 1
//! otherwise, 2 when a file cannot be read or holds invalid YAML or no ScaledObject.

use std::{
    collections::HashMap,
    io::Read,
    path::{Path, PathBuf},
};

use futures::future::join_all;
use serde::Serialize;
use tonic::Status;

mod jobs;

pub use jobs::{JobCounts, JobReport};

use super::{Exit, Output, number};
use crate::{
    config::Config,
    engine::Engine,
    eval::{
        Decision, FailedTrigger, ScaleTarget, ScaledJob, ScaledObject, Trigger, TriggerReading,
        Workload, desired_replicas_with_fallback, parse_scaled_objects, resolve_from_env,
    },
    metrics::Metrics,
    server::build_engine,
    trigger::{Catalog, TriggerSpec, from_env_keys, parse_trigger},
};

/// What `eval` was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalOptions {
    /// ScaledObject files; `-` reads standard input.
    pub files: Vec<PathBuf>,
    /// The workload's current replicas: enables the HPA's tolerance and is the base of
    /// `Value` metrics.
    pub current_replicas: Option<u32>,
    /// The Jobs of each ScaledJob already running and pending (`--running-jobs`,
    /// `--pending-jobs`).
    pub jobs: JobCounts,
    pub output: Output,
}

/// Everything one run evaluated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    pub scaled_objects: Vec<ObjectReport>,
    pub scaled_jobs: Vec<JobReport>,
    /// Documents that are not ScaledObjects, and why.
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    pub file: String,
    pub document: String,
    pub reason: String,
}

/// One ScaledObject: its triggers and, when every trigger has a value, the replica count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectReport {
    pub file: String,
    /// `document N` (and `items[i]` for a List).
    pub document: String,
    pub namespace: String,
    pub name: String,
    pub triggers: Vec<TriggerReport>,
    /// The replicas KEDA and the HPA would set now; `None` when some trigger has no value.
    pub replicas: Option<u32>,
    /// How `replicas` was reached, one step per line; or why there is no count.
    pub explanation: String,
}

/// One trigger: what the scaler would answer for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TriggerReport {
    /// The trigger's name, or `triggers[i] (type)`.
    pub label: String,
    #[serde(rename = "type")]
    pub trigger_type: String,
    /// GetMetricSpec's metric name.
    pub metric_name: Option<String>,
    /// GetMetrics' value.
    pub value: Option<f64>,
    pub target: Option<f64>,
    pub activation_target: Option<f64>,
    /// IsActive's answer.
    pub active: Option<bool>,
    /// With `includeActive: "true"`: the value's two parts, waiting and in progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parts: Option<ValueParts>,
    /// The gRPC code KEDA would get instead of a value (`InvalidArgument`, `Unavailable`, …),
    /// `NotEvaluated` for a trigger this scaler does not serve, or `Unresolved` for `*FromEnv`
    /// keys whose value the files do not tell.
    pub code: Option<String>,
    /// The message that comes with it: the server's own status message.
    pub error: Option<String>,
}

/// A value of waiting + in progress, split: the waiting part is the same trigger measured
/// without `includeActive`, at the same time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ValueParts {
    pub waiting: f64,
    pub in_progress: f64,
}

impl TriggerReport {
    fn failed(label: String, trigger_type: &str, code: &str, error: String) -> TriggerReport {
        TriggerReport {
            label,
            trigger_type: trigger_type.to_string(),
            metric_name: None,
            value: None,
            target: None,
            activation_target: None,
            active: None,
            parts: None,
            code: Some(code.to_string()),
            error: Some(error),
        }
    }
}

/// A ScaledObject file, read and parsed.
struct ParsedFile {
    name: String,
    objects: Vec<ScaledObject>,
    jobs: Vec<ScaledJob>,
    skipped: Vec<Skipped>,
    workloads: Vec<Workload>,
}

/// Reads and parses every file; the first unreadable or invalid one is the error (one line).
fn read_files(files: &[PathBuf]) -> Result<Vec<ParsedFile>, String> {
    files
        .iter()
        .map(|path| {
            let name = path.display().to_string();
            let text = read_text(path).map_err(|e| format!("cannot read {name}: {e}"))?;
            let parsed = parse_scaled_objects(&text).map_err(|e| format!("{name}: {e}"))?;
            let skipped: Vec<Skipped> = parsed
                .skipped
                .into_iter()
                .map(|s| Skipped {
                    file: name.clone(),
                    document: s.at.to_string(),
                    reason: s.reason,
                })
                .collect();
            if parsed.scaled_objects.is_empty() && parsed.scaled_jobs.is_empty() {
                let what: Vec<String> = skipped
                    .iter()
                    .map(|s| format!("{}: {}", s.document, s.reason))
                    .collect();
                return Err(format!(
                    "{name}: no keda.sh/v1alpha1 ScaledObject or ScaledJob (found: {})",
                    if what.is_empty() {
                        "nothing".to_string()
                    } else {
                        what.join("; ")
                    }
                ));
            }
            Ok(ParsedFile {
                name,
                objects: parsed.scaled_objects,
                jobs: parsed.scaled_jobs,
                skipped,
                workloads: parsed.workloads,
            })
        })
        .collect()
}

fn read_text(path: &Path) -> std::io::Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(path)
    }
}

/// Evaluates every ScaledObject of `files` against the sources of `config`.
pub async fn evaluate(config: &Config, options: &EvalOptions) -> Result<EvalReport, String> {
    let current_replicas = options.current_replicas;
    let files = read_files(&options.files)?;
    let catalog = Catalog::new(&config.sources, &config.server.limits);
    // Cold reads only: every measurement is read once, bounded by its source's timeout, so
    // no refresher runs.
    let engine = build_engine(config, Metrics::new(config.measurements.max_live));
    let mut report = EvalReport {
        scaled_objects: Vec::new(),
        scaled_jobs: Vec::new(),
        skipped: Vec::new(),
    };
    // A scale target's manifest may be in any of the files.
    let workloads: Vec<Workload> = files.iter().flat_map(|f| f.workloads.clone()).collect();
    let context = Context {
        catalog: &catalog,
        engine: &engine,
        workloads: &workloads,
    };
    for file in files {
        let objects = file
            .objects
            .iter()
            .map(|so| evaluate_object(&file.name, so, &context, current_replicas));
        report.scaled_objects.extend(join_all(objects).await);
        let jobs = file
            .jobs
            .iter()
            .map(|job| jobs::evaluate_job(&file.name, job, &context, options.jobs));
        report.scaled_jobs.extend(join_all(jobs).await);
        report.skipped.extend(file.skipped);
    }
    Ok(report)
}

/// What every trigger is evaluated against.
pub(super) struct Context<'a> {
    catalog: &'a Catalog,
    engine: &'a Engine,
    /// The workloads among the files, for `*FromEnv` keys.
    workloads: &'a [Workload],
}

async fn evaluate_object(
    file: &str,
    so: &ScaledObject,
    context: &Context<'_>,
    current_replicas: Option<u32>,
) -> ObjectReport {
    let triggers: Vec<TriggerReport> =
        join_all(so.triggers.iter().enumerate().map(|(index, trigger)| {
            let target = so.scale_target.as_ref();
            evaluate_trigger(&so.namespace, target, index, trigger, context)
        }))
        .await;
    let (replicas, explanation) = match decide(so, &triggers, current_replicas) {
        Ok(decision) => (Some(decision.replicas), decision.to_string()),
        Err(why) => (None, format!("no replica count: {why}")),
    };
    ObjectReport {
        file: file.to_string(),
        document: so.at.to_string(),
        namespace: so.namespace.clone(),
        name: so.name.clone(),
        triggers,
        replicas,
        explanation,
    }
}

/// KEDA's and the HPA's replicas from the trigger reports, or why there are none. A trigger
/// that parsed but could not be measured goes through the ScaledObject's `fallback`; one
/// that did not parse (GetMetricSpec fails) or that this scaler does not serve leaves the
/// HPA without that metric, so there is no count.
fn decide(
    so: &ScaledObject,
    triggers: &[TriggerReport],
    current_replicas: Option<u32>,
) -> Result<Decision, String> {
    let mut readings = Vec::new();
    let mut failed = Vec::new();
    let mut missing = 0;
    for (index, (trigger, report)) in so.triggers.iter().zip(triggers).enumerate() {
        let label = trigger.label(index);
        match (report.value, report.target, report.activation_target) {
            (Some(value), Some(target), Some(activation_target)) => {
                readings.push(TriggerReading {
                    label,
                    name: trigger.name.clone(),
                    value,
                    target,
                    activation_target,
                    metric_type: trigger.metric_type,
                });
            }
            (None, Some(target), _) => failed.push(FailedTrigger {
                label,
                name: trigger.name.clone(),
                target,
                metric_type: trigger.metric_type,
            }),
            _ => missing += 1,
        }
    }
    if missing > 0 {
        return Err(format!(
            "{missing} of {} triggers have no metric for the HPA",
            triggers.len()
        ));
    }
    desired_replicas_with_fallback(
        &readings,
        &failed,
        so.scaling_modifiers.as_ref(),
        so.limits,
        current_replicas,
        so.fallback.as_ref(),
    )
    .map_err(|e| e.to_string())
}

/// The trigger types KEDA sends to an external scaler.
const SCALER_TRIGGER_TYPES: [&str; 2] = ["external", "external-push"];

/// One trigger of an object in `namespace` scaling `target`.
pub(super) async fn evaluate_trigger(
    namespace: &str,
    target: Option<&ScaleTarget>,
    index: usize,
    trigger: &Trigger,
    context: &Context<'_>,
) -> TriggerReport {
    let label = trigger.label(index);
    let failed = |code: &str, error: String| {
        TriggerReport::failed(label.clone(), &trigger.trigger_type, code, error)
    };
    // `external-push` asks the same GetMetricSpec and GetMetrics on the HPA's schedule; only
    // activity arrives over StreamIsActive instead of IsActive, with the same rule.
    if !SCALER_TRIGGER_TYPES.contains(&trigger.trigger_type.as_str()) {
        return failed(
            "NotEvaluated",
            format!(
                "not evaluated: type `{}` is measured by KEDA itself, not by backlog-scaler \
                 (only `external` and `external-push` triggers are)",
                trigger.trigger_type
            ),
        );
    }
    // What KEDA would forward: `*FromEnv` keys resolved from the scale target's env.
    let resolved = resolve_from_env(&trigger.metadata, target, namespace, context.workloads);
    if !resolved.unresolved.is_empty() {
        return failed("Unresolved", resolved.unresolved.join("; "));
    }
    let metadata: HashMap<String, String> = resolved.metadata.into_iter().collect();
    let spec = match parse_trigger(&metadata, namespace, context.catalog) {
        Ok(spec) => spec,
        Err(error) => {
            let status = Status::from(error);
            let code = format!("{:?}", status.code());
            return failed(&code, status.message().to_string());
        }
    };
    // `includeActive` may have come as `includeActiveFromEnv`.
    let waiting = from_env_keys(&metadata)
        .ok()
        .and_then(|metadata| waiting_only(&metadata, namespace, context.catalog));
    let sources = (context.catalog, context.engine);
    measure(label, trigger, &spec, waiting.as_ref(), sources).await
}

/// The value of a parsed trigger (and its parts, given `waiting`: see [`measure_in_parts`]),
/// or the status KEDA would get.
async fn measure(
    label: String,
    trigger: &Trigger,
    spec: &TriggerSpec,
    waiting: Option<&TriggerSpec>,
    sources: (&Catalog, &Engine),
) -> TriggerReport {
    let mut report = TriggerReport {
        label,
        trigger_type: trigger.trigger_type.clone(),
        metric_name: Some(spec.metric_name()),
        value: None,
        target: Some(spec.target),
        activation_target: Some(spec.activation_target),
        active: None,
        parts: None,
        code: None,
        error: None,
    };
    let (measured, parts) = measure_in_parts(sources, spec, waiting).await;
    match measured {
        Ok(value) => {
            report.value = Some(value);
            report.active = Some(spec.is_active(value));
            report.parts = parts;
        }
        Err(error) => {
            let status = Status::from(error);
            report.code = Some(format!("{:?}", status.code()));
            report.error = Some(status.message().to_string());
        }
    }
    report
}

/// The trigger's value and, given the same trigger without `includeActive` (`waiting`), its
/// two parts: both measured at once, so both come from the same reads where they can.
async fn measure_in_parts(
    (catalog, engine): (&Catalog, &Engine),
    spec: &TriggerSpec,
    waiting: Option<&TriggerSpec>,
) -> (crate::Result<f64>, Option<ValueParts>) {
    let source = |spec: &TriggerSpec| catalog.source_name(spec.source);
    let (measured, waiting) = futures::join!(engine.measure(source(spec), &spec.query), async {
        match waiting {
            Some(waiting) => engine.measure(source(waiting), &waiting.query).await.ok(),
            None => None,
        }
    });
    let parts = match (&measured, waiting) {
        (Ok(value), Some(waiting)) => Some(ValueParts {
            waiting,
            in_progress: (value - waiting).max(0.0),
        }),
        _ => None,
    };
    (measured, parts)
}

/// With `includeActive: "true"`, the same trigger without it (its value is the waiting part).
fn waiting_only(
    metadata: &HashMap<String, String>,
    namespace: &str,
    catalog: &Catalog,
) -> Option<TriggerSpec> {
    let flag = metadata.get("includeActive")?;
    if !flag.eq_ignore_ascii_case("true") {
        return None;
    }
    let mut waiting = metadata.clone();
    waiting.remove("includeActive");
    parse_trigger(&waiting, namespace, catalog).ok()
}

/// Exit 0 when every ScaledObject got a replica count and every trigger answered: a count
/// that only a fallback gives still needs a look.
pub fn exit_of(report: &EvalReport) -> Exit {
    let answered = |triggers: &[TriggerReport]| triggers.iter().all(|t| t.code.is_none());
    let objects = report
        .scaled_objects
        .iter()
        .all(|so| so.replicas.is_some() && answered(&so.triggers));
    let jobs = report
        .scaled_jobs
        .iter()
        .all(|job| job.jobs.is_some() && answered(&job.triggers));
    if objects && jobs {
        Exit::Ok
    } else {
        Exit::Failed
    }
}

/// Per ScaledObject: a header, one line per trigger, the replicas and the explanation.
pub fn render_text(report: &EvalReport) -> String {
    let mut out = String::new();
    for so in &report.scaled_objects {
        out.push_str(&format!(
            "ScaledObject {}/{} ({}, {})\n",
            so.namespace, so.name, so.file, so.document
        ));
        render_triggers(&so.triggers, &mut out);
        match so.replicas {
            Some(n) => out.push_str(&format!("  replicas: {n}\n")),
            None => out.push_str("  replicas: none\n"),
        }
        for line in so.explanation.lines() {
            out.push_str(&format!("    {line}\n"));
        }
    }
    jobs::render_text(&report.scaled_jobs, &mut out);
    for skipped in &report.skipped {
        out.push_str(&format!(
            "skipped {}, {}: {}\n",
            skipped.file, skipped.document, skipped.reason
        ));
    }
    out
}

/// One line per trigger: its value, or the code and message KEDA would get.
pub(super) fn render_triggers(triggers: &[TriggerReport], out: &mut String) {
    for t in triggers {
        match (&t.metric_name, t.value, &t.error) {
            (Some(metric), Some(value), _) => out.push_str(&format!(
                "  trigger {}: metric {metric}, value {}, target {}, activationTarget {}, {}\n",
                t.label,
                match t.parts {
                    Some(parts) => format!(
                        "{} = {} waiting + {} in progress",
                        number(value),
                        number(parts.waiting),
                        number(parts.in_progress)
                    ),
                    None => number(value),
                },
                t.target.map_or("?".into(), number),
                t.activation_target.map_or("?".into(), number),
                if t.active == Some(true) {
                    "active"
                } else {
                    "not active"
                },
            )),
            (metric, _, error) => {
                let metric = metric
                    .as_ref()
                    .map(|m| format!("metric {m}, "))
                    .unwrap_or_default();
                let code = t.code.as_deref().unwrap_or("Unknown");
                let error = error.as_deref().unwrap_or("no value");
                out.push_str(&format!("  trigger {}: {metric}{code}: {error}\n", t.label));
            }
        }
    }
}

pub fn render_json(report: &EvalReport) -> String {
    serde_json::to_string_pretty(report).expect("eval results serialize")
}

/// Runs `eval` and prints the result on stdout (a bad file: one line on stderr, exit 2).
pub async fn run(config: &Config, options: &EvalOptions) -> Exit {
    let report = match evaluate(config, options).await {
        Ok(report) => report,
        Err(error) => {
            eprintln!("backlog-scaler: {error}");
            return Exit::BadInput;
        }
    };
    match options.output {
        Output::Text => print!("{}", render_text(&report)),
        Output::Json => println!("{}", render_json(&report)),
    }
    exit_of(&report)
}
