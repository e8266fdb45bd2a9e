use passage_core::ports::{DirectoryError, JourneyId, StoreError};

/// Failures of the runtime. Rejections by the journey's rules are not errors: they are
/// [`passage_core::journey::Reply::Rejected`] inside an [`crate::Outcome`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("no workflow definition named `{name}` is loaded (available: {available})")]
    UnknownWorkflow { name: String, available: String },
    #[error("journey {0} does not exist")]
    UnknownJourney(JourneyId),
    #[error("journey {journey} runs on definition {hash}, which the store does not hold")]
    MissingDefinition { journey: JourneyId, hash: String },
    #[error("journey {0} kept changing under concurrent writers; try again")]
    TooMuchContention(JourneyId),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error("stored data could not be decoded: {0}")]
    Decode(String),
    /// A journey's data that opens under no key of this deployment: written under another
    /// secret, or altered. Unlike [`Error::Decode`] (which a newer build may read), no
    /// retry by any node of this deployment can succeed.
    #[error("{0}")]
    Unreadable(String),
    #[error("not an email address: {0}")]
    InvalidEmail(String),
}
