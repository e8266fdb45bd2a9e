//! The worker: delivers outbox entries after commit and fires durable timers.
//!
//! Delivery is at-least-once: an entry is leased, delivered, then completed; a worker that
//! dies in between loses its lease and the entry is delivered again, with the same
//! idempotency key (the effect id) so the channel can drop the duplicate. Outcomes are
//! recorded on the journey under command ids derived from the effect id, so recording one
//! twice is a no-op.

use crate::engine::{Actor, Engine, Input};
use crate::error::Error;
use crate::messages;
use passage_core::journey::{Effect, TimerKind};
use passage_core::ports::{
    Account, AccountDirectory, CallExpectation, Channel, EventStore, JourneyId, MessageKind,
    OutboundMessage, OutboxEntry, SendError, TimerEntry,
};
use passage_core::secrets::{derived_id, unseal};
use passage_core::time::Timestamp;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// How long a claimed entry stays with this worker before others may take it over. A
    /// delivery gets [`delivery_budget`] of it and counts as a transient failure after that.
    pub lease: Duration,
    /// Entries claimed per pass.
    pub batch: usize,
    /// Delivery attempts before an entry is given up (transient failures only).
    pub max_attempts: u32,
    /// Longest sleep between passes when nothing signals new work.
    pub idle_poll: Duration,
    /// Shown in every message.
    pub portal_name: String,
    /// Leave support alerts (`raise-alert` effects) to another process: set on nodes that
    /// have no alert route while `passage bot` (or another node) delivers them.
    pub skip_alerts: bool,
}

/// How long one delivery may take under `lease`: three quarters of it, so the last quarter
/// is left to record the outcome (a commit) before the lease lapses.
pub fn delivery_budget(lease: Duration) -> Duration {
    lease * 3 / 4
}

/// How much longer than a provider's own timeout a delivery's budget must be. The
/// provider's timeout should fire first, with its own specific error; the margin covers
/// connecting, and the account read and queueing before the call.
pub const DELIVERY_MARGIN: Duration = Duration::from_secs(5);

/// The shortest lease, in whole seconds, whose [`delivery_budget`] leaves a provider with
/// this timeout its whole timeout plus [`DELIVERY_MARGIN`].
pub fn least_lease(provider_timeout: Duration) -> Duration {
    let needed = provider_timeout.saturating_add(DELIVERY_MARGIN).as_millis();
    let secs = needed.saturating_mul(4).div_ceil(3).div_ceil(1000);
    Duration::from_secs(u64::try_from(secs).unwrap_or(u64::MAX))
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            // Above the slowest default provider timeout (SMTP's 30 s) once only
            // `delivery_budget` of it is given to a delivery: 45 s.
            lease: Duration::from_secs(60),
            batch: 64,
            max_attempts: 8,
            idle_poll: Duration::from_secs(1),
            portal_name: "Enterprise Customer Portal".into(),
            skip_alerts: false,
        }
    }
}

/// What one [`Worker::drain`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    pub delivered: usize,
    pub retried: usize,
    pub failed: usize,
    pub timers_fired: usize,
}

#[derive(Debug, Clone)]
pub struct Worker<S, D, C> {
    engine: Engine<S, D>,
    channel: C,
    options: WorkerOptions,
}

enum Delivery {
    Delivered,
    Retried,
    Failed,
}

impl<S: EventStore, D: AccountDirectory, C: Channel> Worker<S, D, C> {
    pub fn new(engine: Engine<S, D>, channel: C, options: WorkerOptions) -> Self {
        Self {
            engine,
            channel,
            options,
        }
    }

