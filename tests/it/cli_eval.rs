//! `backlog-scaler eval`, the built binary against throwaway servers: replica counts worked
//! out by hand from known list lengths (bounds, activation, a scalingModifiers formula over
//! two triggers, the HPA's tolerance with `--current-replicas`), invalid metadata answered
//! with the server's own message, and every file in k8s/examples evaluated against sources
//! configured as k8s/base configures them.

use crate::common;
use crate::common::cli_run;

use std::path::{Path, PathBuf};

use backlog_scaler::proto::GetMetricsRequest;
use cli_run::{Run, run, write};
use common::{
    RedisServer, Scaler, free_port, pgbouncer::AdminPgBouncer, postgres::PostgresServer,
    redis_config,
};
use redis::AsyncCommands;

/// A ScaledObject with the given spec lines (indented for `spec:`).
fn scaled_object(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata:\n  name: {name}\n  \
         namespace: workers\nspec:\n  scaleTargetRef:\n    name: {name}\n{spec}"
    )
}

/// A redis-list trigger on `keys` with `target` and optional extra metadata lines.
fn list_trigger(name: Option<&str>, keys: &str, target: &str, extra: &str) -> String {
    let name = name
        .map(|n| format!("\n      name: {n}"))
        .unwrap_or_default();
    format!(
        "    - type: external{name}\n      metadata:\n        scalerAddress: scaler:9090\n        \
         source: redis-main\n        metric: redis-list\n        keys: \"{keys}\"\n        \
         target: \"{target}\"\n{extra}"
    )
}

async fn push(redis: &RedisServer, key: &str, count: usize) {
    let mut connection = redis.connection().await;
    let items: Vec<String> = (0..count).map(|i| format!("job-{i}")).collect();
    let _: () = connection.rpush(key, items).await.unwrap();
}

async fn eval(config: &Path, file: &Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "eval".to_string(),
        "--config".into(),
        config.display().to_string(),
        "--scaledobject".into(),
        file.display().to_string(),
        "--output".into(),
        "json".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    run(&args).await
}

/// The replicas of the only ScaledObject of a JSON report.
fn replicas(ran: &Run) -> Option<u64> {
    let report = ran.json();
    let objects = report["scaled_objects"].as_array().unwrap();
    assert_eq!(objects.len(), 1, "{report}");
    objects[0]["replicas"].as_u64()
}

struct Setup {
    redis: RedisServer,
    dir: tempfile::TempDir,
    config: PathBuf,
}

