//! ScaledObject YAML → typed [`ScaledObject`]s, once, at the boundary.
//!
//! `backlog-scaler eval` reads the same file a user would `kubectl apply`: one or more YAML
//! documents, or the `kind: List` that `kubectl get scaledobject -o yaml` prints. Documents of
//! other kinds (the Deployment next to the ScaledObject, a ScaledJob) are skipped and reported
//! as skipped, never silently lost.
//!
//! Only what decides replicas is kept, with KEDA's defaults (KEDA's ScaledObject
//! specification): `minReplicaCount` 0, `maxReplicaCount` 100, `idleReplicaCount` unset, each
//! trigger's `metricType` `AverageValue`. What the API server or KEDA's admission webhook would
//! refuse is an error here too, so a dry run does not bless an object `kubectl apply` rejects:
//! non-string trigger metadata (the CRD declares `map[string]string`), no triggers, duplicate
//! trigger names, `minReplicaCount` above `maxReplicaCount`, an `idleReplicaCount` not below
//! `minReplicaCount`, a scalingModifiers formula without a target (or the reverse), and a
//! formula that does not compile or names a trigger that does not exist.
//!
//! Every error names the document (1-based, as an editor counts `---` sections), the object
//! once its name is known, and the field as a path (`spec.triggers[1].metadata.target`).

use std::{collections::BTreeMap, fmt, str::FromStr};

use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

use super::{
    formula::Formula,
    scaledjob::{ScaledJob, parse_scaled_job},
    workload::{ScaleTarget, Workload, parse_workload},
};

/// The only apiVersion of KEDA's ScaledObject.
pub const API_VERSION: &str = "keda.sh/v1alpha1";

/// KEDA's default `maxReplicaCount`.
const DEFAULT_MAX_REPLICA_COUNT: u32 = 100;

/// Replica counts are Kubernetes `int32`s; negative ones make no sense here.
const MAX_REPLICA_COUNT: i64 = i32::MAX as i64;

/// Where an object came from in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentRef {
    /// 1-based index of the YAML document (`---` section).
    pub document: usize,
    /// 0-based index in `items` when the document is a `kind: List`.
    pub item: Option<usize>,
}

impl fmt::Display for DocumentRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(item) = self.item {
            write!(f, ", items[{item}]")?;
        }
        Ok(())
    }
}

/// What a file holds: its ScaledObjects, in file order, and what was skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaledObjectFile {
    pub scaled_objects: Vec<ScaledObject>,
    /// `keda.sh/v1alpha1` ScaledJobs, in file order.
    pub scaled_jobs: Vec<ScaledJob>,
    pub skipped: Vec<SkippedDocument>,
    /// The skipped documents that are workloads with a pod template: where `*FromEnv` keys
    /// come from.
    pub workloads: Vec<Workload>,
}

/// A document (or List item) that is not a `keda.sh/v1alpha1` ScaledObject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedDocument {
    pub at: DocumentRef,
    /// Why, for the user: `kind Deployment (apps/v1)`, `empty document`, ...
    pub reason: String,
}

/// The parts of a ScaledObject that decide its replicas.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaledObject {
    pub at: DocumentRef,
    pub name: String,
    /// `metadata.namespace`, `default` when unset (as `kubectl apply` without `-n`).
    pub namespace: String,
    pub limits: ReplicaLimits,
    /// `spec.scaleTargetRef`, when it names a workload.
    pub scale_target: Option<ScaleTarget>,
    /// In spec order; never empty.
    pub triggers: Vec<Trigger>,
    pub fallback: Option<Fallback>,
    pub scaling_modifiers: Option<ScalingModifiers>,
}

impl ScaledObject {
    /// The names of the triggers that have one: the variables a formula may use.
    pub fn trigger_names(&self) -> Vec<&str> {
        self.triggers
            .iter()
            .filter_map(|t| t.name.as_deref())
            .collect()
    }
}

