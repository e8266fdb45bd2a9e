//! Raw TOML -> validated [`Definition`].
//!
//! Stage 1 ([`raw`]) only parses. Stage 2 (this file) gives the file its meaning and keeps
//! going after a problem, so an author sees every mistake in one run, each pointing at the
//! line to change and saying what to write instead. The graph checks (reachability, a way to
//! finish, R19, R28) run only once every step's kind and `next` are sound: on a broken graph
//! they would mostly repeat, less clearly, the mistakes already reported.

mod graph;
mod kinds;
mod raw;
#[cfg(test)]
mod tests;

use super::{CodeChannel, Definition, PasswordPolicy, Step, StepId};
use crate::time::{format_duration, parse_duration};
use graph::Node;
use raw::{RawDefinition, RawStep};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::{Range, RangeInclusive};
use std::time::Duration;
use toml::Spanned;

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

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_RESEND_LABEL: &str = "Re-send code";
const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);

/// Parses and validates one definition file. `origin` only names the file in messages.
///
/// Errors come back sorted by position, like a compiler's, whatever check found them.
pub fn load(origin: &str, source: &str) -> Result<Definition, DefinitionErrors> {
    let fail = |errors| DefinitionErrors {
        origin: origin.to_owned(),
        errors,
    };
    let raw = match toml::from_str::<RawDefinition>(source) {
        Ok(raw) => raw,
        Err(e) => return Err(fail(vec![parse_error(source, &e)])),
    };
    let mut check = Check {
        source,
        errors: Vec::new(),
    };
    let definition = check.definition(raw);
    let mut errors = check.errors;
    errors.sort_by_key(|e| (e.line, e.column));
    match definition {
        Some(definition) if errors.is_empty() => Ok(definition),
        // Every `None` above is paired with a reported error; this arm keeps a loader bug
        // from ever passing a half-built definition off as valid.
        _ if errors.is_empty() => Err(fail(vec![DefinitionError {
            line: 1,
            column: 1,
            message: "the definition could not be built".into(),
            hint: "this is a bug in Passage's loader; please report it with this file".into(),
        }])),
        _ => Err(fail(errors)),
    }
}

/// Turns a TOML or serde error into one located error. Serde's wording names Rust types
/// (`i64`, `struct RawResend`); the hint says what to write in the file instead.
fn parse_error(source: &str, e: &toml::de::Error) -> DefinitionError {
    let (line, column) = e.span().map_or((1, 1), |s| line_column(source, s.start));
    let raw = e.message();
    let mut message = raw.replace("expected i64", "expected a whole number");
    if let Some(at) = message.find("expected struct Raw") {
        message.truncate(at);
        message.push_str("expected a table");
    }
    let hint = if raw.starts_with("unknown field") {
        "fix the spelling or remove the key; the keys each table accepts are listed in workflows/README.md"
    } else if raw.contains("duplicate key") {
        "a key may appear only once per table; remove one of them"
    } else if raw.contains("expected i64") {
        "write a whole number without quotes, e.g. `digits = 6`"
    } else if raw.contains("expected a string") {
        "write text in double quotes, e.g. `lifetime = \"5m\"`"
    } else if raw.contains("expected a boolean") {
        "write `true` or `false`"
    } else if raw.contains("expected a sequence") {
        "write a list: each step as a `[[steps]]` table, other lists as `[ ... ]`"
    } else if raw.contains("expected struct") {
        "write a table, e.g. `resend = { max = 3 }`"
    } else if raw.contains("string, expected `\"`") {
        "close the text with a double quote on the same line"
    } else if raw.contains("must be quoted") {
        "put text in double quotes, e.g. `next = \"email-code\"`"
    } else {
        "fix the TOML syntax here (workflows/README.md has a complete example file)"
    };
    DefinitionError {
        line,
        column,
        message,
        hint: hint.into(),
    }
}

/// 1-based line and column (in characters) of a byte offset. Tolerates any offset so a
/// wrong span can only misplace a message, never panic.
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(source.len());
    while !source.is_char_boundary(end) {
        end -= 1;
    }
    let before = source.get(..end).unwrap_or_default();
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).unwrap_or_default().chars().count() + 1;
    (before.matches('\n').count() + 1, column)
}

