//! `k8s/monitoring/` checked the way Prometheus and Grafana will use it.
//!
//! - The alert rules live only in the PrometheusRule. promtool reads plain rule files, so each
//!   test that needs one writes the PrometheusRule's `spec` into a temp dir, beside a copy of
//!   `tests/alerts-test.yaml` (which names `rules.yaml`): there is no second copy to drift.
//! - `promtool check rules` accepts the rules and `promtool test rules` passes.
//! - Every PromQL expression, in the rules and in `dashboard.json`, parses (promtool again) and
//!   names only metrics the scaler exports, KEDA's, or `up`: a misspelt name gives an alert
//!   that can never fire or a panel that stays empty, and neither complains.
//! - Each alert carries what the person paged needs (severity, summary, description, a link
//!   to its runbook section), and has unit tests that fire it and that keep it quiet.

use std::{
    collections::{BTreeSet, HashSet},
    io::ErrorKind,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::{Value, json};

/// The scrape job of the scaler's `/metrics`: the prometheus-operator names it after the
/// Service the ServiceMonitor selects, `backlog-scaler-metrics`.
const JOB: &str = "backlog-scaler-metrics";

/// Where the runbooks are: one `### Alert: <Name>` section per alert in docs/operations.md.
const RUNBOOKS: &str =
    "https://github.com/backlog-scaler/backlog-scaler/blob/main/docs/operations.md";

/// The alerts, by name: docs/operations.md has a section for each.
const ALERTS: [&str; 5] = [
    "BacklogScalerAbsent",
    "BacklogScalerErrorRatioHigh",
    "BacklogScalerSourceDown",
    "BacklogScalerRefresherBehind",
    "BacklogScalerMeasurementsNearLimit",
];

const INSTALL_PROMTOOL: &str = "promtool not found: run scripts/install-test-deps.sh as root, or \
                                `apt-get install -y --no-install-recommends prometheus`";

// === The metrics expressions may name ===

/// Counters the scaler exports, by their exposed names (prometheus-client appends `_total`).
const SCALER_COUNTERS: [&str; 3] = [
    "backlog_scaler_grpc_requests_total",
    "backlog_scaler_backend_reads_total",
    "backlog_scaler_source_change_events_total",
];

/// Histograms the scaler exports; only their `_bucket`, `_sum` and `_count` series exist.
const SCALER_HISTOGRAMS: [&str; 2] = [
    "backlog_scaler_grpc_request_duration_seconds",
    "backlog_scaler_backend_read_duration_seconds",
];

const SCALER_GAUGES: [&str; 9] = [
    "backlog_scaler_source_up",
    "backlog_scaler_measurements",
    "backlog_scaler_measurement_age_seconds",
    "backlog_scaler_max_staleness_seconds",
    "backlog_scaler_measurements_limit",
    "backlog_scaler_build_info",
    "backlog_scaler_streams_open",
    "backlog_scaler_connections_open",
    "backlog_scaler_source_event_driven",
];

/// The KEDA operator's per-trigger metrics (names of KEDA 2.14 and later).
const KEDA_METRICS: [&str; 4] = [
    "keda_scaler_metrics_value",
    "keda_scaler_active",
    "keda_scaler_metrics_latency_seconds",
    "keda_scaler_detail_errors_total",
];

const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

/// Every series name an expression may select.
fn known_series() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = SCALER_COUNTERS
        .iter()
        .chain(&SCALER_GAUGES)
        .chain(&KEDA_METRICS)
        .map(|n| n.to_string())
        .collect();
    for histogram in SCALER_HISTOGRAMS {
        names.extend(HISTOGRAM_SUFFIXES.iter().map(|s| format!("{histogram}{s}")));
    }
    names.insert("up".into());
    names
}

/// The metric family a series belongs to (a histogram's `_bucket` belongs to the histogram).
fn family(series: &str) -> &str {
    SCALER_HISTOGRAMS
        .iter()
        .find(|h| {
            HISTOGRAM_SUFFIXES
                .iter()
                .any(|s| series.strip_suffix(s) == Some(**h))
        })
        .copied()
        .unwrap_or(series)
}