/// `minReplicaCount`, `maxReplicaCount` and `idleReplicaCount`, validated:
/// `idle < min <= max`, `max >= 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaLimits {
    /// KEDA's default 0: the workload may scale to zero.
    pub min_replica_count: u32,
    /// KEDA's default 100; the HPA's `maxReplicas`.
    pub max_replica_count: u32,
    /// When set, the replicas while no trigger is active (KEDA's docs: only 0 works well).
    pub idle_replica_count: Option<u32>,
}

/// One entry of `spec.triggers`.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// `type`: `external` for backlog-scaler; other types are kept so the CLI can say it
    /// cannot measure them.
    pub trigger_type: String,
    /// `name`; `None` when unset or empty. Only named triggers are formula variables.
    pub name: Option<String>,
    /// `metadata`, as KEDA forwards it to an external scaler (`scalerMetadata`).
    pub metadata: BTreeMap<String, String>,
    pub metric_type: MetricType,
}

impl Trigger {
    /// How to refer to the trigger in output: its name, or `triggers[i]` and its type.
    pub fn label(&self, index: usize) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => format!("triggers[{index}] ({})", self.trigger_type),
        }
    }
}

/// How the HPA turns a metric into replicas (`metricType`; KEDA's default `AverageValue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetricType {
    /// The value is divided among replicas: `ceil(value / target)`.
    #[default]
    AverageValue,
    /// The value is compared whole: `ceil(current × value / target)`.
    Value,
    /// A percentage of the pods' resource requests: cpu and memory triggers only.
    Utilization,
}

impl MetricType {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::AverageValue => "AverageValue",
            MetricType::Value => "Value",
            MetricType::Utilization => "Utilization",
        }
    }
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MetricType {
    type Err = String;

    /// Case-sensitive, as the CRD's enum is.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "AverageValue" => Ok(MetricType::AverageValue),
            "Value" => Ok(MetricType::Value),
            "Utilization" => Ok(MetricType::Utilization),
            other => Err(format!(
                "expected AverageValue, Value or Utilization, got `{other}`"
            )),
        }
    }
}

/// `spec.fallback`: the replicas KEDA asks for once a trigger has failed more than
/// `failure_threshold` times in a row (KEDA's ScaledObject specification, "fallback").
///
/// KEDA answers the HPA with `target × replicas` as the failed trigger's metric, divided by
/// the ready replicas for a `Value` metric; [`super::fallback`] replays it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fallback {
    pub failure_threshold: u32,
    pub replicas: u32,
    pub behavior: FallbackBehavior,
}

/// `spec.fallback.behavior` (KEDA's default `static`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FallbackBehavior {
    /// `fallback.replicas`.
    #[default]
    Static,
    /// The current replicas.
    CurrentReplicas,
    /// The higher of the current replicas and `fallback.replicas`.
    CurrentReplicasIfHigher,
    /// The lower of the current replicas and `fallback.replicas`.
    CurrentReplicasIfLower,
    /// A failed trigger is nil in the scalingModifiers formula; `fallback.replicas` when the
    /// formula gives nil.
    ScalingModifiers,
}

impl FallbackBehavior {
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackBehavior::Static => "static",
            FallbackBehavior::CurrentReplicas => "currentReplicas",
            FallbackBehavior::CurrentReplicasIfHigher => "currentReplicasIfHigher",
            FallbackBehavior::CurrentReplicasIfLower => "currentReplicasIfLower",
            FallbackBehavior::ScalingModifiers => "scalingModifiers",
        }
    }
}

impl Fallback {
    /// The replicas KEDA falls back to, given the current replicas; `None` when the behavior
    /// depends on the current replicas and they are not known.
    pub fn replicas_for(&self, current_replicas: Option<u32>) -> Option<u32> {
        match self.behavior {
            FallbackBehavior::Static | FallbackBehavior::ScalingModifiers => Some(self.replicas),
            FallbackBehavior::CurrentReplicas => current_replicas,
            FallbackBehavior::CurrentReplicasIfHigher => {
                current_replicas.map(|current| current.max(self.replicas))
            }
            FallbackBehavior::CurrentReplicasIfLower => {
                current_replicas.map(|current| current.min(self.replicas))
            }
        }
    }
}

