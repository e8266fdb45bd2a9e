//! Performs the conversation core's engine actions on the in-process engine, for every
//! transport (`passage chat`, `passage bot`). Behind the `engine` feature, so the core
//! itself stays free of the runtime.

use crate::{ChatInput, ChatUser, EngineAction, EngineResult, Role, STALLED_LIMIT, TimelineLine};
use passage_core::journey::{Rejection, Reply};
use passage_core::ports::{AccountDirectory, EventStore, JourneyFilter};
use passage_runtime::{Actor, Engine, Input};

/// The actor the engine records for a chat user: `support` with the user's id for the
/// service desk, `person` with the user's id otherwise; the channel is the transport's.
pub fn actor(user: &ChatUser) -> Actor {
    match user.role {
        Role::Support => Actor::support(&user.id, &user.channel),
        Role::Person => {
            let mut a = Actor::person(&user.channel);
            a.id = Some(user.id.clone());
            a
        }
    }
}

/// The refusal in a reply, if it is one.
pub fn refusal(reply: &Reply) -> Option<Rejection> {
    match reply {
        Reply::Accepted { .. } => None,
        Reply::Rejected(r) => Some(r.clone()),
    }
}

fn input(input: ChatInput) -> Input {
    match input {
        ChatInput::Email(e) => Input::Email(e),
        ChatInput::Code(c) => Input::Code(c),
        ChatInput::Resend => Input::Resend,
        ChatInput::Choose(o) => Input::Choose(o),
        ChatInput::Cancel { reason } => Input::Cancel { reason },
        ChatInput::Nudge => Input::Nudge,
        ChatInput::AcknowledgeAlert => Input::AcknowledgeAlert,
    }
}

/// Performs `action`; any engine error becomes [`EngineResult::Failed`] (its message is
/// the engine's, which carries no secret).
pub async fn perform<S: EventStore, D: AccountDirectory>(
    engine: &Engine<S, D>,
    action: EngineAction,
) -> EngineResult {
    match try_perform(engine, action).await {
        Ok(r) => r,
        Err(e) => EngineResult::Failed {
            message: e.to_string(),
        },
    }
}

async fn try_perform<S: EventStore, D: AccountDirectory>(
    engine: &Engine<S, D>,
    action: EngineAction,
) -> Result<EngineResult, passage_runtime::Error> {
    perform_settled(engine, action, async |_| Ok(())).await
}

/// Performs `action`, running `settle` with the journey after a command and before the
/// journey is read back: the terminal delivers that journey's messages there, so the view
/// shows what was delivered; the Discord bot has a worker of its own and settles nothing.
pub async fn perform_settled<S: EventStore, D: AccountDirectory>(
    engine: &Engine<S, D>,
    action: EngineAction,
    settle: impl AsyncFnOnce(passage_core::ports::JourneyId) -> Result<(), passage_runtime::Error>,
) -> Result<EngineResult, passage_runtime::Error> {
    let (journey, refusal) = match action {
        EngineAction::Start {
            workflow,
            email,
            by,
        } => {
            let actor = actor(&by);
            let started = engine.start(&workflow, actor.clone(), None).await?;
            let journey = started.journey_id;
            let refusal = match email {
                Some(email) => {
                    let outcome = engine
                        .submit(journey, Input::Email(email), actor, None)
                        .await?;
                    refusal(&outcome.reply)
                }
                None => None,
            };
            (journey, refusal)
        }
        EngineAction::Submit {
            journey,
            input: i,
            by,
        } => {
            let outcome = engine.submit(journey, input(i), actor(&by), None).await?;
            (journey, refusal(&outcome.reply))
        }
        EngineAction::Load { journey } => (journey, None),
        EngineAction::Timeline { journey } => {
            let lines = timeline(&engine.timeline(journey).await?);
            let (_, _, view) = engine.load(journey).await?;
            return Ok(EngineResult::Timeline {
                journey,
                lines,
                view,
            });
        }
        EngineAction::Replay { journey, at } => {
            let (_, view, total) = engine.replay(journey, at).await?;
            let lines = timeline(&engine.timeline(journey).await?);
            return Ok(EngineResult::Replayed {
                journey,
                at,
                total,
                lines,
                view,
            });
        }
        EngineAction::ListStalled { alerts } => {
            let store = engine.store();
            let mut list = store.due_stalls(engine.now(), STALLED_LIMIT).await?;
            for journey in alerts.into_iter().take(STALLED_LIMIT) {
                if list.iter().any(|j| j.journey_id == journey) {
                    continue;
                }
                let found = store
                    .list_journeys(JourneyFilter {
                        journey_id: Some(journey),
                        limit: 1,
                        ..JourneyFilter::default()
                    })
                    .await?;
                list.extend(found);
            }
            return Ok(EngineResult::Journeys(list));
        }
    };
    settle(journey).await?;
    let (_, _, view) = engine.load(journey).await?;
    Ok(EngineResult::Journey {
        journey,
        refusal,
        view,
    })
}

/// The runtime's timeline as the core's lines (descriptions are already masked).
pub fn timeline(entries: &[passage_runtime::TimelineEntry]) -> Vec<TimelineLine> {
    entries
        .iter()
        .map(|e| TimelineLine {
            version: e.version,
            recorded_at: e.recorded_at,
            event_type: e.event_type.clone(),
            description: e.description.clone(),
            actor: e.actor.as_ref().map(|a| match &a.id {
                Some(id) => format!("{}:{id} via {}", a.kind, a.channel),
                None => format!("{} via {}", a.kind, a.channel),
            }),
        })
        .collect()
}