/// PromQL's functions (Prometheus 2.x and 3.x).
const FUNCTIONS: &str = "\
    abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes \
    clamp clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year \
    days_in_month deg delta deriv double_exponential_smoothing exp floor histogram_avg \
    histogram_count histogram_fraction histogram_quantile histogram_stddev histogram_stdvar \
    histogram_sum holt_winters hour idelta increase info irate label_join label_replace \
    last_over_time ln log10 log2 mad_over_time max_over_time min_over_time minute month pi \
    predict_linear present_over_time quantile_over_time rad rate resets round scalar sgn sin \
    sinh sort sort_by_label sort_by_label_desc sort_desc sqrt stddev_over_time \
    stdvar_over_time sum_over_time tan tanh time timestamp vector year";

/// Aggregation operators: called like functions, optionally with `by`/`without` first.
const AGGREGATIONS: &str = "\
    avg bottomk count count_values group limit_ratio limitk max min quantile stddev stdvar sum \
    topk";

/// Keywords followed by a parenthesised list of label names, which are not metrics.
const LABEL_LIST_KEYWORDS: &str = "by without on ignoring group_left group_right";

/// Other words that are neither metrics nor functions.
const KEYWORDS: &str = "and or unless bool offset atan2 inf nan";

/// True if `word` is one of the space-separated words of `list`.
fn one_of(list: &str, word: &str) -> bool {
    list.split_whitespace().any(|w| w == word)
}

// === A small PromQL tokenizer ===

/// What a PromQL expression refers to.
#[derive(Debug, Default, PartialEq)]
struct Names {
    /// Each selected metric with the text between its selector's braces (empty without).
    metrics: Vec<(String, String)>,
    /// Each called function or aggregation.
    functions: Vec<String>,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}

fn is_ident(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit()
}

