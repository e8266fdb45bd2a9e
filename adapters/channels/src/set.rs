//! The channel stack the worker is given: each message kind goes to the provider configured
//! for it, each real provider behind its own circuit breaker, and the whole set behind the
//! limits.
//!
//! ```text
//! LimitedChannel ── ChannelSet ─┬─ email: DevOutbox | CircuitBreaker<SmtpChannel>
//!                               ├─ sms:   DevOutbox | CircuitBreaker<TwilioChannel>
//!                               ├─ voice: DevOutbox | CircuitBreaker<TwilioChannel>
//!                               └─ support (alerts): DevOutbox | CircuitBreaker<WebhookAlerts>
//! ```

use crate::Error;
use crate::alerts::WebhookAlerts;
use crate::breaker::CircuitBreaker;
use crate::clock::SharedClock;
use crate::config::{ChannelsConfig, EmailProvider, PhoneProvider};
use crate::dev::DevOutbox;
use crate::email::SmtpChannel;
use crate::limits::{InMemoryLimitStore, LimitStore, LimitedChannel};
use crate::twilio::TwilioChannel;
use crate::twilio::webhooks::WebhookSettings;
use passage_core::ports::{Channel, MessageKind, OutboundMessage, Receipt, SendError};
use tracing::info;

/// Selects rustls' aws-lc-rs provider for the whole process. lettre and reqwest name their
/// provider explicitly, but other crates in the binary may call
/// `rustls::ClientConfig::builder()`, which panics when both `ring` and `aws-lc-rs` are
/// compiled in and none was installed. Call it first in `main`; calling it twice is fine.
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is all this wants.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// One channel's implementation.
#[derive(Debug, Clone)]
pub enum Route {
    Dev(DevOutbox),
    Smtp(CircuitBreaker<SmtpChannel>),
    Twilio(CircuitBreaker<TwilioChannel>),
    /// Support alerts through a Discord or Slack incoming webhook.
    Webhook(CircuitBreaker<WebhookAlerts>),
}

impl Route {
    /// `dev`, `smtp`, `twilio`, `discord-webhook` or `slack-webhook`.
    pub fn provider(&self) -> &'static str {
        match self {
            Route::Dev(_) => "dev",
            Route::Smtp(_) => "smtp",
            Route::Twilio(_) => "twilio",
            Route::Webhook(c) => c.inner().provider(),
        }
    }
}

impl Channel for Route {
    async fn deliver(&self, message: &OutboundMessage) -> Result<Receipt, SendError> {
        match self {
            Route::Dev(c) => c.deliver(message).await,
            Route::Smtp(c) => c.deliver(message).await,
            Route::Twilio(c) => c.deliver(message).await,
            Route::Webhook(c) => c.deliver(message).await,
        }
    }
}

/// Dispatches each message by kind.
#[derive(Debug, Clone)]
pub struct ChannelSet {
    email: Route,
    sms: Route,
    voice: Route,
    /// Where support alerts go (chat-ops); `None` refuses them permanently.
    support: Option<Route>,
    webhooks: Option<WebhookSettings>,
}

/// The full stack [`build_channels`] returns; `S` keeps the budgets' counters
/// ([`build_channels_with`]).
pub type Channels<S = InMemoryLimitStore> = LimitedChannel<ChannelSet, S>;

impl ChannelSet {
    pub fn new(email: Route, sms: Route, voice: Route) -> Self {
        let webhooks = [&sms, &voice].into_iter().find_map(|r| match r {
            Route::Twilio(t) => Some(t.inner().webhook_settings()),
            _ => None,
        });
        Self {
            email,
            sms,
            voice,
            support: None,
            webhooks,
        }
    }

    /// Support alerts go to `route`.
    pub fn with_support(mut self, route: Route) -> Self {
        self.support = Some(route);
        self
    }

