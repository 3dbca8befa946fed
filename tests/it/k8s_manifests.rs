//! Every manifest under `k8s/` is checked as a cluster would check it, and against the code:
//!
//! - `k8s/base/` renders with `kubectl kustomize` (any folder with a kustomization file is
//!   rendered, never read file by file); `k8s/crds/` holds vendored CRDs, the data of the
//!   checks below, and is not a manifest;
//! - each ScaledObject / ScaledJob / TriggerAuthentication / ClusterTriggerAuthentication
//!   validates against KEDA v2.20.2's CRD schema (`k8s/crds/keda/`), with unknown fields
//!   rejected as `kubectl apply`'s strict field validation does; a ScaledJob's triggers count
//!   waiting work only;
//! - every other object validates strictly (unknown fields rejected) against the OpenAPI
//!   schemas of Kubernetes 1.33 to 1.35, the versions KEDA v2.20 is tested on, with
//!   kubernetes-validate;
//! - checkov finds no failed check under `k8s/`, and every check it skips says why;
//! - the ConfigMap's `config.toml` is a valid scaler config (credentials supplied as files);
//! - every `external` trigger's metadata parses with the scaler's own parser against the
//!   sources of that config, and its `scalerAddress` is the headless Service of `k8s/base/`;
//! - the Deployment, Services and NetworkPolicy agree with that config's ports.
//!
//! The tools come from `scripts/install-test-deps.sh`: kubectl (Debian: kubernetes-client),
//! kubernetes-validate into `.test-deps/python`, checkov into `.test-deps/checkov`. A missing
//! tool fails the test with the command that installs it.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use backlog_scaler::{
    config::Config,
    trigger::{Catalog, parse_trigger},
};
use serde_json::{Map, Value, json};

use crate::common::{printed, project};

const INSTALL: &str = "scripts/install-test-deps.sh";

/// The Kubernetes versions the objects must be valid in: those KEDA v2.20 is tested on.
const KUBERNETES_VERSIONS: [&str; 3] = ["1.33.0", "1.34.0", "1.35.0"];

/// The names kustomize accepts for a kustomization file.
const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

// === tools ===

/// Runs a tool from the project root, or fails naming the command that installs it.
fn run(command: &mut Command, install: &str) -> Output {
    let program = command.get_program().to_string_lossy().into_owned();
    command
        .current_dir(project())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}); install it with: {install}"))
}

/// `python3 -m MODULE` of `package`, installed in a project-local folder that must hold
/// `probe`.
fn python_tool(package: &str, folder: &str, probe: &str, module: &str) -> Command {
    let folder = project().join(folder);
    assert!(
        folder.join(probe).exists(),
        "{package} is not installed in {}; install it with: {INSTALL} (or python3 -m pip \
         install --target {} {package})",
        folder.display(),
        folder.display()
    );
    let mut command = Command::new("python3");
    command
        .env("PYTHONPATH", &folder)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args(["-m", module]);
    command
}

/// `kubectl kustomize DIR`: the objects as `kubectl apply -k DIR` would send them.
fn kustomize(dir: &Path) -> String {
    let output = run(
        Command::new("kubectl").arg("kustomize").arg(dir),
        &format!("{INSTALL} as root (apt-get install -y kubernetes-client)"),
    );
    assert!(
        output.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        printed(&output)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn kubernetes_validate() -> Command {
    python_tool(
        "kubernetes-validate==1.37.0",
        ".test-deps/python",
        "kubernetes_validate",
        "kubernetes_validate",
    )
}

fn checkov() -> Command {
    python_tool(
        "checkov==3.3.30",
        ".test-deps/checkov",
        "checkov/main.py",
        "checkov.main",
    )
}

// === the manifests ===

/// The YAML texts under `dir`, each with where it came from: a folder with a kustomization is
/// one text, rendered; `k8s/crds/` (vendored CRDs) and `k8s/monitoring/tests/` (promtool's
/// rule tests, not Kubernetes objects) are skipped.
fn sources(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    if dir == project().join("k8s/crds") || dir == project().join("k8s/monitoring/tests") {
        return;
    }
    if KUSTOMIZATION_FILES.iter().any(|f| dir.join(f).is_file()) {
        out.push((dir.to_path_buf(), kustomize(dir)));
        return;
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push((path.clone(), std::fs::read_to_string(&path).unwrap()));
        }
    }
}

/// Every Kubernetes object under k8s/, with the file or kustomization it came from.
fn manifests() -> Vec<(PathBuf, Value)> {
    let mut texts = Vec::new();
    sources(&project().join("k8s"), &mut texts);
    let mut documents = Vec::new();
    for (origin, text) in texts {
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: not valid YAML: {e}", origin.display()));
            if !value.is_null() {
                documents.push((origin.clone(), value));
            }
        }
    }
    documents
}

