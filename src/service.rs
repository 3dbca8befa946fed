//! The `externalscaler.ExternalScaler` gRPC service: parse, ask the engine, shape the answer.
//!
//! GetMetricSpec never touches a backend (KEDA calls it on every poll and every HPA read).
//! GetMetrics, IsActive and StreamIsActive answer from the engine, which serves warm
//! measurements from memory and bounds every cold read.

use std::{panic::AssertUnwindSafe, pin::Pin, sync::Arc, time::Duration};

use prometheus_client::metrics::gauge::Gauge;

use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{Request, Response, Status};
use tracing::debug;

use crate::{
    Error,
    engine::Engine,
    proto::{
        GetMetricSpecResponse, IsActiveResponse, MetricSpec,
        wire::{
            GetMetricsRequest, GetMetricsResponse, ScaledObjectRef,
            external_scaler_server::ExternalScaler,
        },
    },
    trigger::{Catalog, TriggerCache, TriggerSpec},
};

/// Parsed triggers remembered by default: four per live measurement at the default
/// `measurements.max_live`, since several ScaledObjects often share a measurement.
const DEFAULT_TRIGGER_CACHE: usize = 200_000;
/// How long a parsed trigger nobody asks for is kept, at least: the default `idle_expiry`.
const DEFAULT_TRIGGER_PERIOD: Duration = Duration::from_secs(300);

/// The ExternalScaler implementation. Cloning is shallow.
#[derive(Clone)]
pub struct ScalerService {
    catalog: Arc<Catalog>,
    triggers: Arc<TriggerCache>,
    engine: Engine,
    shutdown: CancellationToken,
    streams: Streams,
}

/// StreamIsActive streams: at most `max` open at once, one semaphore permit each, counted in
/// `gauge`; each runs as a task of `tasks`, so the server can wait for them when it drains.
#[derive(Clone)]
struct Streams {
    permits: Arc<Semaphore>,
    max: usize,
    gauge: Gauge,
    tasks: TaskTracker,
}

/// One open stream; dropping it (when the stream's task ends) gives its permit back.
struct StreamPlace {
    _permit: OwnedSemaphorePermit,
    gauge: Gauge,
}

impl Streams {
    fn new(max: usize, gauge: Gauge, tasks: TaskTracker) -> Streams {
        Streams {
            permits: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            max,
            gauge,
            tasks,
        }
    }

    fn take(&self) -> Result<StreamPlace, Status> {
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "too many StreamIsActive streams: server.limits.max_streams = {} are open",
                self.max
            ))
        })?;
        self.gauge.inc();
        Ok(StreamPlace {
            _permit: permit,
            gauge: self.gauge.clone(),
        })
    }
}

impl Drop for StreamPlace {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl ScalerService {
    /// `shutdown` ends open StreamIsActive streams so the server can drain.
    pub fn new(catalog: Catalog, engine: Engine, shutdown: CancellationToken) -> Self {
        ScalerService {
            catalog: Arc::new(catalog),
            triggers: Arc::new(TriggerCache::new(
                DEFAULT_TRIGGER_CACHE,
                DEFAULT_TRIGGER_PERIOD,
            )),
            engine,
            shutdown,
            streams: Streams::new(usize::MAX, Gauge::default(), TaskTracker::new()),
        }
    }

    /// At most `max` StreamIsActive streams open at once, counted in `gauge`.
    pub fn with_stream_limit(mut self, max: usize, gauge: Gauge) -> Self {
        self.streams = Streams::new(max, gauge, self.streams.tasks.clone());
        self
    }

    /// Runs each StreamIsActive stream as a task of `tasks` (the owner waits for them after
    /// cancelling the shutdown token).
    pub fn with_stream_tasks(mut self, tasks: TaskTracker) -> Self {
        self.streams.tasks = tasks;
        self
    }

    /// Remembers at most `capacity` parsed triggers, each at least `period` after it was last
    /// asked for (and at most twice that).
    pub fn with_trigger_cache(mut self, capacity: usize, period: Duration) -> Self {
        self.triggers = Arc::new(TriggerCache::new(capacity, period));
        self
    }

    /// Parses the trigger, or finds it parsed; a panic in a parser (a bug) answers INTERNAL,
    /// never a dropped call.
    fn parse(&self, scaled_object: &ScaledObjectRef) -> Result<TriggerSpec, Status> {
        let parsed = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.triggers.parse_entries(
                scaled_object.entries(),
                scaled_object.namespace(),
                &self.catalog,
            )
        }))
        .unwrap_or_else(|_| {
            Err(Error::Internal(
                "parsing the trigger metadata panicked".into(),
            ))
        });
        parsed.map_err(|error| {
            debug!(
                namespace = %scaled_object.namespace(),
                name = %scaled_object.name(),
                %error,
                "rejected trigger metadata"
            );
            Status::from(error)
        })
    }

    async fn measure(&self, spec: &TriggerSpec) -> Result<f64, Status> {
        let source = self.catalog.source_name(spec.source);
        let value = self.engine.measure(source, &spec.query).await?;
        if !value.is_finite() || value < 0.0 {
            return Err(Error::Internal(format!("measured an impossible value {value}")).into());
        }
        Ok(value)
    }
}