async fn setup() -> Setup {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "scaler.toml", &redis_config(&redis.url()));
    Setup { redis, dir, config }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_counts_match_the_hand_computed_ones() {
    let s = setup().await;
    push(&s.redis, "eval:a", 25).await;
    push(&s.redis, "eval:b", 12).await;
    push(&s.redis, "eval:big", 500).await;
    push(&s.redis, "eval:few", 3).await;
    push(&s.redis, "eval:six", 6).await;
    push(&s.redis, "eval:21", 21).await;

    // (case, spec, expected replicas, extra arguments)
    type Case<'a> = (&'a str, String, u64, &'a [&'a str]);
    let cases: Vec<Case> = vec![
        (
            // ceil(25 / 10) = 3
            "average value",
            format!(
                "  maxReplicaCount: 20\n  triggers:\n{}",
                list_trigger(None, "eval:a", "10", "")
            ),
            3,
            &[],
        ),
        (
            // ceil((25 + 12) / 10) = 4: the triggers' keys are summed
            "two keys",
            format!(
                "  triggers:\n{}",
                list_trigger(None, "eval:a,eval:b", "10", "")
            ),
            4,
            &[],
        ),
        (
            // ceil(500 / 10) = 50, lowered to maxReplicaCount 20
            "max clamp",
            format!(
                "  maxReplicaCount: 20\n  triggers:\n{}",
                list_trigger(None, "eval:big", "10", "")
            ),
            20,
            &[],
        ),
        (
            // ceil(25 / 10) = 3, raised to minReplicaCount 4
            "min clamp",
            format!(
                "  minReplicaCount: 4\n  maxReplicaCount: 20\n  triggers:\n{}",
                list_trigger(None, "eval:a", "10", "")
            ),
            4,
            &[],
        ),
        (
            // 3 <= activationTarget 5: not active, minReplicaCount 0: scale to zero
            "below activation",
            format!(
                "  triggers:\n{}",
                list_trigger(None, "eval:few", "10", "        activationTarget: \"5\"\n")
            ),
            0,
            &[],
        ),
        (
            // 6 > activationTarget 5: active, ceil(6 / 10) = 1
            "above activation",
            format!(
                "  triggers:\n{}",
                list_trigger(None, "eval:six", "10", "        activationTarget: \"5\"\n")
            ),
            1,
            &[],
        ),
        (
            // composite a + b = 25 + 12 = 37 against target 5: ceil(37 / 5) = 8; the
            // triggers' own targets (1) no longer count
            "scalingModifiers over two triggers",
            format!(
                "  advanced:\n    scalingModifiers:\n      formula: \"a + b\"\n      target: \"5\"\n  \
                 triggers:\n{}{}",
                list_trigger(Some("a"), "eval:a", "1", ""),
                list_trigger(Some("b"), "eval:b", "1", "")
            ),
            8,
            &[],
        ),
        (
            // ceil(21 / 10) = 3 without current replicas...
            "no tolerance without current replicas",
            format!("  triggers:\n{}", list_trigger(None, "eval:21", "10", "")),
            3,
            &[],
        ),
        (
            // ...but at 2 replicas the usage ratio 21 / (10 × 2) = 1.05 is within 10 %: keeps 2
            "tolerance keeps the current replicas",
            format!("  triggers:\n{}", list_trigger(None, "eval:21", "10", "")),
            2,
            &["--current-replicas", "2"],
        ),
        (
            // at 1 replica the ratio 2.1 is outside it: 3
            "tolerance does not hold a far ratio",
            format!("  triggers:\n{}", list_trigger(None, "eval:21", "10", "")),
            3,
            &["--current-replicas", "1"],
        ),
    ];
    for (case, spec, expected, extra) in cases {
        let file = write(s.dir.path(), "so.yaml", &scaled_object("worker", &spec));
        let ran = eval(&s.config, &file, extra).await;
        assert_eq!(ran.code, Some(0), "{case}: {ran:#?}");
        assert_eq!(replicas(&ran), Some(expected), "{case}: {}", ran.stdout);
    }

    // The text output carries the same numbers, per trigger and with the explanation.
    let file = write(
        s.dir.path(),
        "so.yaml",
        &scaled_object(
            "worker",
            &format!(
                "  maxReplicaCount: 20\n  triggers:\n{}",
                list_trigger(None, "eval:a", "10", "        activationTarget: \"2\"\n")
            ),
        ),
    );
    let text = run(&[
        "eval",
        "--config",
        s.config.to_str().unwrap(),
        "--scaledobject",
        file.to_str().unwrap(),
    ])
    .await;
    assert_eq!(text.code, Some(0), "{text:#?}");
    assert!(
        text.stdout.starts_with("ScaledObject workers/worker ("),
        "{}",
        text.stdout
    );
    let trigger_line = text
        .stdout
        .lines()
        .find(|l| {
            l.trim_start()
                .starts_with("trigger triggers[0] (external): metric ")
        })
        .unwrap_or_else(|| panic!("{}", text.stdout));
    assert!(
        trigger_line.ends_with("value 25, target 10, activationTarget 2, active"),
        "{trigger_line}"
    );
    assert!(
        trigger_line.contains("redis-list-eval-a-"),
        "{trigger_line}"
    );
    assert!(text.stdout.contains("  replicas: 3\n"), "{}", text.stdout);
    assert!(
        text.stdout.contains("ceil(25 / 10) = 3"),
        "the explanation: {}",
        text.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_metadata_shows_the_message_the_server_sends() {
    let s = setup().await;
    let scaler = Scaler::start(&redis_config(&s.redis.url())).await;
    let cases: &[&[(&str, &str)]] = &[
        &[("metric", "redis-list"), ("keys", "a"), ("target", "0")],
        &[
            ("metric", "redis-list"),
            ("keys", "a"),
            ("target", "2"),
            ("activationTreshold", "1"),
        ],
        &[("metric", "pg-activity"), ("target", "2")],
        &[("metric", "redis-list"), ("keys", "a,,b"), ("target", "2")],
    ];
    for pairs in cases {
        let mut all = vec![("source", "redis-main")];
        all.extend_from_slice(pairs);
        let status = scaler
            .client()
            .await
            .get_metrics(GetMetricsRequest {
                scaled_object_ref: Some(common::scaled_object(&all)),
                metric_name: String::new(),
            })
            .await
            .expect_err("the server rejects it");
        let metadata: String = all
            .iter()
            .map(|(k, v)| format!("        {k}: \"{v}\"\n"))
            .collect();
        let file = write(
            s.dir.path(),
            "so.yaml",
            &scaled_object(
                "worker",
                &format!("  triggers:\n    - type: external\n      metadata:\n{metadata}"),
            ),
        );
        let ran = eval(&s.config, &file, &[]).await;
        assert_eq!(ran.code, Some(1), "{pairs:?}: {ran:#?}");
        let report = ran.json();
        let trigger = &report["scaled_objects"][0]["triggers"][0];
        assert_eq!(trigger["error"], status.message(), "{pairs:?}: {report}");
        assert_eq!(trigger["code"], "InvalidArgument", "{pairs:?}: {report}");
        assert!(report["scaled_objects"][0]["replicas"].is_null());
        // And in text, the same message.
        let text = run(&[
            "eval",
            "--config",
            s.config.to_str().unwrap(),
            "--scaledobject",
            file.to_str().unwrap(),
        ])
        .await;
        assert!(text.stdout.contains(status.message()), "{text:#?}");
        assert!(text.stdout.contains("  replicas: none\n"), "{text:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_document_is_evaluated_and_what_cannot_be_is_said() {
    let s = setup().await;
    push(&s.redis, "eval:docs", 30).await;
    let file = write(
        s.dir.path(),
        "many.yaml",
        &format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: worker\n---\n{}\n---\n{}\n---\n{}",
            scaled_object(
                "first",
                &format!("  triggers:\n{}", list_trigger(None, "eval:docs", "10", ""))
            ),
            scaled_object(
                "second",
                &format!("  triggers:\n{}", list_trigger(None, "eval:docs", "7", ""))
            ),
            scaled_object(
                "with-cpu",
                &format!(
                    "  triggers:\n{}    - type: cpu\n      metricType: Utilization\n      \
                     metadata:\n        value: \"60\"\n",
                    list_trigger(None, "eval:docs", "10", "")
                )
            ),
        ),
    );
    let ran = eval(&s.config, &file, &[]).await;
    // with-cpu has no count: exit 1, but the others are there.
    assert_eq!(ran.code, Some(1), "{ran:#?}");
    let report = ran.json();
    let objects = report["scaled_objects"].as_array().unwrap();
    let names: Vec<&str> = objects
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["first", "second", "with-cpu"]);
    assert_eq!(objects[0]["replicas"], 3); // ceil(30 / 10)
    assert_eq!(objects[1]["replicas"], 5); // ceil(30 / 7)
    assert_eq!(objects[0]["document"], "document 2");
    assert!(objects[2]["replicas"].is_null());
    let cpu = &objects[2]["triggers"][1];
    assert_eq!(cpu["code"], "NotEvaluated", "{report}");
    assert!(cpu["error"].as_str().unwrap().contains("`cpu`"), "{report}");
    assert_eq!(objects[2]["triggers"][0]["value"], 30.0, "{report}");
    assert_eq!(
        report["skipped"][0]["reason"], "kind Deployment (apps/v1)",
        "{report}"
    );

    // Two files in one run, text output: both objects, in order.
    let single = write(
        s.dir.path(),
        "single.yaml",
        &scaled_object(
            "third",
            &format!("  triggers:\n{}", list_trigger(None, "eval:docs", "30", "")),
        ),
    );
    let both = run(&[
        "eval",
        "--config",
        s.config.to_str().unwrap(),
        "--scaledobject",
        single.to_str().unwrap(),
        single.to_str().unwrap(),
    ])
    .await;
    assert_eq!(both.code, Some(0), "{both:#?}");
    assert_eq!(both.stdout.matches("ScaledObject workers/third").count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_backend_is_exit_1_and_bad_input_is_exit_2() {
    let s = setup().await;
    let down = write(
        s.dir.path(),
        "down.toml",
        &redis_config(&format!("redis://127.0.0.1:{}/0", free_port())),
    );
    let so = scaled_object(
        "worker",
        &format!(
            "  fallback:\n    failureThreshold: 3\n    replicas: 6\n  triggers:\n{}",
            list_trigger(None, "eval:a", "10", "")
        ),
    );
    let file = write(s.dir.path(), "so.yaml", &so);
    let ran = eval(&down, &file, &[]).await;
    assert_eq!(ran.code, Some(1), "{ran:#?}");
    let report = ran.json();
    let object = &report["scaled_objects"][0];
    assert_eq!(object["triggers"][0]["code"], "Unavailable", "{report}");
    // KEDA's static fallback: the failed metric is answered with target × 6.
    assert_eq!(object["replicas"], 6, "{report}");
    assert!(
        object["triggers"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("source `redis-main` is unavailable"),
        "{report}"
    );
    assert!(
        object["explanation"]
            .as_str()
            .unwrap()
            .contains("fallback (behavior static): triggers[0] (external) could not be read (taken as past failureThreshold); fallback.replicas 6"),
        "{report}"
    );

    let cases = [
        ("bad.yaml", "kind: ScaledObject\n  : [unclosed"),
        (
            "none.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\n",
        ),
        (
            "invalid.yaml",
            "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata:\n  name: x\nspec:\n  \
             minReplicaCount: 5\n  maxReplicaCount: 2\n  triggers:\n    - type: external\n      \
             metadata: {}\n",
        ),
    ];
    for (name, text) in cases {
        let file = write(s.dir.path(), name, text);
        let ran = eval(&s.config, &file, &[]).await;
        assert_eq!(ran.code, Some(2), "{name}: {ran:#?}");
        assert_eq!(ran.stdout, "", "{name}: {ran:#?}");
        assert_eq!(ran.stderr.trim_end().lines().count(), 1, "{name}: {ran:#?}");
        assert!(ran.stderr.contains(name), "{name}: {ran:#?}");
    }
    let missing = eval(&s.config, Path::new("/nonexistent/so.yaml"), &[]).await;
    assert_eq!(missing.code, Some(2), "{missing:#?}");
    let bad_config = write(s.dir.path(), "bad.toml", "[sources]\n");
    let ran = eval(&bad_config, &file, &[]).await;
    assert_eq!(ran.code, Some(2), "{ran:#?}");
    assert!(
        ran.stderr.starts_with("backlog-scaler: invalid config"),
        "{ran:#?}"
    );
}

/// k8s/base's config.toml, taken from its ConfigMap, with each `url_file` (a mounted Secret)
/// replaced by the URL of a throwaway server.
fn base_config(redis_url: &str, pg_url: &str, pgbouncer_url: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let configmap: serde_json::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root.join("k8s/base/configmap.yaml")).unwrap(),
    )
    .unwrap();
    let config = configmap["data"]["config.toml"].as_str().unwrap();
    let mut replaced = 0;
    let lines: Vec<String> = config
        .lines()
        .map(|line| match line.trim() {
            l if l.starts_with("url_file") && l.contains("redis") => {
                replaced += 1;
                format!("url = \"{redis_url}\"")
            }
            l if l.starts_with("url_file") && l.contains("pgbouncer") => {
                replaced += 1;
                format!("url = \"{pgbouncer_url}\"")
            }
            l if l.starts_with("url_file") && l.contains("pg") => {
                replaced += 1;
                format!("url = \"{pg_url}\"")
            }
            _ => line.to_string(),
        })
        .collect();
    assert_eq!(replaced, 3, "k8s/base's sources changed: {config}");
    lines.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_gets_a_replica_count_against_k8s_base_sources() {
    let redis = RedisServer::start();
    let postgres = PostgresServer::start().await;
    // Dagster's run storage, as dagster-runs and the base config's named query read it.
    postgres
        .execute(
            "postgres",
            "CREATE TABLE runs (run_id text, pipeline_name text, status text);
             CREATE TABLE run_tags (run_id text, key text, value text);
             INSERT INTO runs VALUES ('1', 'etl', 'QUEUED'), ('2', 'etl', 'QUEUED'),
                                     ('3', 'etl', 'STARTED');",
        )
        .await;
    push(&redis, "agent:tasks:pending", 15).await;
    let bouncer = AdminPgBouncer::start(&postgres);
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config.toml",
        &base_config(
            &redis.url(),
            &postgres.url("postgres"),
            &bouncer.console_url(),
        ),
    );
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut examples: Vec<PathBuf> = std::fs::read_dir(root.join("k8s/examples"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        // eval evaluates ScaledObjects (the HPA's math); a ScaledJob's Jobs follow KEDA's.
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            text.contains("kind: ScaledObject") || !text.contains("kind: ScaledJob")
        })
        .collect();
    examples.sort();
    assert!(examples.len() >= 10, "{examples:?}");

    let mut args = vec![
        "eval".to_string(),
        "--config".into(),
        config.display().to_string(),
        "--output".into(),
        "json".into(),
        "--scaledobject".into(),
    ];
    args.extend(examples.iter().map(|p| p.display().to_string()));
    let ran = run(&args).await;
    assert_eq!(ran.code, Some(0), "{ran:#?}");
    let report = ran.json();
    let objects = report["scaled_objects"].as_array().unwrap();
    assert!(objects.len() >= examples.len(), "{report}");
    for example in &examples {
        let file = example.display().to_string();
        let mine: Vec<&serde_json::Value> = objects.iter().filter(|o| o["file"] == file).collect();
        assert!(!mine.is_empty(), "no ScaledObject from {file}: {report}");
        for object in mine {
            assert!(object["replicas"].is_u64(), "{file}: {object}");
            for trigger in object["triggers"].as_array().unwrap() {
                assert!(trigger["value"].is_f64(), "{file}: {trigger}");
                assert!(trigger["metric_name"].is_string(), "{file}: {trigger}");
            }
        }
    }
    let by_name = |name: &str| {
        objects
            .iter()
            .find(|o| o["name"] == name)
            .unwrap_or_else(|| panic!("no {name}: {report}"))
    };
    // redis-list.yaml: 15 pending, target 10, max 20: ceil(1.5) = 2.
    assert_eq!(by_name("agent-worker")["replicas"], 2);
    // dagster-runs.yaml: 2 queued etl runs, target 4: 1.
    assert_eq!(by_name("dagster-run-worker")["triggers"][0]["value"], 2.0);
    assert_eq!(by_name("dagster-run-worker")["replicas"], 1);
    // pg-query.yaml: the base config's dagster_backlog query counts the same 2.
    assert_eq!(by_name("backlog-worker")["triggers"][0]["value"], 2.0);
}

/// A named redis-list trigger on `source`.
fn source_trigger(name: &str, source: &str, key: &str) -> String {
    format!(
        "    - type: external\n      name: {name}\n      metadata:\n        source: {source}\n        \
         metric: redis-list\n        keys: \"{key}\"\n        target: \"1\"\n"
    )
}

/// One ScaledObject per (name, spec) in one multi-document file, evaluated once; the replicas
/// of each by name.
async fn replicas_by_name(
    s: &Setup,
    config: &Path,
    objects: &[(String, String)],
    extra: &[&str],
) -> (Run, std::collections::HashMap<String, Option<u64>>) {
    let docs: Vec<String> = objects
        .iter()
        .map(|(name, spec)| scaled_object(name, spec))
        .collect();
    let file = write(s.dir.path(), "objects.yaml", &docs.join("---\n"));
    let ran = eval(config, &file, extra).await;
    let report = ran.json();
    let by_name = report["scaled_objects"]
        .as_array()
        .unwrap_or_else(|| panic!("{ran:#?}"))
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap().to_owned(),
                o["replicas"].as_u64(),
            )
        })
        .collect();
    (ran, by_name)
}

