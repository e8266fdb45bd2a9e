//! SMS and voice calls through a Twilio-compatible REST API (2010-04-01).
//!
//! * SMS: `POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded, basic
//!   auth; `To`, `From` or `MessagingServiceSid`, `Body`, optional `StatusCallback`.
//! * Calls: `POST …/Calls.json` with inline `Twiml` ([`twiml`]), `StatusCallback` for the
//!   outcome, `Timeout` (ring time) and optional machine detection.
//!
//! Outcomes: 201 → [`Receipt`] with the resource's sid; 429 → `RateLimited` with
//! `Retry-After`; 5xx, timeouts and connection errors → `Transient`; other 4xx →
//! `Permanent` with Twilio's error code and message (recipients masked). Retries and
//! backoff are the worker's, not this client's.

pub mod signature;
pub mod twiml;
pub mod webhooks;

use crate::Error;
use crate::config::{Secret, TwilioConfig, provider_timeout};
use crate::recent::RecentReceipts;
use crate::scrub::scrub;
use passage_core::mask::mask_phone;
use passage_core::ports::{
    CallExpectation, Channel, MessageKind, OutboundMessage, Receipt, SendError,
};
use reqwest::StatusCode;
use serde::Deserialize;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};
use twiml::SayOptions;
use webhooks::WebhookSettings;

/// Twilio's limit for `Body`; longer texts are refused rather than cut.
const MAX_BODY: usize = 1600;
/// Twilio's limit for inline `Twiml`.
const MAX_TWIML: usize = 4000;

/// `+` and 7 to 15 digits, the first not 0 (E.164).
pub fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// Removes the spaces, dashes, dots and parentheses people write in numbers and checks the
/// result is E.164. The error text masks the number.
pub fn normalize_phone(s: &str) -> Result<String, String> {
    let n: String = s
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    if is_e164(&n) {
        Ok(n)
    } else {
        Err(format!(
            "{} is not an international (E.164) phone number",
            mask_phone(s)
        ))
    }
}

/// `prefix` and 32 hex digits, Twilio's sid format.
pub(crate) fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34 && s.starts_with(prefix) && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The Twilio client for SMS and calls.
#[derive(Clone)]
pub struct TwilioChannel {
    http: reqwest::Client,
    settings: Arc<Settings>,
    recent: RecentReceipts,
}

struct Settings {
    api_base: String,
    account_sid: String,
    auth_token: Secret,
    from: Option<String>,
    messaging_service_sid: Option<String>,
    voice_from: Option<String>,
    public_base: String,
    message_status_callbacks: bool,
    ring_timeout_secs: u32,
    gather_timeout_secs: u32,
    machine_detection: bool,
    say: SayOptions,
}

impl fmt::Debug for TwilioChannel {
    // Never the token (R50).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioChannel")
            .field("api_base", &self.settings.api_base)
            .field("account_sid", &self.settings.account_sid)
            .field("public_base", &self.settings.public_base)
            .finish_non_exhaustive()
    }
}

/// Checks a public base URL: http(s), no query or fragment, no underscore in the host
/// (Twilio refuses those in callback URLs). Returned without a trailing slash.
pub(crate) fn public_base(url: &str) -> Result<String, Error> {
    let bad = |why: &str| Error::Config(format!("public_base_url {url}: {why}"));
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(bad("must be https"));
    }
    let host = parsed.host_str().ok_or_else(|| bad("has no host"))?;
    if host.contains('_') {
        return Err(bad("Twilio refuses underscores in callback hosts"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("must not carry a query or a fragment"));
    }
    if parsed.scheme() == "http" {
        // Fine for a local test double; a real deployment's callbacks must be HTTPS.
        warn!(public_base = %url, "callback base URL is not https");
    }
    Ok(url.trim_end_matches('/').to_owned())
}

#[derive(Deserialize)]
struct Created {
    sid: Option<String>,
}

