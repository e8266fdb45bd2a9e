//! Support alerts through a Discord or Slack incoming webhook, for deployments without a
//! chat bot token.
//!
//! * Discord: `POST {url}?wait=true` with `{"content", "allowed_mentions": {"parse": []}}`;
//!   `wait=true` makes Discord answer with the created message, whose `id` is kept by the
//!   alert's dedup key. An update edits that message in place:
//!   `PATCH {url}/messages/{id}`. Mentions are off (`parse: []`, so `@everyone` in a text
//!   never pings); an escalation (`mention`) with a configured role adds `<@&ROLE>` and
//!   `"roles": [ROLE]`, and is posted as a new message because Discord does not notify
//!   mentions added by an edit.
//! * Slack: `POST {url}` with `{"text"}`. Incoming webhooks cannot edit, so an update is a
//!   new message starting with `Update:`; an escalation mentions `<!subteam^ID>` when a
//!   user group is configured. `&`, `<` and `>` in the alert text are escaped, so a text
//!   cannot mention `<!channel>`.
//!
//! Webhooks cannot carry buttons: the alert links to the journey in the support console
//! when `console_url` is configured.
//!
//! The dedup key → Discord message id map lives in memory (bounded). After a restart, or
//! when someone deleted the message, an update is posted as a new message (`Update: …`).
//!
//! Outcomes: 2xx → [`Receipt`]; 429 → `RateLimited` with `Retry-After` (header, or Discord's
//! JSON `retry_after`), as for Twilio; 404 and 410 → `Permanent` ("the webhook no longer
//! exists"); 401/403 → `Permanent` (token revoked); other 4xx → `Permanent`; 5xx, timeouts
//! and connection errors → `Transient`. The webhook URL carries its token and is never
//! logged or put in an error: logs show it masked (`https://discord.com/api/webhooks/1234/***`).

use crate::Error;
use crate::config::{AlertWebhookKind, AlertsConfig, Secret, provider_timeout};
use crate::recent::RecentReceipts;
use crate::scrub::scrub;
use passage_core::ports::{Channel, JourneyId, MessageKind, OutboundMessage, Receipt, SendError};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tracing::{error, info, warn};

/// Discord refuses `content` over 2000 characters; the text is cut to leave room for the
/// mention and the link.
const DISCORD_MAX_CONTENT: usize = 2000;
/// Slack accepts far more, but an alert that long helps nobody.
const SLACK_MAX_TEXT: usize = 3000;
/// Dedup keys whose Discord message id is remembered; the oldest are forgotten first.
const MESSAGE_IDS: usize = 4096;
/// The longest `Retry-After` honoured; a larger value is a broken header.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Discord's JSON error code for a message that does not exist (deleted by someone).
const DISCORD_UNKNOWN_MESSAGE: u64 = 10008;

/// Support alerts through an incoming webhook (a [`Channel`] for `MessageKind::Alert`).
#[derive(Clone)]
pub struct WebhookAlerts {
    http: reqwest::Client,
    settings: Arc<Settings>,
    message_ids: Arc<Mutex<MessageIds>>,
    recent: RecentReceipts,
}

struct Settings {
    kind: AlertWebhookKind,
    /// The full URL: holds the token. Used only to build requests.
    url: Url,
    /// The URL as configured, to redact it from any text that might quote it.
    secret: Secret,
    /// The last path segment (the token), redacted likewise.
    token: String,
    masked: String,
    mention_role: Option<String>,
    console_url: Option<String>,
}

impl fmt::Debug for WebhookAlerts {
    // Never the token (R50).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookAlerts")
            .field("kind", &self.settings.kind)
            .field("url", &self.settings.masked)
            .field("mention_role", &self.settings.mention_role)
            .field("console_url", &self.settings.console_url)
            .finish_non_exhaustive()
    }
}