/// The six step kinds, and which keys (besides `id`, `kind` and `prompt`) each one takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Identify,
    Code,
    Choose,
    Voice,
    SetPassword,
    Complete,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Identify,
        Kind::Code,
        Kind::Choose,
        Kind::Voice,
        Kind::SetPassword,
        Kind::Complete,
    ];

    fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Identify => "identify",
            Kind::Code => "code",
            Kind::Choose => "choose",
            Kind::Voice => "voice",
            Kind::SetPassword => "set-password",
            Kind::Complete => "complete",
        }
    }

    fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Identify => &["action", "next"],
            Kind::Code => &[
                "channel",
                "digits",
                "lifetime",
                "max_attempts",
                "resend",
                "next",
            ],
            Kind::Choose => &["options"],
            Kind::Voice => &[
                "confirm",
                "digits",
                "lifetime",
                "max_calls",
                "max_attempts",
                "next",
            ],
            Kind::SetPassword => &["policy", "next"],
            Kind::Complete => &["tiles"],
        }
    }
}

fn channel(name: &str) -> Option<CodeChannel> {
    match name {
        "email" => Some(CodeChannel::Email),
        "sms" => Some(CodeChannel::Sms),
        _ => None,
    }
}

/// The table a value belongs to: its name for messages, and where to point when it lacks a
/// required key.
struct Table {
    name: String,
    span: Range<usize>,
}

/// What every step may refer to: the step ids (in file order, first of each) and the policy
/// names.
struct Names<'a> {
    steps: &'a [String],
    policies: &'a [String],
}

/// Stage 2: collects every error instead of stopping at the first.
struct Check<'s> {
    source: &'s str,
    errors: Vec<DefinitionError>,
}