#[derive(Deserialize)]
struct TwilioError {
    code: Option<u32>,
    message: Option<String>,
}

impl TwilioChannel {
    pub fn new(config: &TwilioConfig) -> Result<Self, Error> {
        if !is_sid(&config.account_sid, "AC") {
            return Err(Error::Config(
                "twilio account_sid must be AC followed by 32 hex digits".into(),
            ));
        }
        if let Some(sid) = &config.messaging_service_sid
            && !is_sid(sid, "MG")
        {
            return Err(Error::Config(
                "twilio messaging_service_sid must be MG followed by 32 hex digits".into(),
            ));
        }
        for (name, number) in [("from", &config.from), ("voice_from", &config.voice_from)] {
            if let Some(n) = number
                && !is_e164(n)
                && !(name == "from" && is_alphanumeric_sender(n))
            {
                return Err(Error::Config(format!(
                    "twilio {name} must be an E.164 number"
                )));
            }
        }
        if !(5..=600).contains(&config.ring_timeout_secs) {
            return Err(Error::Config(
                "twilio ring_timeout_secs must be 5 to 600".into(),
            ));
        }
        if !(1..=60).contains(&config.gather_timeout_secs) {
            return Err(Error::Config(
                "twilio gather_timeout_secs must be 1 to 60".into(),
            ));
        }
        let api_base = config.api_base.trim_end_matches('/').to_owned();
        reqwest::Url::parse(&api_base)
            .map_err(|e| Error::Config(format!("twilio api_base {api_base}: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(provider_timeout(
                "twilio request_timeout_secs",
                config.request_timeout_secs,
            )?)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("passage/", env!("CARGO_PKG_VERSION")))
            // The API is called at a fixed origin; a redirect would be a misconfiguration
            // and must not carry the credentials elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Config(format!("twilio http client: {e}")))?;
        Ok(Self {
            http,
            settings: Arc::new(Settings {
                api_base,
                account_sid: config.account_sid.clone(),
                auth_token: config.auth_token.resolve()?,
                from: config.from.clone(),
                messaging_service_sid: config.messaging_service_sid.clone(),
                voice_from: config.voice_from.clone(),
                public_base: public_base(&config.public_base_url)?,
                message_status_callbacks: config.message_status_callbacks,
                ring_timeout_secs: config.ring_timeout_secs,
                gather_timeout_secs: config.gather_timeout_secs,
                machine_detection: config.machine_detection,
                say: SayOptions {
                    voice: config.say_voice.clone(),
                    language: config.say_language.clone(),
                },
            }),
            recent: RecentReceipts::default(),
        })
    }

    /// Whether SMS can be sent (a sender number or a messaging service is configured).
    pub fn can_text(&self) -> bool {
        self.settings.from.is_some() || self.settings.messaging_service_sid.is_some()
    }

    /// Whether calls can be placed (a caller id is configured).
    pub fn can_call(&self) -> bool {
        self.caller_id().is_some()
    }

    fn caller_id(&self) -> Option<&str> {
        let s = &self.settings;
        s.voice_from
            .as_deref()
            .or(s.from.as_deref().filter(|f| is_e164(f)))
    }

    /// What the webhook router needs to check signatures.
    pub fn webhook_settings(&self) -> WebhookSettings {
        WebhookSettings {
            public_base_url: self.settings.public_base.clone(),
            auth_token: self.settings.auth_token.clone(),
            account_sid: self.settings.account_sid.clone(),
            say: self.settings.say.clone(),
        }
    }

