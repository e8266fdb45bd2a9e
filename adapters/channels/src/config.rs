//! Channel configuration: which provider serves each channel, and their settings.
//!
//! Deserializable with serde (TOML or JSON, `deny_unknown_fields` so a typo is an error) or
//! built from environment variables ([`ChannelsConfig::from_env`]). Secrets are never
//! written in the configuration itself: a [`SecretSource`] names an environment variable or
//! a file, read once at start-up into a [`Secret`] whose `Debug` is redacted (R50).

use crate::Error;
use crate::breaker::BreakerConfig;
use crate::limits::LimitsConfig;
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Where a secret comes from: `{ env = "PASSAGE_TWILIO_AUTH_TOKEN" }` or
/// `{ file = "/run/secrets/twilio-token" }`. Printing it shows the name or the path only.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

impl SecretSource {
    /// Reads the secret. Trailing line breaks of a file are dropped (editors add one).
    pub fn resolve(&self) -> Result<Secret, Error> {
        let (name, value) = match self {
            SecretSource::Env(var) => (
                format!("${var}"),
                std::env::var(var).map_err(|e| Error::Secret {
                    name: format!("${var}"),
                    reason: e.to_string(),
                })?,
            ),
            SecretSource::File(path) => (
                path.display().to_string(),
                std::fs::read_to_string(path)
                    .map_err(|e| Error::Secret {
                        name: path.display().to_string(),
                        reason: e.to_string(),
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            ),
        };
        if value.is_empty() {
            return Err(Error::Secret {
                name,
                reason: "it is empty".into(),
            });
        }
        Ok(Secret(value))
    }
}

/// A secret in memory. `Debug` never shows it; [`Secret::expose`] is the one way in.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Which implementation delivers email.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailProvider {
    /// The development outbox (a local SQLite file).
    #[default]
    Dev,
    Smtp,
}

/// Which implementation delivers SMS or voice calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhoneProvider {
    #[default]
    Dev,
    Twilio,
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, which is required (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption. Only sensible for a relay on the same host or a sidecar: credentials
    /// over `plain` to another host are refused.
    Plain,
}

impl SmtpSecurity {
    pub fn default_port(self) -> u16 {
        match self {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::Plain => 25,
        }
    }
}

fn default_portal() -> String {
    "Enterprise Customer Portal".into()
}
fn default_smtp_timeout() -> u64 {
    30
}

/// The SMTP relay that sends every email.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    /// Defaults by `security`: 587, 465 or 25.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub security: SmtpSecurity,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<SecretSource>,
    /// `"Enterprise Customer Portal <no-reply@portal.example>"`. Its domain must be the one
    /// SPF, DKIM and DMARC are set up for (R23).
    pub from: String,
    #[serde(default)]
    pub reply_to: Option<String>,
    /// Shown in the email frame.
    #[serde(default = "default_portal")]
    pub portal_name: String,
    #[serde(default = "default_smtp_timeout")]
    pub timeout_secs: u64,
    /// An extra trusted root (PEM) for a relay with an internal CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A directory with `email.txt` and `email.html` replacing the built-in templates.
    #[serde(default)]
    pub templates_dir: Option<PathBuf>,
}

fn default_api_base() -> String {
    "https://api.twilio.com".into()
}
fn default_true() -> bool {
    true
}
fn default_ring() -> u32 {
    30
}
fn default_gather() -> u32 {
    10
}
fn default_request_timeout() -> u64 {
    15
}

