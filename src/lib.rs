//! backlog-scaler: a KEDA external scaler that turns queue backlogs and database load into
//! metric values for the HPA.
//!
//! # Layout
//!
//! A request travels top to bottom through these modules:
//!
//! - [`server`]: binds the gRPC listener, registers health and reflection, and owns the one
//!   shutdown path (`run(config, listener, shutdown)`).
//! - [`service`]: the `externalscaler.ExternalScaler` RPCs. Thin: parse, ask the engine,
//!   shape the answer.
//! - [`trigger`]: turns KEDA's `scalerMetadata` map into a typed [`trigger::TriggerSpec`]
//!   exactly once, at the boundary; errors name the key and what is accepted.
//! - [`naming`]: the deterministic, DNS-1123 metric name of a trigger.
//! - [`engine`]: the measurement cache. One backend read per distinct measurement per refresh,
//!   shared by every request and every ScaledObject that asks for it; freshness and size bounds.
//! - [`sources`]: the [`sources::Source`] trait and its backends ([`sources::redis`]). The
//!   engine depends on the trait, never on a backend.
//! - [`config`]: the TOML config file, validated before any port is bound.
//! - [`error`]: the crate's one error enum and its one mapping to `tonic::Status`.
//! - [`eval`]: `backlog-scaler eval`'s pure logic: ScaledObjects, formulas, KEDA's replica math.
//! - [`proto`]: code generated from `proto/externalscaler.proto`.

pub mod config;
pub mod engine;
pub mod error;
pub mod eval;
pub mod naming;
pub mod proto;
pub mod server;
pub mod service;
pub mod sources;
pub mod trigger;

pub use error::{Error, Result};
