//! `backlog-scaler eval --config FILE --scaledobject so.yaml [--current-replicas N]`: a dry
//! run of ScaledObjects against the live backends.
//!
//! Every ScaledObject of every file (several documents, `kind: List`) is evaluated the way
//! KEDA would see it through this scaler: each `type: external` trigger's metadata is parsed
//! by [`parse_trigger`] exactly as the server parses `scalerMetadata` (so an invalid trigger
//! shows the gRPC status KEDA would get), measured through an [`Engine`] built from the same
//! config as the server's, and the readings go through [`desired_replicas`]: KEDA's and the
//! HPA's replica math, explained step by step. Triggers of other types are listed as not
//! evaluated; a ScaledObject with one has no replica count, since the HPA would take the
//! highest over metrics this command cannot read.
//!
//! Exit 0 when every ScaledObject got a replica count, 1 otherwise, 2 when a file cannot be
//! read or holds invalid YAML or no ScaledObject.

use std::{
    collections::HashMap,
    io::Read,
    path::{Path, PathBuf},
};

use futures::future::join_all;
use serde::Serialize;
use tonic::Status;

use super::{Exit, Output, number};
use crate::{
    config::Config,
    engine::Engine,
    eval::{ScaledObject, Trigger, TriggerReading, desired_replicas, parse_scaled_objects},
    metrics::Metrics,
    server::build_engine,
    trigger::{Catalog, parse_trigger},
};

/// What `eval` was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalOptions {
    /// ScaledObject files; `-` reads standard input.
    pub files: Vec<PathBuf>,
    /// The workload's current replicas: enables the HPA's tolerance and is the base of
    /// `Value` metrics.
    pub current_replicas: Option<u32>,
    pub output: Output,
}

/// Everything one run evaluated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    pub scaled_objects: Vec<ObjectReport>,
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
    /// The gRPC code KEDA would get instead of a value (`InvalidArgument`, `Unavailable`, …),
    /// or `NotEvaluated` for a trigger this scaler does not serve.
    pub code: Option<String>,
    /// The message that comes with it: the server's own status message.
    pub error: Option<String>,
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
            code: Some(code.to_string()),
            error: Some(error),
        }
    }
}