    /// Runs until `shutdown` turns true; the pass in progress finishes first.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        info!("worker started");
        loop {
            if *shutdown.borrow() {
                break;
            }
            let busy = match self.pass().await {
                Ok(r) => r.delivered + r.retried + r.failed + r.timers_fired > 0,
                Err(e) => {
                    error!("failed to run a worker pass: {e}");
                    false
                }
            };
            if busy {
                continue;
            }
            let wait = match self.engine.store().next_due().await {
                Ok(Some(at)) => {
                    let now = self.engine.now();
                    if at <= now {
                        Duration::from_millis(20)
                    } else {
                        at.since(now)
                    }
                }
                Ok(None) => self.options.idle_poll,
                Err(e) => {
                    warn!("failed to read the next due time: {e}");
                    self.options.idle_poll
                }
            }
            .min(self.options.idle_poll);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.engine.wake().notified() => {}
                // Work committed by other processes or nodes (LISTEN/NOTIFY on PostgreSQL).
                _ = self.engine.store().wait_for_work(self.options.idle_poll) => {}
                _ = shutdown.changed() => {}
            }
        }
        info!("worker stopped");
    }

    /// Delivers everything due now, repeatedly, until nothing due is left. Timers due later
    /// stay pending for a running worker.
    pub async fn drain(&self) -> Result<DrainReport, Error> {
        self.drain_in(None).await
    }

    /// [`Worker::drain`] for one journey only: a command that drives a journey by hand
    /// delivers that journey's messages and fires its timers, and leaves the rest of a
    /// shared store's queue to the nodes' workers (an operator's terminal must not take
    /// other people's codes into its own dev outbox).
    pub async fn drain_journey(&self, journey: JourneyId) -> Result<DrainReport, Error> {
        self.drain_in(Some(journey)).await
    }

    async fn drain_in(&self, journey: Option<JourneyId>) -> Result<DrainReport, Error> {
        let mut total = DrainReport::default();
        loop {
            let r = self.pass_in(journey).await?;
            let any = r.delivered + r.retried + r.failed + r.timers_fired;
            total.delivered += r.delivered;
            total.retried += r.retried;
            total.failed += r.failed;
            total.timers_fired += r.timers_fired;
            if any == 0 || r.retried == any {
                return Ok(total);
            }
        }
    }

    /// One pass: claim and handle due effects, then due timers.
    pub async fn pass(&self) -> Result<DrainReport, Error> {
        self.pass_in(None).await
    }

    async fn pass_in(&self, journey: Option<JourneyId>) -> Result<DrainReport, Error> {
        let mut report = DrainReport::default();
        let store = self.engine.store();
        let now = self.engine.now();
        // Taken before the claim, so the budget ends no later than 3/4 of the lease even
        // when the account read below or a busy runtime delays the deliveries.
        let deadline = tokio::time::Instant::now() + delivery_budget(self.options.lease);
        let (lease, batch) = (self.options.lease, self.options.batch);
        let skip = self.options.skip_alerts.then_some("raise-alert");
        let entries = match (journey, skip) {
            (Some(j), skip) => {
                store
                    .claim_journey_effects(j, now, lease, batch, skip)
                    .await?
            }
            (None, Some(kind)) => store.claim_effects_except(now, lease, batch, kind).await?,
            (None, None) => store.claim_effects(now, lease, batch).await?,
        };
        // The accounts the batch is addressed to, in one read: the deliveries below would
        // otherwise each make their own, at the same moment.
        let effects: Vec<Result<Effect, serde_json::Error>> = entries
            .iter()
            .map(|e| serde_json::from_str(&e.payload))
            .collect();
        let mut ids: Vec<&str> = effects
            .iter()
            .filter_map(|e| e.as_ref().ok().and_then(account_of))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        // When the batch read fails, each delivery looks its account up alone, so that a
        // directory failure fails only the deliveries that need an account (each then stays
        // leased and is retried), as before the batch read, and alerts still go out.
        let accounts: Option<Arc<HashMap<String, Account>>> =
            match self.engine.directory().get_many(&ids).await {
                Ok(found) => Some(Arc::new(
                    found
                        .into_iter()
                        .map(|a| (a.account_id.clone(), a))
                        .collect(),
                )),
                Err(e) => {
                    warn!(
                        "failed to read the accounts of {} deliveries at once: {e}",
                        ids.len()
                    );
                    None
                }
            };
        // Deliveries of one pass run concurrently: a slow provider call does not hold up
        // the others, and the outcomes they record share the store's group commits.
        let mut running = tokio::task::JoinSet::new();
        for (entry, effect) in entries.into_iter().zip(effects) {
            let (worker, accounts) = (self.clone(), accounts.clone());
            running.spawn(async move {
                match worker
                    .deliver(&entry, effect, accounts.as_deref(), deadline)
                    .await
                {
                    Err(e) => worker.unrecorded(&entry, e).await,
                    done => done,
                }
            });
        }
        let mut first_error = None;
        while let Some(joined) = running.join_next().await {
            match joined {
                Ok(Ok(Delivery::Delivered)) => report.delivered += 1,
                Ok(Ok(Delivery::Retried)) => report.retried += 1,
                Ok(Ok(Delivery::Failed)) => report.failed += 1,
                // The entry stays leased and is retried when the lease lapses.
                Ok(Err(e)) => first_error = first_error.or(Some(e)),
                Err(e) => error!("a delivery task failed: {e}"),
            }
        }
        // A delivery that failed does not hold up the timers: they are claimed all the same,
        // and the error is returned after them.
        // The deliveries may have taken most of a lease: a timer's lease starts now, and
        // timers that fell due meanwhile are taken in this pass.
        let now = self.engine.now();
        let timers = match journey {
            Some(j) => store.claim_journey_timers(j, now, lease, batch).await?,
            None => store.claim_timers(now, lease, batch).await?,
        };
        let mut running = tokio::task::JoinSet::new();
        for timer in timers {
            let worker = self.clone();
            running.spawn(async move { worker.fire(&timer).await });
        }
        while let Some(joined) = running.join_next().await {
            match joined {
                Ok(Ok(())) => report.timers_fired += 1,
                Ok(Err(e)) => first_error = first_error.or(Some(e)),
                Err(e) => error!("a timer task failed: {e}"),
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// A delivery whose outcome could not be recorded. Most such errors pass (a busy or
    /// unreachable store, contention, a newer build's data during a rolling upgrade): the
    /// error stands, the entry stays leased and comes back when the lease lapses, as it
    /// always did. But a journey no key of this deployment opens ([`Error::Unreadable`]) or
    /// whose definition the store lacks can never take an outcome: left like that, its
    /// entry would fail a pass every lease, forever, without counting an attempt. Those are
    /// rescheduled with backoff like a failed send and given up after `max_attempts`, each
    /// try open to any node.
    async fn unrecorded(&self, entry: &OutboxEntry, e: Error) -> Result<Delivery, Error> {
        if !matches!(e, Error::Unreadable(_) | Error::MissingDefinition { .. }) {
            return Err(e);
        }
        let attempt = entry.attempts + 1;
        let retry_after = (attempt < self.options.max_attempts).then(|| backoff(attempt));
        let give_up = retry_after.is_none();
        error!(
            effect = %entry.effect_id, journey = %entry.stream, attempt, give_up,
            "the outcome of a delivery could not be recorded: {e}"
        );
        let at = retry_after.map(|d| self.engine.now().plus(d));
        let note = format!("the outcome could not be recorded: {e}");
        match self
            .engine
            .store()
            .reschedule_effect(entry.effect_id, entry.lease, at, &note)
            .await
        {
            Ok(true) if give_up => Ok(Delivery::Failed),
            Ok(true) => Ok(Delivery::Retried),
            // Another worker holds the entry now (our lease lapsed): it decides.
            Ok(false) => {
                debug!(effect = %entry.effect_id, "effect lease lost before rescheduling");
                Ok(Delivery::Retried)
            }
            Err(_) => Err(e),
        }
    }

    async fn fire(&self, timer: &TimerEntry) -> Result<(), Error> {
        // A payload this build cannot decode may be a newer build's (a rolling upgrade): the
        // error stands and the timer comes back when its lease lapses, perhaps to a newer node.
        let kind: TimerKind = serde_json::from_str(&timer.payload)
            .map_err(|e| Error::Decode(format!("timer {}: {e}", timer.timer_id)))?;
        // The timer id is the command id: firing twice (after a crash) is a no-op.
        match self
            .engine
            .submit(
                timer.stream,
                Input::Timer(kind),
                Actor::system(),
                Some(timer.timer_id),
            )
            .await
        {
            Ok(_) | Err(Error::UnknownJourney(_)) => {}
            // A journey no key of this deployment opens can never take the timer: left
            // pending, it would fail every pass, every lease, forever.
            Err(e @ Error::Unreadable(_)) => error!(
                timer = %timer.timer_id, journey = %timer.stream,
                "timer given up: {e}"
            ),
            Err(e) => return Err(e),
        }
        let held = self
            .engine
            .store()
            .complete_timer(timer.timer_id, timer.lease, self.engine.now())
            .await?;
        if !held {
            // Another worker took the timer over; its firing is the same command id.
            debug!(timer = %timer.timer_id, journey = %timer.stream, "timer lease lost before completion");
            return Ok(());
        }
        debug!(timer = %timer.timer_id, journey = %timer.stream, "timer fired");
        Ok(())
    }

    async fn deliver(
        &self,
        entry: &OutboxEntry,
        effect: Result<Effect, serde_json::Error>,
        accounts: Option<&HashMap<String, Account>>,
        deadline: tokio::time::Instant,
    ) -> Result<Delivery, Error> {
        let store = self.engine.store();
        let effect = match effect {
            Ok(e) => e,
            Err(e) => {
                error!(effect = %entry.effect_id, "failed to decode outbox entry: {e}");
                if !store
                    .reschedule_effect(entry.effect_id, entry.lease, None, "undecodable payload")
                    .await?
                {
                    debug!(effect = %entry.effect_id, "effect lease lost before giving up");
                }
                return Ok(Delivery::Failed);
            }
        };
        let result = match self.message_for(entry, &effect, accounts).await? {
            Ok(Some(message)) => {
                // Give up while the lease still holds, so the outcome is recorded before
                // another node may claim the entry: a call still running when the lease
                // lapses would be made a second time.
                // A budget already spent (a slow account read) calls nobody: a provider call
                // now would be cut off at once, and could use up a circuit's probe.
                let answered = if tokio::time::Instant::now() < deadline {
                    tokio::time::timeout_at(deadline, self.channel.deliver(&message))
                        .await
                        .ok()
                } else {
                    None
                };
                match answered {
                    Some(sent) => sent.map(Some),
                    None => Err(SendError::Transient(format!(
                        "no answer from the provider within {} ms of the claim (3/4 of the {} ms lease)",
                        delivery_budget(self.options.lease).as_millis(),
                        self.options.lease.as_millis()
                    ))),
                }
            }
            Ok(None) => Ok(None),
            Err(permanent) => Err(SendError::Permanent(permanent)),
        };
        let channel = channel_name(&effect);
        let journey = entry.stream;
        match result {
            Ok(receipt) => {
                if let Some(receipt) = receipt {
                    let id = derived_id(&[entry.effect_id.as_bytes(), b"delivered"]);
                    let input = Input::Delivered {
                        effect_id: entry.effect_id,
                        channel: channel.into(),
                        provider_ref: receipt.provider_ref,
                    };
                    match self
                        .engine
                        .submit(journey, input, Actor::system(), Some(id))
                        .await
                    {
                        Ok(_) => {}
                        // Sent, to a journey that can never take the outcome: the entry is
                        // completed below all the same, or it would be sent again.
                        Err(e @ Error::Unreadable(_)) => error!(
                            effect = %entry.effect_id, %journey, channel,
                            "delivered, but the outcome cannot be recorded: {e}"
                        ),
                        Err(e) => return Err(e),
                    }
                }
                if !store
                    .complete_effect(entry.effect_id, entry.lease, self.engine.now())
                    .await?
                {
                    // Our lease lapsed and another worker holds the entry: it delivers again
                    // under the same idempotency key, so there is nothing more to do here.
                    debug!(effect = %entry.effect_id, %journey, "effect lease lost before completion");
                }
                debug!(effect = %entry.effect_id, %journey, channel, "effect delivered");
                Ok(Delivery::Delivered)
            }
            Err(err) => {
                let attempt = entry.attempts + 1;
                let retry_after = match &err {
                    SendError::Permanent(_) => None,
                    _ if attempt >= self.options.max_attempts => None,
                    SendError::RateLimited {
                        retry_after: Some(d),
                    } => Some(*d),
                    _ => Some(backoff(attempt)),
                };
                let permanent = retry_after.is_none();
                let message = err.to_string();
                warn!(effect = %entry.effect_id, %journey, channel, attempt, permanent, "failed to deliver: {message}");
                let id = derived_id(&[
                    entry.effect_id.as_bytes(),
                    b"failed",
                    &attempt.to_be_bytes(),
                ]);
                let input = Input::DeliveryFailed {
                    effect_id: entry.effect_id,
                    channel: channel.into(),
                    error: message.clone(),
                    permanent,
                };
                self.engine
                    .submit(journey, input, Actor::system(), Some(id))
                    .await?;
                let at = retry_after.map(|d| self.engine.now().plus(d));
                if !store
                    .reschedule_effect(entry.effect_id, entry.lease, at, &message)
                    .await?
                {
                    debug!(effect = %entry.effect_id, %journey, "effect lease lost before rescheduling");
                }
                Ok(if permanent {
                    Delivery::Failed
                } else {
                    Delivery::Retried
                })
            }
        }
    }

    /// After a reset is applied: every other session of the account ends (R45) and every
    /// other open journey for the same address is cancelled (R44). Both are idempotent, so a
    /// retried effect repeats them harmlessly.
    async fn revoke_after_reset(
        &self,
        entry: &OutboxEntry,
        account_id: &str,
        changed_at: Timestamp,
    ) -> Result<(), Error> {
        let journey = entry.stream;
        let now = self.engine.now();
        let revoked = self
            .engine
            .directory()
            .revoke_sessions(
                account_id,
                Some(&journey.to_string()),
                changed_at,
                now,
                "password-reset",
            )
            .await?;
        let Some(subject) = self.engine.subject(journey).await? else {
            return Ok(());
        };
        // Journeys live minutes; a day back covers every one that can still be open.
        let since = Timestamp(now.0 - 24 * 3600 * 1000);
        let others = self
            .engine
            .store()
            .journeys_by_subject(&subject, since)
            .await?;
        // Journeys started after the reset completed are new requests, not leftovers. Times
        // are milliseconds, so one started in the very millisecond the reset completed is
        // placed by the log instead: before or after the completing event.
        let mut leftovers = Vec::new();
        let mut completed_at_position = None;
        for j in others.iter().filter(|j| {
            j.journey_id != journey && j.status == "active" && j.started_at <= changed_at
        }) {
            if j.started_at < changed_at {
                leftovers.push(j);
                continue;
            }
            let completed = match completed_at_position {
                Some(p) => p,
                None => *completed_at_position
                    .insert(self.position_of(journey, "PasswordChanged").await?),
            };
            let started = self.position_of(j.journey_id, "JourneyStarted").await?;
            if started < completed {
                leftovers.push(j);
            }
        }
        let mut cancelled = 0;
        for other in leftovers {
            let id = derived_id(&[
                b"revoke-after-reset",
                entry.effect_id.as_bytes(),
                other.journey_id.0.as_bytes(),
            ]);
            let input = Input::Cancel {
                reason: passage_core::journey::view::SUPERSEDED_REASON.into(),
            };
            self.engine
                .submit(other.journey_id, input, Actor::system(), Some(id))
                .await?;
            cancelled += 1;
        }
        info!(%journey, sessions = revoked, journeys = cancelled, "revoked after the reset (R44, R45)");
        Ok(())
    }

    /// The log position of the last event of `event_type` in `journey` (`u64::MAX` when it
    /// has none, which sorts after everything).
    async fn position_of(
        &self,
        journey: passage_core::ports::JourneyId,
        event_type: &str,
    ) -> Result<u64, Error> {
        let stored = self.engine.store().read_stream(journey).await?;
        Ok(stored
            .iter()
            .rev()
            .find(|e| e.event_type == event_type)
            .map_or(u64::MAX, |e| e.position))
    }

    /// Builds the message for an effect. `Ok(Err(reason))` is a permanent failure;
    /// `Ok(Ok(None))` an effect that was applied without a channel.
    async fn message_for(
        &self,
        entry: &OutboxEntry,
        effect: &Effect,
        accounts: Option<&HashMap<String, Account>>,
    ) -> Result<Result<Option<OutboundMessage>, String>, Error> {
        let portal = &self.options.portal_name;
        let directory = self.engine.directory();
        let keys = self.engine.keys();
        if let Effect::RaiseAlert {
            dedup_key,
            text,
            update,
            mention,
            resolved,
            ..
        } = effect
        {
            return Ok(Ok(Some(OutboundMessage {
                notice: false,
                idempotency_key: entry.effect_id,
                journey_id: entry.stream,
                kind: MessageKind::Alert {
                    dedup_key: dedup_key.clone(),
                    text: text.clone(),
                    update: *update,
                    mention: *mention,
                    resolved: *resolved,
                },
            })));
        }
        let Some(account_id) = account_of(effect) else {
            return Ok(Err("the effect names no account".into()));
        };
        let account = match accounts {
            Some(found) => found.get(account_id).cloned(),
            None => directory.get(account_id).await?,
        };
        let Some(account) = account else {
            return Ok(Err(format!("account {account_id} no longer exists")));
        };
        let phone = || {
            account
                .phone
                .clone()
                .ok_or_else(|| "the account has no phone number".to_owned())
        };
        let unsealed = |sealed: &str| {
            unseal(keys, entry.effect_id, sealed).ok_or_else(|| {
                "the code cannot be unsealed: was the secret key changed?".to_owned()
            })
        };
        let kind = match effect {
            Effect::SendCode {
                channel,
                sealed_code,
                expires_at,
                ..
            } => {
                let code = match unsealed(sealed_code) {
                    Ok(c) => c,
                    Err(e) => return Ok(Err(e)),
                };
                match channel {
                    passage_core::definition::CodeChannel::Email => {
                        let minutes = expires_at
                            .since(self.engine.now())
                            .as_secs()
                            .div_ceil(60)
                            .max(1);
                        let (subject, text) = messages::code_email(portal, &code, minutes);
                        MessageKind::Email {
                            to: account.email.clone(),
                            subject,
                            text,
                        }
                    }
                    passage_core::definition::CodeChannel::Sms => match phone() {
                        Ok(to) => MessageKind::Sms {
                            to,
                            text: messages::code_sms(portal, &code),
                        },
                        Err(e) => return Ok(Err(e)),
                    },
                }
            }
            Effect::PlaceCall {
                call_id,
                sealed_code,
                ..
            } => {
                let to = match phone() {
                    Ok(p) => p,
                    Err(e) => return Ok(Err(e)),
                };
                let (say, expect) = match sealed_code {
                    None => (messages::pound_call(portal), CallExpectation::PressPound),
                    Some(s) => match unsealed(s) {
                        Ok(code) => (
                            messages::spoken_code_call(portal, &code),
                            CallExpectation::ListenOnly,
                        ),
                        Err(e) => return Ok(Err(e)),
                    },
                };
                MessageKind::Call {
                    to,
                    call_id: *call_id,
                    say,
                    expect,
                }
            }
            Effect::ApplyPassword { phc, notify_at, .. } => {
                // Applying is idempotent, so a retry after a failed notice applies again.
                let changed_at = notify_at.unwrap_or_else(|| self.engine.now());
                if directory
                    .set_password_hash(account_id, phc, changed_at)
                    .await?
                {
                    info!(account = %account_id, "password applied to the account directory");
                    self.revoke_after_reset(entry, account_id, changed_at)
                        .await?;
                } else {
                    // A reset completed later already set the password: this one changes
                    // nothing, revokes nothing, and its person is told so by the notice.
                    info!(account = %account_id, "password superseded by a later reset; not applied");
                }
                let Some(at) = notify_at else {
                    return Ok(Ok(None));
                };
                let (subject, text) = messages::password_changed_email(portal, *at);
                MessageKind::Email {
                    to: account.email.clone(),
                    subject,
                    text,
                }
            }
            Effect::SendNudge { .. } => {
                let (subject, text) = messages::nudge_email(portal);
                MessageKind::Email {
                    to: account.email.clone(),
                    subject,
                    text,
                }
            }
            // Handled before the account lookup; never reached.
            Effect::RaiseAlert { .. } => return Ok(Err("an alert has no account".into())),
            Effect::NotifyPasswordChanged { changed_at, .. } => {
                let (subject, text) = messages::password_changed_email(portal, *changed_at);
                MessageKind::Email {
                    to: account.email.clone(),
                    subject,
                    text,
                }
            }
        };
        Ok(Ok(Some(OutboundMessage {
            // "Your password was changed" reaches the person even when someone spent their
            // address's budget by starting resets for it (R46).
            notice: matches!(effect, Effect::ApplyPassword { .. }),
            idempotency_key: entry.effect_id,
            journey_id: entry.stream,
            kind,
        })))
    }
}

/// The account an effect is addressed to (alerts go to support, not to an account).
fn account_of(effect: &Effect) -> Option<&str> {
    match effect {
        Effect::SendCode { account_id, .. }
        | Effect::PlaceCall { account_id, .. }
        | Effect::ApplyPassword { account_id, .. }
        | Effect::SendNudge { account_id, .. }
        | Effect::NotifyPasswordChanged { account_id, .. } => Some(account_id),
        Effect::RaiseAlert { .. } => None,
    }
}

fn channel_name(effect: &Effect) -> &'static str {
    match effect {
        Effect::SendCode { channel, .. } => channel.as_str(),
        Effect::PlaceCall { .. } => "voice",
        Effect::ApplyPassword {
            notify_at: Some(_), ..
        } => "email",
        Effect::ApplyPassword {
            notify_at: None, ..
        } => "directory",
        Effect::NotifyPasswordChanged { .. } | Effect::SendNudge { .. } => "email",
        Effect::RaiseAlert { .. } => "support",
    }
}

/// Exponential backoff with jitter: about 2 s, 4 s, 8 s ... capped at 5 minutes.
fn backoff(attempt: u32) -> Duration {
    let base = 2_000u64.saturating_mul(1u64 << attempt.min(16)) / 2;
    let capped = base.min(300_000);
    let jitter = rand::random_range(0..=capped / 4);
    Duration::from_millis(capped - capped / 8 + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_lease_is_the_shortest_that_leaves_the_timeout_and_the_margin() {
        for secs in 1..=600 {
            let timeout = Duration::from_secs(secs);
            let least = least_lease(timeout);
            assert!(
                delivery_budget(least) >= timeout + DELIVERY_MARGIN,
                "{secs} s: {least:?}"
            );
            assert!(
                delivery_budget(least - Duration::from_secs(1)) < timeout + DELIVERY_MARGIN,
                "{secs} s: {least:?} is not the shortest"
            );
        }
        // The default lease serves the default SMTP timeout.
        assert!(least_lease(Duration::from_secs(30)) <= WorkerOptions::default().lease);
        assert_eq!(
            least_lease(Duration::from_secs(30)),
            Duration::from_secs(47)
        );
        // No overflow, whatever the configuration says.
        assert!(least_lease(Duration::MAX) >= Duration::from_secs(u64::MAX / 1000));
    }
}