    /// Builds the routes. `dev` is required when any channel is `dev`.
    pub fn from_config(
        config: &ChannelsConfig,
        dev: Option<DevOutbox>,
        clock: SharedClock,
    ) -> Result<Self, Error> {
        let dev_route = |channel: &str| {
            dev.clone().map(Route::Dev).ok_or_else(|| {
                Error::Config(format!("{channel} = dev needs the dev outbox to be opened"))
            })
        };
        let email = match config.email {
            EmailProvider::Dev => dev_route("email")?,
            EmailProvider::Smtp => {
                let smtp = config
                    .smtp
                    .as_ref()
                    .ok_or_else(|| Error::Config("email = smtp needs an [smtp] section".into()))?;
                Route::Smtp(CircuitBreaker::new(
                    SmtpChannel::new(smtp)?,
                    "smtp",
                    config.breaker,
                    clock.clone(),
                ))
            }
        };
        let twilio = if config.sms == PhoneProvider::Twilio || config.voice == PhoneProvider::Twilio
        {
            let t = config.twilio.as_ref().ok_or_else(|| {
                Error::Config("sms or voice = twilio needs a [twilio] section".into())
            })?;
            Some(TwilioChannel::new(t)?)
        } else {
            None
        };
        let phone = |provider: PhoneProvider, channel: &'static str| -> Result<Route, Error> {
            match (provider, &twilio) {
                (PhoneProvider::Dev, _) => dev_route(channel),
                (PhoneProvider::Twilio, Some(t)) => {
                    if channel == "sms" && !t.can_text() {
                        return Err(Error::Config(
                            "sms = twilio needs twilio.from or twilio.messaging_service_sid".into(),
                        ));
                    }
                    if channel == "voice" && !t.can_call() {
                        return Err(Error::Config(
                            "voice = twilio needs twilio.voice_from or a number in twilio.from"
                                .into(),
                        ));
                    }
                    let name = if channel == "sms" {
                        "twilio-sms"
                    } else {
                        "twilio-voice"
                    };
                    Ok(Route::Twilio(CircuitBreaker::new(
                        t.clone(),
                        name,
                        config.breaker,
                        clock.clone(),
                    )))
                }
                (PhoneProvider::Twilio, None) => Err(Error::Config(format!(
                    "{channel} = twilio needs a [twilio] section"
                ))),
            }
        };
        let mut set = Self::new(
            email,
            phone(config.sms, "sms")?,
            phone(config.voice, "voice")?,
        );
        // Alerts go to the incoming webhook when one is configured. Otherwise to the dev
        // outbox only in a development setup (every channel there; `passage chat` reads them
        // there): a node with real providers and no webhook has no route, and leaves alerts
        // to the process that has one (`passage bot`). A dev route there would take its
        // share of the alerts into a local file support never reads.
        let all_dev = config.email == EmailProvider::Dev
            && config.sms == PhoneProvider::Dev
            && config.voice == PhoneProvider::Dev;
        if let Some(alerts) = &config.alerts {
            let webhook = WebhookAlerts::new(alerts)?;
            let name = webhook.provider();
            set = set.with_support(Route::Webhook(CircuitBreaker::new(
                webhook,
                name,
                config.breaker,
                clock.clone(),
            )));
        } else if let Some(dev) = dev.clone().filter(|_| all_dev) {
            set = set.with_support(Route::Dev(dev));
        }
        info!(
            email = set.email.provider(),
            sms = set.sms.provider(),
            voice = set.voice.provider(),
            support = set.support.as_ref().map_or("none", Route::provider),
            "channels configured"
        );
        Ok(set)
    }

    /// Settings for [`crate::twilio_webhooks`] when SMS or voice go through Twilio.
    pub fn webhook_settings(&self) -> Option<WebhookSettings> {
        self.webhooks.clone()
    }

    /// `email=smtp sms=twilio voice=dev`, for start-up output; ` support=discord-webhook`
    /// is added when alerts go to a webhook.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "email={} sms={} voice={}",
            self.email.provider(),
            self.sms.provider(),
            self.voice.provider()
        );
        if let Some(route @ Route::Webhook(_)) = &self.support {
            out.push_str(&format!(" support={}", route.provider()));
        }
        out
    }

    pub fn route(&self, channel: &str) -> Option<&Route> {
        match channel {
            "email" => Some(&self.email),
            "sms" => Some(&self.sms),
            "voice" => Some(&self.voice),
            "support" => self.support.as_ref(),
            _ => None,
        }
    }
}

impl Channel for ChannelSet {
    async fn deliver(&self, message: &OutboundMessage) -> Result<Receipt, SendError> {
        match message.kind {
            MessageKind::Email { .. } => self.email.deliver(message).await,
            MessageKind::Sms { .. } => self.sms.deliver(message).await,
            MessageKind::Call { .. } => self.voice.deliver(message).await,
            MessageKind::Alert { .. } => match &self.support {
                Some(route) => route.deliver(message).await,
                None => Err(SendError::Permanent(
                    "no support alert channel is configured".into(),
                )),
            },
        }
    }
}