/// A Twilio account (or a compatible provider) for SMS and voice calls.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    /// `https://api.twilio.com`; a compatible provider or a test double elsewhere.
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// `AC` and 32 hex digits.
    pub account_sid: String,
    /// Authenticates API calls and signs webhooks (X-Twilio-Signature).
    pub auth_token: SecretSource,
    /// Sender number (E.164) for SMS, unless `messaging_service_sid` is set.
    #[serde(default)]
    pub from: Option<String>,
    /// `MG` and 32 hex digits: the service picks a sender from its pool.
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
    /// Caller id for calls; defaults to `from`.
    #[serde(default)]
    pub voice_from: Option<String>,
    /// The public HTTPS origin (and optional path prefix) under which
    /// `/webhooks/twilio/...` is reachable. Callback URLs and signature checks use it,
    /// never the request's Host header (R22).
    pub public_base_url: String,
    /// Ask for message status callbacks (delivered, undelivered, failed).
    #[serde(default = "default_true")]
    pub message_status_callbacks: bool,
    /// How long a call rings before it counts as unanswered (Twilio `Timeout`, 5–600 s).
    #[serde(default = "default_ring")]
    pub ring_timeout_secs: u32,
    /// How long the call waits for a key after the prompt.
    #[serde(default = "default_gather")]
    pub gather_timeout_secs: u32,
    /// Answering machine detection, so a voicemail is reported as such (R26).
    #[serde(default = "default_true")]
    pub machine_detection: bool,
    /// `<Say voice=..>`, e.g. `Polly.Olivia`.
    #[serde(default)]
    pub say_voice: Option<String>,
    /// `<Say language=..>`, e.g. `en-AU`.
    #[serde(default)]
    pub say_language: Option<String>,
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
}

/// Which incoming-webhook service receives support alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertWebhookKind {
    /// A Discord channel webhook (`https://discord.com/api/webhooks/<id>/<token>`).
    Discord,
    /// A Slack incoming webhook (`https://hooks.slack.com/services/T…/B…/…`).
    Slack,
}

impl AlertWebhookKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertWebhookKind::Discord => "discord",
            AlertWebhookKind::Slack => "slack",
        }
    }
}

fn default_alert_timeout() -> u64 {
    10
}

/// Support alerts through a Discord or Slack incoming webhook, for deployments without a
/// chat bot (no buttons there: the alert links to the journey in the support console).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// The webhook URL. Its path holds the webhook's token, so it is a secret:
    /// `{ env = "PASSAGE_ALERT_WEBHOOK_URL" }` or `{ file = "/run/secrets/alert-webhook" }`.
    pub webhook_url: SecretSource,
    /// `discord` or `slack`; inferred from the URL's host (`discord.com`,
    /// `hooks.slack.com`) when omitted.
    #[serde(default)]
    pub kind: Option<AlertWebhookKind>,
    /// Mentioned when an alert is escalated: a Discord role id (digits) or a Slack user
    /// group id (`S…`). Without it nobody is ever mentioned.
    #[serde(default)]
    pub mention_role: Option<String>,
    /// The support console's origin (and path prefix): alerts link to
    /// `{console_url}/console/journeys/{journey id}`. Without it alerts carry no link.
    #[serde(default)]
    pub console_url: Option<String>,
    #[serde(default = "default_alert_timeout")]
    pub request_timeout_secs: u64,
}

/// Everything the channel stack needs. The default is the development setup: every
/// channel goes to the dev outbox, with the default limits.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelsConfig {
    pub email: EmailProvider,
    pub sms: PhoneProvider,
    pub voice: PhoneProvider,
    pub smtp: Option<SmtpConfig>,
    pub twilio: Option<TwilioConfig>,
    /// Support alerts through an incoming webhook instead of the dev outbox.
    pub alerts: Option<AlertsConfig>,
    pub limits: LimitsConfig,
    pub breaker: BreakerConfig,
}

/// The largest provider timeout accepted: a worker's lease must be longer (see
/// `passage_runtime::least_lease`), and a node that dies keeps its work that long.
pub const MAX_PROVIDER_TIMEOUT_SECS: u64 = 300;

/// A provider's timeout from its setting (`what`, e.g. `smtp timeout_secs`): 1 to
/// [`MAX_PROVIDER_TIMEOUT_SECS`] seconds. 0 would fail every send; hours would hold a dead
/// node's claims that long.
pub(crate) fn provider_timeout(what: &str, secs: u64) -> Result<Duration, Error> {
    if (1..=MAX_PROVIDER_TIMEOUT_SECS).contains(&secs) {
        Ok(Duration::from_secs(secs))
    } else {
        Err(Error::Config(format!(
            "{what} must be 1 to {MAX_PROVIDER_TIMEOUT_SECS} seconds, not {secs}"
        )))
    }
}