fn is_keda(document: &Value) -> bool {
    document["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("keda.sh/"))
}

/// prometheus-operator's kinds (PrometheusRule, ServiceMonitor): their CRDs are not vendored;
/// tests/it/monitoring.rs checks the rules with promtool instead.
fn is_prometheus_operator(document: &Value) -> bool {
    document["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("monitoring.coreos.com/"))
}

fn find<'a>(documents: &'a [(PathBuf, Value)], kind: &str, name: &str) -> &'a Value {
    documents
        .iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("k8s/ has no {kind} {name}"))
}

// === KEDA objects against the vendored CRDs ===

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
        "ScaledJob" => "keda.sh_scaledjobs.yaml",
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

#[test]
fn the_validator_rejects_broken_scaled_jobs() {
    let validator = validator_for("ScaledJob").unwrap();
    let good = json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledJob",
        "metadata": {"name": "j"},
        "spec": {
            "jobTargetRef": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
            "triggers": [{"type": "external", "metadata": {"scalerAddress": "a:9090"}}]
        }
    });
    assert!(
        errors(&validator, &good).is_empty(),
        "{:?}",
        errors(&validator, &good)
    );
    let mut no_job = good.clone();
    no_job["spec"]
        .as_object_mut()
        .unwrap()
        .remove("jobTargetRef");
    assert!(
        !errors(&validator, &no_job).is_empty(),
        "jobTargetRef is required"
    );
    let mut deployment_target = good;
    deployment_target["spec"]["scaleTargetRef"] = json!({"name": "w"});
    assert!(
        !errors(&validator, &deployment_target).is_empty(),
        "a ScaledJob has no scaleTargetRef"
    );
}

