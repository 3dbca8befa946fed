//! The live table: each sample trigger read through a real gRPC client and turned into
//! replicas with KEDA's math.

use std::{
    io::{IsTerminal, Write},
    net::SocketAddr,
    time::Duration,
};

use futures::future::join_all;
use tonic::transport::Channel;

use super::{
    DevOptions,
    samples::{SAMPLES, Sample, grpcurl_lines, scaled_object},
};
use crate::{
    cli::{columns, number},
    eval::{MetricType, ReplicaLimits, TriggerReading, desired_replicas},
    proto::{GetMetricsRequest, external_scaler_client::ExternalScalerClient},
};

/// KEDA's replica bounds for the table: scale to zero, at most 10.
const LIMITS: ReplicaLimits = ReplicaLimits {
    min_replica_count: 0,
    max_replica_count: 10,
    idle_replica_count: None,
};

/// Where the table goes: redrawn in place on a terminal, else printed again each second.
pub(super) struct Screen {
    pub(super) grpc: SocketAddr,
    interactive: bool,
    intro: String,
    grpcurl: String,
}

impl Screen {
    /// Prints the intro at once unless the table will be redrawn in place (then every
    /// redraw shows it).
    pub(super) fn new(intro: String, grpc: SocketAddr, options: &DevOptions) -> Screen {
        let interactive = options.duration.is_none() && std::io::stdout().is_terminal();
        let grpcurl = grpcurl_lines(grpc);
        if !interactive {
            println!("{intro}\n{grpcurl}");
        }
        Screen {
            grpc,
            interactive,
            intro,
            grpcurl,
        }
    }

    /// Shows `table`, read `elapsed` seconds after the start.
    pub(super) fn draw(&self, elapsed: u64, table: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = if self.interactive {
            // Home, clear, redraw: a table that updates in place, no TUI library needed.
            write!(
                stdout,
                "\x1b[H\x1b[2J{intro}\n\nt+{elapsed}s, every second (Ctrl-C stops and cleans up)\n{table}\n{grpcurl}",
                intro = self.intro,
                grpcurl = self.grpcurl,
            )
        } else {
            write!(stdout, "--- t+{elapsed}s\n{table}")
        };
        let _ = stdout.flush();
    }
}

/// The gRPC client and what GetMetricSpec said about each sample.
pub(super) struct Panel {
    client: ExternalScalerClient<Channel>,
    /// Per sample: the metric name and target, or GetMetricSpec's error.
    specs: Vec<Result<(String, f64), String>>,
}

impl Panel {
    pub(super) async fn connect(grpc: std::net::SocketAddr) -> Option<Panel> {
        let channel = Channel::from_shared(format!("http://{grpc}"))
            .ok()?
            .connect_timeout(Duration::from_secs(1))
            .connect()
            .await
            .ok()?;
        let client = ExternalScalerClient::new(channel);
        let specs = join_all(SAMPLES.iter().map(|sample| {
            let mut client = client.clone();
            async move {
                let spec = client
                    .get_metric_spec(scaled_object(sample))
                    .await
                    .map_err(|s| s.message().to_string())?
                    .into_inner();
                let spec = spec
                    .metric_specs
                    .into_iter()
                    .next()
                    .ok_or_else(|| "GetMetricSpec answered no metric".to_string())?;
                Ok((spec.metric_name, spec.target_size_float))
            }
        }))
        .await;
        Some(Panel { client, specs })
    }

    /// One row per sample, read now.
    pub(super) async fn table(&mut self) -> String {
        let rows = join_all(
            SAMPLES
                .iter()
                .zip(&self.specs)
                .map(|(sample, spec)| row(self.client.clone(), sample, spec)),
        )
        .await;
        columns(
            &["trigger", "metric", "value", "target", "active", "replicas"],
            &rows,
        )
    }
}

/// One sample's row: GetMetrics and IsActive read now, and the replicas they make.
async fn row(
    mut client: ExternalScalerClient<Channel>,
    sample: &Sample,
    spec: &Result<(String, f64), String>,
) -> Vec<String> {
    let (metric_name, target) = match spec {
        Ok(spec) => spec.clone(),
        Err(error) => return vec![sample.label.into(), format!("error: {error}")],
    };
    let request = GetMetricsRequest {
        scaled_object_ref: Some(scaled_object(sample)),
        metric_name: metric_name.clone(),
    };
    let mut activity_client = client.clone();
    let (value, active) = tokio::join!(
        client.get_metrics(request),
        activity_client.is_active(scaled_object(sample))
    );
    let value = match value {
        Ok(response) => response
            .into_inner()
            .metric_values
            .first()
            .map(|v| v.metric_value_float),
        Err(status) => {
            return vec![
                sample.label.into(),
                metric_name,
                format!("{:?}: {}", status.code(), status.message()),
            ];
        }
    };
    let Some(value) = value else {
        return vec![sample.label.into(), metric_name, "no value".into()];
    };
    let active = match active {
        Ok(response) => if response.into_inner().result {
            "yes"
        } else {
            "no"
        }
        .to_string(),
        Err(status) => format!("{:?}", status.code()),
    };
    let replicas = replicas(sample, value, target);
    vec![
        sample.label.into(),
        metric_name,
        number(value),
        number(target),
        active,
        replicas,
    ]
}

/// What KEDA's math makes of one sample's reading, within [`LIMITS`].
fn replicas(sample: &Sample, value: f64, target: f64) -> String {
    let activation_target = sample
        .metadata
        .iter()
        .find(|(key, _)| *key == "activationTarget")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0.0);
    let reading = TriggerReading {
        label: sample.label.into(),
        name: None,
        value,
        target,
        activation_target,
        metric_type: MetricType::AverageValue,
    };
    match desired_replicas(&[reading], None, LIMITS, None) {
        Ok(decision) => decision.replicas.to_string(),
        Err(error) => error.to_string(),
    }
}
