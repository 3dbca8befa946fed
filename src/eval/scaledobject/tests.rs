//! ScaledObject files as a specification: what is kept, what is defaulted, what is skipped and
//! what is refused with which message.

use super::*;

/// The README's ScaledObject.
const README_EXAMPLE: &str = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: agent-worker
spec:
  scaleTargetRef:
    name: agent-worker
  minReplicaCount: 0
  maxReplicaCount: 20
  triggers:
    - type: external
      metadata:
        scalerAddress: backlog-scaler.keda.svc:9090
        source: redis-main          # a source named in the scaler's config
        metric: redis-list
        keys: "agent:tasks:pending,agent:tasks:retry"
        target: "10"                # work items per replica
        activationTarget: "0"       # scale from zero when value > this
"#;

/// A ScaledObject named `name` with `spec` (indented by two spaces) as its spec.
fn object(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

/// One external trigger, as a spec body.
const ONE_TRIGGER: &str =
    "  triggers:\n    - type: external\n      metadata: {metric: rq, queue: q, target: \"10\"}\n";

fn parse_one(yaml: &str) -> ScaledObject {
    let mut file = parse_scaled_objects(yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(file.scaled_objects.len(), 1, "{file:?}");
    file.scaled_objects.remove(0)
}

#[test]
fn the_readme_example_gets_kedas_defaults() {
    let so = parse_one(README_EXAMPLE);
    assert_eq!(so.name, "agent-worker");
    assert_eq!(so.namespace, "default");
    assert_eq!(
        so.at,
        DocumentRef {
            document: 1,
            item: None
        }
    );
    assert_eq!(
        so.limits,
        ReplicaLimits {
            min_replica_count: 0,
            max_replica_count: 20,
            idle_replica_count: None
        }
    );
    assert_eq!(so.triggers.len(), 1);
    let trigger = &so.triggers[0];
    assert_eq!(trigger.trigger_type, "external");
    assert_eq!(trigger.name, None);
    assert_eq!(trigger.metric_type, MetricType::AverageValue);
    assert_eq!(
        trigger.metadata["keys"],
        "agent:tasks:pending,agent:tasks:retry"
    );
    assert_eq!(trigger.metadata["target"], "10");
    assert_eq!(trigger.metadata.len(), 6);
    assert_eq!(trigger.label(0), "triggers[0] (external)");
    assert_eq!(so.fallback, None);
    assert_eq!(so.scaling_modifiers, None);
}

#[test]
fn unset_replica_counts_default_to_0_and_100() {
    let so = parse_one(&object("w", ONE_TRIGGER));
    assert_eq!(
        so.limits,
        ReplicaLimits {
            min_replica_count: 0,
            max_replica_count: 100,
            idle_replica_count: None
        }
    );
}

#[test]
fn keeps_every_field_that_decides_replicas() {
    let yaml = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: mail
  namespace: workers
spec:
  idleReplicaCount: 0
  minReplicaCount: 2
  maxReplicaCount: 30
  fallback:
    failureThreshold: 3
    replicas: 6
    behavior: currentReplicasIfHigher
  advanced:
    restoreToOriginalReplicaCount: true
    scalingModifiers:
      formula: "max(mail, retry / 2)"
      target: "50"
      activationTarget: "5.5"
      metricType: Value
  triggers:
    - type: external
      name: mail
      metadata: {source: redis-main, metric: bullmq, queue: mail, target: "50"}
    - type: external
      name: retry
      metricType: Value
      metadata: {source: redis-main, metric: redis-zset, keys: "jobs:retry", target: "10"}
    - type: cpu
      metricType: Utilization
      metadata: {value: "80"}
"#;
    let so = parse_one(yaml);
    assert_eq!(
        (so.name.as_str(), so.namespace.as_str()),
        ("mail", "workers")
    );
    assert_eq!(
        so.limits,
        ReplicaLimits {
            min_replica_count: 2,
            max_replica_count: 30,
            idle_replica_count: Some(0)
        }
    );
    assert_eq!(
        so.fallback,
        Some(Fallback {
            failure_threshold: 3,
            replicas: 6,
            behavior: FallbackBehavior::CurrentReplicasIfHigher
        })
    );
    let types: Vec<MetricType> = so.triggers.iter().map(|t| t.metric_type).collect();
    assert_eq!(
        types,
        [
            MetricType::AverageValue,
            MetricType::Value,
            MetricType::Utilization
        ]
    );
    assert_eq!(so.trigger_names(), ["mail", "retry"]);
    assert_eq!(so.triggers[1].label(1), "retry");
    assert_eq!(so.triggers[2].label(2), "triggers[2] (cpu)");
    let modifiers = so.scaling_modifiers.expect("scalingModifiers");
    assert_eq!(modifiers.formula.source(), "max(mail, retry / 2)");
    assert_eq!(modifiers.target, 50.0);
    assert_eq!(modifiers.activation_target, 5.5);
    assert_eq!(modifiers.metric_type, MetricType::Value);
}

#[test]
fn other_documents_are_skipped_and_reported() {
    let yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: w}}\n---\n{}\n---\n---\n\
         apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata: {{name: j}}\nspec:\n{}---\n\
         apiVersion: keda.k8s.io/v1alpha1\nkind: ScaledObject\nmetadata: {{name: old}}\n---\n\
         - just\n- a list\n---\nfoo: bar\n---\n{}",
        object("first", ONE_TRIGGER),
        ONE_TRIGGER,
        object("second", ONE_TRIGGER)
    );
    let file = parse_scaled_objects(&yaml).unwrap_or_else(|e| panic!("{e}"));
    // ScaledJobs are read too, on their own list.
    let jobs: Vec<(usize, &str)> = file
        .scaled_jobs
        .iter()
        .map(|j| (j.at.document, j.name.as_str()))
        .collect();
    assert_eq!(jobs, [(4, "j")]);
    let found: Vec<(usize, &str)> = file
        .scaled_objects
        .iter()
        .map(|so| (so.at.document, so.name.as_str()))
        .collect();
    assert_eq!(found, [(2, "first"), (8, "second")]);
    let skipped: Vec<(usize, &str)> = file
        .skipped
        .iter()
        .map(|s| (s.at.document, s.reason.as_str()))
        .collect();
    assert_eq!(
        skipped,
        [
            (1, "kind Deployment (apps/v1)"),
            (3, "empty document"),
            (
                5,
                "a ScaledObject of apiVersion `keda.k8s.io/v1alpha1`, not keda.sh/v1alpha1"
            ),
            (6, "not a Kubernetes object: a list"),
            (7, "no `kind`: not a Kubernetes object"),
        ]
    );
}