/// `spec.advanced.scalingModifiers`: the triggers' metrics composed by a formula into one
/// `composite-metric` with its own target (KEDA's "scaling modifiers" docs).
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingModifiers {
    /// Compiled, with every variable checked against the trigger names.
    pub formula: Formula,
    /// The composite metric value one replica handles; finite and > 0.
    pub target: f64,
    /// The ScaledObject is active while the composite value is above this (default 0).
    pub activation_target: f64,
    /// `AverageValue` (default) or `Value`; KEDA does not accept `Utilization` here.
    pub metric_type: MetricType,
}

/// Why a file could not be read as ScaledObjects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ScaledObjectError {
    pub at: DocumentRef,
    /// `ScaledObject namespace/name` (or `ScaledJob ...`) once known.
    pub object: Option<String>,
    /// The field as a path, e.g. `spec.triggers[0].metricType`; `None` for YAML syntax errors.
    pub field: Option<String>,
    pub reason: String,
}

impl fmt::Display for ScaledObjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.at)?;
        if let Some(object) = &self.object {
            write!(f, " ({object})")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

pub(super) type Result<T, E = ScaledObjectError> = std::result::Result<T, E>;

/// Reads every ScaledObject in `yaml` (one or more documents, or `kind: List`s).
///
/// Stops at the first invalid ScaledObject. A file without any ScaledObject is not an error
/// here: the result then has none, and [`ScaledObjectFile::skipped`] says what was there.
pub fn parse_scaled_objects(yaml: &str) -> Result<ScaledObjectFile> {
    let mut file = ScaledObjectFile {
        scaled_objects: Vec::new(),
        scaled_jobs: Vec::new(),
        skipped: Vec::new(),
        workloads: Vec::new(),
    };
    for (index, document) in serde_yaml_ng::Deserializer::from_str(yaml).enumerate() {
        let at = DocumentRef {
            document: index + 1,
            item: None,
        };
        let yaml_error = |e: serde_yaml_ng::Error| ScaledObjectError {
            at,
            object: None,
            field: None,
            reason: format!("invalid YAML: {e}"),
        };
        // The first error ends the loop: after a syntax error the iterator does not recover.
        let mut value = Value::deserialize(document).map_err(yaml_error)?;
        value.apply_merge().map_err(yaml_error)?;
        let Value::Mapping(map) = &value else {
            file.skipped.push(SkippedDocument {
                at,
                reason: match value {
                    Value::Null => "empty document".to_owned(),
                    other => format!("not a Kubernetes object: {}", describe(&other)),
                },
            });
            continue;
        };
        let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
        let items = map.get("items").and_then(Value::as_sequence);
        match items {
            Some(items) if kind.ends_with("List") => {
                for (item, value) in items.iter().enumerate() {
                    let at = DocumentRef {
                        document: at.document,
                        item: Some(item),
                    };
                    classify(value, at, &mut file)?;
                }
            }
            _ => classify(&value, at, &mut file)?,
        }
    }
    Ok(file)
}

/// Parses `value` if it is a ScaledObject, else records why it was skipped.
fn classify(value: &Value, at: DocumentRef, file: &mut ScaledObjectFile) -> Result<()> {
    let Value::Mapping(map) = value else {
        file.skipped.push(SkippedDocument {
            at,
            reason: format!("not a Kubernetes object: {}", describe(value)),
        });
        return Ok(());
    };
    let kind = map.get("kind").and_then(Value::as_str);
    let api_version = map.get("apiVersion").and_then(Value::as_str);
    match (kind, api_version) {
        (Some("ScaledObject"), Some(API_VERSION)) => {
            file.scaled_objects.push(parse_object(map, at)?);
        }
        (Some("ScaledJob"), Some(API_VERSION)) => {
            file.scaled_jobs.push(parse_scaled_job(map, at)?);
        }
        (Some("ScaledObject"), other) => file.skipped.push(SkippedDocument {
            at,
            reason: format!(
                "a ScaledObject of apiVersion `{}`, not {API_VERSION}",
                other.unwrap_or("(none)")
            ),
        }),
        (Some(kind), api_version) => {
            file.workloads.extend(parse_workload(map));
            file.skipped.push(SkippedDocument {
                at,
                reason: format!("kind {kind} ({})", api_version.unwrap_or("no apiVersion")),
            });
        }
        (None, _) => file.skipped.push(SkippedDocument {
            at,
            reason: "no `kind`: not a Kubernetes object".to_owned(),
        }),
    }
    Ok(())
}

/// Where errors of one object point.
pub(super) struct Ctx {
    pub(super) at: DocumentRef,
    pub(super) object: Option<String>,
}

impl Ctx {
    pub(super) fn error(&self, field: &str, reason: impl Into<String>) -> ScaledObjectError {
        ScaledObjectError {
            at: self.at,
            object: self.object.clone(),
            field: Some(field.to_owned()),
            reason: reason.into(),
        }
    }

    /// `value` as a mapping.
    pub(super) fn mapping<'v>(&self, value: &'v Value, field: &str) -> Result<&'v Mapping> {
        value
            .as_mapping()
            .ok_or_else(|| self.error(field, format!("must be a mapping, got {}", describe(value))))
    }

    /// `value` as a string. Kubernetes refuses other scalars in string fields, so this does
    /// too, saying how to fix it.
    pub(super) fn string<'v>(&self, value: &'v Value, field: &str) -> Result<&'v str> {
        if let Some(s) = value.as_str() {
            return Ok(s);
        }
        let hint = match value {
            Value::Number(n) => {
                format!("; quote it (`\"{n}\"`): Kubernetes accepts only strings here")
            }
            Value::Bool(b) => {
                format!("; quote it (`\"{b}\"`): Kubernetes accepts only strings here")
            }
            _ => String::new(),
        };
        Err(self.error(
            field,
            format!("must be a string, got {}{hint}", describe(value)),
        ))
    }

    /// A replica count: a whole number in Kubernetes' `int32` range, not negative.
    pub(super) fn replica_count(&self, value: &Value, field: &str) -> Result<u32> {
        value
            .as_i64()
            .filter(|n| (0..=MAX_REPLICA_COUNT).contains(n))
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                self.error(
                    field,
                    format!(
                        "must be a whole number from 0 to {MAX_REPLICA_COUNT}, got {}",
                        describe(value)
                    ),
                )
            })
    }

    /// A finite number written as a string (`target: "2"`). No surrounding spaces: KEDA's
    /// float parsing refuses them too.
    pub(super) fn number_string(&self, value: &Value, field: &str) -> Result<f64> {
        let text = self.string(value, field)?;
        match text.parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(n),
            _ => Err(self.error(field, format!("must be a number, got `{text}`"))),
        }
    }
}

