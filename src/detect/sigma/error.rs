//! Errors found while loading Sigma rules.
//!
//! In: problems noticed by the YAML reader, the rule model and the condition parser.
//! Out: a [`SigmaError`] that names the file, the 1-based line and column of the offending key or
//! value, and what to change; several of them are gathered in [`SigmaErrors`].
//!
//! Every error here is about the rule file, never about data or a bug: the analyst fixes the rule.
//! [`ErrorKind`] says which kind of fix: the YAML does not parse, the rule breaks the Sigma
//! specification, or it is valid Sigma that palisade does not support (so the rule has to be
//! rewritten or left out, not corrected).

use std::fmt;
use std::path::PathBuf;

use super::yaml::{self, Node, Pos};

/// What kind of problem a [`SigmaError`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file is not well-formed YAML.
    Yaml,
    /// The rule breaks the Sigma specification.
    Invalid,
    /// Valid (or formerly valid) Sigma that palisade does not implement; `feature` names it.
    Unsupported {
        /// The feature, e.g. `condition aggregation | count()`.
        feature: String,
    },
}

/// One problem in a Sigma rule file, located at the key or value that causes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SigmaError {
    /// The file, as given to the parser.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Invalid, unsupported, or not YAML.
    pub kind: ErrorKind,
    /// What is wrong and what to change.
    pub message: String,
}

impl SigmaError {
    /// True when the rule is valid Sigma that palisade does not support.
    pub fn is_unsupported(&self) -> bool {
        matches!(self.kind, ErrorKind::Unsupported { .. })
    }
}

impl fmt::Display for SigmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        match &self.kind {
            ErrorKind::Yaml => write!(f, "YAML syntax error: {}", self.message),
            ErrorKind::Invalid => write!(f, "{}", self.message),
            ErrorKind::Unsupported { feature } => {
                write!(f, "unsupported feature `{feature}`: {}", self.message)
            }
        }
    }
}

/// Every problem found in one file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SigmaErrors {
    /// At least one.
    pub errors: Vec<SigmaError>,
}

impl fmt::Display for SigmaErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// What every parsing function needs to build located errors: the file name for messages and
/// its text, to turn an offset inside a scalar into a line and column.
pub(super) struct Cx<'a> {
    /// The file, as the caller named it.
    pub file: &'a std::path::Path,
    /// Its whole text.
    pub source: &'a str,
}

impl Cx<'_> {
    /// An error of `kind` at `pos`.
    pub fn error(&self, pos: Pos, kind: ErrorKind, message: impl Into<String>) -> SigmaError {
        SigmaError {
            file: self.file.to_path_buf(),
            line: pos.line,
            column: pos.column,
            kind,
            message: message.into(),
        }
    }

    /// The rule breaks the specification at `pos`.
    pub fn invalid(&self, pos: Pos, message: impl Into<String>) -> SigmaError {
        self.error(pos, ErrorKind::Invalid, message)
    }

    /// The rule uses `feature`, which palisade does not support, at `pos`.
    pub fn unsupported(
        &self,
        pos: Pos,
        feature: impl Into<String>,
        message: impl Into<String>,
    ) -> SigmaError {
        self.error(
            pos,
            ErrorKind::Unsupported {
                feature: feature.into(),
            },
            message,
        )
    }

    /// Where character `offset` of scalar `node`'s value is in the file.
    pub fn at(&self, node: &Node, offset: usize) -> Pos {
        yaml::locate(self.source, node, offset)
    }
}

/// Records the error of `result`, if any, so parsing can go on and report every problem.
pub(super) fn keep<T>(errors: &mut Vec<SigmaError>, result: Result<T, SigmaError>) -> Option<T> {
    result.map_err(|e| errors.push(e)).ok()
}
