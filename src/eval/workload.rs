//! `*FromEnv` trigger keys, resolved as KEDA resolves them: from the env of the scale target's
//! container (kedacore/keda `pkg/scaling/resolver`, `ResolveContainerEnv`), then forwarded as
//! `<key>FromEnv: <value>`, or left out when the value is empty (`parseExternalScalerMetadata`).
//!
//! eval reads files, not a cluster, so it knows a workload's env only when the workload's
//! manifest is among the files, and only the literal `value:`s in it. A variable that comes
//! from a ConfigMap or Secret (`valueFrom`, `envFrom`), or that uses `$(VAR)` references, stays
//! unresolved, and so does every variable when the workload is not in the files: the caller
//! says which.

use std::collections::BTreeMap;

use serde_yaml_ng::{Mapping, Value};

/// The suffix of a trigger key whose value comes from the workload's env.
const FROM_ENV: &str = "FromEnv";

/// `spec.scaleTargetRef`: the workload KEDA scales and reads env from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleTarget {
    /// `kind`, KEDA's default `Deployment`.
    pub kind: String,
    pub name: String,
    /// `envSourceContainerName`: the container whose env KEDA reads (default: the first).
    pub env_source_container: Option<String>,
}

/// A workload manifest among the files: its containers' env, as far as a file tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// `spec.template.spec.containers`, in order.
    pub containers: Vec<Container>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    pub name: String,
    /// Variable → its literal value, or why the file does not tell it.
    pub env: BTreeMap<String, Result<String, String>>,
    /// `envFrom` sources, described (`configMapRef app-config`): any variable may come from them.
    pub env_from: Vec<String>,
}

/// A trigger's metadata with its `*FromEnv` keys resolved, and what could not be.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedMetadata {
    /// As KEDA forwards it: `<key>FromEnv: <value>`, or the key left out when the value is
    /// empty or the variable unset.
    pub metadata: BTreeMap<String, String>,
    /// `keysFromEnv: QUEUE_KEYS` and why it is not known, one per unresolved key.
    pub unresolved: Vec<String>,
}

/// Resolves the `*FromEnv` keys of `metadata` from the env of `target` in `namespace`, found
/// among `workloads`.
pub fn resolve_from_env(
    metadata: &BTreeMap<String, String>,
    target: Option<&ScaleTarget>,
    namespace: &str,
    workloads: &[Workload],
) -> ResolvedMetadata {
    let mut resolved = ResolvedMetadata {
        metadata: BTreeMap::new(),
        unresolved: Vec::new(),
    };
    let container = target.map(|t| find_container(t, namespace, workloads));
    for (key, variable) in metadata {
        if !key.ends_with(FROM_ENV) || key.len() == FROM_ENV.len() {
            resolved.metadata.insert(key.clone(), variable.clone());
            continue;
        }
        let value = match &container {
            None => Err("the ScaledObject has no scaleTargetRef".to_owned()),
            Some(Err(why)) => Err(why.clone()),
            Some(Ok(container)) => lookup(container, variable),
        };
        match value {
            Ok(Some(value)) if !value.is_empty() => {
                resolved.metadata.insert(key.clone(), value);
            }
            // KEDA leaves the key out.
            Ok(_) => {}
            Err(why) => resolved
                .unresolved
                .push(format!("`{key}: {variable}` is not known: {why}")),
        }
    }
    resolved
}

/// The container KEDA reads env from, or why it is not in the files.
fn find_container<'w>(
    target: &ScaleTarget,
    namespace: &str,
    workloads: &'w [Workload],
) -> Result<&'w Container, String> {
    let workload = workloads
        .iter()
        .find(|w| w.kind == target.kind && w.name == target.name && w.namespace == namespace)
        .ok_or_else(|| {
            format!(
                "{} {namespace}/{} (the scale target, whose env KEDA reads) is not among the \
                 files; add its manifest with --scaledobject",
                target.kind, target.name
            )
        })?;
    let container = match &target.env_source_container {
        Some(name) => workload.containers.iter().find(|c| &c.name == name),
        None => workload.containers.first(),
    };
    container.ok_or_else(|| match &target.env_source_container {
        Some(name) => format!(
            "{} {namespace}/{} has no container `{name}` (envSourceContainerName)",
            target.kind, target.name
        ),
        None => format!(
            "{} {namespace}/{} has no containers",
            target.kind, target.name
        ),
    })
}

/// `variable` in `container`'s env: its value, `None` when unset, or why the file does not
/// tell it.
fn lookup(container: &Container, variable: &str) -> Result<Option<String>, String> {
    match container.env.get(variable) {
        Some(Ok(value)) => Ok(Some(value.clone())),
        Some(Err(why)) => Err(format!("`{variable}` {why}")),
        None if container.env_from.is_empty() => Ok(None),
        None => Err(format!(
            "`{variable}` may come from {} (envFrom), which eval cannot read",
            container.env_from.join(", ")
        )),
    }
}

/// `value` as a workload with a pod template (`spec.template.spec.containers`), else `None`.
pub fn parse_workload(value: &Mapping) -> Option<Workload> {
    let kind = value.get("kind")?.as_str()?.to_owned();
    let metadata = value.get("metadata")?.as_mapping()?;
    let name = metadata.get("name")?.as_str()?.to_owned();
    let namespace = metadata
        .get("namespace")
        .and_then(Value::as_str)
        .filter(|ns| !ns.is_empty())
        .unwrap_or("default")
        .to_owned();
    let containers = value
        .get("spec")?
        .get("template")?
        .get("spec")?
        .get("containers")?
        .as_sequence()?
        .iter()
        .filter_map(parse_container)
        .collect();
    Some(Workload {
        kind,
        namespace,
        name,
        containers,
    })
}

