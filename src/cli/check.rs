//! `backlog-scaler check --config FILE [--output text|json]`: every source probed once,
//! concurrently, each bounded by its `timeout`; one line (or one JSON object) per source.
//!
//! A source passes when its backend answered with the source's credentials and no finding
//! failed ([`Finding::ok`]: only what no metric can work without fails; optional features
//! are reported). Nothing here assumes a terminal, so it runs as an init container before the
//! scaler: `check` exiting 1 keeps the pod from starting against a backend it cannot read.

use std::time::Duration;

use futures::future::join_all;
use serde::Serialize;
use tokio::time::Instant;

use super::{Exit, Output};
use crate::{
    config::{Config, SourceConfig},
    sources::Finding,
};

/// What `check` found about one source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceCheck {
    /// The config name (`[sources.NAME]`).
    pub name: String,
    /// The `type` value.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The source passes: reached, authenticated, and no failing finding.
    pub ok: bool,
    /// Something answered at the source's address.
    pub reachable: bool,
    /// `true` when the backend accepted the credentials, `false` when it refused them, `null`
    /// when that could not be told (unreachable, another error).
    pub authenticated: Option<bool>,
    /// How long the whole check of the source took.
    pub latency_ms: f64,
    /// The server's version, as it reports it.
    pub version: Option<String>,
    pub findings: Vec<Finding>,
    /// Why the source could not be checked: the message the server would answer KEDA with.
    pub error: Option<String>,
}

/// Checks every source of `config` at once; results in config (name) order.
pub async fn check_sources(config: &Config) -> Vec<SourceCheck> {
    join_all(config.sources.iter().map(check_source)).await
}

async fn check_source(source: &SourceConfig) -> SourceCheck {
    let budget = source.refresh.timeout;
    let started = Instant::now();
    let outcome = tokio::time::timeout(budget, source.source.check()).await;
    let latency_ms = millis(started.elapsed());
    let mut check = SourceCheck {
        name: source.name.clone(),
        type_name: source.type_name.clone(),
        ok: false,
        reachable: false,
        authenticated: None,
        latency_ms,
        version: None,
        findings: Vec::new(),
        error: None,
    };
    match outcome {
        Ok(Ok(report)) => {
            check.ok = report.findings.iter().all(|f| f.ok);
            check.reachable = true;
            check.authenticated = Some(true);
            check.version = report.version;
            check.findings = report.findings;
        }
        Ok(Err(error)) => {
            let refused = error.is_credentials_refused();
            // Any answer but "could not reach" came from the backend.
            check.reachable = refused || !error.is_unavailable();
            check.authenticated = refused.then_some(false);
            check.error = Some(error.to_string());
        }
        Err(_) => {
            check.error = Some(format!(
                "source `{}` is unavailable: no answer within its timeout ({budget:?})",
                source.name
            ));
        }
    }
    check
}

fn millis(elapsed: Duration) -> f64 {
    (elapsed.as_secs_f64() * 10_000.0).round() / 10.0
}

/// Exit 0 when every source passes.
pub fn exit_of(checks: &[SourceCheck]) -> Exit {
    if checks.iter().all(|c| c.ok) {
        Exit::Ok
    } else {
        Exit::Failed
    }
}

/// One line per source: verdict, name and type, access, latency, version, then every finding
/// (failing ones marked `FAIL`) or the error.
pub fn render_text(checks: &[SourceCheck]) -> String {
    let mut out = String::new();
    for check in checks {
        let verdict = if check.ok { "ok  " } else { "FAIL" };
        let access = match (check.reachable, check.authenticated) {
            (false, _) => "unreachable",
            (true, Some(true)) => "reachable, authenticated",
            (true, Some(false)) => "reachable, NOT authenticated",
            (true, None) => "reachable",
        };
        let mut line = format!(
            "{verdict}  {} ({}): {access}, {} ms",
            check.name,
            check.type_name,
            super::number(check.latency_ms)
        );
        if let Some(version) = &check.version {
            line.push_str(&format!(", version {version}"));
        }
        for finding in &check.findings {
            let mark = if finding.ok { "" } else { "FAIL " };
            line.push_str(&format!("; {mark}{}: {}", finding.what, finding.detail));
        }
        if let Some(error) = &check.error {
            line.push_str(&format!("; {error}"));
        }
        out.push_str(&line.replace('\n', " "));
        out.push('\n');
    }
    out
}

/// One JSON array, one object per source.
pub fn render_json(checks: &[SourceCheck]) -> String {
    serde_json::to_string_pretty(checks).expect("check results serialize")
}

/// Runs `check` and prints the result on stdout.
pub async fn run(config: &Config, output: Output) -> Exit {
    let checks = check_sources(config).await;
    match output {
        Output::Text => print!("{}", render_text(&checks)),
        Output::Json => println!("{}", render_json(&checks)),
    }
    exit_of(&checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(ok: bool) -> SourceCheck {
        SourceCheck {
            name: "redis-main".into(),
            type_name: "redis".into(),
            ok,
            reachable: true,
            authenticated: Some(true),
            latency_ms: 2.5,
            version: Some("7.0.15".into()),
            findings: vec![
                Finding::new("role", true, "master"),
                Finding::new("redis_mode", ok, "cluster"),
            ],
            error: None,
        }
    }

    #[test]
    fn one_line_per_source_with_failing_findings_marked() {
        let text = render_text(&[source(true), source(false)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(
            lines[0],
            "ok    redis-main (redis): reachable, authenticated, 2.5 ms, version 7.0.15; \
             role: master; redis_mode: cluster"
        );
        assert!(lines[1].starts_with("FAIL  redis-main"), "{text}");
        assert!(lines[1].ends_with("; FAIL redis_mode: cluster"), "{text}");
        assert_eq!(exit_of(&[source(true)]), Exit::Ok);
        assert_eq!(exit_of(&[source(true), source(false)]), Exit::Failed);
    }

    #[test]
    fn json_names_every_field() {
        let json: serde_json::Value = serde_json::from_str(&render_json(&[source(true)])).unwrap();
        let object = &json[0];
        for field in [
            "name",
            "type",
            "ok",
            "reachable",
            "authenticated",
            "latency_ms",
            "version",
            "findings",
            "error",
        ] {
            assert!(object.get(field).is_some(), "{field} missing: {json}");
        }
        assert_eq!(object["findings"][0]["what"], "role");
    }
}