/// Index just past the string literal that opens at `start` (`"`, `'` or a backtick).
fn skip_string(s: &[u8], start: usize) -> Result<usize, String> {
    let quote = s[start];
    let mut i = start + 1;
    while i < s.len() {
        match s[i] {
            b'\\' if quote != b'`' => i += 2,
            b if b == quote => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(format!("unterminated string at byte {start}"))
}

/// Index just past the bracket that closes the one at `start`, skipping strings inside.
fn skip_group(s: &[u8], start: usize, close: u8) -> Result<usize, String> {
    let open = s[start];
    let mut depth = 0;
    let mut i = start;
    while i < s.len() {
        match s[i] {
            b'"' | b'\'' | b'`' => {
                i = skip_string(s, i)?;
                continue;
            }
            b if b == open => depth += 1,
            b if b == close => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    Err(format!("unclosed `{}` at byte {start}", open as char))
}

fn skip_space(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && s[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The metrics and functions an expression names. Strings, label matchers, label lists of
/// `by`/`on`/..., durations and Grafana variables (`$name`, `${name}`) are skipped; a selector
/// with no metric name in front (`{__name__=~"..."}`) is an error, as it cannot be checked.
fn names_in(expr: &str) -> Result<Names, String> {
    let s = expr.as_bytes();
    let mut names = Names::default();
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b.is_ascii_whitespace() {
            i += 1;
        } else if b == b'#' {
            while i < s.len() && s[i] != b'\n' {
                i += 1;
            }
        } else if matches!(b, b'"' | b'\'' | b'`') {
            i = skip_string(s, i)?;
        } else if b == b'[' {
            // A range or subquery: `[5m]`, `[$__rate_interval]`, `[1h:1m]`.
            i = skip_group(s, i, b']')?;
        } else if b == b'{' {
            return Err(format!("a selector without a metric name at byte {i}"));
        } else if b == b'$' {
            // A Grafana variable.
            i += 1;
            if s.get(i) == Some(&b'{') {
                i = skip_group(s, i, b'}')?;
            } else {
                while i < s.len() && is_ident(s[i]) {
                    i += 1;
                }
            }
        } else if b.is_ascii_digit() || (b == b'.' && s.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            // A number or a duration: 0.99, 5m, 1e3, 0x1f.
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'.' || s[i] == b'_') {
                i += 1;
            }
        } else if is_ident_start(b) {
            let start = i;
            while i < s.len() && is_ident(s[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            let lower = word.to_ascii_lowercase();
            let next = skip_space(s, i);
            if one_of(LABEL_LIST_KEYWORDS, &lower) {
                if s.get(next) == Some(&b'(') {
                    i = skip_group(s, next, b')')?;
                }
            } else if one_of(KEYWORDS, &lower) {
                // An operator or a number.
            } else if one_of(AGGREGATIONS, &lower)
                || s.get(next) == Some(&b'(')
                || (start > 0 && s[..start].trim_ascii_end().ends_with(b"@"))
            {
                // A call; `start()` and `end()` after `@` are modifiers, recorded like calls.
                names.functions.push(word.to_string());
            } else if s.get(next) == Some(&b'{') {
                let end = skip_group(s, next, b'}')?;
                let matchers = expr[next + 1..end - 1].trim().to_string();
                names.metrics.push((word.to_string(), matchers));
                i = end;
            } else {
                names.metrics.push((word.to_string(), String::new()));
            }
        } else {
            // Operators, parentheses, commas, `@`.
            i += 1;
        }
    }
    Ok(names)
}

/// Why an expression would select or call something that does not exist (empty if nothing).
fn unknown_names(expr: &str) -> Vec<String> {
    let names = match names_in(expr) {
        Ok(names) => names,
        Err(e) => return vec![e],
    };
    let known = known_series();
    let mut problems = Vec::new();
    for (metric, _) in &names.metrics {
        if !known.contains(metric) {
            problems.push(format!("unknown metric `{metric}`"));
        }
    }
    for function in &names.functions {
        let f = function.to_ascii_lowercase();
        let modifier = f == "start" || f == "end";
        if !one_of(FUNCTIONS, &f) && !one_of(AGGREGATIONS, &f) && !modifier {
            problems.push(format!("unknown function `{function}`"));
        }
    }
    problems
}

/// True if a selector's matchers include `job="<JOB>"`.
fn selects_job(matchers: &str) -> bool {
    let compact: String = matchers.chars().filter(|c| !c.is_whitespace()).collect();
    compact.split(',').any(|m| m == format!("job=\"{JOB}\""))
}

// === The files ===

fn monitoring() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("k8s/monitoring")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(file: &str) -> Value {
    let path = monitoring().join(file);
    serde_yaml_ng::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The PrometheusRule's `spec`: `{groups: [...]}`, exactly what promtool reads.
fn rule_groups() -> Value {
    let rule = yaml("prometheusrule.yaml");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(rule["metadata"]["namespace"], "keda");
    rule["spec"].clone()
}

fn rules() -> Vec<Value> {
    rule_groups()["groups"]
        .as_array()
        .expect("spec.groups is a list")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("a group has rules").clone())
        .collect()
}

fn alerts() -> Vec<Value> {
    rules()
        .into_iter()
        .filter(|r| r.get("alert").is_some())
        .collect()
}

fn dashboard() -> Value {
    let path = monitoring().join("dashboard.json");
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel, including those nested in collapsed rows.
fn panels(dashboard: &Value) -> Vec<Value> {
    fn walk(list: &Value, out: &mut Vec<Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel.clone());
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// `(where, expression)` of every rule and every dashboard query.
fn expressions() -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = rules()
        .iter()
        .map(|r| {
            let name = r.get("alert").or(r.get("record")).unwrap();
            let name = name.as_str().unwrap();
            (format!("rule {name}"), r["expr"].as_str().unwrap().into())
        })
        .collect();
    for panel in panels(&dashboard()) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {:?}: a target without an expr", panel["title"]));
            all.push((format!("panel {}", panel["title"]), expr.into()));
        }
    }
    all
}

/// A dashboard query as Prometheus will receive it: Grafana's variables filled in.
fn as_promql(expr: &str, dashboard: &Value) -> String {
    let mut promql = expr
        .replace("$__rate_interval", "5m")
        .replace("$__interval", "5m")
        .replace("$__range", "5m");
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        let name = variable["name"].as_str().unwrap();
        let value = variable["current"]["value"].as_str().unwrap_or(".*");
        promql = promql
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    assert!(
        !promql.contains('$'),
        "{expr}: uses a Grafana variable the dashboard does not define"
    );
    promql
}

// === promtool ===

fn promtool(dir: &Path, args: &[&str]) -> Output {
    match Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!("{INSTALL_PROMTOOL}"),
        Err(e) => panic!("promtool: {e}"),
    }
}

fn assert_promtool_passes(dir: &Path, args: &[&str]) {
    let output = promtool(dir, args);
    assert!(
        output.status.success(),
        "promtool {}: {}\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A temp dir with `rules.yaml` (the PrometheusRule's spec) beside a copy of the unit tests.
fn rules_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let rules = serde_yaml_ng::to_string(&rule_groups()).unwrap();
    std::fs::write(dir.path().join("rules.yaml"), rules).unwrap();
    std::fs::copy(
        monitoring().join("tests/alerts-test.yaml"),
        dir.path().join("alerts-test.yaml"),
    )
    .unwrap();
    dir
}

#[test]
fn promtool_accepts_the_rules() {
    let dir = rules_dir();
    assert_promtool_passes(dir.path(), &["check", "rules", "rules.yaml"]);
}

#[test]
fn promtool_unit_tests_of_the_alerts_pass() {
    let dir = rules_dir();
    assert_promtool_passes(dir.path(), &["test", "rules", "alerts-test.yaml"]);
}

#[test]
fn promtool_rejects_a_broken_rule() {
    // The two tests above can fail: promtool exits non-zero on a bad expression.
    let dir = tempfile::tempdir().unwrap();
    let mut groups = rule_groups();
    groups["groups"][0]["rules"][0]["expr"] = json!("sum by (source) (backlog_scaler_source_up");
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_yaml_ng::to_string(&groups).unwrap(),
    )
    .unwrap();
    let output = promtool(dir.path(), &["check", "rules", "rules.yaml"]);
    assert!(
        !output.status.success(),
        "promtool accepted an unclosed `(`"
    );
}

#[test]
fn dashboard_queries_parse_as_promql() {
    // promtool has no command to check a bare expression; as recording rules, it checks each.
    let dashboard = dashboard();
    let mut records = Vec::new();
    for (place, expr) in expressions() {
        if place.starts_with("panel") {
            let record = format!("dashboard_query_{}", records.len());
            records.push(json!({"record": record, "expr": as_promql(&expr, &dashboard)}));
        }
    }
    assert!(
        records.len() >= 15,
        "only {} dashboard queries",
        records.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let rules = json!({"groups": [{"name": "dashboard", "rules": records}]});
    std::fs::write(
        dir.path().join("dashboard.yaml"),
        serde_yaml_ng::to_string(&rules).unwrap(),
    )
    .unwrap();
    assert_promtool_passes(dir.path(), &["check", "rules", "dashboard.yaml"]);
}

// === What the expressions name ===

#[test]
fn expressions_name_only_metrics_that_exist() {
    let expressions = expressions();
    assert!(expressions.len() > ALERTS.len());
    let problems: Vec<String> = expressions
        .iter()
        .flat_map(|(place, expr)| {
            unknown_names(expr)
                .into_iter()
                .map(move |p| format!("{place}: {p} in {expr}"))
        })
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_name_checker_finds_what_does_not_exist() {
    // Valid PromQL (promtool accepts it with the Grafana variables filled in).
    let good = r#"histogram_quantile(0.99, sum by (le, method) (rate(
        backlog_scaler_grpc_request_duration_seconds_bucket{job="backlog-scaler-metrics", method=~"Get.*|x{1}"}[$__rate_interval:1m] offset 1h)))
        / on (job, instance) group_left (pod) backlog_scaler_measurements_limit
        unless label_replace(up{job="backlog-scaler-metrics"} @ end() == bool 1, "dst", "backlog_scaler_fake", "src", "(.*)")
        > 0.5e-3 # keda_scaler_in_a_comment
        and rate(keda_scaler_detail_errors_total{scaler=~"$keda_scaler"}[5m]) > Inf"#;
    assert_eq!(
        names_in(good).unwrap(),
        Names {
            metrics: vec![
                (
                    "backlog_scaler_grpc_request_duration_seconds_bucket".into(),
                    r#"job="backlog-scaler-metrics", method=~"Get.*|x{1}""#.into()
                ),
                ("backlog_scaler_measurements_limit".into(), String::new()),
                ("up".into(), r#"job="backlog-scaler-metrics""#.into()),
                (
                    "keda_scaler_detail_errors_total".into(),
                    r#"scaler=~"$keda_scaler""#.into()
                ),
            ],
            functions: [
                "histogram_quantile",
                "sum",
                "rate",
                "label_replace",
                "end",
                "rate"
            ]
            .map(String::from)
            .to_vec(),
        }
    );
    assert_eq!(unknown_names(good), Vec::<String>::new());

    let bad = [
        (
            "backlog_scaler_source_upp == 0",
            "backlog_scaler_source_upp",
        ),
        // A counter without the `_total` prometheus-client appends.
        (
            "rate(backlog_scaler_backend_reads[5m])",
            "backlog_scaler_backend_reads",
        ),
        // A histogram has no series of its bare name.
        (
            "backlog_scaler_grpc_request_duration_seconds{job=\"x\"} > 1",
            "backlog_scaler_grpc_request_duration_seconds",
        ),
        (
            "up unless sum(backlog_scaler_stream_open)",
            "backlog_scaler_stream_open",
        ),
        ("rates(up[5m])", "rates"),
        ("{__name__=~\"backlog_scaler_.*\"}", "without a metric name"),
        ("sum(up{job=\"x})", "unterminated string"),
    ];
    for (expr, named) in bad {
        let problems = unknown_names(expr);
        assert!(
            problems.iter().any(|p| p.contains(named)),
            "{expr}: expected a problem naming {named}, got {problems:?}"
        );
    }

    // And on a real rule: one misspelt metric is found.
    let (_, expr) = expressions()
        .into_iter()
        .find(|(place, _)| place == "rule BacklogScalerRefresherBehind")
        .unwrap();
    let misspelt = expr.replace(
        "backlog_scaler_max_staleness_seconds",
        "backlog_scaler_max_stalenes_seconds",
    );
    assert_ne!(misspelt, expr);
    assert_eq!(
        unknown_names(&misspelt),
        vec!["unknown metric `backlog_scaler_max_stalenes_seconds`".to_string()]
    );
}

#[test]
fn scaler_series_are_selected_by_the_servicemonitors_job() {
    let monitor = yaml("servicemonitor.yaml");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["kind"], "ServiceMonitor");
    assert_eq!(monitor["metadata"]["namespace"], "keda");
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        json!({"app.kubernetes.io/name": "backlog-scaler"})
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], "http");
    assert_eq!(endpoint["path"], "/metrics");
    // Without a jobLabel the job is the Service's name, which the expressions rely on.
    assert!(monitor["spec"].get("jobLabel").is_none());

    let mut unselected = Vec::new();
    for (place, expr) in expressions() {
        for (metric, matchers) in names_in(&expr).unwrap().metrics {
            let ours = metric.starts_with("backlog_scaler_") || metric == "up";
            if ours && !selects_job(&matchers) {
                unselected.push(format!("{place}: {metric}{{{matchers}}}"));
            }
        }
    }
    assert!(
        unselected.is_empty(),
        "select job=\"{JOB}\": {unselected:#?}"
    );
    assert!(selects_job(
        r#"method="GetMetrics", job = "backlog-scaler-metrics""#
    ));
    assert!(!selects_job(r#"job="backlog-scaler""#));
    assert!(!selects_job(r#"job=~"backlog-scaler-metrics|other""#));
}

#[test]
fn the_dashboard_shows_every_scaler_metric_and_keda_beside_it() {
    let shown: HashSet<String> = expressions()
        .into_iter()
        .filter(|(place, _)| place.starts_with("panel"))
        .flat_map(|(_, expr)| names_in(&expr).unwrap().metrics)
        .map(|(metric, _)| family(&metric).to_string())
        .collect();
    let missing: Vec<&str> = SCALER_COUNTERS
        .iter()
        .chain(&SCALER_HISTOGRAMS)
        .chain(&SCALER_GAUGES)
        .chain(&[
            "keda_scaler_metrics_value",
            "keda_scaler_detail_errors_total",
        ])
        .filter(|m| !shown.contains(**m))
        .copied()
        .collect();
    assert!(missing.is_empty(), "no panel shows {missing:?}");
}

#[test]
fn the_dashboard_queries_the_datasource_variable() {
    let dashboard = dashboard();
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "a `datasource` variable of Prometheus data sources"
    );
    let mut ids = HashSet::new();
    for panel in panels(&dashboard) {
        let title = &panel["title"];
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "panel id of {title} is taken"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "panel {title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {title} has no query");
        for target in targets {
            assert_eq!(
                target["datasource"]["uid"], "${datasource}",
                "panel {title}"
            );
        }
    }
}

// === The alerts ===

#[test]
fn every_alert_is_labelled_annotated_and_linked_to_its_runbook() {
    let alerts = alerts();
    let names: Vec<&str> = alerts
        .iter()
        .map(|a| a["alert"].as_str().unwrap())
        .collect();
    assert_eq!(
        names.iter().copied().collect::<BTreeSet<_>>(),
        ALERTS.into_iter().collect::<BTreeSet<_>>(),
        "docs/operations.md has a runbook section for each of these"
    );
    assert_eq!(names.len(), ALERTS.len(), "an alert is defined twice");
    for alert in &alerts {
        let name = alert["alert"].as_str().unwrap();
        let severity = alert["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        assert!(
            alert["for"].is_string(),
            "{name}: no `for`, one bad scrape would page"
        );
        for key in ["summary", "description"] {
            let text = alert["annotations"][key].as_str().unwrap_or_default();
            assert!(text.len() > 20, "{name}: {key} {text:?}");
        }
        // GitHub's anchor of the heading `### Alert: BacklogScalerSourceDown`.
        assert_eq!(
            alert["annotations"]["runbook_url"]
                .as_str()
                .unwrap_or_default(),
            format!("{RUNBOOKS}#alert-{}", name.to_ascii_lowercase()),
            "{name}"
        );
    }
}

#[test]
fn every_alert_has_unit_tests_that_fire_it_and_that_keep_it_quiet() {
    let tests = yaml("tests/alerts-test.yaml");
    assert_eq!(tests["rule_files"], json!(["rules.yaml"]));
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for group in tests["tests"].as_array().unwrap() {
        for case in group["alert_rule_test"].as_array().into_iter().flatten() {
            let name = case["alertname"].as_str().unwrap().to_string();
            // promtool passes `exp_alerts: []` for an alert that does not exist at all.
            assert!(
                ALERTS.contains(&name.as_str()),
                "a test of an unknown alert {name}"
            );
            match case["exp_alerts"].as_array().map(Vec::len) {
                Some(0) | None => quiet.insert(name),
                Some(_) => fires.insert(name),
            };
        }
    }
    for alert in ALERTS {
        assert!(fires.contains(alert), "no unit test fires {alert}");
        assert!(quiet.contains(alert), "no unit test keeps {alert} quiet");
    }
}