#[test]
fn a_file_without_scaled_objects_is_not_an_error() {
    for yaml in ["", "# only a comment\n", "apiVersion: v1\nkind: Service\n"] {
        let file = parse_scaled_objects(yaml).unwrap_or_else(|e| panic!("{yaml:?}: {e}"));
        assert!(file.scaled_objects.is_empty(), "{yaml:?}");
    }
}

#[test]
fn kubectl_lists_are_read_item_by_item() {
    let indented = |s: String| s.replace('\n', "\n    ");
    let yaml = format!(
        "apiVersion: v1\nkind: List\nitems:\n  - {}\n  - apiVersion: v1\n    kind: ConfigMap\n  - {}\n",
        indented(object("a", ONE_TRIGGER)),
        indented(object("b", ONE_TRIGGER))
    );
    let file = parse_scaled_objects(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let found: Vec<(Option<usize>, &str)> = file
        .scaled_objects
        .iter()
        .map(|so| (so.at.item, so.name.as_str()))
        .collect();
    assert_eq!(found, [(Some(0), "a"), (Some(2), "b")]);
    assert_eq!(file.skipped.len(), 1);
    assert_eq!(file.skipped[0].at.to_string(), "document 1, items[1]");
}

#[test]
fn yaml_anchors_and_merge_keys_are_resolved() {
    let yaml = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: w}
spec:
  triggers:
    - type: external
      name: high
      metadata: &common
        source: redis-main
        metric: rq
        queue: high
        target: "10"
    - type: external
      name: low
      metadata:
        <<: *common
        queue: low
"#;
    let so = parse_one(yaml);
    assert_eq!(so.triggers[1].metadata["source"], "redis-main");
    assert_eq!(so.triggers[1].metadata["queue"], "low");
}

#[test]
fn fallback_replicas_follow_the_behavior() {
    use FallbackBehavior::*;
    #[rustfmt::skip]
    let cases: &[(FallbackBehavior, Option<u32>, Option<u32>)] = &[
        (Static, None, Some(6)),
        (Static, Some(9), Some(6)),
        (CurrentReplicas, Some(9), Some(9)),
        (CurrentReplicas, None, None),
        (CurrentReplicasIfHigher, Some(9), Some(9)),
        (CurrentReplicasIfHigher, Some(3), Some(6)),
        (CurrentReplicasIfHigher, None, None),
        (CurrentReplicasIfLower, Some(9), Some(6)),
        (CurrentReplicasIfLower, Some(3), Some(3)),
        (CurrentReplicasIfLower, None, None),
    ];
    for &(behavior, current, expected) in cases {
        let fallback = Fallback {
            failure_threshold: 3,
            replicas: 6,
            behavior,
        };
        assert_eq!(
            fallback.replicas_for(current),
            expected,
            "{} with current {current:?}",
            behavior.as_str()
        );
    }
}