/// Formulas of expr-lang's and KEDA's tests, fed by real list lengths: primary 16,
/// secondary 12, small 3; target 1, so the replicas are the composite value rounded up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formulas_run_as_expr_lang_runs_them_on_real_values() {
    let s = setup().await;
    push(&s.redis, "f:primary", 16).await;
    push(&s.redis, "f:secondary", 12).await;
    push(&s.redis, "f:small", 3).await;
    #[rustfmt::skip]
    let cases: &[(&str, u64, &str)] = &[
        ("float(primary + 1)", 17, "keda scaledobject_webhook_test.go:1047"),
        ("0 < small < 10 ? primary : secondary", 16, "expr parser.go parseComparison"),
        ("1 < small < 3 ? primary : secondary", 12, "expr_test.go:1391 (a chain is a conjunction)"),
        ("count([primary,secondary],{#>1}) > 1 ? 5 : 0", 5, "keda scaledobject_webhook_test.go:1158"),
        ("count([primary, secondary, small], {# > 10}) * 4", 8, "builtin_test.go:724"),
        ("float(small < 2 ? small+secondary >= 2 ? 5 : 10 : 0)", 1, "keda scaledobject_webhook_test.go:1197"),
        ("small ** 2", 9, "expr_test.go:847"),
        ("2 ^ small", 8, "expr_test.go:851"),
        ("-2 ** 2 + primary", 12, "parser_test.go:104"),
        ("round(primary / 5)", 3, "builtin_test.go:53"),
        ("max([primary, secondary], small * 6)", 18, "builtin_test.go:90"),
        ("min([primary, secondary]) + .5", 13, "builtin_test.go:96, expr_test.go:779"),
        ("0x10 + 0b1 + 0o7", 24, "parser_test.go:39-63"),
        ("primary ?? 8", 16, "keda fallback_scaling_modifiers_test.go:105"),
    ];
    let objects: Vec<(String, String)> = cases
        .iter()
        .enumerate()
        .map(|(i, (formula, _, _))| {
            let triggers: String = ["primary", "secondary", "small"]
                .iter()
                .map(|n| source_trigger(n, "redis-main", &format!("f:{n}")))
                .collect();
            let spec = format!(
                "  minReplicaCount: 1\n  advanced:\n    scalingModifiers:\n      formula: \
                 \"{formula}\"\n      target: \"1\"\n  triggers:\n{triggers}"
            );
            (format!("f{i}"), spec)
        })
        .collect();
    let (ran, by_name) = replicas_by_name(&s, &s.config, &objects, &[]).await;
    assert_eq!(ran.code, Some(0), "{ran:#?}");
    for (i, (formula, expected, at)) in cases.iter().enumerate() {
        assert_eq!(
            by_name[&format!("f{i}")],
            Some(*expected),
            "{formula:?} ({at})"
        );
    }
}

