//! Raw TOML -> validated [`Definition`]. (Being written.)

use super::Definition;
use std::fmt;

/// One problem in a definition file, located precisely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError {
    /// 1-based line of the offending value (or of the table that lacks a field).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong, e.g. "step `sms-code` names `next = \"pasword\"`, which is not a step".
    pub message: String,
    /// What to change, e.g. "use one of: new-password, done".
    pub hint: String,
}

/// All problems found in one file (validation keeps going to report as many as it can).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionErrors {
    /// The file name as given (used in every message).
    pub origin: String,
    pub errors: Vec<DefinitionError>,
}

impl fmt::Display for DefinitionErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}:{}: error: {}\n  help: {}",
                self.origin, e.line, e.column, e.message, e.hint
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for DefinitionErrors {}

pub fn load(origin: &str, _source: &str) -> Result<Definition, DefinitionErrors> {
    Err(DefinitionErrors {
        origin: origin.into(),
        errors: vec![],
    })
}
