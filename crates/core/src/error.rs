//! Feast's error vocabulary: every error a user can cause carries the Python class Feast
//! would raise (`feast.errors.<Class>`), so that all transports can produce the envelope of
//! PROTOCOLS.md §0 — `{"module", "class", "message"}` — from one place, and the Feast SDK
//! re-raises the exact exception type (`FeatureViewNotFoundException`, ...).

use std::fmt;

/// A Feast exception class (module `feast.errors`) and how transports report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The base class: gRPC INTERNAL / HTTP 500.
    FeastError,
    FeastObjectNotFoundException,
    EntityNotFoundException,
    FeatureViewNotFoundException,
    OnDemandFeatureViewNotFoundException,
    FeatureServiceNotFoundException,
    DataSourceObjectNotFoundException,
    SavedDatasetNotFound,
    ValidationReferenceNotFound,
    PermissionObjectNotFoundException,
    ProjectObjectNotFoundException,
    ConflictingFeatureViewNames,
    /// Two requested features would get the same output name.
    FeatureNameCollisionError,
    FeastPermissionError,
    PushSourceNotFoundException,
    /// `persist` to a location that exists, without `allow_overwrite`.
    SavedDatasetLocationAlreadyExists,
    /// A `view@vN` reference to a version the view's history does not hold.
    FeatureViewVersionNotFound,
    /// A view pinned to a recorded version whose definition was also changed.
    FeatureViewPinConflict,
}

/// Transport-neutral status; services map it to a gRPC code or HTTP status in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusKind {
    Internal,
    NotFound,
    PermissionDenied,
    InvalidArgument,
    Unprocessable,
    /// A concurrent change won: the caller should reload and retry (gRPC ABORTED, HTTP 409).
    Conflict,
    /// A dependency (store, service) is unreachable for now (gRPC UNAVAILABLE, HTTP 503).
    Unavailable,
    /// The request is valid but this server does not implement it (gRPC UNIMPLEMENTED, HTTP 501).
    Unimplemented,
}

impl ErrorClass {
    /// Every class, for parsing an envelope back into its class.
    pub const ALL: [ErrorClass; 18] = [
        Self::FeastError,
        Self::FeastObjectNotFoundException,
        Self::EntityNotFoundException,
        Self::FeatureViewNotFoundException,
        Self::OnDemandFeatureViewNotFoundException,
        Self::FeatureServiceNotFoundException,
        Self::DataSourceObjectNotFoundException,
        Self::SavedDatasetNotFound,
        Self::ValidationReferenceNotFound,
        Self::PermissionObjectNotFoundException,
        Self::ProjectObjectNotFoundException,
        Self::ConflictingFeatureViewNames,
        Self::FeatureNameCollisionError,
        Self::FeastPermissionError,
        Self::PushSourceNotFoundException,
        Self::SavedDatasetLocationAlreadyExists,
        Self::FeatureViewVersionNotFound,
        Self::FeatureViewPinConflict,
    ];

    /// The class named `name` (a Feast exception class name), if feast-rs knows it.
    pub fn from_name(name: &str) -> Option<ErrorClass> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::FeastError => "FeastError",
            Self::FeastObjectNotFoundException => "FeastObjectNotFoundException",
            Self::EntityNotFoundException => "EntityNotFoundException",
            Self::FeatureViewNotFoundException => "FeatureViewNotFoundException",
            Self::OnDemandFeatureViewNotFoundException => "OnDemandFeatureViewNotFoundException",
            Self::FeatureServiceNotFoundException => "FeatureServiceNotFoundException",
            Self::DataSourceObjectNotFoundException => "DataSourceObjectNotFoundException",
            Self::SavedDatasetNotFound => "SavedDatasetNotFound",
            Self::ValidationReferenceNotFound => "ValidationReferenceNotFound",
            Self::PermissionObjectNotFoundException => "PermissionObjectNotFoundException",
            Self::ProjectObjectNotFoundException => "ProjectObjectNotFoundException",
            Self::ConflictingFeatureViewNames => "ConflictingFeatureViewNames",
            Self::FeatureNameCollisionError => "FeatureNameCollisionError",
            Self::FeastPermissionError => "FeastPermissionError",
            Self::PushSourceNotFoundException => "PushSourceNotFoundException",
            Self::SavedDatasetLocationAlreadyExists => "SavedDatasetLocationAlreadyExists",
            Self::FeatureViewVersionNotFound => "FeatureViewVersionNotFound",
            Self::FeatureViewPinConflict => "FeatureViewPinConflict",
        }
    }

    /// The status Feast's `grpc_status_code()` / `http_status_code()` give this class.
    pub fn status(self) -> StatusKind {
        match self {
            Self::FeastObjectNotFoundException
            | Self::EntityNotFoundException
            | Self::FeatureViewNotFoundException
            | Self::OnDemandFeatureViewNotFoundException
            | Self::FeatureServiceNotFoundException
            | Self::DataSourceObjectNotFoundException
            | Self::SavedDatasetNotFound
            | Self::ValidationReferenceNotFound
            | Self::PermissionObjectNotFoundException
            | Self::ProjectObjectNotFoundException
            | Self::FeatureViewVersionNotFound => StatusKind::NotFound,
            Self::FeastPermissionError => StatusKind::PermissionDenied,
            Self::PushSourceNotFoundException => StatusKind::Unprocessable,
            Self::FeastError
            | Self::SavedDatasetLocationAlreadyExists
            | Self::FeatureViewPinConflict
            | Self::ConflictingFeatureViewNames
            | Self::FeatureNameCollisionError => StatusKind::Internal,
        }
    }
}

/// An error a Feast client can understand: a class plus Feast's message text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeastError {
    pub class: ErrorClass,
    pub message: String,
}

impl FeastError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusKind {
        self.class.status()
    }

    /// Feast's `to_error_detail()`: `json.dumps({"module", "class", "message"})`.
    pub fn to_error_detail(&self) -> String {
        crate::json::python_dumps(&serde_json::json!({
            "module": "feast.errors",
            "class": self.class.name(),
            "message": self.message,
        }))
    }
}

impl fmt::Display for FeastError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FeastError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_detail_matches_python_json_dumps() {
        let e = FeastError::new(
            ErrorClass::FeatureViewNotFoundException,
            "Feature view driver_stats does not exist in project demo",
        );
        assert_eq!(
            e.to_error_detail(),
            r#"{"module": "feast.errors", "class": "FeatureViewNotFoundException", "message": "Feature view driver_stats does not exist in project demo"}"#
        );
        assert_eq!(e.status(), StatusKind::NotFound);
    }

    #[test]
    fn error_detail_escapes_newlines_and_quotes() {
        let e = FeastError::new(ErrorClass::FeastPermissionError, "Permission error:\n\"x\"");
        let parsed: serde_json::Value = serde_json::from_str(&e.to_error_detail()).unwrap();
        assert_eq!(parsed["message"], "Permission error:\n\"x\"");
        assert_eq!(e.status(), StatusKind::PermissionDenied);
    }
}
