//! The sample triggers `dev` shows: one per kind of work [`workload`] makes, as
//! ScaledObjects and grpcurl users would send them.

use std::collections::BTreeMap;

use super::workload;
use crate::proto::ScaledObjectRef;

/// One sample trigger: a label for the table and the metadata a ScaledObject would carry.
pub(super) struct Sample {
    pub(super) label: &'static str,
    pub(super) metadata: &'static [(&'static str, &'static str)],
}

/// The sample triggers, one per kind of work [`workload`] makes.
pub(super) const SAMPLES: &[Sample] = &[
    Sample {
        label: "jobs (list, bursts)",
        metadata: &[
            ("source", "redis-main"),
            ("metric", "redis-list"),
            ("keys", workload::JOBS_KEY),
            ("target", "10"),
        ],
    },
    Sample {
        label: "celery (priorities)",
        metadata: &[
            ("source", "redis-main"),
            ("metric", "celery"),
            ("queue", workload::CELERY_QUEUE),
            ("target", "5"),
        ],
    },
    Sample {
        label: "events (stream group)",
        metadata: &[
            ("source", "redis-main"),
            ("metric", "redis-stream"),
            ("stream", workload::STREAM_KEY),
            ("group", workload::STREAM_GROUP),
            ("target", "10"),
        ],
    },
    Sample {
        label: "pg sessions (active)",
        metadata: &[
            ("source", "pg-main"),
            ("metric", "pg-activity"),
            ("measure", "active"),
            ("applicationName", workload::APPLICATION_NAME),
            ("target", "1"),
        ],
    },
    Sample {
        label: "pg statements (calls/s)",
        metadata: &[
            ("source", "pg-main"),
            ("metric", "pg-statements"),
            ("measure", "calls-per-second"),
            ("database", "postgres"),
            ("target", "10"),
            ("activationTarget", "1"),
        ],
    },
    Sample {
        label: "dagster runs (queued)",
        metadata: &[
            ("source", "pg-main"),
            ("metric", "dagster-runs"),
            ("statuses", "QUEUED"),
            ("target", "2"),
        ],
    },
];

/// The sample triggers as a grpcurl user would send them (the server has reflection).
pub(super) fn grpcurl_lines(grpc: std::net::SocketAddr) -> String {
    let mut out = String::from("Try it with grpcurl:\n");
    for sample in SAMPLES {
        let metadata: BTreeMap<&str, &str> = sample.metadata.iter().copied().collect();
        let request = serde_json::json!({
            "scaledObjectRef": {"name": "dev", "namespace": "default", "scalerMetadata": metadata}
        });
        out.push_str(&format!(
            "  grpcurl -plaintext -d '{request}' {grpc} externalscaler.ExternalScaler/GetMetrics\n"
        ));
    }
    out
}

pub(super) fn scaled_object(sample: &Sample) -> ScaledObjectRef {
    ScaledObjectRef {
        name: "dev".into(),
        namespace: "default".into(),
        scaler_metadata: sample
            .metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}