impl Check<'_> {
    fn error(&mut self, span: &Range<usize>, message: impl Into<String>, hint: impl Into<String>) {
        let (line, column) = line_column(self.source, span.start);
        self.errors.push(DefinitionError {
            line,
            column,
            message: message.into(),
            hint: hint.into(),
        });
    }

    fn missing<T>(&mut self, table: &Table, field: &str, example: &str) -> Option<T> {
        self.error(
            &table.span,
            format!("{} has no `{field}`", table.name),
            format!("add `{field} = {example}`"),
        );
        None
    }

    /// Required, non-blank text.
    fn text(
        &mut self,
        value: &Option<Spanned<String>>,
        table: &Table,
        field: &str,
        example: &str,
    ) -> Option<String> {
        let Some(value) = value else {
            return self.missing(table, field, example);
        };
        if value.get_ref().trim().is_empty() {
            self.error(
                &value.span(),
                format!("`{field}` of {} is empty", table.name),
                format!("write the text, e.g. `{field} = {example}`"),
            );
            return None;
        }
        Some(value.get_ref().clone())
    }

    /// Required identifier: ids end up in URLs, events and logs, so they stay plain.
    fn ident(
        &mut self,
        value: &Option<Spanned<String>>,
        table: &Table,
        field: &str,
        example: &str,
    ) -> Option<String> {
        let Some(value) = value else {
            return self.missing(table, field, example);
        };
        let s = value.get_ref();
        let plain = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-';
        if s.is_empty() || !s.bytes().all(plain) {
            self.error(
                &value.span(),
                format!("`{field} = {s:?}` in {} is not a valid id", table.name),
                format!("use lowercase letters, digits and dashes, e.g. `{field} = {example}`"),
            );
            return None;
        }
        Some(s.clone())
    }

    /// A whole number in `range`; `default` is used when the key is absent, and without one
    /// the key is required.
    fn int(
        &mut self,
        value: &Option<Spanned<i64>>,
        default: Option<i64>,
        table: &Table,
        field: &str,
        range: RangeInclusive<i64>,
        why: &str,
    ) -> Option<i64> {
        let Some(value) = value else {
            return match default {
                Some(default) => Some(default),
                None => self.missing(table, field, &range.start().to_string()),
            };
        };
        let n = *value.get_ref();
        if !range.contains(&n) {
            self.error(
                &value.span(),
                format!("`{field} = {n}` in {} is out of range", table.name),
                format!(
                    "use a number from {} to {} ({why})",
                    range.start(),
                    range.end()
                ),
            );
            return None;
        }
        Some(n)
    }

    fn duration(
        &mut self,
        value: &Spanned<String>,
        table: &Table,
        field: &str,
    ) -> Option<Duration> {
        let parsed = parse_duration(value.get_ref());
        if parsed.is_none() {
            self.error(
                &value.span(),
                format!(
                    "`{field} = {:?}` in {} is not a duration",
                    value.get_ref(),
                    table.name
                ),
                "write a duration like 30s, 5m or 1h",
            );
        }
        parsed
    }

    /// A required duration within `range`.
    fn duration_in(
        &mut self,
        value: &Option<Spanned<String>>,
        table: &Table,
        field: &str,
        example: &str,
        range: RangeInclusive<Duration>,
        why: &str,
    ) -> Option<Duration> {
        let Some(value) = value else {
            return self.missing(table, field, example);
        };
        let d = self.duration(value, table, field)?;
        if !range.contains(&d) {
            self.error(
                &value.span(),
                format!(
                    "`{field} = {:?}` in {} is out of range",
                    value.get_ref(),
                    table.name
                ),
                format!(
                    "use a duration from {} to {} ({why})",
                    format_duration(*range.start()),
                    format_duration(*range.end())
                ),
            );
            return None;
        }
        Some(d)
    }

    /// A required `next` that names a step.
    fn next(
        &mut self,
        value: &Option<Spanned<String>>,
        table: &Table,
        names: &Names,
    ) -> Option<StepId> {
        let Some(value) = value else {
            self.error(
                &table.span,
                format!("{} has no `next`", table.name),
                format!(
                    "add `next = \"<step id>\"` naming one of: {}",
                    names.steps.join(", ")
                ),
            );
            return None;
        };
        let target = value.get_ref();
        if !names.steps.contains(target) {
            self.error(
                &value.span(),
                format!(
                    "{} names `next = {target:?}`, which is not a step",
                    table.name
                ),
                format!("use one of: {}", names.steps.join(", ")),
            );
            return None;
        }
        Some(StepId(target.clone()))
    }

    fn definition(&mut self, raw: RawDefinition) -> Option<Definition> {
        let doc = Table {
            name: "the definition".into(),
            span: 0..0,
        };
        let id = self.ident(&raw.id, &doc, "id", "\"password-reset\"");
        let version = self.int(
            &raw.version,
            None,
            &doc,
            "version",
            1..=i64::from(u32::MAX),
            "versions start at 1",
        );
        let title = self.text(&raw.title, &doc, "title", "\"Reset your password\"");
        let lifetime = self.duration_in(
            &raw.lifetime,
            &doc,
            "lifetime",
            "\"15m\"",
            MINUTE..=DAY,
            "R30: a journey expires within 1m to 24h",
        );
        let policies: Vec<(String, Option<PasswordPolicy>)> = raw
            .policies
            .iter()
            .map(|(name, p)| (name.clone(), self.policy(name, p)))
            .collect();
        let policy_names: Vec<String> = policies.iter().map(|(n, _)| n.clone()).collect();
        let steps = self.steps(raw.steps, raw.start.as_ref(), &doc, &policy_names);

        let content_hash = Sha256::digest(self.source.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let (start, steps) = steps?;
        Some(Definition {
            id: id?,
            version: u32::try_from(version?).ok()?,
            title: title?,
            content_hash,
            source: self.source.to_owned(),
            lifetime: lifetime?,
            start,
            steps,
            policies: policies
                .into_iter()
                .map(|(name, p)| p.map(|p| (name, p)))
                .collect::<Option<BTreeMap<_, _>>>()?,
        })
    }

    /// Checks every step, then `start`, then the graph; returns the start and the steps.
    fn steps(
        &mut self,
        raw: Option<Spanned<Vec<Spanned<RawStep>>>>,
        start: Option<&Spanned<String>>,
        doc: &Table,
        policies: &[String],
    ) -> Option<(StepId, Vec<Step>)> {
        let hint = "add `[[steps]]` tables: an identify step, the verification steps, \
                    a set-password step and a complete step";
        let Some(raw) = raw else {
            self.error(&doc.span, "the definition has no steps", hint);
            return None;
        };
        if raw.get_ref().is_empty() {
            self.error(&raw.span(), "the definition has no steps", hint);
            return None;
        }
        let raw = raw.into_inner();

        let mut ids: Vec<String> = Vec::new();
        let mut first_line: HashMap<String, usize> = HashMap::new();
        let mut duplicates = false;
        for id in raw.iter().filter_map(|s| s.get_ref().id.as_ref()) {
            let (line, _) = line_column(self.source, id.span().start);
            match first_line.get(id.get_ref()) {
                Some(first) => {
                    duplicates = true;
                    let message = format!("step id `{}` is used twice", id.get_ref());
                    let hint = format!(
                        "give each step its own id (the first `{}` is on line {first})",
                        id.get_ref()
                    );
                    self.error(&id.span(), message, hint);
                }
                None => {
                    first_line.insert(id.get_ref().clone(), line);
                    ids.push(id.get_ref().clone());
                }
            }
        }

        let names = Names {
            steps: &ids,
            policies,
        };
        let mut nodes = Vec::new();
        let mut steps = Vec::new();
        for (i, s) in raw.iter().enumerate() {
            let (node, step) = self.step(s, i + 1, &names);
            nodes.push(node);
            steps.push(step);
        }
        let start = self.start(start, &raw, doc, &ids);

        let nodes: Option<Vec<Node>> = nodes.into_iter().collect();
        if let (Some(nodes), Some(start), false) = (&nodes, start, duplicates) {
            self.graph(nodes, start);
        }
        let start = StepId(raw.get(start?)?.get_ref().id.as_ref()?.get_ref().clone());
        Some((start, steps.into_iter().collect::<Option<_>>()?))
    }

    /// `start` must name an identify step; returns its index.
    fn start(
        &mut self,
        value: Option<&Spanned<String>>,
        raw: &[Spanned<RawStep>],
        doc: &Table,
        ids: &[String],
    ) -> Option<usize> {
        let Some(value) = value else {
            return self.missing(doc, "start", "\"email\"");
        };
        let name = value.get_ref();
        let kind_of = |s: &Spanned<RawStep>| {
            let kind = s.get_ref().kind.as_ref()?;
            Kind::parse(kind.get_ref())
        };
        let found = raw.iter().position(|s| {
            let id = s.get_ref().id.as_ref();
            id.is_some_and(|id| id.get_ref() == name)
        });
        let Some(index) = found else {
            self.error(
                &value.span(),
                format!("`start = {name:?}` is not a step"),
                format!("use one of: {}", ids.join(", ")),
            );
            return None;
        };
        match raw.get(index).and_then(kind_of) {
            Some(Kind::Identify) => Some(index),
            Some(kind) => {
                let identify: Vec<&str> = raw
                    .iter()
                    .filter(|s| kind_of(s) == Some(Kind::Identify))
                    .filter_map(|s| s.get_ref().id.as_ref().map(|id| id.get_ref().as_str()))
                    .collect();
                let hint = if identify.is_empty() {
                    "add an identify step that asks for the email address, and start there"
                        .to_owned()
                } else {
                    format!("start at an identify step: {}", identify.join(", "))
                };
                self.error(
                    &value.span(),
                    format!(
                        "`start = {name:?}` is a `{}` step; a journey must start with an identify step",
                        kind.name()
                    ),
                    hint,
                );
                None
            }
            // An unknown kind has been reported on the step itself.
            None => None,
        }
    }

    fn step(
        &mut self,
        raw: &Spanned<RawStep>,
        number: usize,
        names: &Names,
    ) -> (Option<Node>, Option<Step>) {
        let s = raw.get_ref();
        let name = match &s.id {
            Some(id) => format!("step `{}`", id.get_ref()),
            None => format!("step #{number}"),
        };
        let t = Table {
            name,
            span: raw.span(),
        };
        let id = self.ident(&s.id, &t, "id", "\"email-code\"");
        let prompt = self.text(
            &s.prompt,
            &t,
            "prompt",
            "\"<what the person is asked to do>\"",
        );
        let kinds = Kind::ALL.map(Kind::name).join(", ");
        let kind = match &s.kind {
            None => {
                self.error(
                    &t.span,
                    format!("{} has no `kind`", t.name),
                    format!("add `kind = \"...\"` with one of: {kinds}"),
                );
                None
            }
            Some(k) => {
                let kind = Kind::parse(k.get_ref());
                if kind.is_none() {
                    self.error(
                        &k.span(),
                        format!("{} has unknown kind `{}`", t.name, k.get_ref()),
                        format!("use one of: {kinds}"),
                    );
                }
                kind
            }
        };
        let Some(kind) = kind else {
            return (None, None);
        };
        for (field, span) in s.kind_fields() {
            if !kind.fields().contains(&field) {
                self.error(
                    &span,
                    format!("`{field}` is not a field of a `{}` step", kind.name()),
                    format!(
                        "remove it; a `{}` step has: id, kind, prompt, {}",
                        kind.name(),
                        kind.fields().join(", ")
                    ),
                );
            }
        }
        let step_kind = match kind {
            Kind::Identify => self.identify(s, &t, names),
            Kind::Code => self.code(s, &t, names),
            Kind::Choose => self.choose(s, &t, names),
            Kind::Voice => self.voice(s, &t, names),
            Kind::SetPassword => self.set_password(s, &t, names),
            Kind::Complete => self.complete(s, &t),
        };
        let stall_after = match &s.stall_after {
            None => Some(None),
            Some(_) => self
                .duration_in(
                    &s.stall_after,
                    &t,
                    "stall_after",
                    "\"3m\"",
                    Duration::from_secs(10)..=Duration::from_secs(24 * 3600),
                    "a nudge sooner than 10 seconds is noise, later than a day is never",
                )
                .map(Some),
        };
        let node = Node::of(raw, kind, names.steps);
        let step = match (id, prompt, step_kind, stall_after) {
            (Some(id), Some(prompt), Some(kind), Some(stall_after)) => Some(Step {
                id: StepId(id),
                prompt,
                kind,
                stall_after,
            }),
            _ => None,
        };
        (node, step)
    }
}