/// `scheme://host[:port]/path/with/the/last/segment/***`: where a webhook points, without
/// its token (the last path segment for Discord and Slack) or query.
pub fn mask_webhook_url(url: &str) -> String {
    let Ok(parsed) = Url::parse(url) else {
        return "(webhook URL)".into();
    };
    let mut out = format!("{}://{}", parsed.scheme(), parsed.host_str().unwrap_or(""));
    if let Some(port) = parsed.port() {
        out.push_str(&format!(":{port}"));
    }
    let segments: Vec<&str> = parsed
        .path_segments()
        .map(|s| s.filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    for (i, segment) in segments.iter().enumerate() {
        out.push('/');
        out.push_str(if i + 1 == segments.len() {
            "***"
        } else {
            segment
        });
    }
    out
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn infer_kind(host: &str) -> Option<AlertWebhookKind> {
    let host = host.to_ascii_lowercase();
    let under = |domain: &str| host == domain || host.ends_with(&format!(".{domain}"));
    if under("discord.com") || under("discordapp.com") {
        Some(AlertWebhookKind::Discord)
    } else if host == "hooks.slack.com" {
        Some(AlertWebhookKind::Slack)
    } else {
        None
    }
}

/// Checks the role for the service: a Discord role id is a snowflake (digits), a Slack user
/// group id is `S` and upper-case letters or digits.
fn check_role(kind: AlertWebhookKind, role: &str) -> Result<(), Error> {
    let ok = match kind {
        AlertWebhookKind::Discord => {
            (1..=20).contains(&role.len()) && role.bytes().all(|b| b.is_ascii_digit())
        }
        AlertWebhookKind::Slack => {
            (3..=20).contains(&role.len())
                && role.starts_with('S')
                && role
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        }
    };
    if ok {
        return Ok(());
    }
    Err(Error::Config(match kind {
        AlertWebhookKind::Discord => format!(
            "alerts.mention_role (PASSAGE_ALERT_MENTION_ROLE) {role:?} must be a Discord role \
             id: digits only (Server Settings → Roles → Copy Role ID)"
        ),
        AlertWebhookKind::Slack => format!(
            "alerts.mention_role (PASSAGE_ALERT_MENTION_ROLE) {role:?} must be a Slack user \
             group id such as S0123ABCD"
        ),
    }))
}

fn check_console_url(url: &str) -> Result<String, Error> {
    let bad = |why: &str| {
        Error::Config(format!(
            "alerts.console_url (PASSAGE_CONSOLE_URL) {url}: {why}"
        ))
    };
    let parsed = Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(bad("must be an http(s) URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("must not carry a query or a fragment"));
    }
    let s = parsed.as_str().trim_end_matches('/');
    if s.contains(['|', '<', '>']) {
        return Err(bad("must not contain |, < or >"));
    }
    Ok(s.to_owned())
}

/// Cuts `text` to `max` characters, marking the cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Slack's control characters in message text.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// What an alert delivery needs from the message.
struct Alert<'a> {
    journey: JourneyId,
    dedup_key: &'a str,
    text: &'a str,
    update: bool,
    mention: bool,
}

/// An HTTP answer that was not a success.
struct Answer {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: String,
}

#[derive(Deserialize)]
struct DiscordMessage {
    id: Option<String>,
}

#[derive(Deserialize)]
struct DiscordError {
    code: Option<u64>,
    message: Option<String>,
    retry_after: Option<f64>,
}

fn seconds(value: f64) -> Option<Duration> {
    (value.is_finite() && value >= 0.0).then(|| {
        // Whole milliseconds, rounded up: waiting a little longer is harmless.
        let ms = (value * 1000.0)
            .ceil()
            .min(MAX_RETRY_AFTER.as_millis() as f64);
        Duration::from_millis(ms as u64)
    })
}

#[derive(Debug, Default)]
struct MessageIds {
    by_key: HashMap<String, String>,
    order: VecDeque<String>,
}

impl MessageIds {
    fn get(&self, key: &str) -> Option<String> {
        self.by_key.get(key).cloned()
    }

    fn put(&mut self, key: &str, id: String) {
        if self.by_key.insert(key.to_owned(), id).is_none() {
            self.order.push_back(key.to_owned());
        }
        while self.order.len() > MESSAGE_IDS {
            if let Some(old) = self.order.pop_front() {
                self.by_key.remove(&old);
            }
        }
    }

    fn forget(&mut self, key: &str) {
        if self.by_key.remove(key).is_some() {
            self.order.retain(|k| k != key);
        }
    }
}

impl WebhookAlerts {
    /// Reads the webhook URL from its secret source and checks the configuration; every
    /// error names the setting and never quotes the URL.
    pub fn new(config: &AlertsConfig) -> Result<Self, Error> {
        let secret = config.webhook_url.resolve()?;
        let raw = secret.expose().trim().to_owned();
        let bad = |why: String| {
            Error::Config(format!(
                "alerts.webhook_url (PASSAGE_ALERT_WEBHOOK_URL) {why}"
            ))
        };
        let url = Url::parse(&raw).map_err(|e| bad(format!("is not a URL: {e}")))?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("has no host".into()))?
            .to_owned();
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&host) => {}
            "http" => {
                return Err(bad(format!(
                    "must be https: it carries the webhook's token (http is only accepted \
                     for a loopback test server, not {host})"
                )));
            }
            other => return Err(bad(format!("must be https, not {other}"))),
        }
        if url.fragment().is_some() {
            return Err(bad("must not carry a fragment".into()));
        }
        let kind = match (config.kind, infer_kind(&host)) {
            (Some(kind), _) | (None, Some(kind)) => kind,
            (None, None) => {
                return Err(Error::Config(format!(
                    "cannot tell whether the alert webhook at {host} is Discord's or Slack's: \
                     set alerts.kind (PASSAGE_ALERT_WEBHOOK_KIND) to discord or slack"
                )));
            }
        };
        let segments: Vec<String> = url
            .path_segments()
            .map(|s| s.filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default();
        match kind {
            AlertWebhookKind::Discord => {
                // …/webhooks/{id}/{token}, nothing after (not the /slack or /github variants).
                let at = segments.iter().position(|s| s == "webhooks");
                let well_formed = at.is_some_and(|i| {
                    segments.len() == i + 3 && segments[i + 1].bytes().all(|b| b.is_ascii_digit())
                });
                if !well_formed {
                    return Err(bad("is not a Discord webhook URL: it looks like \
                         https://discord.com/api/webhooks/<id>/<token> \
                         (Channel settings → Integrations → Webhooks → Copy Webhook URL)"
                        .into()));
                }
            }
            AlertWebhookKind::Slack => {
                if segments.is_empty() || url.query().is_some() {
                    return Err(bad("is not a Slack incoming webhook URL: it looks like \
                         https://hooks.slack.com/services/T…/B…/…"
                        .into()));
                }
            }
        }
        let mention_role = config
            .mention_role
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(|r| check_role(kind, r).map(|()| r.to_owned()))
            .transpose()?;
        let console_url = config
            .console_url
            .as_deref()
            .map(check_console_url)
            .transpose()?;
        let http = reqwest::Client::builder()
            .timeout(provider_timeout(
                "alerts request_timeout_secs",
                config.request_timeout_secs,
            )?)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("passage/", env!("CARGO_PKG_VERSION")))
            // A redirect would be a misconfiguration; the token stays with its origin.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Config(format!("alert webhook http client: {e}")))?;
        let masked = mask_webhook_url(&raw);
        info!(kind = kind.as_str(), url = %masked, "support alerts go to an incoming webhook");
        Ok(Self {
            http,
            settings: Arc::new(Settings {
                kind,
                token: segments.last().cloned().unwrap_or_default(),
                url,
                secret: Secret::new(raw),
                masked,
                mention_role,
                console_url,
            }),
            message_ids: Arc::default(),
            recent: RecentReceipts::default(),
        })
    }

    pub fn kind(&self) -> AlertWebhookKind {
        self.settings.kind
    }

    /// `discord-webhook` or `slack-webhook`: the route's provider name.
    pub fn provider(&self) -> &'static str {
        match self.settings.kind {
            AlertWebhookKind::Discord => "discord-webhook",
            AlertWebhookKind::Slack => "slack-webhook",
        }
    }

    /// The webhook URL without its token, for logs and start-up output.
    pub fn masked_url(&self) -> &str {
        &self.settings.masked
    }

    /// Removes the webhook URL and its token from a text that might quote them.
    fn redact(&self, text: &str) -> String {
        let s = &self.settings;
        let mut out = text.replace(s.secret.expose(), &s.masked);
        out = out.replace(s.url.as_str(), &s.masked);
        if s.token.len() >= 8 {
            out = out.replace(&s.token, "***");
        }
        out
    }

    fn link(&self, journey: JourneyId) -> Option<String> {
        self.settings
            .console_url
            .as_ref()
            .map(|base| format!("{base}/console/journeys/{journey}"))
    }

    /// The Discord body: mentions off unless this is an escalation and a role is set.
    fn discord_body(&self, alert: &Alert<'_>, as_update: bool) -> Value {
        let role = self
            .settings
            .mention_role
            .as_deref()
            .filter(|_| alert.mention);
        let mut head = String::new();
        if let Some(role) = role {
            head.push_str(&format!("<@&{role}> "));
        }
        if as_update {
            head.push_str("Update: ");
        }
        // `<…>` keeps Discord from unfurling the link into an embed.
        let tail = self
            .link(alert.journey)
            .map(|l| format!("\nJourney: <{l}>"))
            .unwrap_or_default();
        let room = DISCORD_MAX_CONTENT
            .saturating_sub(head.chars().count() + tail.chars().count())
            .max(100);
        let content = format!("{head}{}{tail}", cut(alert.text, room));
        let allowed_mentions = match role {
            Some(role) => json!({ "parse": [], "roles": [role] }),
            None => json!({ "parse": [] }),
        };
        json!({ "content": content, "allowed_mentions": allowed_mentions })
    }

    /// The Slack body: every update is a new message.
    fn slack_body(&self, alert: &Alert<'_>) -> Value {
        let mut text = String::new();
        if let Some(role) = self
            .settings
            .mention_role
            .as_deref()
            .filter(|_| alert.mention)
        {
            text.push_str(&format!("<!subteam^{role}> "));
        }
        if alert.update {
            text.push_str("Update: ");
        }
        text.push_str(&slack_escape(&cut(alert.text, SLACK_MAX_TEXT)));
        if let Some(link) = self.link(alert.journey) {
            text.push_str(&format!("\nJourney: <{link}>"));
        }
        json!({ "text": text })
    }

    fn discord_post_url(&self) -> Url {
        let mut url = self.settings.url.clone();
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != "wait")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        url.query_pairs_mut()
            .clear()
            .extend_pairs(kept)
            .append_pair("wait", "true");
        url
    }

    fn discord_edit_url(&self, message_id: &str) -> Url {
        let mut url = self.settings.url.clone();
        // A thread_id stays: editing a message in a thread needs it too.
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != "wait")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(["messages", message_id]);
        }
        if kept.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(kept);
        }
        url
    }

    /// Sends one request. `Ok(Ok(body))` on 2xx, `Ok(Err(answer))` for another status;
    /// `Err` when no answer came (timeout, connection), which is transient.
    async fn call(
        &self,
        method: Method,
        url: Url,
        body: &Value,
    ) -> Result<Result<String, Answer>, SendError> {
        let what = self.provider();
        let response = self
            .http
            .request(method, url)
            .json(body)
            .send()
            .await
            .map_err(|e| {
                let reason = if e.is_timeout() {
                    "timed out".to_owned()
                } else {
                    let e = e.without_url();
                    let mut text = e.to_string();
                    let mut source = std::error::Error::source(&e);
                    while let Some(s) = source {
                        text = format!("{text}: {s}");
                        source = s.source();
                    }
                    text
                };
                SendError::Transient(format!("{what}: {}", scrub(&self.redact(&reason))))
            })?;
        let status = response.status();
        let header_retry = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .and_then(seconds);
        let text = response.text().await.unwrap_or_default();
        if status.is_success() {
            return Ok(Ok(text));
        }
        let json_retry = serde_json::from_str::<DiscordError>(&text)
            .ok()
            .and_then(|e| e.retry_after)
            .and_then(seconds);
        Ok(Err(Answer {
            status,
            retry_after: header_retry.or(json_retry),
            body: text,
        }))
    }

    /// The error for a status that is not a success.
    fn failure(&self, answer: &Answer) -> SendError {
        let what = self.provider();
        let code = answer.status.as_u16();
        let detail = match serde_json::from_str::<DiscordError>(&answer.body) {
            Ok(DiscordError {
                code: Some(c),
                message,
                ..
            }) => format!("{c} {}", message.unwrap_or_default()),
            Ok(DiscordError {
                message: Some(m), ..
            }) => m,
            _ if !answer.body.trim().is_empty() && !answer.body.trim_start().starts_with('<') => {
                answer.body.trim().chars().take(120).collect()
            }
            _ => answer.status.canonical_reason().unwrap_or("").to_owned(),
        };
        let detail = scrub(&self.redact(detail.trim()));
        let masked = &self.settings.masked;
        match answer.status {
            StatusCode::TOO_MANY_REQUESTS => SendError::RateLimited {
                retry_after: answer.retry_after,
            },
            StatusCode::NOT_FOUND | StatusCode::GONE => {
                error!(url = %masked, status = code, "the support alert webhook no longer exists: {detail}");
                SendError::Permanent(format!(
                    "the webhook no longer exists ({what} answered {code}: {detail}); create a \
                     new incoming webhook and set PASSAGE_ALERT_WEBHOOK_URL"
                ))
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                error!(url = %masked, status = code, "the support alert webhook refused its token: {detail}");
                SendError::Permanent(format!(
                    "the webhook refused the request ({what} answered {code}: {detail}); its \
                     token is wrong or was revoked"
                ))
            }
            s if s.is_server_error() => {
                SendError::Transient(format!("{what} answered {code}: {detail}"))
            }
            _ => SendError::Permanent(format!("{what} answered {code}: {detail}")),
        }
    }

    async fn discord(&self, alert: &Alert<'_>) -> Result<Receipt, SendError> {
        let ping = alert.mention && self.settings.mention_role.is_some();
        // An edit never notifies a mention: an escalation with a role is a new message.
        if alert.update && !ping {
            let known = self
                .message_ids
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(alert.dedup_key);
            if let Some(id) = known {
                let body = self.discord_body(alert, false);
                match self
                    .call(Method::PATCH, self.discord_edit_url(&id), &body)
                    .await?
                {
                    Ok(_) => {
                        return Ok(Receipt {
                            provider_ref: format!("discord-message-{id}"),
                        });
                    }
                    Err(answer)
                        if answer.status == StatusCode::NOT_FOUND
                            && serde_json::from_str::<DiscordError>(&answer.body)
                                .is_ok_and(|e| e.code == Some(DISCORD_UNKNOWN_MESSAGE)) =>
                    {
                        // Someone deleted the message: post the update as a new one.
                        self.message_ids
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .forget(alert.dedup_key);
                    }
                    Err(answer) => return Err(self.failure(&answer)),
                }
            }
        }
        let body = self.discord_body(alert, alert.update);
        let text = self
            .call(Method::POST, self.discord_post_url(), &body)
            .await?
            .map_err(|answer| self.failure(&answer))?;
        let id = serde_json::from_str::<DiscordMessage>(&text)
            .ok()
            .and_then(|m| m.id)
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
        match id {
            Some(id) => {
                self.message_ids
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .put(alert.dedup_key, id.clone());
                Ok(Receipt {
                    provider_ref: format!("discord-message-{id}"),
                })
            }
            None => {
                // Posted, so not an error (retrying would post twice); it cannot be edited.
                warn!(
                    dedup_key = alert.dedup_key,
                    "discord accepted the alert but returned no message id"
                );
                Ok(Receipt {
                    provider_ref: "discord-message".into(),
                })
            }
        }
    }

    async fn slack(&self, alert: &Alert<'_>) -> Result<Receipt, SendError> {
        let body = self.slack_body(alert);
        self.call(Method::POST, self.settings.url.clone(), &body)
            .await?
            .map_err(|answer| self.failure(&answer))?;
        Ok(Receipt {
            provider_ref: "slack-webhook".into(),
        })
    }
}