/// KEDA strips its `sN-` prefix before GetMetrics; accept it anyway, from older or other
/// clients.
fn names_this_metric(requested: &str, metric_name: &str) -> bool {
    if requested.is_empty() || requested == metric_name {
        return true;
    }
    requested
        .strip_prefix('s')
        .and_then(|rest| rest.split_once('-'))
        .is_some_and(|(index, rest)| {
            !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) && rest == metric_name
        })
}

type ActivityStream = Pin<Box<dyn Stream<Item = Result<IsActiveResponse, Status>> + Send>>;
type SpecStream = Pin<Box<dyn Stream<Item = Result<GetMetricSpecResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalScaler for ScalerService {
    async fn is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        let spec = self.parse(request.get_ref())?;
        let value = self.measure(&spec).await?;
        Ok(Response::new(IsActiveResponse {
            result: spec.is_active(value),
        }))
    }

    type StreamIsActiveStream = ActivityStream;

    /// Sends the current activity at once, then on every change: it looks again whenever the
    /// engine stores readings of the source (a refresh, or a re-read right after an
    /// event-driven source reported a change), not on a ticker of its own; past the source's
    /// max_staleness without any store it looks anyway, so a value that went stale is
    /// reported. A backend error ends the stream with that error (KEDA reconnects); the stream
    /// also ends when the client goes away or the server drains.
    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let spec = self.parse(request.get_ref())?;
        // Subscribed before the first look, so no store in between is missed.
        let source = self.catalog.source_name(spec.source);
        let mut stored = self.engine.readings_stored(source)?;
        let at_the_latest = self.engine.max_staleness(source)?;
        let place = self.streams.take()?;
        // Capacity 1: a slow reader gets the latest state, not a backlog of old ones.
        let (sender, receiver) = mpsc::channel(1);
        let service = self.clone();
        self.streams.tasks.spawn(async move {
            let _place = place;
            let mut last_sent: Option<bool> = None;
            loop {
                let update = match service.measure(&spec).await {
                    Ok(value) => {
                        let active = spec.is_active(value);
                        (last_sent != Some(active))
                            .then_some(Ok(IsActiveResponse { result: active }))
                    }
                    Err(status) => Some(Err(status)),
                };
                if let Some(update) = update {
                    last_sent = update.as_ref().ok().map(|r| r.result);
                    let failed = update.is_err();
                    if sender.send(update).await.is_err() || failed {
                        return;
                    }
                }
                tokio::select! {
                    _ = sender.closed() => return,
                    _ = service.shutdown.cancelled() => return,
                    changed = stored.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(at_the_latest) => {}
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let spec = self.parse(request.get_ref())?;
        Ok(Response::new(GetMetricSpecResponse {
            metric_specs: vec![MetricSpec {
                metric_name: spec.metric_name(),
                target_size: spec.target_size(),
                target_size_float: spec.target,
            }],
        }))
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let request = request.get_ref();
        let scaled_object = request.scaled_object_ref().ok_or_else(|| {
            Status::invalid_argument("scaledObjectRef is required in GetMetricsRequest")
        })?;
        let spec = self.parse(scaled_object)?;
        let name = spec.name();
        let metric_name = name.as_str();
        if !names_this_metric(request.metric_name(), metric_name) {
            return Err(Status::invalid_argument(format!(
                "metricName `{}` is not this trigger's metric; GetMetricSpec names it `{}`",
                request.metric_name(),
                metric_name
            )));
        }
        let value = self.measure(&spec).await?;
        Ok(Response::new(GetMetricsResponse {
            metric_name: metric_name.to_owned(),
            // For KEDA < 2.17, which reads only the integer: round up, so a fractional backlog
            // never reads as less work than there is.
            metric_value: value.ceil() as i64,
            metric_value_float: value,
        }))
    }

    type StreamMetricSpecStream = SpecStream;

    async fn stream_metric_spec(
        &self,
        _request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamMetricSpecStream>, Status> {
        Err(Status::unimplemented(
            "StreamMetricSpec is not implemented: the metric spec of a trigger never changes \
             without a change of its metadata; use GetMetricSpec",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keda_index_prefix_is_accepted() {
        let name = "redis-list-jobs-0a1b2c3d";
        assert!(names_this_metric(name, name));
        assert!(names_this_metric("", name));
        assert!(names_this_metric("s0-redis-list-jobs-0a1b2c3d", name));
        assert!(names_this_metric("s12-redis-list-jobs-0a1b2c3d", name));
        assert!(!names_this_metric("s-redis-list-jobs-0a1b2c3d", name));
        assert!(!names_this_metric("sx-redis-list-jobs-0a1b2c3d", name));
        assert!(!names_this_metric("redis-list-other-0a1b2c3d", name));
    }
}
