//! The crate's one error type and its one mapping to `tonic::Status`.
//!
//! Every failure a caller can see is one of these variants, and [`From<Error> for Status`] is
//! the only place that decides gRPC codes. Messages are written for the platform engineer
//! reading KEDA's logs: they name the metadata key or the source, and never carry a secret
//! (backends are named by their config name, never by URL).

use tonic::{Code, Status};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the reason of [`Error::CredentialsRefused`] begins, in every source's words.
pub const AUTHENTICATION_FAILED: &str = "authentication failed";

/// A config problem, as one line that names the key. Config errors stop the process before any
/// port is bound (exit code 2); they are never answered to a gRPC client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    /// A problem with the value of `key` (a dotted path such as `sources.redis-main.url`).
    pub fn at(key: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        ConfigError(format!("`{key}`: {reason}"))
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// Trigger metadata that cannot be parsed: names the key and what is accepted.
    #[error("metadata key `{key}`: {reason}")]
    InvalidMetadata { key: String, reason: String },

    /// The backend could not be reached or did not answer in time. Retrying later may help.
    #[error("source `{source_name}` is unavailable: {reason}")]
    Unavailable { source_name: String, reason: String },

    /// The backend answered but refused the source's credentials. Answered like
    /// [`Error::Unavailable`] (the source cannot be read), and kept apart so
    /// `backlog-scaler check` can tell "reachable, not authenticated" from "unreachable".
    #[error("source `{source_name}` is unavailable: {reason}")]
    CredentialsRefused { source_name: String, reason: String },

    /// The backend answered, but the data does not have the shape the trigger asks for
    /// (a Redis key of another type, a missing table or extension). Retrying will not help
    /// until someone changes the data or the trigger.
    #[error("source `{source_name}`: {reason}")]
    Rejected { source_name: String, reason: String },

    /// The engine holds as many live measurements as it is configured to.
    #[error(
        "too many live measurements: the limit `measurements.max_live` = {limit} is reached; \
         raise it or wait for idle measurements to expire"
    )]
    TooManyMeasurements { limit: usize },

    /// A trigger names a source its namespace may not use.
    #[error(
        "namespace `{namespace}` may not use source `{source_name}`; the source's \
         `allowed_namespaces` does not list it"
    )]
    NamespaceNotAllowed {
        namespace: String,
        source_name: String,
    },

    /// A bug: something that should be impossible happened.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidMetadata {
            key: key.into(),
            reason: reason.into(),
        }
    }

    pub fn unavailable(source_name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Unavailable {
            source_name: source_name.into(),
            reason: reason.into(),
        }
    }

    /// Refused credentials; `advice` says what to check, after "authentication failed: ".
    pub fn credentials_refused(source_name: impl Into<String>, advice: impl Into<String>) -> Self {
        Error::CredentialsRefused {
            source_name: source_name.into(),
            reason: format!("{AUTHENTICATION_FAILED}: {}", advice.into()),
        }
    }

    pub fn rejected(source_name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Rejected {
            source_name: source_name.into(),
            reason: reason.into(),
        }
    }

    /// The gRPC code this error is answered with.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidMetadata { .. } => Code::InvalidArgument,
            Error::Unavailable { .. } | Error::CredentialsRefused { .. } => Code::Unavailable,
            Error::Rejected { .. } => Code::FailedPrecondition,
            Error::TooManyMeasurements { .. } => Code::ResourceExhausted,
            Error::NamespaceNotAllowed { .. } => Code::PermissionDenied,
            Error::Internal(_) => Code::Internal,
        }
    }

    /// True when the source cannot be read: the backend could not be reached or refused the
    /// credentials (as opposed to answering "no" about the data).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. } | Error::CredentialsRefused { .. }
        )
    }

    /// True when the backend refused the source's credentials.
    pub fn is_credentials_refused(&self) -> bool {
        matches!(self, Error::CredentialsRefused { .. })
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        Status::new(error.code(), error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_kind_of_failure() {
        let cases = [
            (
                Error::invalid("target", "must be > 0"),
                Code::InvalidArgument,
            ),
            (
                Error::unavailable("redis-main", "timed out"),
                Code::Unavailable,
            ),
            (
                Error::credentials_refused("redis-main", "check the password"),
                Code::Unavailable,
            ),
            (
                Error::rejected("redis-main", "WRONGTYPE"),
                Code::FailedPrecondition,
            ),
            (
                Error::TooManyMeasurements { limit: 3 },
                Code::ResourceExhausted,
            ),
            (Error::Internal("bug".into()), Code::Internal),
        ];
        for (error, code) in cases {
            assert_eq!(Status::from(error.clone()).code(), code, "{error}");
        }
    }

    #[test]
    fn refused_credentials_read_as_unavailable_and_are_told_apart_by_variant() {
        let refused = Error::credentials_refused("pg-main", "check the source's user and password");
        assert_eq!(
            refused.to_string(),
            "source `pg-main` is unavailable: authentication failed: check the source's user and password"
        );
        assert!(refused.is_unavailable() && refused.is_credentials_refused());
        let down = Error::unavailable(
            "pg-main",
            "authentication failed: by a reason's words alone",
        );
        assert!(down.is_unavailable() && !down.is_credentials_refused());
    }

    #[test]
    fn status_message_names_the_key() {
        let status = Status::from(Error::invalid("target", "must be a number > 0, got `x`"));
        assert_eq!(
            status.message(),
            "metadata key `target`: must be a number > 0, got `x`"
        );
    }
}
