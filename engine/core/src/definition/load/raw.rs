//! Stage 1: the file exactly as written, with byte spans, before anything is given meaning.
//!
//! Every field is optional and every number is a plain `i64` so that a missing field or an
//! out-of-range number is reported by stage 2 together with all other problems, instead of
//! serde stopping at the first one. Unknown keys are still refused here
//! (`deny_unknown_fields`): a typo such as `promt` must never be silently ignored.
//!
//! A step is one flat table holding the fields of every kind, because the kind is itself a
//! value in the table; stage 2 rejects the fields that do not belong to the step's kind.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::Range;
use toml::Spanned;

type Text = Option<Spanned<String>>;
type Int = Option<Spanned<i64>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefinition {
    pub id: Text,
    pub version: Int,
    pub title: Text,
    pub lifetime: Text,
    pub start: Text,
    pub steps: Option<Spanned<Vec<Spanned<RawStep>>>>,
    #[serde(default)]
    pub policies: BTreeMap<String, Spanned<RawPolicy>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    pub id: Text,
    pub kind: Text,
    pub prompt: Text,
    /// Common to every kind, like `id` and `prompt`.
    pub stall_after: Text,
    pub action: Text,
    pub next: Text,
    pub channel: Text,
    pub digits: Int,
    pub lifetime: Text,
    pub max_attempts: Int,
    pub resend: Option<Spanned<RawResend>>,
    pub options: Option<Spanned<Vec<Spanned<RawOption>>>>,
    pub confirm: Text,
    pub max_calls: Int,
    pub policy: Text,
    pub tiles: Option<Spanned<Vec<Spanned<RawTile>>>>,
}

impl RawStep {
    /// The kind-specific fields present in the table (every field but `id`, `kind` and
    /// `prompt`), with where each value is.
    pub fn kind_fields(&self) -> Vec<(&'static str, Range<usize>)> {
        fn at<T>(
            name: &'static str,
            v: &Option<Spanned<T>>,
        ) -> Option<(&'static str, Range<usize>)> {
            v.as_ref().map(|v| (name, v.span()))
        }
        [
            at("action", &self.action),
            at("next", &self.next),
            at("channel", &self.channel),
            at("digits", &self.digits),
            at("lifetime", &self.lifetime),
            at("max_attempts", &self.max_attempts),
            at("resend", &self.resend),
            at("options", &self.options),
            at("confirm", &self.confirm),
            at("max_calls", &self.max_calls),
            at("policy", &self.policy),
            at("tiles", &self.tiles),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResend {
    pub label: Text,
    pub max: Int,
    pub cooldown: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOption {
    pub id: Text,
    pub label: Text,
    pub next: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTile {
    pub title: Text,
    pub portal: Text,
    pub href: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub min_length: Int,
    pub max_length: Int,
    pub blocklist: Option<Spanned<bool>>,
    pub context_words: Option<Spanned<Vec<Spanned<String>>>>,
    pub forbid_account_identifiers: Option<Spanned<bool>>,
}