#[test]
fn invalid_objects_are_refused_naming_document_object_and_field() {
    let t = ONE_TRIGGER;
    let named = "  triggers:\n    - type: external\n      name: a\n      metadata: {target: \"1\"}\n    - type: external\n      name: b\n      metadata: {target: \"1\"}\n";
    let with = |extra: &str| format!("{extra}{t}");
    let modifiers = |body: &str| format!("  advanced:\n    scalingModifiers:\n{body}{named}");
    #[rustfmt::skip]
    let cases: Vec<(String, &str)> = vec![
        ("a: [".into(), "document 1: invalid YAML: "),
        ("apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nspec: {}\n".into(), "document 1: metadata: required"),
        ("apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {namespace: x}\n".into(), "document 1: metadata.name: required"),
        ("apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: 5}\n".into(), "document 1: metadata.name: must be a string, got the number `5`"),
        ("apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: w}\n".into(), "document 1 (ScaledObject default/w): spec: required"),
        (object("w", "  triggers: []\n"), "(ScaledObject default/w): spec.triggers: required: KEDA needs at least one trigger"),
        (object("w", "  minReplicaCount: 1\n"), "spec.triggers: required"),
        (object("w", "  triggers: {type: external}\n"), "spec.triggers: must be a list, got a mapping"),
        (object("w", "  triggers:\n    - metadata: {}\n"), "spec.triggers[0].type: required (e.g. `external`)"),
        (object("w", "  triggers:\n    - type: external\n"), "spec.triggers[0].metadata: required"),
        (object("w", "  triggers:\n    - type: external\n      metadata: {target: 10}\n"), "spec.triggers[0].metadata.target: must be a string, got the number `10`; quote it (`\"10\"`)"),
        (object("w", "  triggers:\n    - type: external\n      metadata: {includeActive: true}\n"), "spec.triggers[0].metadata.includeActive: must be a string, got the boolean `true`; quote it"),
        (object("w", "  triggers:\n    - type: external\n      metadata: {keys: [a, b]}\n"), "spec.triggers[0].metadata.keys: must be a string, got a list"),
        (object("w", "  triggers:\n    - type: external\n      metricType: average\n      metadata: {}\n"), "spec.triggers[0].metricType: expected AverageValue, Value or Utilization, got `average`"),
        (object("w", "  triggers:\n    - {type: external, name: a, metadata: {}}\n    - {type: external, name: a, metadata: {}}\n"), "spec.triggers[1].name: `a` is also the name of spec.triggers[0]; KEDA requires trigger names to be unique"),
        (object("w", &with("  minReplicaCount: 5\n  maxReplicaCount: 3\n")), "spec.minReplicaCount: 5 is more than maxReplicaCount 3"),
        (object("w", &with("  maxReplicaCount: 0\n")), "spec.maxReplicaCount: must be at least 1"),
        (object("w", &with("  minReplicaCount: 1\n  idleReplicaCount: 1\n")), "spec.idleReplicaCount: 1 must be less than minReplicaCount (1)"),
        (object("w", &with("  idleReplicaCount: 0\n")), "spec.idleReplicaCount: 0 must be less than minReplicaCount (0)"),
        (object("w", &with("  minReplicaCount: -1\n")), "spec.minReplicaCount: must be a whole number from 0 to 2147483647, got the number `-1`"),
        (object("w", &with("  minReplicaCount: \"2\"\n")), "spec.minReplicaCount: must be a whole number from 0 to 2147483647, got the string \"2\""),
        (object("w", &with("  maxReplicaCount: 1.5\n")), "spec.maxReplicaCount: must be a whole number"),
        (object("w", &with("  maxReplicaCount: 4294967296\n")), "spec.maxReplicaCount: must be a whole number"),
        (object("w", &with("  fallback: {replicas: 3}\n")), "spec.fallback.failureThreshold: required when `fallback` is set"),
        (object("w", &with("  fallback: {failureThreshold: 3}\n")), "spec.fallback.replicas: required"),
        (object("w", &with("  fallback: {failureThreshold: 3, replicas: 2, behavior: sticky}\n")), "spec.fallback.behavior: expected static, currentReplicas, currentReplicasIfHigher, currentReplicasIfLower or scalingModifiers, got `sticky`"),
        (object("w", &with("  fallback: {failureThreshold: 3, replicas: 2, behavior: scalingModifiers}\n")), "spec.fallback.behavior: scalingModifiers requires spec.advanced.scalingModifiers.formula"),
        (object("w", &with("  fallback: 3\n")), "spec.fallback: must be a mapping, got the number `3`"),
        (object("w", &modifiers("      formula: \"a + b\"\n")), "spec.advanced.scalingModifiers.target: required with a formula"),
        (object("w", &modifiers("      target: \"2\"\n")), "spec.advanced.scalingModifiers.formula: required with a target"),
        (object("w", &modifiers("      formula: \"a + b\"\n      target: 2\n")), "spec.advanced.scalingModifiers.target: must be a string, got the number `2`; quote it (`\"2\"`)"),
        (object("w", &modifiers("      formula: \"a + b\"\n      target: \"two\"\n")), "spec.advanced.scalingModifiers.target: must be a number, got `two`"),
        (object("w", &modifiers("      formula: \"a + b\"\n      target: \"0\"\n")), "spec.advanced.scalingModifiers.target: must be a number > 0, got `0`"),
        (object("w", &modifiers("      formula: \"a + b\"\n      target: \"NaN\"\n")), "spec.advanced.scalingModifiers.target: must be a number, got `NaN`"),
        (object("w", &modifiers("      formula: \"a + b\"\n      target: \" 2\"\n")), "spec.advanced.scalingModifiers.target: must be a number, got ` 2`"),
        (object("w", &modifiers("      formula: \"a + b\"\n      target: \"2\"\n      activationTarget: \"x\"\n")), "spec.advanced.scalingModifiers.activationTarget: must be a number, got `x`"),
        (object("w", &modifiers("      formula: \"a + b\"\n      target: \"2\"\n      metricType: Utilization\n")), "spec.advanced.scalingModifiers.metricType: Utilization is not accepted"),
        (object("w", &modifiers("      formula: \"a +\"\n      target: \"2\"\n")), "spec.advanced.scalingModifiers.formula: column 4: expected a number"),
        (object("w", &modifiers("      formula: \"a + c\"\n      target: \"2\"\n")), "spec.advanced.scalingModifiers.formula: column 5: unknown variable `c`; the formula can use the trigger names `a`, `b`"),
        (object("w", &modifiers("      formula: \"a > b\"\n      target: \"2\"\n")), "spec.advanced.scalingModifiers.formula: column 1: the formula produces a boolean"),
        (object("w", &modifiers("      formula: \"a > 0 ? a : nil\"\n      target: \"2\"\n")), "spec.advanced.scalingModifiers.formula: KEDA's admission webhook runs the formula with every trigger at -1 and refuses it: column 1: the formula produced nil"),
        (format!("{}---\n{}", object("a", t), object("b", "  triggers: 3\n")), "document 2 (ScaledObject default/b): spec.triggers: must be a list, got the number `3`"),
        ("apiVersion: v1\nkind: List\nitems:\n  - apiVersion: keda.sh/v1alpha1\n    kind: ScaledObject\n    metadata: {name: x, namespace: ns}\n".into(), "document 1, items[0] (ScaledObject ns/x): spec: required"),
    ];
    for (yaml, expected) in &cases {
        match parse_scaled_objects(yaml) {
            Ok(file) => panic!("accepted, expected {expected:?}:\n{yaml}\n{file:?}"),
            Err(e) => assert!(
                e.to_string().contains(expected),
                "got:  {e}\nwant: {expected}\nin:\n{yaml}"
            ),
        }
    }
}

#[test]
fn modifiers_without_formula_or_target_are_no_modifiers() {
    let spec =
        format!("  advanced:\n    scalingModifiers: {{activationTarget: \"1\"}}\n{ONE_TRIGGER}");
    assert_eq!(parse_one(&object("w", &spec)).scaling_modifiers, None);
    let spec = format!("  advanced:\n    scalingModifiers:\n      formula: \"\"\n{ONE_TRIGGER}");
    assert_eq!(parse_one(&object("w", &spec)).scaling_modifiers, None);
}

#[test]
fn empty_trigger_names_and_namespaces_count_as_unset() {
    let yaml = "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: w, namespace: \"\"}\nspec:\n  triggers:\n    - {type: external, name: \"\", metadata: {}}\n    - {type: external, name: \"\", metadata: {}}\n";
    let so = parse_one(yaml);
    assert_eq!(so.namespace, "default");
    assert_eq!(so.trigger_names(), Vec::<&str>::new());
}
