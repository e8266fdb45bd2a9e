//! Email over SMTP (lettre, rustls; no OpenSSL).
//!
//! The recipient is always the address in the message, which the worker takes from the
//! account directory (R5). It must be one bare address: anything with a line break, a
//! display name, a list or trailing text is refused before any connection is made, so no
//! header can be injected and no second recipient added. The envelope is derived from the
//! headers, so exactly one `RCPT TO` is sent.

use crate::Error;
use crate::config::{SmtpConfig, SmtpSecurity, provider_timeout};
use crate::recent::RecentReceipts;
use crate::scrub::scrub;
use crate::template::{EmailTemplates, render_email};
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, Mailboxes, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use passage_core::mask::mask_email;
use passage_core::ports::{Channel, MessageKind, OutboundMessage, Receipt, SendError};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use tracing::{info, warn};

/// Sends every email through one SMTP relay.
#[derive(Clone)]
pub struct SmtpChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    settings: Arc<Settings>,
    recent: RecentReceipts,
}

struct Settings {
    from: Mailbox,
    reply_to: Option<Mailbox>,
    /// The domain of `from`, for Message-IDs.
    domain: String,
    portal_name: String,
    templates: EmailTemplates,
    relay: String,
}

impl fmt::Debug for SmtpChannel {
    // The relay and sender only: the credentials stay inside the transport.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpChannel")
            .field("relay", &self.settings.relay)
            .field("from", &self.settings.from.email.to_string())
            .finish_non_exhaustive()
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `Auto-Submitted: auto-generated` (RFC 3834): out-of-office responders stay quiet.
#[derive(Debug, Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".into())
    }
}

impl SmtpChannel {
    /// Builds the transport; nothing is connected yet.
    ///
    /// Each send opens its own connection and closes it after the relay's answer (lettre's
    /// `pool` feature is off). The worker drops a send that outlives its delivery budget;
    /// a pooled connection dropped halfway through a transaction would go back to the
    /// pool, and the next message would read the previous one's reply or land in its DATA.
    /// A dropped connection is closed instead: a message cut off before its end reaches
    /// nobody, and the worker's retry sends the only copy (one the relay had just taken is
    /// sent again, with the same Message-ID: at least once). A reset sends a few emails, so
    /// a handshake per email costs little.
    pub fn new(config: &SmtpConfig) -> Result<Self, Error> {
        let bad = |what: &str, e: &dyn fmt::Display| Error::Config(format!("smtp {what}: {e}"));
        let from = Mailbox::from_str(&config.from).map_err(|e| bad("from", &e))?;
        let reply_to = config
            .reply_to
            .as_deref()
            .map(Mailbox::from_str)
            .transpose()
            .map_err(|e| bad("reply_to", &e))?;
        let port = config.port.unwrap_or(config.security.default_port());
        let host = config.host.trim();
        if host.is_empty() {
            return Err(Error::Config("smtp host is empty".into()));
        }
        let credentials = match (&config.username, &config.password) {
            (Some(user), Some(password)) => Some(Credentials::new(
                user.clone(),
                password.resolve()?.expose().to_owned(),
            )),
            (None, None) => None,
            _ => {
                return Err(Error::Config(
                    "smtp username and password go together".into(),
                ));
            }
        };
        let remote = !is_loopback(host);
        if config.security == SmtpSecurity::Plain && remote {
            if credentials.is_some() {
                return Err(Error::Config(format!(
                    "smtp security = plain sends the password in clear to {host}: use starttls \
                     or tls, or a relay on this host"
                )));
            }
            warn!(
                relay = host,
                "SMTP without TLS to another host: mail crosses the network in clear"
            );
        }
        let tls_parameters = || -> Result<TlsParameters, Error> {
            let mut builder = TlsParameters::builder(host.to_owned());
            if let Some(path) = &config.ca_file {
                let pem = std::fs::read(path)
                    .map_err(|e| bad(&format!("ca_file {}", path.display()), &e))?;
                let cert = Certificate::from_pem(&pem).map_err(|e| bad("ca_file", &e))?;
                builder = builder.add_root_certificate(cert);
            }
            builder.build_rustls().map_err(|e| bad("tls", &e))
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .timeout(Some(provider_timeout(
                "smtp timeout_secs",
                config.timeout_secs,
            )?));
        builder = match config.security {
            SmtpSecurity::Starttls => builder.tls(Tls::Required(tls_parameters()?)),
            SmtpSecurity::Tls => builder.tls(Tls::Wrapper(tls_parameters()?)),
            SmtpSecurity::Plain => builder.tls(Tls::None),
        };
        if let Some(c) = credentials {
            builder = builder.credentials(c);
        }
        let templates = match &config.templates_dir {
            Some(dir) => EmailTemplates::from_dir(dir)?,
            None => EmailTemplates::builtin(),
        };
        templates.check()?;
        let domain = from.email.domain().to_owned();
        Ok(Self {
            transport: builder.build(),
            settings: Arc::new(Settings {
                from,
                reply_to,
                domain,
                portal_name: config.portal_name.clone(),
                templates,
                relay: format!("{host}:{port}"),
            }),
            recent: RecentReceipts::default(),
        })
    }

    /// Checks the recipient and builds the message. `Err` is a permanent refusal.
    fn build(&self, message: &OutboundMessage) -> Result<(Message, String), String> {
        let MessageKind::Email { to, subject, text } = &message.kind else {
            return Err(format!(
                "the SMTP channel carries email, not {}",
                message.kind.channel()
            ));
        };
        let to = single_recipient(to)?;
        // The subject comes from the worker; a line break there must not start a header.
        let subject: String = subject
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let s = &self.settings;
        let (text_body, html_body) = render_email(&s.templates, &s.portal_name, &subject, text)
            .map_err(|e| e.to_string())?;
        let message_id = format!("<{}@{}>", message.idempotency_key, s.domain);
        let mut builder = Message::builder()
            .from(s.from.clone())
            .to(to)
            .subject(subject)
            // Derived from the effect id: a redelivery after a crash carries the same id, so
            // the receiving side can tell it is a duplicate.
            .message_id(Some(message_id.clone()))
            .header(AutoSubmitted);
        if let Some(r) = &s.reply_to {
            builder = builder.reply_to(r.clone());
        }
        let email = builder
            .multipart(MultiPart::alternative_plain_html(text_body, html_body))
            .map_err(|e| format!("the message cannot be built: {e}"))?;
        Ok((email, message_id))
    }
}

/// One bare address, or a permanent refusal. lettre's `Mailbox` parser stops at the first
/// mailbox and ignores what follows, so the parse must also reproduce the whole input.
fn single_recipient(to: &str) -> Result<Mailbox, String> {
    let refuse = |why: &str| Err(format!("recipient refused ({}): {why}", mask_email(to)));
    if to.chars().any(char::is_control) {
        return refuse("it contains a line break or control character");
    }
    let trimmed = to.trim();
    if trimmed.contains([',', ';']) {
        return refuse("it is a list, not one address");
    }
    match Mailboxes::from_str(trimmed) {
        Ok(list) if list.iter().count() == 1 => {}
        Ok(_) => return refuse("it is a list, not one address"),
        Err(_) => return refuse("it is not an email address"),
    }
    let Ok(mailbox) = Mailbox::from_str(trimmed) else {
        return refuse("it is not an email address");
    };
    if mailbox.name.is_some() || mailbox.email.to_string() != trimmed {
        return refuse("it is not one bare address");
    }
    Ok(mailbox)
}

fn classify(e: &lettre::transport::smtp::Error) -> SendError {
    let text = scrub(&e.to_string());
    if e.is_permanent() {
        SendError::Permanent(format!("smtp: {text}"))
    } else {
        // 4xx replies, connection, TLS and timeout errors: another attempt may pass.
        SendError::Transient(format!("smtp: {text}"))
    }
}

impl Channel for SmtpChannel {
    fn remembered(&self, idempotency_key: uuid::Uuid) -> Option<Receipt> {
        self.recent.get(idempotency_key)
    }

