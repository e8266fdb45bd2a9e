//! The provider webhooks' sink: what Twilio's callbacks tell us becomes journey input.

use passage_channels::{
    CallbackSink, Confirmation, Error as ChannelError, MessageStatus, RejectedCallback,
};
use passage_core::journey::{CallFailure, Reply};
use passage_core::ports::{AccountDirectory, EventStore, JourneyId};
use passage_core::secrets::derived_id;
use passage_runtime::{Actor, Engine, Input};
use uuid::Uuid;

#[derive(Debug)]
pub struct EngineSink<S, D> {
    engine: Engine<S, D>,
}

impl<S, D> Clone for EngineSink<S, D> {
    fn clone(&self) -> Self {
        Self {
            engine: self.engine.clone(),
        }
    }
}

impl<S, D> EngineSink<S, D> {
    pub fn new(engine: Engine<S, D>) -> Self {
        Self { engine }
    }
}

fn provider() -> Actor {
    Actor {
        kind: "system".into(),
        id: None,
        channel: "twilio".into(),
        ip: None,
        user_agent: None,
        reason: None,
    }
}

fn sink_error(e: passage_runtime::Error) -> ChannelError {
    ChannelError::Sink(e.to_string())
}

impl<S: EventStore, D: AccountDirectory> CallbackSink for EngineSink<S, D> {
    async fn call_keys(
        &self,
        journey: JourneyId,
        call_id: Uuid,
        digits: String,
    ) -> Result<Confirmation, ChannelError> {
        let input = Input::CallKeys { call_id, digits };
        let outcome = self
            .engine
            .submit(journey, input, provider(), None)
            .await
            .map_err(sink_error)?;
        // Keys on a call are accepted only when they confirm it (a lone # on a ringing
        // press-# call); a repeated callback is not fresh and confirms nothing new.
        let confirmed = outcome.fresh && matches!(outcome.reply, Reply::Accepted { .. });
        Ok(if confirmed {
            Confirmation::Confirmed
        } else {
            Confirmation::NotConfirmed
        })
    }

    async fn call_ended(
        &self,
        journey: JourneyId,
        call_id: Uuid,
        reason: CallFailure,
    ) -> Result<(), ChannelError> {
        let id = derived_id(&[call_id.as_bytes(), b"ended"]);
        self.engine
            .submit(
                journey,
                Input::CallEnded { call_id, reason },
                provider(),
                Some(id),
            )
            .await
            .map_err(sink_error)?;
        Ok(())
    }

    async fn message_status(
        &self,
        journey: JourneyId,
        effect_id: Uuid,
        status: MessageStatus,
    ) -> Result<(), ChannelError> {
        if status.status == "delivered" {
            // The carrier confirmed delivery to the handset: worth a line in the timeline.
            let id = derived_id(&[effect_id.as_bytes(), b"status", b"delivered"]);
            let input = Input::Delivered {
                effect_id,
                channel: "sms".into(),
                provider_ref: format!("{} delivered to the handset", status.sid),
            };
            self.engine
                .submit(journey, input, provider(), Some(id))
                .await
                .map_err(sink_error)?;
            return Ok(());
        }
        if !status.is_failure() {
            return Ok(());
        }
        let id = derived_id(&[effect_id.as_bytes(), b"status", status.status.as_bytes()]);
        let error = match &status.error_code {
            Some(code) => format!("carrier: {} ({code})", status.status),
            None => format!("carrier: {}", status.status),
        };
        let input = Input::DeliveryFailed {
            effect_id,
            channel: "sms".into(),
            error,
            permanent: true,
        };
        self.engine
            .submit(journey, input, provider(), Some(id))
            .await
            .map_err(sink_error)?;
        Ok(())
    }

    async fn rejected_callback(&self, rejected: RejectedCallback) {
        // The adapter logs rejections already, at most once a minute: a flood of forged
        // callbacks must not write a line each.
        tracing::debug!(path = rejected.path, reason = %rejected.reason, "refused a provider callback");
    }
}