/// The whole stack from a configuration: routes, breakers and limits (in-memory counters).
pub fn build_channels(
    config: &ChannelsConfig,
    dev: Option<DevOutbox>,
    clock: SharedClock,
) -> Result<Channels, Error> {
    build_channels_with(config, dev, clock, InMemoryLimitStore::new())
}

/// [`build_channels`] with the budgets counted in `counters`: a store shared by every node
/// when several deliver (R17).
pub fn build_channels_with<S: LimitStore>(
    config: &ChannelsConfig,
    dev: Option<DevOutbox>,
    clock: SharedClock,
    counters: S,
) -> Result<Channels<S>, Error> {
    install_crypto_provider();
    let set = ChannelSet::from_config(config, dev, clock.clone())?;
    Ok(LimitedChannel::new(
        set,
        counters,
        config.limits.clone(),
        clock,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::config::{SecretSource, TwilioConfig};
    use passage_core::ports::JourneyId;
    use std::sync::Arc;
    use uuid::Uuid;

    fn clock() -> SharedClock {
        Arc::new(SystemClock)
    }

    #[tokio::test]
    async fn the_default_configuration_sends_everything_to_the_dev_outbox() {
        let path = std::env::temp_dir().join(format!("passage-outbox-{}.db", Uuid::new_v4()));
        let dev = DevOutbox::open(&path).await.unwrap();
        let channels =
            build_channels(&ChannelsConfig::default(), Some(dev.clone()), clock()).unwrap();
        assert_eq!(channels.inner().describe(), "email=dev sms=dev voice=dev");
        assert!(channels.inner().webhook_settings().is_none());
        let m = OutboundMessage {
            notice: false,
            idempotency_key: Uuid::new_v4(),
            journey_id: JourneyId(Uuid::new_v4()),
            kind: MessageKind::Sms {
                to: "+61412345678".into(),
                text: "123456 is your code".into(),
            },
        };
        let r = channels.deliver(&m).await.unwrap();
        assert!(r.provider_ref.starts_with("dev-sms-"), "{r:?}");
        assert_eq!(dev.counts().await.unwrap().0, 1);
        drop(dev);
        for s in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{s}", path.display()));
        }
    }

    #[tokio::test]
    async fn incomplete_configurations_are_refused_at_start_up() {
        let err = |c: &ChannelsConfig, dev: Option<DevOutbox>| {
            ChannelSet::from_config(c, dev, clock())
                .unwrap_err()
                .to_string()
        };
        let path = std::env::temp_dir().join(format!("passage-outbox-{}.db", Uuid::new_v4()));
        let dev = DevOutbox::open(&path).await.unwrap();
        assert!(err(&ChannelsConfig::default(), None).contains("dev outbox"));
        let c = ChannelsConfig {
            sms: PhoneProvider::Twilio,
            ..Default::default()
        };
        assert!(err(&c, Some(dev.clone())).contains("[twilio]"));
        let c = ChannelsConfig {
            email: EmailProvider::Smtp,
            ..Default::default()
        };
        assert!(err(&c, None).contains("[smtp]"));
        // A messaging service can text but has no caller id for calls.
        let token = std::env::temp_dir().join(format!("passage-token-{}", Uuid::new_v4()));
        std::fs::write(&token, "tok").unwrap();
        let c = ChannelsConfig {
            email: EmailProvider::Smtp,
            sms: PhoneProvider::Twilio,
            voice: PhoneProvider::Twilio,
            smtp: None,
            twilio: Some(TwilioConfig {
                api_base: "https://api.twilio.com".into(),
                account_sid: "AC0123456789abcdef0123456789abcdef".into(),
                auth_token: SecretSource::File(token.clone()),
                from: None,
                messaging_service_sid: Some("MG0123456789abcdef0123456789abcdef".into()),
                voice_from: None,
                public_base_url: "https://reset.portal.example".into(),
                message_status_callbacks: true,
                ring_timeout_secs: 30,
                gather_timeout_secs: 10,
                machine_detection: true,
                say_voice: None,
                say_language: None,
                request_timeout_secs: 15,
            }),
            ..Default::default()
        };
        assert!(err(&c, None).contains("[smtp]"));
        let c = ChannelsConfig {
            email: EmailProvider::Dev,
            ..c
        };
        assert!(err(&c, Some(dev)).contains("voice = twilio needs"));
        let _ = std::fs::remove_file(token);
        for s in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{s}", path.display()));
        }
    }
}