    async fn deliver(&self, message: &OutboundMessage) -> Result<Receipt, SendError> {
        if let Some(receipt) = self.remembered(message.idempotency_key) {
            return Ok(receipt);
        }
        let (email, message_id) = self.build(message).map_err(|e| {
            warn!(journey = %message.journey_id, "email refused: {e}");
            SendError::Permanent(e)
        })?;
        let masked = match &message.kind {
            MessageKind::Email { to, .. } => mask_email(to),
            _ => String::new(),
        };
        match self.transport.send(email).await {
            Ok(response) => {
                let reply = response.first_line().map(scrub).unwrap_or_default();
                info!(channel = "email", to = %masked, journey = %message.journey_id, relay = %self.settings.relay, "email accepted by the relay");
                let receipt = Receipt {
                    provider_ref: format!("smtp {message_id} {} {reply}", response.code())
                        .trim_end()
                        .to_owned(),
                };
                self.recent.put(message.idempotency_key, receipt.clone());
                Ok(receipt)
            }
            Err(e) => {
                let err = classify(&e);
                warn!(channel = "email", to = %masked, journey = %message.journey_id, relay = %self.settings.relay, "email not accepted: {err}");
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_bare_address_is_accepted() {
        assert!(single_recipient("alice@example.com").is_ok());
        for bad in [
            "alice@example.com\r\nBcc: eve@evil.example",
            "alice@example.com\nBcc: eve@evil.example",
            "alice@example.com, eve@evil.example",
            "alice@example.com; eve@evil.example",
            "alice@example.com eve@evil.example",
            "Alice <alice@example.com>",
            "alice@example.com>",
            "<alice@example.com>",
            "not an address",
            "",
        ] {
            let e = single_recipient(bad).expect_err(bad);
            assert!(!e.contains("eve@evil"), "masked: {e}");
        }
    }

    #[tokio::test]
    async fn plain_with_credentials_to_another_host_is_refused() {
        let mut config = SmtpConfig {
            host: "smtp.example.net".into(),
            port: None,
            security: SmtpSecurity::Plain,
            username: Some("u".into()),
            password: Some(crate::config::SecretSource::Env(
                "PASSAGE_TEST_UNSET_SECRET".into(),
            )),
            from: "Portal <no-reply@portal.example>".into(),
            reply_to: None,
            portal_name: "Portal".into(),
            timeout_secs: 5,
            ca_file: None,
            templates_dir: None,
        };
        // The missing secret is reported before the plain-text check; set one via a file.
        let path = std::env::temp_dir().join(format!("passage-smtp-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, "pw").unwrap();
        config.password = Some(crate::config::SecretSource::File(path.clone()));
        let e = SmtpChannel::new(&config).unwrap_err().to_string();
        assert!(e.contains("in clear"), "{e}");
        config.host = "127.0.0.1".into();
        assert!(SmtpChannel::new(&config).is_ok());
        let _ = std::fs::remove_file(path);
    }
}
