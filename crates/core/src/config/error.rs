//! Errors raised while loading `feature_store.yaml`.

use std::fmt;
use std::path::PathBuf;

/// What went wrong, for callers that want to branch on it (tests, CLI exit codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The file could not be read.
    Io,
    /// The text is not valid YAML, is empty, or is not a mapping at the top level.
    Syntax,
    /// A `${VAR}` reference names an environment variable that is not set.
    MissingEnvVar,
    /// A key that the model does not know (and does not allow as an extra).
    UnknownKey,
    /// A required key is absent.
    MissingKey,
    /// A value has the wrong type or violates a constraint.
    InvalidValue,
    /// The value is valid for Feast but names a store, registry, engine or provider
    /// that feast-rs does not implement.
    Unsupported,
}

/// A located problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Category of the problem.
    pub kind: ConfigErrorKind,
    /// The name used for the file in messages (usually its path).
    pub source_name: String,
    /// 1-based line in the original (pre-substitution) file, when known.
    pub line: Option<usize>,
    /// 1-based column in the original file, when known.
    pub column: Option<usize>,
    /// The message, starting with the dotted key path when there is one
    /// (`online_store.port: invalid type: ...`).
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{}:{}: {}", self.source_name, l, c, self.message),
            (Some(l), None) => write!(f, "{}:{}: {}", self.source_name, l, self.message),
            _ => write!(f, "{}: {}", self.source_name, self.message),
        }
    }
}

/// Error returned by [`RepoConfig::load`](super::RepoConfig::load) and friends.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file that was being read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file was read but is not a valid configuration.
    #[error("{0}")]
    Invalid(Box<Diagnostic>),
}

impl ConfigError {
    pub(crate) fn invalid(
        kind: ConfigErrorKind,
        source_name: &str,
        line: Option<usize>,
        column: Option<usize>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid(Box::new(Diagnostic {
            kind,
            source_name: source_name.to_owned(),
            line,
            column,
            message: message.into(),
        }))
    }

    /// The category of the error.
    pub fn kind(&self) -> ConfigErrorKind {
        match self {
            ConfigError::Io { .. } => ConfigErrorKind::Io,
            ConfigError::Invalid(d) => d.kind,
        }
    }

    /// The located diagnostic, unless this is an I/O error.
    pub fn diagnostic(&self) -> Option<&Diagnostic> {
        match self {
            ConfigError::Io { .. } => None,
            ConfigError::Invalid(d) => Some(d),
        }
    }

    /// 1-based line of the problem in the original file, when known.
    pub fn line(&self) -> Option<usize> {
        self.diagnostic().and_then(|d| d.line)
    }

    /// 1-based column of the problem in the original file, when known.
    pub fn column(&self) -> Option<usize> {
        self.diagnostic().and_then(|d| d.column)
    }
}

/// Markers that our own serde errors carry so that [`ConfigErrorKind`] can be
/// recovered from the string-only serde error channel. They never reach users.
pub(crate) const UNSUPPORTED_MARK: &str = "\u{1}unsupported\u{1}";
pub(crate) const INVALID_MARK: &str = "\u{1}invalid\u{1}";

/// Build a serde error for a Feast-valid value that feast-rs does not implement.
pub(crate) fn unsupported<E: serde::de::Error>(msg: impl fmt::Display) -> E {
    E::custom(format!("{UNSUPPORTED_MARK}{msg}"))
}

/// Build a serde error for a value that breaks one of Feast's validation rules.
pub(crate) fn invalid<E: serde::de::Error>(msg: impl fmt::Display) -> E {
    E::custom(format!("{INVALID_MARK}{msg}"))
}

/// Split a serde message into its kind and the user-facing text.
pub(crate) fn classify(message: &str) -> (ConfigErrorKind, String) {
    let clean = message
        .replace(UNSUPPORTED_MARK, "")
        .replace(INVALID_MARK, "");
    let kind = if message.contains(UNSUPPORTED_MARK) {
        ConfigErrorKind::Unsupported
    } else if message.contains(INVALID_MARK) {
        ConfigErrorKind::InvalidValue
    } else if message.contains("unknown field `") {
        ConfigErrorKind::UnknownKey
    } else if message.contains("missing field `") {
        ConfigErrorKind::MissingKey
    } else {
        ConfigErrorKind::InvalidValue
    };
    (kind, clean)
}