/// KEDA's e2e test of `fallback.behavior: scalingModifiers`
/// (tests/internals/fallback/fallback_scaling_modifiers_test.go:94-216): formula
/// `primary ?? secondary ?? 8`, target 2, fallback replicas 4; primary 16 and secondary 12,
/// each on a working Redis or on one that is down. And a static fallback of a Value metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_behaviors_give_kedas_replicas_when_a_source_is_down() {
    let s = setup().await;
    push(&s.redis, "fb:primary", 16).await;
    push(&s.redis, "fb:secondary", 12).await;
    let config = write(
        s.dir.path(),
        "two.toml",
        &format!(
            "{}\n[sources.redis-down]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{}/0\"\n",
            redis_config(&s.redis.url()),
            free_port()
        ),
    );
    let modifiers = |primary: &str, secondary: &str| {
        format!(
            "  minReplicaCount: 1\n  maxReplicaCount: 20\n  fallback:\n    failureThreshold: 3\n    \
             replicas: 4\n    behavior: scalingModifiers\n  advanced:\n    scalingModifiers:\n      \
             target: \"2\"\n      formula: \"primary ?? secondary ?? 8\"\n  triggers:\n{}{}",
            source_trigger("primary", primary, "fb:primary"),
            source_trigger("secondary", secondary, "fb:secondary")
        )
    };
    let value_static = format!(
        "  minReplicaCount: 1\n  fallback:\n    failureThreshold: 3\n    replicas: 5\n  \
         triggers:\n{}      metricType: Value\n",
        source_trigger("down", "redis-down", "fb:primary")
    );
    let objects = vec![
        ("healthy".to_owned(), modifiers("redis-main", "redis-main")),
        (
            "primary-down".to_owned(),
            modifiers("redis-down", "redis-main"),
        ),
        (
            "both-down".to_owned(),
            modifiers("redis-down", "redis-down"),
        ),
        ("value-static".to_owned(), value_static),
    ];
    let (ran, by_name) =
        replicas_by_name(&s, &config, &objects, &["--current-replicas", "2"]).await;
    // Counts, but from triggers that did not answer.
    assert_eq!(ran.code, Some(1), "{ran:#?}");
    assert_eq!(by_name["healthy"], Some(8), "{ran:#?}");
    assert_eq!(by_name["primary-down"], Some(6), "{ran:#?}");
    assert_eq!(by_name["both-down"], Some(4), "{ran:#?}");
    // 2 × 5 / 2 ready = 5 for the Value metric; the HPA: ceil(2 × 5 / 2) = 5.
    assert_eq!(by_name["value-static"], Some(5), "{ran:#?}");
    let report = ran.json();
    let explanation = |name: &str| {
        let objects = report["scaled_objects"].as_array().unwrap();
        let o = objects.iter().find(|o| o["name"] == name).unwrap();
        o["explanation"].as_str().unwrap().to_owned()
    };
    assert!(
        explanation("primary-down").contains(
            "fallback (behavior scalingModifiers): primary could not be read (taken as past \
             failureThreshold); nil in the formula, which gives a value"
        ),
        "{report}"
    );
    assert!(
        explanation("value-static").contains("fallback (behavior static): down could not be read"),
        "{report}"
    );
}