/// With the `accurate` strategy KEDA starts ceil(value / target) Jobs minus those not yet
/// running: the value must be the waiting work alone, or Jobs start that find nothing to do.
/// (`default` subtracts every unfinished Job instead, which fits only values that count the
/// work those Jobs hold: docs/scaling-in.md.)
#[test]
fn scaled_job_triggers_count_waiting_work_only() {
    let mut checked = 0;
    for (file, document) in manifests().iter().filter(|(_, d)| d["kind"] == "ScaledJob") {
        assert_eq!(
            document["spec"]["scalingStrategy"]["strategy"],
            "accurate",
            "{}: a trigger of waiting work goes with the accurate strategy",
            file.display()
        );
        for trigger in document["spec"]["triggers"].as_array().unwrap() {
            let metadata = &trigger["metadata"];
            assert_ne!(
                metadata["includeActive"],
                "true",
                "{}: includeActive counts running jobs",
                file.display()
            );
            let statuses = metadata["statuses"].as_str().unwrap_or_default();
            assert!(
                !statuses.contains("STARTED") && !statuses.contains("STARTING"),
                "{}: statuses {statuses:?} count running runs",
                file.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 1, "k8s/examples/ has a ScaledJob");
}

// === Kubernetes objects against Kubernetes' schemas ===

/// Runs kubernetes-validate --strict over `objects` for every version of
/// [`KUBERNETES_VERSIONS`]; returns whether it succeeded and what it printed.
fn validate_strictly(objects: &[&Value]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("objects.yaml");
    let text: String = objects.iter().map(|o| format!("---\n{o}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let mut command = kubernetes_validate();
    command.arg("--strict");
    for version in KUBERNETES_VERSIONS {
        command.args(["-k", version]);
    }
    let output = run(command.arg(&file), INSTALL);
    (output.status.success(), printed(&output))
}

#[test]
fn kubernetes_objects_validate_strictly_against_their_schemas() {
    let documents = manifests();
    let objects: Vec<&Value> = documents
        .iter()
        .map(|(_, d)| d)
        .filter(|d| !is_keda(d) && !is_prometheus_operator(d))
        .collect();
    for kind in [
        "ServiceAccount",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ] {
        assert!(
            objects.iter().any(|o| o["kind"] == kind),
            "k8s/ has no {kind}"
        );
    }
    let (success, report) = validate_strictly(&objects);
    assert!(success, "kubernetes-validate --strict failed:\n{report}");
    // A kind whose schema it does not know (a typo in apiVersion, say) is only a warning to
    // kubernetes-validate: require a pass for every object in every version instead.
    for object in &objects {
        let resource = format!(
            "{}/{}",
            object["kind"].as_str().unwrap().to_lowercase(),
            object["metadata"]["name"].as_str().unwrap()
        );
        for version in KUBERNETES_VERSIONS {
            let minor = version.trim_end_matches(".0");
            let passed = format!("passed for resource {resource} against version {minor}");
            assert!(
                report.lines().any(|l| l.contains(&passed)),
                "{resource} was not validated against Kubernetes {minor}:\n{report}"
            );
        }
    }
}

#[test]
fn kubernetes_validate_rejects_unknown_fields_and_unknown_kinds() {
    let documents = manifests();
    let deployment = find(&documents, "Deployment", "backlog-scaler");
    let (success, report) = validate_strictly(&[deployment]);
    assert!(success, "{report}");

    let mut typo = deployment.clone();
    typo["spec"]["replica"] = typo["spec"]["replicas"].take();
    let (success, report) = validate_strictly(&[&typo]);
    assert!(!success, "a misspelt field must fail:\n{report}");

    let mut gone = deployment.clone();
    gone["apiVersion"] = json!("apps/v1beta1");
    let (_, report) = validate_strictly(&[&gone]);
    assert!(
        !report.contains("passed for resource deployment/backlog-scaler"),
        "an API version Kubernetes no longer serves must not pass:\n{report}"
    );
}

// === security policy ===

/// checkov's JSON report on `dir` (relative to the project root).
fn checkov_report(dir: &Path) -> Value {
    let output = run(
        checkov()
            .arg("--directory")
            .arg(dir)
            .args(["--framework", "kubernetes", "--skip-path", "k8s/crds"])
            // Nothing from the vendor's API: check texts and skips are all local.
            .args(["--skip-download", "--output", "json"]),
        INSTALL,
    );
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("checkov printed no JSON report ({e}): {}", printed(&output)));
    // One framework gives one report object; checkov prints a list for several.
    assert!(report.is_object(), "{report}");
    report
}

#[test]
fn checkov_finds_no_failed_check_and_every_skip_says_why() {
    let report = checkov_report(Path::new("k8s"));
    let summary = &report["summary"];
    let failed: Vec<String> = report["results"]["failed_checks"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|c| format!("{} {} ({})", c["check_id"], c["resource"], c["file_path"]))
        .collect();
    assert_eq!(summary["failed"], 0, "checkov failed checks: {failed:#?}");
    assert_eq!(summary["parsing_errors"], 0, "{summary}");
    assert!(
        summary["passed"].as_u64().unwrap() >= 80,
        "checkov checked too little: {summary}"
    );
    // Skips are annotations `checkov.io/skipN: CKV_K8S_NN=reason` (checkov's Kubernetes
    // runner reads no YAML comments); a skip without a reason reads "No comment provided".
    for skipped in report["results"]["skipped_checks"].as_array().unwrap() {
        let reason = skipped["check_result"]["suppress_comment"]
            .as_str()
            .unwrap_or_default();
        assert!(
            reason.len() > 20 && reason != "No comment provided",
            "checkov skip {} on {} needs a reason: {reason:?}",
            skipped["check_id"],
            skipped["resource"]
        );
    }
}

#[test]
fn checkov_fails_an_unhardened_deployment() {
    // Not tempfile's default `.tmp…`: checkov skips hidden folders.
    let dir = tempfile::Builder::new()
        .prefix("checkov-case")
        .tempdir()
        .unwrap();
    let bare = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "bare", "namespace": "keda"},
        "spec": {
            "selector": {"matchLabels": {"app": "bare"}},
            "template": {
                "metadata": {"labels": {"app": "bare"}},
                "spec": {"containers": [{"name": "bare", "image": "bare:latest"}]}
            }
        }
    });
    std::fs::write(dir.path().join("bare.yaml"), bare.to_string()).unwrap();
    let report = checkov_report(dir.path());
    assert!(
        report["summary"]["failed"].as_u64().unwrap() > 10,
        "{}",
        report["summary"]
    );
}