/// `map[key]`, treating an explicit `null` (`key:` with nothing after it) as absent, as
/// Kubernetes does.
pub(super) fn get<'v>(map: &'v Mapping, key: &str) -> Option<&'v Value> {
    map.get(key).filter(|v| !v.is_null())
}

/// How a YAML value reads in an error message.
pub(super) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("the boolean `{b}`"),
        Value::Number(n) => format!("the number `{n}`"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(tagged) => format!("a value tagged `{}`", tagged.tag),
    }
}

fn parse_object(map: &Mapping, at: DocumentRef) -> Result<ScaledObject> {
    let mut ctx = Ctx { at, object: None };
    let metadata = get(map, "metadata").ok_or_else(|| ctx.error("metadata", "required"))?;
    let metadata = ctx.mapping(metadata, "metadata")?;
    let name = match get(metadata, "name") {
        Some(name) => ctx.string(name, "metadata.name")?,
        None => "",
    };
    if name.is_empty() {
        return Err(ctx.error("metadata.name", "required"));
    }
    let namespace = match get(metadata, "namespace") {
        Some(ns) => ctx.string(ns, "metadata.namespace")?,
        None => "",
    };
    let namespace = if namespace.is_empty() {
        "default"
    } else {
        namespace
    };
    ctx.object = Some(format!("ScaledObject {namespace}/{name}"));

    let spec = get(map, "spec").ok_or_else(|| ctx.error("spec", "required"))?;
    let spec = ctx.mapping(spec, "spec")?;
    let limits = parse_limits(&ctx, spec)?;
    let scale_target = parse_scale_target(&ctx, spec)?;
    let triggers = parse_triggers(&ctx, spec)?;
    let fallback = match get(spec, "fallback") {
        Some(fallback) => Some(parse_fallback(&ctx, fallback)?),
        None => None,
    };
    let scaling_modifiers = parse_advanced(&ctx, spec, &triggers)?;
    if fallback.is_some_and(|f| f.behavior == FallbackBehavior::ScalingModifiers)
        && scaling_modifiers.is_none()
    {
        return Err(ctx.error(
            "spec.fallback.behavior",
            "scalingModifiers requires spec.advanced.scalingModifiers.formula, as KEDA's \
             admission webhook does",
        ));
    }
    Ok(ScaledObject {
        at,
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        limits,
        scale_target,
        triggers,
        fallback,
        scaling_modifiers,
    })
}