    /// The form of an SMS, or a permanent refusal. Public for the contract tests.
    pub fn sms_form(&self, message: &OutboundMessage) -> Result<Vec<(String, String)>, String> {
        let MessageKind::Sms { to, text } = &message.kind else {
            return Err("not an SMS".into());
        };
        let s = &self.settings;
        let to = normalize_phone(to)?;
        if text.chars().count() > MAX_BODY {
            return Err(format!("the SMS text is over {MAX_BODY} characters"));
        }
        let mut form = vec![("To".to_owned(), to)];
        match (&s.messaging_service_sid, &s.from) {
            (Some(mg), _) => form.push(("MessagingServiceSid".into(), mg.clone())),
            (None, Some(from)) => form.push(("From".into(), from.clone())),
            (None, None) => return Err("no SMS sender (from or messaging service)".into()),
        }
        form.push(("Body".into(), text.clone()));
        if s.message_status_callbacks {
            form.push((
                "StatusCallback".into(),
                format!(
                    "{}/webhooks/twilio/message-status?journey={}&effect={}",
                    s.public_base, message.journey_id, message.idempotency_key
                ),
            ));
        }
        Ok(form)
    }

    /// The form of a call, or a permanent refusal. Public for the contract tests.
    pub fn call_form(&self, message: &OutboundMessage) -> Result<Vec<(String, String)>, String> {
        let MessageKind::Call {
            to,
            call_id,
            say,
            expect,
        } = &message.kind
        else {
            return Err("not a call".into());
        };
        let s = &self.settings;
        let to = normalize_phone(to)?;
        let from = self
            .caller_id()
            .ok_or_else(|| "no caller id (voice_from) configured".to_owned())?;
        let query = format!(
            "journey={}&call={call_id}&expect={}",
            message.journey_id,
            match expect {
                CallExpectation::PressPound => "press-pound",
                CallExpectation::ListenOnly => "listen-only",
            }
        );
        let document = match expect {
            CallExpectation::PressPound => twiml::press_pound(
                say,
                &format!("{}/webhooks/twilio/gather?{query}", s.public_base),
                s.gather_timeout_secs,
                &s.say,
            ),
            CallExpectation::ListenOnly => twiml::listen_only(say, &s.say),
        };
        if document.chars().count() > MAX_TWIML {
            return Err(format!("the call's TwiML is over {MAX_TWIML} characters"));
        }
        let mut form = vec![
            ("To".to_owned(), to),
            ("From".into(), from.to_owned()),
            ("Twiml".into(), document),
            (
                "StatusCallback".into(),
                format!("{}/webhooks/twilio/call-status?{query}", s.public_base),
            ),
            // Only the end of the call matters to the journey; fewer callbacks, less to
            // validate.
            ("StatusCallbackEvent".into(), "completed".into()),
            ("StatusCallbackMethod".into(), "POST".into()),
            ("Timeout".into(), s.ring_timeout_secs.to_string()),
        ];
        if s.machine_detection {
            // So a voicemail is reported as `AnsweredBy=machine_*` and fails closed (R26).
            form.push(("MachineDetection".into(), "Enable".into()));
        }
        Ok(form)
    }

    async fn post(
        &self,
        resource: &str,
        form: &[(String, String)],
        sid_prefixes: &[&str],
    ) -> Result<Receipt, SendError> {
        let s = &self.settings;
        let url = format!(
            "{}/2010-04-01/Accounts/{}/{resource}.json",
            s.api_base, s.account_sid
        );
        let response = self
            .http
            .post(&url)
            .basic_auth(&s.account_sid, Some(s.auth_token.expose()))
            .form(form)
            .send()
            .await
            .map_err(|e| {
                // reqwest's error text names the URL (account sid, no token) and the cause.
                SendError::Transient(format!(
                    "twilio {resource}: {}",
                    if e.is_timeout() {
                        "timed out".to_owned()
                    } else {
                        scrub(&e.without_url().to_string())
                    }
                ))
            })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.text().await.unwrap_or_default();
        if status.is_success() {
            let sid = serde_json::from_str::<Created>(&body)
                .ok()
                .and_then(|c| c.sid)
                .filter(|sid| sid_prefixes.iter().any(|p| is_sid(sid, p)));
            let provider_ref = match sid {
                Some(sid) => sid,
                None => {
                    // Accepted, so it will be sent: retrying would send it twice.
                    warn!(resource, "twilio accepted the request but returned no sid");
                    format!("twilio-{resource}-without-sid")
                }
            };
            return Ok(Receipt { provider_ref });
        }
        let detail = match serde_json::from_str::<TwilioError>(&body) {
            Ok(TwilioError {
                code: Some(code),
                message,
            }) => format!("{code}: {}", scrub(message.as_deref().unwrap_or(""))),
            _ => scrub(status.canonical_reason().unwrap_or("")),
        };
        let text = format!("twilio {resource} {}: {detail}", status.as_u16());
        Err(match status {
            StatusCode::TOO_MANY_REQUESTS => SendError::RateLimited { retry_after },
            s if s.is_server_error() => SendError::Transient(text),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                error!("twilio refused the credentials: {text}");
                SendError::Permanent(text)
            }
            _ => SendError::Permanent(text),
        })
    }
}