/// `*FromEnv` keys as KEDA forwards them: resolved from the scale target's env when its
/// manifest is among the files (the first container, or `envSourceContainerName`), and said
/// to be unresolved otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_env_keys_are_resolved_from_the_scale_targets_manifest() {
    let s = setup().await;
    push(&s.redis, "env:mail", 30).await;
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: mailer\n  \
                      namespace: workers\nspec:\n  template:\n    spec:\n      containers:\n        \
                      - name: app\n          env:\n            - {name: QUEUE_KEYS, value: \
                      'env:mail'}\n            - {name: PER_WORKER, value: '4'}\n            - \
                      {name: SECRET_TARGET, valueFrom: {secretKeyRef: {name: t, key: t}}}\n";
    let env_trigger = |target_key: &str, target_var: &str| {
        format!(
            "  scaleTargetRef:\n    name: mailer\n  triggers:\n    - type: external\n      \
             metadata:\n        source: redis-main\n        metric: redis-list\n        \
             keysFromEnv: QUEUE_KEYS\n        {target_key}: {target_var}\n"
        )
    };
    // `scaled_object` writes its own scaleTargetRef; these documents carry theirs.
    let object = |name: &str, spec: &str| {
        format!(
            "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata:\n  name: {name}\n  \
             namespace: workers\nspec:\n{spec}"
        )
    };
    let with_target = write(
        s.dir.path(),
        "with.yaml",
        &[
            deployment.to_owned(),
            object("resolved", &env_trigger("targetFromEnv", "PER_WORKER")),
            object("secret", &env_trigger("targetFromEnv", "SECRET_TARGET")),
            object(
                "both",
                &format!(
                    "{}        target: \"1\"\n",
                    env_trigger("targetFromEnv", "PER_WORKER")
                ),
            ),
        ]
        .join("---\n"),
    );
    let ran = eval(&s.config, &with_target, &[]).await;
    let report = ran.json();
    let by_name = |name: &str| {
        let objects = report["scaled_objects"].as_array().unwrap();
        objects.iter().find(|o| o["name"] == name).unwrap().clone()
    };
    // 30 listed in env:mail, 4 per worker: ceil(30 / 4) = 8.
    let resolved = by_name("resolved");
    assert_eq!(resolved["replicas"], 8, "{report}");
    assert_eq!(resolved["triggers"][0]["target"], 4.0, "{report}");
    let secret = &by_name("secret")["triggers"][0];
    assert_eq!(secret["code"], "Unresolved", "{report}");
    assert_eq!(
        secret["error"],
        "`targetFromEnv: SECRET_TARGET` is not known: `SECRET_TARGET` comes from secretKeyRef t \
         (valueFrom), which eval cannot read",
        "{report}"
    );
    let both = &by_name("both")["triggers"][0];
    assert_eq!(both["code"], "InvalidArgument", "{report}");
    assert!(
        both["error"]
            .as_str()
            .unwrap()
            .starts_with("metadata key `targetFromEnv`: is set together with `target`"),
        "{report}"
    );
    assert_eq!(ran.code, Some(1), "{ran:#?}");

    // Without the Deployment among the files, nothing can be resolved.
    let alone = write(
        s.dir.path(),
        "alone.yaml",
        &object("resolved", &env_trigger("targetFromEnv", "PER_WORKER")),
    );
    let ran = eval(&s.config, &alone, &[]).await;
    let report = ran.json();
    let trigger = &report["scaled_objects"][0]["triggers"][0];
    assert_eq!(trigger["code"], "Unresolved", "{report}");
    assert!(
        trigger["error"].as_str().unwrap().contains(
            "Deployment workers/mailer (the scale target, whose env KEDA reads) is not among the files"
        ),
        "{report}"
    );
    assert!(
        report["scaled_objects"][0]["replicas"].is_null(),
        "{report}"
    );
}