/// `spec.scaleTargetRef`: `name`, `kind` (default `Deployment`), `envSourceContainerName`.
fn parse_scale_target(ctx: &Ctx, spec: &Mapping) -> Result<Option<ScaleTarget>> {
    let Some(target) = get(spec, "scaleTargetRef") else {
        return Ok(None);
    };
    let target = ctx.mapping(target, "spec.scaleTargetRef")?;
    let field = |key: &str| -> Result<Option<String>> {
        get(target, key)
            .map(|v| ctx.string(v, &format!("spec.scaleTargetRef.{key}")))
            .transpose()
            .map(|v| v.filter(|s| !s.is_empty()).map(str::to_owned))
    };
    let Some(name) = field("name")? else {
        return Ok(None);
    };
    Ok(Some(ScaleTarget {
        kind: field("kind")?.unwrap_or_else(|| "Deployment".to_owned()),
        name,
        env_source_container: field("envSourceContainerName")?,
    }))
}

fn parse_limits(ctx: &Ctx, spec: &Mapping) -> Result<ReplicaLimits> {
    let count = |key: &str| -> Result<Option<u32>> {
        get(spec, key)
            .map(|v| ctx.replica_count(v, &format!("spec.{key}")))
            .transpose()
    };
    let min = count("minReplicaCount")?.unwrap_or(0);
    let max = count("maxReplicaCount")?.unwrap_or(DEFAULT_MAX_REPLICA_COUNT);
    let idle = count("idleReplicaCount")?;
    if max == 0 {
        return Err(ctx.error(
            "spec.maxReplicaCount",
            "must be at least 1: it becomes the maxReplicas of the HPA KEDA creates",
        ));
    }
    if min > max {
        return Err(ctx.error(
            "spec.minReplicaCount",
            format!("{min} is more than maxReplicaCount {max}; KEDA refuses this"),
        ));
    }
    if let Some(idle) = idle
        && idle >= min
    {
        return Err(ctx.error(
            "spec.idleReplicaCount",
            format!("{idle} must be less than minReplicaCount ({min}), as KEDA requires"),
        ));
    }
    Ok(ReplicaLimits {
        min_replica_count: min,
        max_replica_count: max,
        idle_replica_count: idle,
    })
}