impl ChannelsConfig {
    /// The configured provider that may wait longest for one answer before its own timeout
    /// gives up, and that timeout: a worker's lease must leave a delivery at least this
    /// long. `None` when everything goes to the dev outbox.
    pub fn slowest_timeout(&self) -> Option<(&'static str, Duration)> {
        let smtp = self
            .smtp
            .as_ref()
            .filter(|_| self.email == EmailProvider::Smtp)
            // Per SMTP command: a send of several commands may take longer, and the worker
            // bounds the whole (`passage_runtime::delivery_budget`).
            .map(|c| ("SMTP (smtp.timeout_secs)", c.timeout_secs));
        let twilio = self
            .twilio
            .as_ref()
            .filter(|_| self.sms == PhoneProvider::Twilio || self.voice == PhoneProvider::Twilio)
            .map(|c| {
                (
                    "Twilio (twilio.request_timeout_secs)",
                    c.request_timeout_secs,
                )
            });
        // An update to a Discord message whose message was deleted is two requests, an
        // edit and then a new post, each with its own timeout.
        let alerts = self.alerts.as_ref().map(|c| {
            (
                "the alert webhook (2 × alerts.request_timeout_secs: an edit, then a new post)",
                c.request_timeout_secs.saturating_mul(2),
            )
        });
        [smtp, twilio, alerts]
            .into_iter()
            .flatten()
            .max_by_key(|(_, secs)| *secs)
            .map(|(name, secs)| (name, Duration::from_secs(secs.max(1))))
    }