/// ScaledJobs: the Jobs KEDA creates in one polling interval under each scalingStrategy
/// (pkg/scaling/executor/scale_jobs.go), from a real list: 30 queued, target 5 (maxScale 6),
/// maxReplicaCount 8, 4 Jobs running and 1 pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaled_jobs_get_kedas_job_counts_per_strategy() {
    let s = setup().await;
    push(&s.redis, "jobs:queue", 30).await;
    let job = |name: &str, strategy: &str| {
        // The `env` strategy reads its keys from the Job template's env, as KEDA resolves
        // `keysFromEnv` for a ScaledJob.
        let trigger = match name {
            "env" => "    - type: external\n      metadata:\n        source: redis-main\n        \
                      metric: redis-list\n        keysFromEnv: QUEUE\n        target: \"5\"\n"
                .to_owned(),
            _ => list_trigger(Some("queue"), "jobs:queue", "5", ""),
        };
        format!(
            "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata:\n  name: {name}\n  \
             namespace: workers\nspec:\n  maxReplicaCount: 8\n  scalingStrategy:\n{strategy}  \
             jobTargetRef:\n    template:\n      spec:\n        containers: [{{name: w, image: \
             w, env: [{{name: QUEUE, value: 'jobs:queue'}}]}}]\n  triggers:\n{trigger}"
        )
    };
    #[rustfmt::skip]
    let cases: &[(&str, &str, u64)] = &[
        ("default", "    strategy: default\n", 2),  // 6 - 4
        ("custom", "    strategy: custom\n    customScalingQueueLengthDeduction: 1\n    customScalingRunningJobPercentage: \"0.5\"\n", 3), // 6 - 1 - floor(4 × 0.5)
        ("accurate", "    strategy: accurate\n", 4), // 6 + 4 - 1 > 8: 8 - 4
        ("eager", "    strategy: eager\n", 3),       // min(8 - 4 - 1, 6)
        ("env", "    strategy: default\n", 2),
    ];
    let docs: Vec<String> = cases.iter().map(|(n, st, _)| job(n, st)).collect();
    let file = write(s.dir.path(), "jobs.yaml", &docs.join("---\n"));
    let ran = eval(
        &s.config,
        &file,
        &["--running-jobs", "4", "--pending-jobs", "1"],
    )
    .await;
    assert_eq!(ran.code, Some(0), "{ran:#?}");
    let report = ran.json();
    let jobs = report["scaled_jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), cases.len(), "{report}");
    for (job, (name, _, expected)) in jobs.iter().zip(cases) {
        assert_eq!(job["name"], *name, "{report}");
        assert_eq!(job["jobs"], *expected, "{name}: {report}");
        assert_eq!(job["triggers"][0]["value"], 30.0, "{report}");
    }
    assert!(
        jobs[0]["explanation"]
            .as_str()
            .unwrap()
            .contains("KEDA creates min(30, 2) = 2 Jobs this polling interval"),
        "{report}"
    );
    // The text output says the same.
    let text = run(&[
        "eval".to_string(),
        "--config".into(),
        s.config.display().to_string(),
        "--scaledobject".into(),
        file.display().to_string(),
        "--running-jobs".into(),
        "4".into(),
    ])
    .await;
    assert_eq!(text.code, Some(0), "{text:#?}");
    assert!(
        text.stdout.contains("ScaledJob workers/default (") && text.stdout.contains("  jobs: 2\n"),
        "{text:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_with_jobs_in_progress_shows_its_two_parts() {
    let Setup { redis, dir, config } = setup().await;
    // RQ: 5 waiting jobs and 2 started ones (entries of rq:wip:<queue> scored by their
    // expiry, an hour from now), and one started job that expired a minute ago.
    push(&redis, "rq:queue:high", 5).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    let mut connection = redis.connection().await;
    let _: () = connection
        .zadd_multiple(
            "rq:wip:high",
            &[
                (now + 3600.0, "a:1"),
                (now + 3600.0, "b:1"),
                (now - 60.0, "c:1"),
            ],
        )
        .await
        .unwrap();
    let trigger = "  triggers:\n    - type: external\n      metadata:\n        \
                   scalerAddress: scaler:9090\n        source: redis-main\n        metric: rq\n        \
                   queue: high\n        includeActive: \"true\"\n        target: \"4\"\n";
    let file = write(dir.path(), "rq.yaml", &scaled_object("rq-worker", trigger));
    let ran = eval(&config, &file, &[]).await;
    assert_eq!(ran.code, Some(0), "{ran:#?}");
    let report = ran.json();
    let trigger = &report["scaled_objects"][0]["triggers"][0];
    assert_eq!(trigger["value"], 7.0, "{report}");
    assert_eq!(trigger["parts"]["waiting"], 5.0, "{report}");
    assert_eq!(trigger["parts"]["in_progress"], 2.0, "{report}");
    assert_eq!(
        report["scaled_objects"][0]["replicas"], 2,
        "ceil(7 / 4): {report}"
    );

    let text = run(&[
        "eval",
        "--config",
        &config.display().to_string(),
        "--scaledobject",
        &file.display().to_string(),
    ])
    .await;
    assert!(
        text.stdout
            .contains("value 7 = 5 waiting + 2 in progress, target 4"),
        "{text:#?}"
    );
    // Without includeActive there are no parts to show.
    let plain = scaled_object("plain", &trigger_without_parts());
    let plain = write(dir.path(), "plain.yaml", &plain);
    let ran = eval(&config, &plain, &[]).await;
    let trigger = &ran.json()["scaled_objects"][0]["triggers"][0];
    assert_eq!(trigger["value"], 5.0, "{ran:#?}");
    assert!(trigger.get("parts").is_none(), "{ran:#?}");
}

fn trigger_without_parts() -> String {
    "  triggers:\n    - type: external\n      metadata:\n        scalerAddress: scaler:9090\n        \
     source: redis-main\n        metric: rq\n        queue: high\n        target: \"4\"\n"
        .to_string()
}