/// Alphanumeric sender ids (1–11 letters, digits, spaces) are a valid SMS `From` in many
/// countries.
fn is_alphanumeric_sender(s: &str) -> bool {
    (1..=11).contains(&s.len())
        && s.chars().any(|c| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ')
}

impl Channel for TwilioChannel {
    fn remembered(&self, idempotency_key: uuid::Uuid) -> Option<Receipt> {
        self.recent.get(idempotency_key)
    }

    async fn deliver(&self, message: &OutboundMessage) -> Result<Receipt, SendError> {
        if let Some(receipt) = self.remembered(message.idempotency_key) {
            return Ok(receipt);
        }
        let (resource, form, prefixes, to) = match &message.kind {
            MessageKind::Sms { to, .. } => {
                ("Messages", self.sms_form(message), &["SM", "MM"][..], to)
            }
            MessageKind::Call { to, .. } => ("Calls", self.call_form(message), &["CA"][..], to),
            MessageKind::Email { .. } | MessageKind::Alert { .. } => {
                return Err(SendError::Permanent(format!(
                    "the Twilio channel does not carry {}",
                    message.kind.channel()
                )));
            }
        };
        let form = form.map_err(|e| {
            warn!(journey = %message.journey_id, channel = message.kind.channel(), "send refused: {e}");
            SendError::Permanent(e)
        })?;
        let masked = mask_phone(to);
        let outcome = self.post(resource, &form, prefixes).await;
        match &outcome {
            Ok(r) => {
                info!(channel = message.kind.channel(), to = %masked, journey = %message.journey_id, sid = %r.provider_ref, "accepted by twilio");
                self.recent.put(message.idempotency_key, r.clone());
            }
            Err(e) => {
                warn!(channel = message.kind.channel(), to = %masked, journey = %message.journey_id, "twilio did not accept: {e}");
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers() {
        assert_eq!(normalize_phone("+61 412 345 678").unwrap(), "+61412345678");
        assert_eq!(
            normalize_phone("+1 (415) 555-0100").unwrap(),
            "+14155550100"
        );
        for bad in [
            "0412345678",
            "+0412345678",
            "+61412345678\n",
            "+6141234567890123",
            "+61abc",
        ] {
            let e = normalize_phone(bad).expect_err(bad);
            assert!(!e.contains("2345"), "masked: {e}");
        }
        assert!(is_sid("SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "SM"));
        assert!(!is_sid("SMaaaa", "SM"));
        assert!(!is_sid("CAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "SM"));
        assert!(is_alphanumeric_sender("Portal"));
        assert!(!is_alphanumeric_sender("12345"));
    }

    #[test]
    fn public_base_urls() {
        assert_eq!(
            public_base("https://portal.example/passage/").unwrap(),
            "https://portal.example/passage"
        );
        assert!(public_base("https://my_host.example").is_err());
        assert!(public_base("https://p.example/?x=1").is_err());
        assert!(public_base("ftp://p.example").is_err());
    }
}
