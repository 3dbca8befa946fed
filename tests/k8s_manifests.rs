//! Every manifest under `k8s/` is checked as a cluster would check it, and against the code:
//!
//! - each ScaledObject / TriggerAuthentication / ClusterTriggerAuthentication validates
//!   against KEDA v2.20.2's CRD schema, vendored in `k8s/crds/keda/`, with unknown fields
//!   rejected as `kubectl apply`'s strict field validation does;
//! - the ConfigMap's `config.toml` is a valid scaler config (credentials supplied as files);
//! - every `external` trigger's metadata parses with the scaler's own parser against the
//!   sources of that config.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use backlog_scaler::{config::Config, server::build_engine, trigger::parse_trigger};
use serde_json::{Map, Value, json};

fn project() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The YAML files under `dir`, but not `k8s/crds/`: vendored CRDs are the data of the
/// checks below, not manifests.
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    if dir == project().join("k8s/crds") {
        return;
    }
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// Every YAML document under k8s/, with the file it came from.
fn manifests() -> Vec<(PathBuf, Value)> {
    let mut files = Vec::new();
    yaml_files(&project().join("k8s"), &mut files);
    files.sort();
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: not valid YAML: {e}", file.display()));
            if !value.is_null() {
                documents.push((file.clone(), value));
            }
        }
    }
    documents
}

/// The openAPIV3Schema of a vendored KEDA CRD, closed against unknown fields.
fn crd_schema(file: &str, version: &str) -> Value {
    let path = project().join("k8s/crds/keda").join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the KEDA CRD {} ({e})", path.display()));
    let crd: Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut schema = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == version)
        .unwrap_or_else(|| panic!("{file} has no version {version}"))["schema"]["openAPIV3Schema"]
        .clone();
    close_objects(&mut schema);
    schema
}

/// The API server rejects unknown fields under `kubectl apply` (strict field validation)
/// wherever a schema lists its properties and does not preserve unknown fields.
fn close_objects(schema: &mut Value) {
    if let Value::Object(map) = schema {
        let preserves = map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        if map.contains_key("properties") && !map.contains_key("additionalProperties") && !preserves
        {
            map.insert("additionalProperties".into(), Value::Bool(false));
        }
        for value in map.values_mut() {
            close_objects(value);
        }
    } else if let Value::Array(items) = schema {
        items.iter_mut().for_each(close_objects);
    }
}

fn validator_for(kind: &str) -> Option<jsonschema::Validator> {
    let file = match kind {
        "ScaledObject" => "keda.sh_scaledobjects.yaml",
        "TriggerAuthentication" => "keda.sh_triggerauthentications.yaml",
        "ClusterTriggerAuthentication" => "keda.sh_clustertriggerauthentications.yaml",
        _ => return None,
    };
    Some(jsonschema::validator_for(&crd_schema(file, "v1alpha1")).expect("CRD schema compiles"))
}

fn errors(validator: &jsonschema::Validator, document: &Value) -> Vec<String> {
    validator
        .iter_errors(document)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect()
}

fn is_keda(document: &Value) -> bool {
    document["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("keda.sh/"))
}

#[test]
fn keda_objects_validate_against_the_crds() {
    let mut checked = 0;
    for (file, document) in manifests().iter().filter(|(_, d)| is_keda(d)) {
        let kind = document["kind"].as_str().unwrap_or_default();
        let validator = validator_for(kind).unwrap_or_else(|| {
            panic!(
                "{}: no CRD for {kind} in k8s/crds/keda/; vendor it there",
                file.display()
            )
        });
        assert_eq!(
            document["apiVersion"],
            "keda.sh/v1alpha1",
            "{}",
            file.display()
        );
        let problems = errors(&validator, document);
        assert!(
            problems.is_empty(),
            "{} ({kind}): {problems:#?}",
            file.display()
        );
        checked += 1;
    }
    assert!(
        checked >= 17,
        "expected a ScaledObject per metric, the advanced examples and the TLS \
         TriggerAuthentication; checked {checked}"
    );
}

#[test]
fn the_validator_rejects_broken_scaled_objects() {
    let validator = validator_for("ScaledObject").unwrap();
    let good = json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "w"},
        "spec": {
            "scaleTargetRef": {"name": "w"},
            "triggers": [{"type": "external", "metadata": {"scalerAddress": "a:9090"}}]
        }
    });
    assert!(
        errors(&validator, &good).is_empty(),
        "{:?}",
        errors(&validator, &good)
    );
    let mut typo = good.clone();
    typo["spec"]["triggers"][0]["metdata"] = typo["spec"]["triggers"][0]["metadata"].take();
    typo["spec"]["triggers"][0]
        .as_object_mut()
        .unwrap()
        .remove("metadata");
    assert!(
        !errors(&validator, &typo).is_empty(),
        "a misspelt field is rejected"
    );
    let mut no_target = good.clone();
    no_target["spec"]
        .as_object_mut()
        .unwrap()
        .remove("scaleTargetRef");
    assert!(
        !errors(&validator, &no_target).is_empty(),
        "scaleTargetRef is required"
    );
    let mut not_string = good;
    not_string["spec"]["triggers"][0]["metadata"]["target"] = json!(10);
    assert!(
        !errors(&validator, &not_string).is_empty(),
        "metadata values are strings"
    );
}