pub(super) fn parse_triggers(ctx: &Ctx, spec: &Mapping) -> Result<Vec<Trigger>> {
    let required = "required: KEDA needs at least one trigger";
    let list = get(spec, "triggers").ok_or_else(|| ctx.error("spec.triggers", required))?;
    let list = list.as_sequence().ok_or_else(|| {
        ctx.error(
            "spec.triggers",
            format!("must be a list, got {}", describe(list)),
        )
    })?;
    if list.is_empty() {
        return Err(ctx.error("spec.triggers", required));
    }
    let mut triggers: Vec<Trigger> = Vec::with_capacity(list.len());
    for (index, value) in list.iter().enumerate() {
        let path = format!("spec.triggers[{index}]");
        let trigger = parse_trigger(ctx, value, &path)?;
        if let Some(name) = &trigger.name
            && let Some(first) = triggers.iter().position(|t| t.name.as_ref() == Some(name))
        {
            return Err(ctx.error(
                &format!("{path}.name"),
                format!(
                    "`{name}` is also the name of spec.triggers[{first}]; KEDA requires trigger \
                     names to be unique"
                ),
            ));
        }
        triggers.push(trigger);
    }
    Ok(triggers)
}

fn parse_trigger(ctx: &Ctx, value: &Value, path: &str) -> Result<Trigger> {
    let map = ctx.mapping(value, path)?;
    let type_path = format!("{path}.type");
    let trigger_type = match get(map, "type") {
        Some(t) => ctx.string(t, &type_path)?,
        None => "",
    };
    if trigger_type.is_empty() {
        return Err(ctx.error(&type_path, "required (e.g. `external`)"));
    }
    let name = match get(map, "name") {
        Some(name) => Some(ctx.string(name, &format!("{path}.name"))?),
        None => None,
    }
    .filter(|name| !name.is_empty())
    .map(str::to_owned);
    let metadata_path = format!("{path}.metadata");
    let metadata = get(map, "metadata").ok_or_else(|| ctx.error(&metadata_path, "required"))?;
    let metadata = ctx
        .mapping(metadata, &metadata_path)?
        .iter()
        .map(|(key, value)| {
            let key = key.as_str().ok_or_else(|| {
                ctx.error(
                    &metadata_path,
                    format!("keys must be strings, got {}", describe(key)),
                )
            })?;
            let value = ctx.string(value, &format!("{metadata_path}.{key}"))?;
            Ok((key.to_owned(), value.to_owned()))
        })
        .collect::<Result<BTreeMap<_, _>>>()?;
    let metric_type = parse_metric_type(ctx, map, &format!("{path}.metricType"))?;
    Ok(Trigger {
        trigger_type: trigger_type.to_owned(),
        name,
        metadata,
        metric_type,
    })
}

fn parse_metric_type(ctx: &Ctx, map: &Mapping, field: &str) -> Result<MetricType> {
    match get(map, "metricType") {
        Some(value) => ctx
            .string(value, field)?
            .parse()
            .map_err(|reason: String| ctx.error(field, reason)),
        None => Ok(MetricType::default()),
    }
}

fn parse_fallback(ctx: &Ctx, value: &Value) -> Result<Fallback> {
    let map = ctx.mapping(value, "spec.fallback")?;
    let count = |key: &str| -> Result<u32> {
        let field = format!("spec.fallback.{key}");
        let value = get(map, key).ok_or_else(|| {
            ctx.error(
                &field,
                "required when `fallback` is set (KEDA's specification)",
            )
        })?;
        ctx.replica_count(value, &field)
    };
    let failure_threshold = count("failureThreshold")?;
    let replicas = count("replicas")?;
    let behavior = match get(map, "behavior") {
        Some(value) => match ctx.string(value, "spec.fallback.behavior")? {
            "static" => FallbackBehavior::Static,
            "currentReplicas" => FallbackBehavior::CurrentReplicas,
            "currentReplicasIfHigher" => FallbackBehavior::CurrentReplicasIfHigher,
            "currentReplicasIfLower" => FallbackBehavior::CurrentReplicasIfLower,
            "scalingModifiers" => FallbackBehavior::ScalingModifiers,
            other => {
                return Err(ctx.error(
                    "spec.fallback.behavior",
                    format!(
                        "expected static, currentReplicas, currentReplicasIfHigher, \
                         currentReplicasIfLower or scalingModifiers, got `{other}`"
                    ),
                ));
            }
        },
        None => FallbackBehavior::default(),
    };
    Ok(Fallback {
        failure_threshold,
        replicas,
        behavior,
    })
}