/// A ScaledObject file, read and parsed.
struct ParsedFile {
    name: String,
    objects: Vec<ScaledObject>,
    skipped: Vec<Skipped>,
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
            if parsed.scaled_objects.is_empty() {
                let what: Vec<String> = skipped
                    .iter()
                    .map(|s| format!("{}: {}", s.document, s.reason))
                    .collect();
                return Err(format!(
                    "{name}: no keda.sh/v1alpha1 ScaledObject (found: {})",
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
                skipped,
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
pub async fn evaluate(
    config: &Config,
    files: &[PathBuf],
    current_replicas: Option<u32>,
) -> Result<EvalReport, String> {
    let files = read_files(files)?;
    let catalog = Catalog::new(&config.sources, &config.server.limits);
    // Cold reads only: every measurement is read once, bounded by its source's timeout, so
    // no refresher runs.
    let engine = build_engine(config, Metrics::new(config.measurements.max_live));
    let mut report = EvalReport {
        scaled_objects: Vec::new(),
        skipped: Vec::new(),
    };
    for file in files {
        let objects = file
            .objects
            .iter()
            .map(|so| evaluate_object(&file.name, so, &catalog, &engine, current_replicas));
        report.scaled_objects.extend(join_all(objects).await);
        report.skipped.extend(file.skipped);
    }
    Ok(report)
}

async fn evaluate_object(
    file: &str,
    so: &ScaledObject,
    catalog: &Catalog,
    engine: &Engine,
    current_replicas: Option<u32>,
) -> ObjectReport {
    let triggers: Vec<TriggerReport> = join_all(
        so.triggers
            .iter()
            .enumerate()
            .map(|(index, trigger)| evaluate_trigger(so, index, trigger, catalog, engine)),
    )
    .await;
    let mut object = ObjectReport {
        file: file.to_string(),
        document: so.at.to_string(),
        namespace: so.namespace.clone(),
        name: so.name.clone(),
        triggers: Vec::new(),
        replicas: None,
        explanation: String::new(),
    };
    let readings: Option<Vec<TriggerReading>> = so
        .triggers
        .iter()
        .zip(&triggers)
        .enumerate()
        .map(|(index, (trigger, report))| {
            Some(TriggerReading {
                label: trigger.label(index),
                name: trigger.name.clone(),
                value: report.value?,
                target: report.target?,
                activation_target: report.activation_target?,
                metric_type: trigger.metric_type,
            })
        })
        .collect();
    match readings {
        Some(readings) => match desired_replicas(
            &readings,
            so.scaling_modifiers.as_ref(),
            so.limits,
            current_replicas,
        ) {
            Ok(decision) => {
                object.replicas = Some(decision.replicas);
                object.explanation = decision.to_string();
            }
            Err(error) => object.explanation = format!("no replica count: {error}"),
        },
        None => {
            let missing = triggers.iter().filter(|t| t.value.is_none()).count();
            object.explanation = format!(
                "no replica count: {missing} of {} triggers have no value",
                triggers.len()
            );
            let unmeasured = triggers
                .iter()
                .any(|t| t.code.as_deref().is_some_and(|c| c != "NotEvaluated"));
            if let Some(fallback) = so.fallback.filter(|_| unmeasured) {
                let replicas = match fallback.replicas_for(current_replicas) {
                    Some(n) => format!("{n} replicas"),
                    None => "the current replicas (pass --current-replicas)".to_string(),
                };
                object.explanation.push_str(&format!(
                    "\nfallback: after {} failed reads in a row KEDA would ask for {replicas} \
                     (behavior {})",
                    fallback.failure_threshold,
                    fallback.behavior.as_str()
                ));
            }
        }
    }
    object.triggers = triggers;
    object
}

async fn evaluate_trigger(
    so: &ScaledObject,
    index: usize,
    trigger: &Trigger,
    catalog: &Catalog,
    engine: &Engine,
) -> TriggerReport {
    let label = trigger.label(index);
    if trigger.trigger_type != "external" {
        return TriggerReport::failed(
            label,
            &trigger.trigger_type,
            "NotEvaluated",
            format!(
                "not evaluated: type `{}` is measured by KEDA itself, not by backlog-scaler \
                 (only `external` triggers are)",
                trigger.trigger_type
            ),
        );
    }
    let metadata: HashMap<String, String> = trigger
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let spec = match parse_trigger(&metadata, &so.namespace, catalog) {
        Ok(spec) => spec,
        Err(error) => {
            let status = Status::from(error);
            return TriggerReport::failed(
                label,
                &trigger.trigger_type,
                &format!("{:?}", status.code()),
                status.message().to_string(),
            );
        }
    };
    let mut report = TriggerReport {
        label,
        trigger_type: trigger.trigger_type.clone(),
        metric_name: Some(spec.metric_name.to_string()),
        value: None,
        target: Some(spec.target),
        activation_target: Some(spec.activation_target),
        active: None,
        code: None,
        error: None,
    };
    match engine.measure(&spec.source, &spec.query).await {
        Ok(value) => {
            report.value = Some(value);
            report.active = Some(spec.is_active(value));
        }
        Err(error) => {
            let status = Status::from(error);
            report.code = Some(format!("{:?}", status.code()));
            report.error = Some(status.message().to_string());
        }
    }
    report
}

/// Exit 0 when every ScaledObject got a replica count.
pub fn exit_of(report: &EvalReport) -> Exit {
    if report.scaled_objects.iter().all(|so| so.replicas.is_some()) {
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
        for t in &so.triggers {
            match (&t.metric_name, t.value, &t.error) {
                (Some(metric), Some(value), _) => out.push_str(&format!(
                    "  trigger {}: metric {metric}, value {}, target {}, activationTarget {}, {}\n",
                    t.label,
                    number(value),
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
        match so.replicas {
            Some(n) => out.push_str(&format!("  replicas: {n}\n")),
            None => out.push_str("  replicas: none\n"),
        }
        for line in so.explanation.lines() {
            out.push_str(&format!("    {line}\n"));
        }
    }
    for skipped in &report.skipped {
        out.push_str(&format!(
            "skipped {}, {}: {}\n",
            skipped.file, skipped.document, skipped.reason
        ));
    }
    out
}

pub fn render_json(report: &EvalReport) -> String {
    serde_json::to_string_pretty(report).expect("eval results serialize")
}

/// Runs `eval` and prints the result on stdout (a bad file: one line on stderr, exit 2).
pub async fn run(config: &Config, options: &EvalOptions) -> Exit {
    let report = match evaluate(config, &options.files, options.current_replicas).await {
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
