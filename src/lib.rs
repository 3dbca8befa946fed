//! backlog-scaler: a KEDA external scaler that turns queue backlogs and database load into
//! metric values for the HPA.
//!
//! # Layout
//!
//! A request travels top to bottom through these modules; each depends only on the ones
//! below it (checked by `tests/it/module_graph.rs`):
//!
//! - [`cli`]: the commands besides `serve`, for people and scripts: `check` (probe every
//!   source), `eval` (dry-run ScaledObjects against live backends) and `dev` (throwaway
//!   backends, the scaler in-process and a live table). It sits at the top beside
//!   [`server`] and may use every module below.
//! - [`server`]: the listeners (gRPC, the http port with `/metrics`, a plaintext health
//!   port), TLS with certificate rotation, the bounds on connections and RPCs, health and
//!   reflection, and the one shutdown path (`run(config, listener, shutdown)`).
//! - [`service`]: the `externalscaler.ExternalScaler` RPCs. Thin: parse, ask the engine,
//!   shape the answer.
//! - [`trigger`]: turns KEDA's `scalerMetadata` map into a typed [`trigger::TriggerSpec`]
//!   exactly once, at the boundary: the common keys, the namespace fence, then the source's
//!   own metric parser. Errors name the key and what is accepted. [`trigger::TriggerCache`]
//!   remembers each distinct map's spec, so a warm request does not parse again.
//! - [`engine`]: the measurement cache. One backend read per distinct measurement per refresh,
//!   shared by every request and every ScaledObject that asks for it; cold reads batched per
//!   source; re-reads right after an event-driven source reports a change (coalesced), and
//!   each source told which measurements are live; freshness and size bounds; panics in reads
//!   contained.
//! - [`config`]: the TOML config file, validated before any port is bound. It reads the keys
//!   every source shares and hands the rest of each `[sources.NAME]` table to its backend.
//! - [`sources`]: the [`sources::Backend`] and [`sources::Source`] traits, the opaque
//!   [`sources::Query`], and one folder per backend ([`sources::redis`],
//!   [`sources::postgres`], [`sources::pgbouncer`]), each owning its config section, its
//!   metrics and its reads.
//! - [`eval`]: `backlog-scaler eval`'s pure logic: ScaledObjects and ScaledJobs,
//!   scalingModifiers formulas, KEDA's fallback and the HPA's replica math. It uses no other module.
//! - Leaves, used by the modules above and using none of them: [`metadata`] (typed reads of
//!   `scalerMetadata`, metric tables), [`credentials`] (secrets, CA roots, the server's TLS
//!   config), [`metrics`] (the Prometheus registry and what is recorded in it), [`naming`]
//!   (deterministic DNS-1123 metric names), [`error`] (the one error enum and its one mapping
//!   to `tonic::Status`), [`proto`] (generated from `proto/externalscaler.proto`; its `wire`
//!   module is the server's side, which decodes the requests and encodes the GetMetrics answer by
//!   hand, without a map per request).
//!
//! # Adding a backend
//!
//! A new folder `sources/NAME/` with a [`sources::Backend`] (the `type` values it serves and
//! how it parses its config section into a source), a [`sources::Source`] (its metric table and
//! its batched reads) and a [`sources::QueryKind`] (its measurement key); then one line in
//! [`sources::BACKENDS`]. Nothing else changes. `sources/redis/` is the fullest example.

pub mod cli;
pub mod config;
pub mod credentials;
pub mod engine;
pub mod error;
pub mod eval;
pub mod metadata;
pub mod metrics;
pub mod naming;
pub mod proto;
pub mod server;
pub mod service;
pub mod sources;
pub mod trigger;

pub use error::{Error, Result};
