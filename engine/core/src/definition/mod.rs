//! Workflow definitions: the validated model a journey runs on.
//!
//! Definitions are data (TOML files in `workflows/`). Loading is two-stage, like ripgrep's
//! `LowArgs -> HiArgs`: [`load`] parses the raw file with spans, then validates it into the
//! types below. Once a [`Definition`] exists it is known to be well-formed: every `next`
//! resolves, every step is reachable and can reach a `complete` step, durations and limits
//! are in range, and the security invariants that can be checked statically hold (R7, R8,
//! R19, R28, R48). The engine therefore never has to handle a malformed definition.

mod load;

pub use load::{DefinitionError, DefinitionErrors, load};

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Identifier of a step inside one definition (e.g. `email-code`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct StepId(pub String);

impl StepId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for StepId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// A validated workflow definition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Definition {
    /// Stable name journeys are started by, e.g. `password-reset`.
    pub id: String,
    /// Author-maintained version number, shown to support.
    pub version: u32,
    pub title: String,
    /// Lowercase hex SHA-256 of `source`. Journeys pin this hash in their first event and
    /// run to the end on exactly these bytes, even after the file changes.
    pub content_hash: String,
    /// The file's bytes as loaded; stores keep them so old journeys can be resumed.
    #[serde(skip)]
    pub source: String,
    /// Overall journey lifetime (R30).
    pub lifetime: Duration,
    pub start: StepId,
    /// Steps in file order.
    pub steps: Vec<Step>,
    pub policies: BTreeMap<String, PasswordPolicy>,
}

impl Definition {
    pub fn step(&self, id: &StepId) -> Option<&Step> {
        self.steps.iter().find(|s| &s.id == id)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub id: StepId,
    /// What the person is asked to do, in the seed guide's words.
    pub prompt: String,
    pub kind: StepKind,
    /// How long a person may stay on this step without doing anything before the journey
    /// counts as stalled: first a nudge, then a support alert (chat-ops). `None`: never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stall_after: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StepKind {
    /// Ask for the registered email address and look the account up.
    Identify { action: String, next: StepId },
    /// Issue a one-time code on a channel and verify it.
    Code(CodeStep),
    /// Let the person pick one of several alternatives.
    Choose { options: Vec<ChoiceOption> },
    /// Place a voice call and wait for its confirmation.
    Voice(VoiceStep),
    /// Set a new password under a named policy.
    SetPassword { policy: String, next: StepId },
    /// Finish: start a session and offer the portal tiles.
    Complete { tiles: Vec<Tile> },
}

impl StepKind {
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Identify { .. } => "identify",
            StepKind::Code(_) => "code",
            StepKind::Choose { .. } => "choose",
            StepKind::Voice(_) => "voice",
            StepKind::SetPassword { .. } => "set-password",
            StepKind::Complete { .. } => "complete",
        }
    }

    /// Every step this one can lead to.
    pub fn successors(&self) -> Vec<&StepId> {
        match self {
            StepKind::Identify { next, .. } | StepKind::SetPassword { next, .. } => vec![next],
            StepKind::Code(c) => vec![&c.next],
            StepKind::Voice(v) => vec![&v.next],
            StepKind::Choose { options } => options.iter().map(|o| &o.next).collect(),
            StepKind::Complete { .. } => vec![],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CodeChannel {
    Email,
    Sms,
}

impl CodeChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            CodeChannel::Email => "email",
            CodeChannel::Sms => "sms",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CodeStep {
    pub channel: CodeChannel,
    /// 6 to 10 (R7).
    pub digits: u8,
    /// How long one issued code stays valid (R8). A code issued at `t` is accepted while
    /// `now < t + lifetime`.
    pub lifetime: Duration,
    /// Attempts per step, across resends (R13, R14).
    pub max_attempts: u32,
    pub resend: ResendRule,
    pub next: StepId,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResendRule {
    /// Link text, e.g. "Re-send code".
    pub label: String,
    /// How many times a new code may be requested in this step.
    pub max: u32,
    /// Minimum time between two sends.
    pub cooldown: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChoiceOption {
    pub id: String,
    pub label: String,
    pub next: StepId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "mode")]
pub enum VoiceConfirm {
    /// The call asks the person to press `#`; approval only (see R26 and docs/security.md).
    PressPound,
    /// The call reads out a code that the person types where the journey runs (R26).
    SpokenCode { digits: u8 },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VoiceStep {
    pub confirm: VoiceConfirm,
    /// How long a placed call may take to be confirmed before it counts as failed.
    pub lifetime: Duration,
    /// Calls that may be placed in this step (the first one included).
    pub max_calls: u32,
    /// Wrong spoken codes tolerated (only for `spoken-code`).
    pub max_attempts: u32,
    pub next: StepId,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tile {
    pub title: String,
    /// The portal the tile leads to, e.g. "Connections Portal".
    pub portal: String,
    /// A site-relative path (R48: no open redirect; validated at load).
    pub href: String,
}

/// A password policy without composition rules (R35-R39).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PasswordPolicy {
    pub name: String,
    /// In Unicode code points after NFC normalisation (R35, R39).
    pub min_length: usize,
    /// Explicit upper bound so hashing cannot be abused (R36).
    pub max_length: usize,
    /// Reject passwords on the blocklist shipped with Passage (R38).
    pub blocklist: bool,
    /// Words that may not appear in the password, e.g. the portal's names (R38).
    pub context_words: Vec<String>,
    /// Reject passwords that contain the account's email local part or name (R38).
    pub forbid_account_identifiers: bool,
}
