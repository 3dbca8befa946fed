//! A file as `kubectl apply` reads it → its ScaledObjects, ScaledJobs and the workloads
//! beside them: one or more YAML documents, or the `kind: List` that `kubectl get -o yaml`
//! prints. Each document is handed to the parser of its kind ([`super::scaledobject`],
//! [`super::scaledjob`], [`super::workload`]); the others are reported as skipped, never
//! silently lost.

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::{
    scaledjob::{ScaledJob, parse_scaled_job},
    scaledobject::{
        API_VERSION, DocumentRef, Result, ScaledObject, ScaledObjectError, describe, parse_object,
    },
    workload::{Workload, parse_workload},
};

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