impl Channel for WebhookAlerts {
    fn remembered(&self, idempotency_key: uuid::Uuid) -> Option<Receipt> {
        self.recent.get(idempotency_key)
    }

    async fn deliver(&self, message: &OutboundMessage) -> Result<Receipt, SendError> {
        let MessageKind::Alert {
            dedup_key,
            text,
            update,
            mention,
            ..
        } = &message.kind
        else {
            return Err(SendError::Permanent(format!(
                "the alert webhook does not carry {}",
                message.kind.channel()
            )));
        };
        // A redelivery of a message already posted (the worker could not record it).
        if let Some(receipt) = self.remembered(message.idempotency_key) {
            return Ok(receipt);
        }
        let alert = Alert {
            journey: message.journey_id,
            dedup_key,
            text,
            update: *update,
            mention: *mention,
        };
        let outcome = match self.settings.kind {
            AlertWebhookKind::Discord => self.discord(&alert).await,
            AlertWebhookKind::Slack => self.slack(&alert).await,
        };
        match &outcome {
            Ok(r) => {
                info!(channel = "support", provider = self.provider(), journey = %message.journey_id, dedup_key, update, mention, provider_ref = %r.provider_ref, "alert posted");
                self.recent.put(message.idempotency_key, r.clone());
            }
            Err(e) => {
                warn!(channel = "support", provider = self.provider(), journey = %message.journey_id, dedup_key, "alert not posted: {e}");
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_the_token() {
        assert_eq!(
            mask_webhook_url("https://discord.com/api/webhooks/1234/abcDEF-token?thread_id=9"),
            "https://discord.com/api/webhooks/1234/***"
        );
        assert_eq!(
            mask_webhook_url("https://hooks.slack.com/services/T000/B000/XXXXXXXX"),
            "https://hooks.slack.com/services/T000/B000/***"
        );
        assert_eq!(
            mask_webhook_url("http://127.0.0.1:8080/hook/tok"),
            "http://127.0.0.1:8080/hook/***"
        );
        assert_eq!(mask_webhook_url("not a url"), "(webhook URL)");
    }

    #[test]
    fn retry_after_values() {
        assert_eq!(seconds(3.0), Some(Duration::from_secs(3)));
        assert_eq!(seconds(0.2501), Some(Duration::from_millis(251)));
        assert_eq!(seconds(-1.0), None);
        assert_eq!(seconds(f64::NAN), None);
        assert_eq!(seconds(1e12), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn texts_are_cut_and_escaped() {
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
        assert_eq!(
            slack_escape("<!channel> & <@U1>"),
            "&lt;!channel&gt; &amp; &lt;@U1&gt;"
        );
    }

    #[test]
    fn message_ids_are_bounded() {
        let mut ids = MessageIds::default();
        ids.put("first", "1".into());
        ids.put("first", "2".into());
        assert_eq!(ids.get("first").as_deref(), Some("2"));
        for i in 0..MESSAGE_IDS {
            ids.put(&i.to_string(), "x".into());
        }
        assert!(ids.get("first").is_none());
        assert_eq!(ids.order.len(), MESSAGE_IDS);
        ids.forget("0");
        assert_eq!(ids.order.len(), MESSAGE_IDS - 1);
    }
}