/// `spec.advanced.scalingModifiers`, if any.
fn parse_advanced(
    ctx: &Ctx,
    spec: &Mapping,
    triggers: &[Trigger],
) -> Result<Option<ScalingModifiers>> {
    let Some(advanced) = get(spec, "advanced") else {
        return Ok(None);
    };
    let advanced = ctx.mapping(advanced, "spec.advanced")?;
    match get(advanced, "scalingModifiers") {
        Some(modifiers) => parse_scaling_modifiers(ctx, modifiers, triggers),
        None => Ok(None),
    }
}

/// `None` when neither `formula` nor `target` is set: KEDA then uses no modifiers.
fn parse_scaling_modifiers(
    ctx: &Ctx,
    value: &Value,
    triggers: &[Trigger],
) -> Result<Option<ScalingModifiers>> {
    const PATH: &str = "spec.advanced.scalingModifiers";
    let map = ctx.mapping(value, PATH)?;
    let formula_field = format!("{PATH}.formula");
    let target_field = format!("{PATH}.target");
    let formula = match get(map, "formula") {
        Some(f) => Some(ctx.string(f, &formula_field)?).filter(|f| !f.trim().is_empty()),
        None => None,
    };
    let target = get(map, "target");
    let (formula, target) = match (formula, target) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(ctx.error(
                &target_field,
                "required with a formula: the composite metric value one replica handles",
            ));
        }
        (None, Some(_)) => {
            return Err(ctx.error(
                &formula_field,
                "required with a target: how the trigger values compose into one metric",
            ));
        }
        (Some(formula), Some(target)) => (formula, target),
    };
    let target_value = ctx.number_string(target, &target_field)?;
    if target_value <= 0.0 {
        return Err(ctx.error(
            &target_field,
            format!("must be a number > 0, got `{target_value}`"),
        ));
    }
    let activation_target = match get(map, "activationTarget") {
        Some(v) => ctx.number_string(v, &format!("{PATH}.activationTarget"))?,
        None => 0.0,
    };
    let metric_type_field = format!("{PATH}.metricType");
    let metric_type = parse_metric_type(ctx, map, &metric_type_field)?;
    if metric_type == MetricType::Utilization {
        return Err(ctx.error(
            &metric_type_field,
            "Utilization is not accepted for the composite metric; use AverageValue or Value",
        ));
    }
    let formula = compile_formula(ctx, &formula_field, formula, triggers)?;
    Ok(Some(ScalingModifiers {
        formula,
        target: target_value,
        activation_target,
        metric_type,
    }))
}

/// The formula parsed, its variables checked against the trigger names, and run once with
/// every trigger at -1, as KEDA's admission webhook does.
fn compile_formula(ctx: &Ctx, field: &str, formula: &str, triggers: &[Trigger]) -> Result<Formula> {
    let formula = Formula::parse(formula).map_err(|e| ctx.error(field, e.to_string()))?;
    let names: Vec<&str> = triggers.iter().filter_map(|t| t.name.as_deref()).collect();
    formula
        .check_variables(&names)
        .map_err(|e| ctx.error(field, e.to_string()))?;
    formula.check_admission(&names).map_err(|e| {
        ctx.error(
            field,
            format!(
                "KEDA's admission webhook runs the formula with every trigger at -1 and \
                 refuses it: {e}"
            ),
        )
    })?;
    Ok(formula)
}

#[cfg(test)]
mod tests;