pub(super) fn parse_container(value: &Value) -> Option<Container> {
    let name = value.get("name")?.as_str()?.to_owned();
    let env = value
        .get("env")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(|var| {
            let name = var.get("name")?.as_str()?.to_owned();
            let value = match (var.get("value"), var.get("valueFrom")) {
                (Some(Value::String(v)), _) if v.contains("$(") => {
                    Err("refers to other variables with $(…), which eval does not expand".into())
                }
                (Some(Value::String(v)), _) => Ok(v.clone()),
                (_, Some(from)) => Err(format!(
                    "comes from {} (valueFrom), which eval cannot read",
                    describe_source(from)
                )),
                _ => Ok(String::new()),
            };
            Some((name, value))
        })
        .collect();
    let env_from = value
        .get("envFrom")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .map(describe_source)
        .collect();
    Some(Container {
        name,
        env,
        env_from,
    })
}

/// `secretKeyRef db-creds`, `configMapRef app-config`, ...
fn describe_source(from: &Value) -> String {
    let Some(map) = from.as_mapping() else {
        return "an unknown source".to_owned();
    };
    map.iter()
        .filter_map(|(kind, reference)| {
            let kind = kind.as_str()?;
            let name = reference.get("name").and_then(Value::as_str).unwrap_or("?");
            Some(format!("{kind} {name}"))
        })
        .find(|s| !s.starts_with("prefix"))
        .unwrap_or_else(|| "an unknown source".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOYMENT: &str = "
kind: Deployment
metadata: {name: mail, namespace: workers}
spec:
  template:
    spec:
      containers:
        - name: sidecar
          env: [{name: QUEUE_KEYS, value: 'sidecar:keys'}]
        - name: app
          env:
            - {name: QUEUE_KEYS, value: 'mail:pending,mail:retry'}
            - {name: EMPTY, value: ''}
            - {name: TARGET, valueFrom: {configMapKeyRef: {name: tuning, key: target}}}
            - {name: LINK, value: '$(QUEUE_KEYS)'}
          envFrom:
            - configMapRef: {name: app-config}
";

    fn workloads() -> Vec<Workload> {
        let value: Value = serde_yaml_ng::from_str(DEPLOYMENT).unwrap();
        vec![parse_workload(value.as_mapping().unwrap()).unwrap()]
    }

    fn target(container: Option<&str>) -> ScaleTarget {
        ScaleTarget {
            kind: "Deployment".into(),
            name: "mail".into(),
            env_source_container: container.map(str::to_owned),
        }
    }

    fn metadata(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn from_env_keys_take_the_scale_targets_values_as_keda_forwards_them() {
        let md = metadata(&[
            ("source", "redis-main"),
            ("keysFromEnv", "QUEUE_KEYS"),
            ("activationTargetFromEnv", "EMPTY"),
            ("targetFromEnv", "UNSET_BUT_MAYBE_IN_ENVFROM"),
        ]);
        let resolved = resolve_from_env(&md, Some(&target(Some("app"))), "workers", &workloads());
        assert_eq!(
            resolved.metadata,
            metadata(&[
                ("source", "redis-main"),
                ("keysFromEnv", "mail:pending,mail:retry")
            ])
        );
        assert_eq!(
            resolved.unresolved,
            ["`targetFromEnv: UNSET_BUT_MAYBE_IN_ENVFROM` is not known: \
              `UNSET_BUT_MAYBE_IN_ENVFROM` may come from configMapRef app-config (envFrom), \
              which eval cannot read"]
        );
        // The first container by default.
        let resolved = resolve_from_env(&md, Some(&target(None)), "workers", &workloads());
        assert_eq!(resolved.metadata["keysFromEnv"], "sidecar:keys");
    }

    #[test]
    fn what_a_file_cannot_tell_is_said() {
        let md = metadata(&[("targetFromEnv", "TARGET"), ("keysFromEnv", "LINK")]);
        let resolved = resolve_from_env(&md, Some(&target(Some("app"))), "workers", &workloads());
        assert_eq!(
            resolved.unresolved,
            [
                "`keysFromEnv: LINK` is not known: `LINK` refers to other variables with $(…), \
                 which eval does not expand",
                "`targetFromEnv: TARGET` is not known: `TARGET` comes from configMapKeyRef \
                 tuning (valueFrom), which eval cannot read",
            ]
        );
        let md = metadata(&[("keysFromEnv", "QUEUE_KEYS")]);
        let elsewhere = resolve_from_env(&md, Some(&target(None)), "other", &workloads());
        assert_eq!(
            elsewhere.unresolved,
            [
                "`keysFromEnv: QUEUE_KEYS` is not known: Deployment other/mail (the scale target, \
              whose env KEDA reads) is not among the files; add its manifest with --scaledobject"
            ]
        );
        let missing = resolve_from_env(&md, Some(&target(Some("web"))), "workers", &workloads());
        assert!(
            missing.unresolved[0].contains("has no container `web`"),
            "{missing:?}"
        );
        let no_target = resolve_from_env(&md, None, "workers", &workloads());
        assert!(
            no_target.unresolved[0].contains("no scaleTargetRef"),
            "{no_target:?}"
        );
    }
}