    /// Parses a TOML document (the format of `PASSAGE_CHANNELS_CONFIG`).
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        toml::from_str(text).map_err(|e| Error::Config(e.to_string()))
    }

    /// Reads the configuration from the process environment; see
    /// [`ChannelsConfig::from_lookup`] for the names.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// Builds the configuration from variables (`lookup` returns a variable's value).
    ///
    /// `PASSAGE_CHANNELS_CONFIG` names a TOML file holding the whole configuration; when it
    /// is set, it is used and the other variables below are ignored (secrets are still
    /// named by their `env`/`file` source in that file). Otherwise:
    ///
    /// * `PASSAGE_EMAIL_CHANNEL` = `dev` | `smtp`; `PASSAGE_SMS_CHANNEL`,
    ///   `PASSAGE_VOICE_CHANNEL` = `dev` | `twilio`.
    /// * SMTP: `PASSAGE_SMTP_HOST`, `PASSAGE_SMTP_PORT`, `PASSAGE_SMTP_SECURITY`
    ///   (`starttls` | `tls` | `plain`), `PASSAGE_SMTP_USERNAME`, `PASSAGE_SMTP_PASSWORD` or
    ///   `PASSAGE_SMTP_PASSWORD_FILE`, `PASSAGE_SMTP_FROM`, `PASSAGE_SMTP_REPLY_TO`,
    ///   `PASSAGE_SMTP_CA_FILE`, `PASSAGE_SMTP_TEMPLATES`, `PASSAGE_PORTAL_NAME`.
    /// * Twilio: `PASSAGE_TWILIO_ACCOUNT_SID`, `PASSAGE_TWILIO_AUTH_TOKEN` or
    ///   `PASSAGE_TWILIO_AUTH_TOKEN_FILE`, `PASSAGE_TWILIO_FROM`,
    ///   `PASSAGE_TWILIO_MESSAGING_SERVICE_SID`, `PASSAGE_TWILIO_VOICE_FROM`,
    ///   `PASSAGE_PUBLIC_BASE_URL`, `PASSAGE_TWILIO_API_BASE`.
    /// * Support alert webhook: `PASSAGE_ALERT_WEBHOOK_URL` or
    ///   `PASSAGE_ALERT_WEBHOOK_URL_FILE` (setting one enables the `[alerts]` section),
    ///   `PASSAGE_ALERT_WEBHOOK_KIND` (`discord` | `slack`), `PASSAGE_ALERT_MENTION_ROLE`,
    ///   `PASSAGE_CONSOLE_URL`.
    /// * Limits: `PASSAGE_PHONE_PREFIXES` (comma-separated, e.g. `+61,+64`).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        if let Some(path) = lookup("PASSAGE_CHANNELS_CONFIG") {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::Config(format!("cannot read {path}: {e}")))?;
            return Self::from_toml(&text);
        }
        let parse = |name: &str, value: String| -> Result<String, Error> {
            // Accept the same words as the TOML form, case-insensitively.
            let v = value.trim().to_ascii_lowercase();
            if v.is_empty() {
                return Err(Error::Config(format!("{name} is empty")));
            }
            Ok(v)
        };
        let mut config = ChannelsConfig::default();
        if let Some(v) = lookup("PASSAGE_EMAIL_CHANNEL") {
            config.email = match parse("PASSAGE_EMAIL_CHANNEL", v)?.as_str() {
                "dev" => EmailProvider::Dev,
                "smtp" => EmailProvider::Smtp,
                other => {
                    return Err(Error::Config(format!(
                        "PASSAGE_EMAIL_CHANNEL must be dev or smtp, not {other}"
                    )));
                }
            };
        }
        for (name, slot) in [
            ("PASSAGE_SMS_CHANNEL", &mut config.sms),
            ("PASSAGE_VOICE_CHANNEL", &mut config.voice),
        ] {
            if let Some(v) = lookup(name) {
                *slot = match parse(name, v)?.as_str() {
                    "dev" => PhoneProvider::Dev,
                    "twilio" => PhoneProvider::Twilio,
                    other => {
                        return Err(Error::Config(format!(
                            "{name} must be dev or twilio, not {other}"
                        )));
                    }
                };
            }
        }
        let secret = |var: &str| {
            let file_var = format!("{var}_FILE");
            match (lookup(var), lookup(&file_var)) {
                (Some(_), Some(_)) => {
                    Err(Error::Config(format!("set {var} or {file_var}, not both")))
                }
                (Some(_), None) => Ok(Some(SecretSource::Env(var.to_owned()))),
                (None, Some(path)) => Ok(Some(SecretSource::File(path.into()))),
                (None, None) => Ok(None),
            }
        };
        if let Some(host) = lookup("PASSAGE_SMTP_HOST") {
            let security = match lookup("PASSAGE_SMTP_SECURITY") {
                None => SmtpSecurity::default(),
                Some(v) => match parse("PASSAGE_SMTP_SECURITY", v)?.as_str() {
                    "starttls" => SmtpSecurity::Starttls,
                    "tls" => SmtpSecurity::Tls,
                    "plain" => SmtpSecurity::Plain,
                    other => {
                        return Err(Error::Config(format!(
                            "PASSAGE_SMTP_SECURITY must be starttls, tls or plain, not {other}"
                        )));
                    }
                },
            };
            let port = lookup("PASSAGE_SMTP_PORT")
                .map(|p| {
                    p.trim()
                        .parse::<u16>()
                        .map_err(|_| Error::Config(format!("PASSAGE_SMTP_PORT {p} is no port")))
                })
                .transpose()?;
            config.smtp = Some(SmtpConfig {
                host,
                port,
                security,
                username: lookup("PASSAGE_SMTP_USERNAME"),
                password: secret("PASSAGE_SMTP_PASSWORD")?,
                from: lookup("PASSAGE_SMTP_FROM").ok_or_else(|| {
                    Error::Config("PASSAGE_SMTP_FROM is required with PASSAGE_SMTP_HOST".into())
                })?,
                reply_to: lookup("PASSAGE_SMTP_REPLY_TO"),
                portal_name: lookup("PASSAGE_PORTAL_NAME").unwrap_or_else(default_portal),
                timeout_secs: default_smtp_timeout(),
                ca_file: lookup("PASSAGE_SMTP_CA_FILE").map(Into::into),
                templates_dir: lookup("PASSAGE_SMTP_TEMPLATES").map(Into::into),
            });
        }
        if let Some(account_sid) = lookup("PASSAGE_TWILIO_ACCOUNT_SID") {
            config.twilio = Some(TwilioConfig {
                api_base: lookup("PASSAGE_TWILIO_API_BASE").unwrap_or_else(default_api_base),
                account_sid,
                auth_token: secret("PASSAGE_TWILIO_AUTH_TOKEN")?.ok_or_else(|| {
                    Error::Config(
                        "PASSAGE_TWILIO_AUTH_TOKEN or PASSAGE_TWILIO_AUTH_TOKEN_FILE is required"
                            .into(),
                    )
                })?,
                from: lookup("PASSAGE_TWILIO_FROM"),
                messaging_service_sid: lookup("PASSAGE_TWILIO_MESSAGING_SERVICE_SID"),
                voice_from: lookup("PASSAGE_TWILIO_VOICE_FROM"),
                public_base_url: lookup("PASSAGE_PUBLIC_BASE_URL").ok_or_else(|| {
                    Error::Config("PASSAGE_PUBLIC_BASE_URL is required for Twilio".into())
                })?,
                message_status_callbacks: true,
                ring_timeout_secs: default_ring(),
                gather_timeout_secs: default_gather(),
                machine_detection: true,
                say_voice: None,
                say_language: None,
                request_timeout_secs: default_request_timeout(),
            });
        }
        let alert_kind = match lookup("PASSAGE_ALERT_WEBHOOK_KIND") {
            None => None,
            Some(v) => Some(match parse("PASSAGE_ALERT_WEBHOOK_KIND", v)?.as_str() {
                "discord" => AlertWebhookKind::Discord,
                "slack" => AlertWebhookKind::Slack,
                other => {
                    return Err(Error::Config(format!(
                        "PASSAGE_ALERT_WEBHOOK_KIND must be discord or slack, not {other}"
                    )));
                }
            }),
        };
        let mention_role = lookup("PASSAGE_ALERT_MENTION_ROLE").map(|r| r.trim().to_owned());
        match secret("PASSAGE_ALERT_WEBHOOK_URL")? {
            Some(webhook_url) => {
                config.alerts = Some(AlertsConfig {
                    webhook_url,
                    kind: alert_kind,
                    mention_role,
                    console_url: lookup("PASSAGE_CONSOLE_URL"),
                    request_timeout_secs: default_alert_timeout(),
                });
            }
            None => {
                // A half-configured webhook would silently leave alerts in the dev outbox.
                for (name, set) in [
                    ("PASSAGE_ALERT_WEBHOOK_KIND", alert_kind.is_some()),
                    ("PASSAGE_ALERT_MENTION_ROLE", mention_role.is_some()),
                ] {
                    if set {
                        return Err(Error::Config(format!(
                            "{name} is set but PASSAGE_ALERT_WEBHOOK_URL \
                             (or PASSAGE_ALERT_WEBHOOK_URL_FILE) is not"
                        )));
                    }
                }
            }
        }
        if let Some(prefixes) = lookup("PASSAGE_PHONE_PREFIXES") {
            config.limits.allowed_prefixes = prefixes
                .split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect();
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn secrets_are_redacted_in_debug() {
        let s = Secret::new("hunter2-token");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        let c = ChannelsConfig::from_lookup(|n| {
            HashMap::from([
                ("PASSAGE_SMS_CHANNEL", "twilio"),
                (
                    "PASSAGE_TWILIO_ACCOUNT_SID",
                    "AC0123456789abcdef0123456789abcdef",
                ),
                ("PASSAGE_TWILIO_AUTH_TOKEN", "hunter2-token"),
                ("PASSAGE_PUBLIC_BASE_URL", "https://portal.example"),
                ("PASSAGE_PHONE_PREFIXES", "+61, +64"),
            ])
            .get(n)
            .map(|v| v.to_string())
        })
        .unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("PASSAGE_TWILIO_AUTH_TOKEN"), "{debug}");
        assert_eq!(c.sms, PhoneProvider::Twilio);
        assert_eq!(c.limits.allowed_prefixes, vec!["+61", "+64"]);
    }

    #[test]
    fn toml_form_with_secret_sources() {
        let c = ChannelsConfig::from_toml(
            r#"
            email = "smtp"
            [smtp]
            host = "smtp.example.net"
            username = "portal"
            password = { file = "/run/secrets/smtp" }
            from = "Portal <no-reply@portal.example>"
            [limits]
            allowed_prefixes = ["+61"]
            [limits.sms]
            per_recipient = { max = 2, window_secs = 3600 }
            "#,
        )
        .unwrap();
        let smtp = c.smtp.unwrap();
        assert_eq!(smtp.security, SmtpSecurity::Starttls);
        assert_eq!(
            smtp.password,
            Some(SecretSource::File("/run/secrets/smtp".into()))
        );
        assert_eq!(c.limits.sms.per_recipient.unwrap().max, 2);
        assert!(ChannelsConfig::from_toml("emial = \"smtp\"").is_err());
    }

    #[test]
    fn provider_timeouts_are_1_to_300_seconds() {
        assert_eq!(
            provider_timeout("smtp timeout_secs", 30).unwrap(),
            Duration::from_secs(30)
        );
        assert!(provider_timeout("x", 1).is_ok() && provider_timeout("x", 300).is_ok());
        for bad in [0, 301, u64::MAX] {
            let e = provider_timeout("smtp timeout_secs", bad)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!(
                    "smtp timeout_secs must be 1 to 300 seconds, not {bad}"
                )),
                "{e}"
            );
        }
    }

    /// Only providers that deliver count: an `[smtp]` table while email goes to the dev
    /// outbox waits on nobody.
    #[test]
    fn the_slowest_timeout_is_that_of_a_provider_in_use() {
        assert_eq!(ChannelsConfig::default().slowest_timeout(), None);
        let config = |email: &str, sms: &str| {
            ChannelsConfig::from_toml(&format!(
                r#"
                email = "{email}"
                sms = "{sms}"
                [smtp]
                host = "smtp.example.net"
                from = "Portal <no-reply@portal.example>"
                timeout_secs = 40
                [twilio]
                account_sid = "AC0123456789abcdef0123456789abcdef"
                auth_token = {{ env = "T" }}
                public_base_url = "https://portal.example"
                "#
            ))
            .unwrap()
            .slowest_timeout()
        };
        assert_eq!(
            config("smtp", "twilio"),
            Some(("SMTP (smtp.timeout_secs)", Duration::from_secs(40)))
        );
        assert_eq!(
            config("dev", "twilio"),
            Some((
                "Twilio (twilio.request_timeout_secs)",
                Duration::from_secs(15)
            ))
        );
        assert_eq!(config("dev", "dev"), None);
        // An alert update may be an edit and then a new post: twice the request timeout.
        let alerts = ChannelsConfig::from_toml(
            r#"
            [alerts]
            webhook_url = { env = "W" }
            request_timeout_secs = 25
            "#,
        )
        .unwrap()
        .slowest_timeout();
        assert_eq!(
            alerts,
            Some((
                "the alert webhook (2 × alerts.request_timeout_secs: an edit, then a new post)",
                Duration::from_secs(50)
            ))
        );
    }

    #[test]
    fn secret_files_lose_their_trailing_newline() {
        let path = std::env::temp_dir().join(format!("passage-secret-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, "tok\n").unwrap();
        let s = SecretSource::File(path.clone()).resolve().unwrap();
        assert_eq!(s.expose(), "tok");
        std::fs::write(&path, "\n").unwrap();
        assert!(SecretSource::File(path.clone()).resolve().is_err());
        let _ = std::fs::remove_file(path);
    }
}
