//! Erasure of personal data by crypto-shredding, and retention (ADR 0005).
//!
//! Erasing a journey is two steps, in this order: the engine records the erasure on the
//! journey (cancelling it first if it is open), then the store destroys the journey's key,
//! scrubs its read-model row and deletes its outbox entries and timers. The erasure's own
//! read-model row keeps the pseudonym until the second step, so an erasure interrupted
//! between the two is found again and finished by running it again; both steps are
//! idempotent.

use crate::engine::{Actor, Engine, Input};
use crate::error::Error;
use passage_core::journey::Reply;
use passage_core::mask::normalize_email;
use passage_core::ports::{AccountDirectory, EventStore, JourneyId};
use passage_core::time::Timestamp;
use std::time::Duration;

/// What erasing one journey did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JourneyErased {
    pub journey_id: JourneyId,
    /// The erasure was recorded now (false: it was recorded before).
    pub recorded: bool,
    /// The journey's key was destroyed now (false: before, or it never had one).
    pub key_destroyed: bool,
}

/// What erasing a person did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectErased {
    pub journeys: Vec<JourneyErased>,
    /// The account (full address, phone, name, password hash) and its sessions were deleted.
    pub account_removed: bool,
}

/// What one retention pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Journeys whose personal data was erased in this pass.
    pub erased: usize,
    /// Journeys that could not be erased (logged; the next pass tries again).
    pub failed: usize,
}

/// How many journeys retention takes per store query.
const RETENTION_PAGE: usize = 200;

impl<S: EventStore, D: AccountDirectory> Engine<S, D> {
    /// Erases one journey's personal data (see the module docs). Safe to repeat.
    pub async fn erase_journey(
        &self,
        journey_id: JourneyId,
        reason: &str,
        actor: Actor,
    ) -> Result<JourneyErased, Error> {
        let (before, _, _) = self.load(journey_id).await?;
        let outcome = self
            .submit(
                journey_id,
                Input::ErasePersonalData {
                    reason: reason.to_owned(),
                },
                actor,
                None,
            )
            .await?;
        if let Reply::Rejected(r) = &outcome.reply {
            // Erasure is decided in every status; a refusal means the stream is not a journey.
            return Err(Error::Decode(format!(
                "journey {journey_id} refused the erasure: {}",
                r.message
            )));
        }
        let recorded = !before.erased && outcome.state.erased;
        let done = self
            .store()
            .erase_journey(journey_id, reason, self.now())
            .await;
        // Whatever happened, this process must not keep the key in memory.
        self.forget(journey_id);
        let done = done?;
        tracing::info!(journey = %journey_id, key_destroyed = done.key_destroyed, "personal data erased");
        Ok(JourneyErased {
            journey_id,
            recorded,
            key_destroyed: done.key_destroyed,
        })
    }

    /// Erases everything Passage holds about the person with this address: every journey
    /// that names it (found by its pseudonym), then the account and its sessions. Safe to
    /// repeat, and finishes an erasure that was interrupted.
    pub async fn erase_subject(
        &self,
        email: &str,
        reason: &str,
        actor: Actor,
    ) -> Result<SubjectErased, Error> {
        let email = normalize_email(email).map_err(|e| Error::InvalidEmail(e.to_string()))?;
        let subject = self.keys().subject(&email);
        let account = self.directory().find_by_email(&email).await?;
        let mut journeys = self
            .store()
            .journeys_by_subject(&subject, Timestamp(i64::MIN))
            .await?;
        journeys.sort_by_key(|j| (j.started_at, j.journey_id));
        let mut report = SubjectErased::default();
        for j in journeys {
            report.journeys.push(
                self.erase_journey(j.journey_id, reason, actor.clone())
                    .await?,
            );
        }
        // The account last: while it exists a rerun can still tell the person was known.
        if let Some(account) = account {
            report.account_removed = self.directory().erase_account(&account.account_id).await?;
        }
        self.store().purge_erased().await?;
        Ok(report)
    }

    /// One retention pass: erases the personal data of every finished journey (completed,
    /// failed, expired, cancelled) started more than `older_than` ago. Accounts stay: only
    /// journey data is retained for a period.
    pub async fn apply_retention(&self, older_than: Duration) -> Result<RetentionReport, Error> {
        let before = Timestamp(
            self.now()
                .as_millis()
                .saturating_sub(i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX)),
        );
        let mut report = RetentionReport::default();
        let mut skip: Vec<JourneyId> = Vec::new();
        loop {
            let due = self
                .store()
                .retention_due(before, RETENTION_PAGE + skip.len())
                .await?;
            let todo: Vec<JourneyId> = due.into_iter().filter(|j| !skip.contains(j)).collect();
            if todo.is_empty() {
                break;
            }
            for id in todo {
                match self.erase_journey(id, "retention", Actor::system()).await {
                    Ok(_) => report.erased += 1,
                    Err(e) => {
                        tracing::warn!(journey = %id, "retention could not erase: {e}");
                        report.failed += 1;
                        skip.push(id);
                    }
                }
            }
        }
        if report.erased > 0 {
            self.store().purge_erased().await?;
        }
        Ok(report)
    }
}