/// The scaler config of the ConfigMap, with its credential files supplied from a temp dir.
fn configmap_config(documents: &[(PathBuf, Value)], secrets: &Path) -> Config {
    let (_, configmap) = documents
        .iter()
        .find(|(_, d)| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "backlog-scaler")
        .expect("k8s/ has the backlog-scaler ConfigMap");
    let toml = configmap["data"]["config.toml"].as_str().unwrap();
    let secret_dir = "/etc/backlog-scaler/secrets/";
    for line in toml.lines().filter(|l| l.contains(secret_dir)) {
        let name = line.split(secret_dir).nth(1).unwrap().trim_end_matches('"');
        let url = if name.starts_with("pg") {
            "postgres://scaler@127.0.0.1:1/app"
        } else {
            "redis://127.0.0.1:1/0"
        };
        std::fs::write(secrets.join(name), url).unwrap();
    }
    let toml = toml.replace(secret_dir, &format!("{}/", secrets.display()));
    Config::from_toml(&toml).unwrap_or_else(|e| panic!("the ConfigMap's config.toml: {e}"))
}

#[test]
fn configmap_is_a_valid_config_and_every_trigger_parses_against_it() {
    let documents = manifests();
    let secrets = tempfile::tempdir().unwrap();
    let config = configmap_config(&documents, secrets.path());
    let engine = build_engine(&config).unwrap();
    let mut parsed = 0;
    for (file, document) in &documents {
        if document["kind"] != "ScaledObject" {
            continue;
        }
        for trigger in document["spec"]["triggers"].as_array().unwrap() {
            if trigger["type"] != "external" {
                continue;
            }
            let metadata: HashMap<String, String> = trigger["metadata"]
                .as_object()
                .unwrap_or(&Map::new())
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            assert_eq!(
                metadata.get("scalerAddress").map(String::as_str),
                Some("backlog-scaler.keda.svc:9090"),
                "{}: scalerAddress must reach the Service in k8s/",
                file.display()
            );
            let spec = parse_trigger(&metadata, &engine)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert!(spec.target > 0.0);
            parsed += 1;
        }
    }
    assert!(parsed >= 17, "parsed {parsed} triggers");
}

#[test]
fn scaling_modifier_formulas_name_existing_triggers() {
    let documents = manifests();
    let mut formulas = 0;
    for (file, document) in &documents {
        let formula = &document["spec"]["advanced"]["scalingModifiers"]["formula"];
        let Some(formula) = formula.as_str() else {
            continue;
        };
        let names: Vec<&str> = document["spec"]["triggers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                t["name"].as_str().unwrap_or_else(|| {
                    panic!(
                        "{}: every trigger of a formula needs a name",
                        file.display()
                    )
                })
            })
            .collect();
        for name in &names {
            assert!(
                formula.contains(name),
                "{}: trigger {name} is not used by {formula:?}",
                file.display()
            );
        }
        formulas += 1;
    }
    assert!(
        formulas >= 1,
        "k8s/examples/guarded-worker.yaml has a formula"
    );
}

#[test]
fn deployment_probes_the_named_health_services_and_drains_in_time() {
    let documents = manifests();
    let (_, deployment) = documents
        .iter()
        .find(|(_, d)| d["kind"] == "Deployment")
        .expect("k8s/ has the Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["livenessProbe"]["grpc"]["service"], "liveness");
    assert_eq!(container["readinessProbe"]["grpc"]["service"], "readiness");
    let secrets = tempfile::tempdir().unwrap();
    let config = configmap_config(&documents, secrets.path());
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        config.server.shutdown_grace.as_secs() < grace,
        "server.shutdown_grace must end before Kubernetes kills the pod"
    );
    assert_eq!(
        container["ports"][0]["containerPort"].as_u64(),
        Some(u64::from(config.server.grpc_listen.port()))
    );
}
