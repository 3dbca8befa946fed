//! The pure, I/O-free logic behind `backlog-scaler eval` (issue 11): a dry run of ScaledObjects
//! against live backends, answering "how many replicas would KEDA and the HPA set now, and why?"
//!
//! The command itself (reading files, measuring triggers through the engine, printing) lives
//! elsewhere; this module owns the three steps that need no I/O, so each is unit-tested alone:
//!
//! - [`scaledobject`]: the YAML file → [`ScaledObject`]s, with KEDA's defaults and the checks
//!   KEDA and the API server apply; other documents are reported as skipped.
//! - [`formula`]: the `advanced.scalingModifiers` formula (expr-lang as formulas over trigger
//!   values use it), compiled once and evaluated per reading.
//! - [`replicas`]: readings → a [`Decision`]: per-metric proposals, activity, idle and
//!   scale-to-zero, the HPA's 10 % tolerance and the replica bounds, each step recorded.
//! - [`fallback`]: triggers that cannot be read, through KEDA's `fallback` behaviors.
//! - [`scaledjob`]: the Jobs KEDA creates for a ScaledJob in one polling interval.
//! - [`workload`]: `*FromEnv` trigger keys, resolved from the scale target's manifest.
//!
//! Nothing here measures or talks to a backend: a trigger's value and target come in as a
//! [`TriggerReading`], which the caller builds from the trigger's parsed metadata
//! (`target`, `activationTarget`) and the measured value.
//!
//! ```
//! use backlog_scaler::eval::{TriggerReading, desired_replicas, parse_scaled_objects};
//!
//! let file = parse_scaled_objects(
//!     r#"
//! apiVersion: keda.sh/v1alpha1
//! kind: ScaledObject
//! metadata: {name: worker}
//! spec:
//!   maxReplicaCount: 20
//!   triggers:
//!     - type: external
//!       name: jobs
//!       metadata: {source: redis-main, metric: rq, queue: high, target: "10"}
//! "#,
//! )?;
//! let so = &file.scaled_objects[0];
//! let trigger = &so.triggers[0];
//! let reading = TriggerReading {
//!     label: trigger.label(0),
//!     name: trigger.name.clone(),
//!     value: 42.0,             // measured
//!     target: 10.0,            // the trigger's `target`
//!     activation_target: 0.0,  // the trigger's `activationTarget`
//!     metric_type: trigger.metric_type,
//! };
//! let decision = desired_replicas(&[reading], so.scaling_modifiers.as_ref(), so.limits, None)?;
//! assert_eq!(decision.replicas, 5);
//! println!("{decision}"); // one line per step
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod fallback;
pub mod formula;
pub mod replicas;
pub mod scaledjob;
pub mod scaledobject;
pub mod workload;

pub use fallback::{FailedTrigger, FallbackStep};
pub use formula::{Formula, FormulaError};
pub use replicas::{
    Clamp, CompositeValue, Decision, MetricProposal, ReplicaError, Rule, TriggerActivity,
    TriggerReading, desired_replicas, desired_replicas_with_fallback,
};
pub use scaledjob::{JobDecision, JobReading, ScaledJob, ScalingStrategy, jobs_to_create};
pub use scaledobject::{
    DocumentRef, Fallback, FallbackBehavior, MetricType, ReplicaLimits, ScaledObject,
    ScaledObjectError, ScaledObjectFile, ScalingModifiers, SkippedDocument, Trigger,
    parse_scaled_objects,
};
pub use workload::{ResolvedMetadata, ScaleTarget, Workload, resolve_from_env};