// === the scaler's config and triggers ===

/// The scaler config of the ConfigMap, with its credential files supplied from a temp dir.
fn configmap_config(documents: &[(PathBuf, Value)], secrets: &Path) -> Config {
    let configmap = find(documents, "ConfigMap", "backlog-scaler");
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
    let catalog = Catalog::new(&config.sources, &config.server.limits);
    let mut parsed = 0;
    for (file, document) in &documents {
        // A ScaledJob's triggers reach the scaler exactly as a ScaledObject's do.
        if document["kind"] != "ScaledObject" && document["kind"] != "ScaledJob" {
            continue;
        }
        for trigger in document["spec"]["triggers"].as_array().unwrap() {
            if !matches!(trigger["type"].as_str(), Some("external" | "external-push")) {
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
                "{}: scalerAddress must reach the Service in k8s/base/",
                file.display()
            );
            let namespace = document["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default");
            let spec = parse_trigger(&metadata, namespace, &catalog)
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
    let deployment = find(&documents, "Deployment", "backlog-scaler");
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
    let grpc_port = u64::from(config.server.grpc_listen.port());
    assert_eq!(
        container["ports"][0]["containerPort"].as_u64(),
        Some(grpc_port)
    );
    assert_eq!(
        container["livenessProbe"]["grpc"]["port"].as_u64(),
        Some(grpc_port)
    );
    assert_eq!(
        container["readinessProbe"]["grpc"]["port"].as_u64(),
        Some(grpc_port)
    );
}

/// The container port named `name`.
fn container_port(deployment: &Value, name: &str) -> u64 {
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("the Deployment has no port {name}"))["containerPort"]
        .as_u64()
        .unwrap()
}

#[test]
fn services_and_network_policy_match_the_configured_ports() {
    let documents = manifests();
    let secrets = tempfile::tempdir().unwrap();
    let config = configmap_config(&documents, secrets.path());
    let deployment = find(&documents, "Deployment", "backlog-scaler");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let grpc = u64::from(config.server.grpc_listen.port());
    let http = u64::from(
        config
            .server
            .http_listen
            .expect("http_listen is set")
            .port(),
    );
    assert_eq!(container_port(deployment, "grpc"), grpc);
    assert_eq!(container_port(deployment, "http-metrics"), http);

    // KEDA dials backlog-scaler.keda.svc: headless, so that its round_robin client sees
    // every ready pod (docs/operations.md).
    let headless = find(&documents, "Service", "backlog-scaler");
    assert_eq!(headless["metadata"]["namespace"], "keda");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(headless["spec"]["ports"][0]["port"].as_u64(), Some(grpc));
    assert_eq!(headless["spec"]["ports"][0]["targetPort"], "grpc");
    let metrics = find(&documents, "Service", "backlog-scaler-metrics");
    assert_ne!(metrics["spec"]["clusterIP"], "None");
    assert_eq!(metrics["spec"]["ports"][0]["targetPort"], "http-metrics");
    for service in [headless, metrics] {
        for (key, value) in service["spec"]["selector"].as_object().unwrap() {
            assert_eq!(&pod_labels[key], value, "{service}");
        }
    }

    let policy = find(&documents, "NetworkPolicy", "backlog-scaler");
    let admitted: Vec<(String, u64)> = policy["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| {
            let namespace =
                rule["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                    .as_str()
                    .unwrap()
                    .to_string();
            rule["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |p| (namespace.clone(), p["port"].as_u64().unwrap()))
        })
        .collect();
    assert_eq!(
        admitted,
        [("keda".to_string(), grpc), ("monitoring".to_string(), http)]
    );
}
