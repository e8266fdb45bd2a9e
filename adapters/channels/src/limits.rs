//! Abuse and cost limits on sending (R17, R18).
//!
//! [`LimitedChannel`] sits in front of the providers. For every message it checks, in this
//! order:
//!
//! 1. SMS and calls: the destination starts with one of the allowed country prefixes
//!    (toll-fraud and SMS-pumping protection; premium and foreign ranges never get a send);
//! 2. the budgets of the message's channel: per recipient (address or number), per journey,
//!    per destination prefix (SMS and calls) and global, each "at most `max` sends per
//!    `window_secs`" in a sliding window.
//!
//! Over a budget, the send fails with `SendError::Permanent("budget exceeded: …")`: the
//! worker records `MessageFailed` and stops retrying. The person-facing response never
//! changes, because sending is asynchronous (R1).
//!
//! A send is counted once per idempotency key: the worker's retries of one message after a
//! transient failure do not use up the person's budget, but every distinct message does.
//! Nothing is refunded when a provider then fails, so the budget is a ceiling on what could
//! have been paid for.
//!
//! Counters live behind [`LimitStore`]. [`InMemoryLimitStore`] counts per process: with
//! several worker processes or nodes each has its own counters, so the effective budget is
//! multiplied by the number of workers. The `passage` binary counts in the event store's
//! database instead (its `budgets` module), which every node shares.

use crate::Error;
use crate::clock::SharedClock;
use crate::twilio::normalize_phone;
use passage_core::mask::{mask_email, mask_phone};
use passage_core::ports::{Channel, MessageKind, OutboundMessage, Receipt, SendError};
use passage_core::time::Timestamp;
use serde::Deserialize;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tracing::{error, warn};
use uuid::Uuid;

/// At most `max` sends per `window_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub max: u32,
    pub window_secs: u64,
}

impl Budget {
    pub const fn per(max: u32, window_secs: u64) -> Self {
        Self { max, window_secs }
    }

    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_secs)
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} per {}",
            self.max,
            passage_core::time::format_duration(self.window())
        )
    }
}

/// The budgets of one channel; `None` means no budget of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelLimits {
    pub per_recipient: Option<Budget>,
    pub per_journey: Option<Budget>,
    /// Per allowed destination prefix (SMS and calls only), e.g. all of `+64`.
    pub per_prefix: Option<Budget>,
    pub global: Option<Budget>,
}

/// Limits of every channel. A `[limits.sms]` table replaces the SMS defaults as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub email: ChannelLimits,
    pub sms: ChannelLimits,
    pub voice: ChannelLimits,
    /// Country prefixes a phone number must start with (`"+61"`). Empty: no phone
    /// destination is allowed at all; `["+"]` allows every country (not recommended).
    pub allowed_prefixes: Vec<String>,
}

const HOUR: u64 = 3600;

impl Default for LimitsConfig {
    /// Backstops above what the journeys themselves allow (a journey resends a code at most
    /// a few times), so a person never meets them but a script driving many journeys does.
    fn default() -> Self {
        Self {
            email: ChannelLimits {
                per_recipient: Some(Budget::per(10, HOUR)),
                per_journey: Some(Budget::per(8, HOUR)),
                per_prefix: None,
                global: Some(Budget::per(10_000, HOUR)),
            },
            sms: ChannelLimits {
                per_recipient: Some(Budget::per(5, HOUR)),
                per_journey: Some(Budget::per(4, HOUR)),
                per_prefix: Some(Budget::per(200, HOUR)),
                global: Some(Budget::per(1_000, HOUR)),
            },
            voice: ChannelLimits {
                per_recipient: Some(Budget::per(3, HOUR)),
                per_journey: Some(Budget::per(3, HOUR)),
                per_prefix: Some(Budget::per(100, HOUR)),
                global: Some(Budget::per(300, HOUR)),
            },
            allowed_prefixes: vec!["+61".into(), "+64".into()],
        }
    }
}

/// One counter: a channel and what it counts. Its `Debug` masks the recipient (R50).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BudgetKey {
    pub channel: &'static str,
    pub scope: Scope,
}

/// What a budget counts. `Debug` masks the recipient (R50).
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// A normalized email address or E.164 number.
    Recipient(String),
    Journey(Uuid),
    /// An allowed destination prefix such as `+61`.
    Prefix(String),
    Global,
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Recipient(r) if r.contains('@') => write!(f, "Recipient({})", mask_email(r)),
            Scope::Recipient(r) => write!(f, "Recipient({})", mask_phone(r)),
            Scope::Journey(j) => write!(f, "Journey({j})"),
            Scope::Prefix(p) => write!(f, "Prefix({p})"),
            Scope::Global => f.write_str("Global"),
        }
    }
}

impl BudgetKey {
    /// An unambiguous plain name of the counter, the same in every process: what a shared
    /// [`LimitStore`] keys on. It holds the recipient in clear; a store hashes it before
    /// keeping it (R50).
    pub fn identity(&self) -> String {
        let (kind, value) = match &self.scope {
            Scope::Recipient(r) => ("recipient", r.clone()),
            Scope::Journey(j) => ("journey", j.to_string()),
            Scope::Prefix(p) => ("prefix", p.clone()),
            Scope::Global => ("global", String::new()),
        };
        format!("{}\0{kind}\0{value}", self.channel)
    }

    /// For messages and logs: the recipient masked.
    pub fn describe(&self) -> String {
        match &self.scope {
            Scope::Recipient(r) if self.channel == "email" => {
                format!("{} per recipient ({})", self.channel, mask_email(r))
            }
            Scope::Recipient(r) => format!("{} per recipient ({})", self.channel, mask_phone(r)),
            Scope::Journey(j) => format!("{} per journey ({j})", self.channel),
            Scope::Prefix(p) => format!("{} per destination prefix {p}", self.channel),
            Scope::Global => format!("{} global", self.channel),
        }
    }
}

impl fmt::Debug for BudgetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// What a [`LimitStore`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Counted (or already counted under the same token).
    Admitted,
    /// The budget of this key is spent; nothing was counted.
    Exceeded { key: BudgetKey, budget: Budget },
}

/// Sliding-window counters.
pub trait LimitStore: Clone + Send + Sync + 'static {
    /// Atomically: if every key has room at `now` (or already counted `token` within its
    /// window), count `token` against all of them; otherwise count nothing and name the
    /// first key whose budget is spent.
    fn try_acquire(
        &self,
        now: Timestamp,
        token: Uuid,
        keys: &[(BudgetKey, Budget)],
    ) -> impl Future<Output = Result<Admission, Error>> + Send;
}

/// Counters in this process's memory (see the module docs for the multi-node caveat).
#[derive(Clone, Default)]
pub struct InMemoryLimitStore {
    inner: Arc<Mutex<Counters>>,
}

#[derive(Default)]
struct Counters {
    /// Per key: the window it was last used with, and the (time, token) of each send in it.
    /// A key never holds more than its budget's `max` entries.
    windows: HashMap<BudgetKey, (Duration, VecDeque<(Timestamp, Uuid)>)>,
    calls: u64,
}

impl fmt::Debug for InMemoryLimitStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self
            .inner
            .lock()
            .map(|c| c.windows.len())
            .unwrap_or_default();
        f.debug_struct("InMemoryLimitStore")
            .field("keys", &keys)
            .finish()
    }
}

impl InMemoryLimitStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn acquire(&self, now: Timestamp, token: Uuid, keys: &[(BudgetKey, Budget)]) -> Admission {
        let mut c = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        c.calls += 1;
        if c.calls.is_multiple_of(1024) {
            // Drop keys whose every entry left its window, so memory follows the traffic of
            // the last window, not of the process's lifetime.
            c.windows
                .retain(|_, (window, q)| q.back().is_some_and(|(at, _)| now.since(*at) < *window));
        }
        for (key, budget) in keys {
            let Some((_, q)) = c.windows.get_mut(key) else {
                if budget.max == 0 {
                    return Admission::Exceeded {
                        key: key.clone(),
                        budget: *budget,
                    };
                }
                continue;
            };
            while q
                .front()
                .is_some_and(|(at, _)| now.since(*at) >= budget.window())
            {
                q.pop_front();
            }
            let seen = q.iter().any(|(_, t)| *t == token);
            if !seen && q.len() >= budget.max as usize {
                return Admission::Exceeded {
                    key: key.clone(),
                    budget: *budget,
                };
            }
        }
        for (key, budget) in keys {
            let (window, q) = c
                .windows
                .entry(key.clone())
                .or_insert_with(|| (budget.window(), VecDeque::new()));
            *window = budget.window();
            if !q.iter().any(|(_, t)| *t == token) {
                q.push_back((now, token));
            }
        }
        Admission::Admitted
    }
}

impl LimitStore for InMemoryLimitStore {
    async fn try_acquire(
        &self,
        now: Timestamp,
        token: Uuid,
        keys: &[(BudgetKey, Budget)],
    ) -> Result<Admission, Error> {
        Ok(self.acquire(now, token, keys))
    }
}

/// Wraps a [`Channel`] with the allow-list and the budgets.
#[derive(Clone)]
pub struct LimitedChannel<C, S = InMemoryLimitStore> {
    inner: C,
    store: S,
    config: Arc<LimitsConfig>,
    clock: SharedClock,
}

impl<C: fmt::Debug, S: fmt::Debug> fmt::Debug for LimitedChannel<C, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitedChannel")
            .field("inner", &self.inner)
            .field("store", &self.store)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<C, S> LimitedChannel<C, S> {
    pub fn new(inner: C, store: S, config: LimitsConfig, clock: SharedClock) -> Self {
        Self {
            inner,
            store,
            config: Arc::new(config),
            clock,
        }
    }

    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// The budgets a message counts against, or a permanent refusal (destination not
    /// allowed, malformed number).
    fn keys_for(&self, message: &OutboundMessage) -> Result<Vec<(BudgetKey, Budget)>, SendError> {
        let (channel, limits, recipient, prefix) = match &message.kind {
            // Alerts go to the deployment's own support channel: no person, no budget.
            MessageKind::Alert { .. } => return Ok(Vec::new()),
            MessageKind::Email { to, .. } => {
                ("email", &self.config.email, to.trim().to_lowercase(), None)
            }
            MessageKind::Sms { to, .. } | MessageKind::Call { to, .. } => {
                let channel = message.kind.channel();
                let limits = if channel == "sms" {
                    &self.config.sms
                } else {
                    &self.config.voice
                };
                let number = normalize_phone(to).map_err(SendError::Permanent)?;
                let Some(prefix) = self
                    .config
                    .allowed_prefixes
                    .iter()
                    .filter(|p| number.starts_with(p.as_str()))
                    .max_by_key(|p| p.len())
                else {
                    return Err(SendError::Permanent(format!(
                        "destination not allowed: {} is outside the allowed country prefixes",
                        mask_phone(&number)
                    )));
                };
                (channel, limits, number.clone(), Some(prefix.clone()))
            }
        };
        let key = |scope| BudgetKey { channel, scope };
        let mut keys = Vec::with_capacity(4);
        // A security notice is not held back by budgets others can spend for the person
        // (anyone may start resets for an address); the global budget still caps it.
        if !message.notice {
            if let Some(b) = limits.per_recipient {
                keys.push((key(Scope::Recipient(recipient)), b));
            }
            if let Some(b) = limits.per_journey {
                keys.push((key(Scope::Journey(message.journey_id.0)), b));
            }
        }
        if let (Some(b), Some(p)) = (limits.per_prefix, prefix) {
            keys.push((key(Scope::Prefix(p)), b));
        }
        if let Some(b) = limits.global {
            keys.push((key(Scope::Global), b));
        }
        Ok(keys)
    }
}

impl<C: Channel, S: LimitStore> Channel for LimitedChannel<C, S> {
    async fn deliver(&self, message: &OutboundMessage) -> Result<Receipt, SendError> {
        let keys = match self.keys_for(message) {
            Ok(k) => k,
            Err(e) => {
                warn!(journey = %message.journey_id, channel = message.kind.channel(), "send refused: {e}");
                return Err(e);
            }
        };
        let now = self.clock.now();
        let admission = self
            .store
            .try_acquire(now, message.idempotency_key, &keys)
            .await
            // The counters are down: retry later rather than send without a ceiling.
            .map_err(|e| SendError::Transient(e.to_string()))?;
        if let Admission::Exceeded { key, budget } = admission {
            let what = key.describe();
            if matches!(key.scope, Scope::Global | Scope::Prefix(_)) {
                // A budget shared by everyone is spent: someone is pumping traffic or the
                // budget is too small. Operators alert on this target (R18).
                error!(target: "passage::alert", journey = %message.journey_id, "budget exceeded: {what} ({budget})");
            } else {
                warn!(journey = %message.journey_id, "budget exceeded: {what} ({budget})");
            }
            return Err(SendError::Permanent(format!(
                "budget exceeded: {what}, {budget}"
            )));
        }
        self.inner.deliver(message).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use passage_core::ports::{CallExpectation, JourneyId};
    use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

    #[derive(Clone, Default)]
    struct Counting(Arc<AtomicU32>);
    impl Channel for Counting {
        async fn deliver(&self, _: &OutboundMessage) -> Result<Receipt, SendError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(Receipt {
                provider_ref: "ok".into(),
            })
        }
    }

    fn sms(journey: JourneyId, to: &str) -> OutboundMessage {
        OutboundMessage {
            notice: false,
            idempotency_key: Uuid::new_v4(),
            journey_id: journey,
            kind: MessageKind::Sms {
                to: to.into(),
                text: "123456 is your code".into(),
            },
        }
    }

    fn setup(config: LimitsConfig) -> (LimitedChannel<Counting>, Counting, Arc<AtomicI64>) {
        let now = Arc::new(AtomicI64::new(10_000_000));
        let t = now.clone();
        let inner = Counting::default();
        let ch = LimitedChannel::new(
            inner.clone(),
            InMemoryLimitStore::new(),
            config,
            Arc::new(move || Timestamp(t.load(Ordering::SeqCst))),
        );
        (ch, inner, now)
    }

    fn only(sms: ChannelLimits) -> LimitsConfig {
        LimitsConfig {
            email: ChannelLimits::default(),
            sms,
            voice: ChannelLimits::default(),
            allowed_prefixes: vec!["+61".into(), "+64".into()],
        }
    }

    #[tokio::test]
    async fn per_recipient_budget_slides_and_retries_of_one_message_count_once() {
        let (ch, inner, now) = setup(only(ChannelLimits {
            per_recipient: Some(Budget::per(2, 3600)),
            ..Default::default()
        }));
        let j = JourneyId(Uuid::new_v4());
        let first = sms(j, "+61412345678");
        ch.deliver(&first).await.unwrap();
        // The worker retrying the same effect is not a new send.
        ch.deliver(&first).await.unwrap();
        ch.deliver(&first).await.unwrap();
        ch.deliver(&sms(j, "+61 412 345 678")).await.unwrap();
        let e = ch
            .deliver(&sms(j, "+61412345678"))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("budget exceeded: sms per recipient"), "{e}");
        assert!(e.contains("+61 ••• ••• 678"), "masked: {e}");
        assert!(!e.contains("412345678"), "{e}");
        // Another number is unaffected.
        ch.deliver(&sms(j, "+61499999999")).await.unwrap();
        assert_eq!(inner.0.load(Ordering::SeqCst), 5);
        // The window slides: one hour after the first send there is room again.
        now.fetch_add(3_600_000, Ordering::SeqCst);
        ch.deliver(&sms(j, "+61412345678")).await.unwrap();
    }

    #[tokio::test]
    async fn journey_prefix_and_global_budgets() {
        let (ch, _, _) = setup(only(ChannelLimits {
            per_journey: Some(Budget::per(1, 900)),
            per_prefix: Some(Budget::per(2, 3600)),
            global: Some(Budget::per(3, 3600)),
            ..Default::default()
        }));
        let j = JourneyId(Uuid::new_v4());
        ch.deliver(&sms(j, "+61400000001")).await.unwrap();
        let e = ch.deliver(&sms(j, "+61400000002")).await.unwrap_err();
        assert!(e.to_string().contains("per journey"), "{e}");
        // A burst across journeys sharing a prefix trips the prefix budget (R18).
        ch.deliver(&sms(JourneyId(Uuid::new_v4()), "+61400000003"))
            .await
            .unwrap();
        let e = ch
            .deliver(&sms(JourneyId(Uuid::new_v4()), "+61400000004"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("per destination prefix +61"), "{e}");
        ch.deliver(&sms(JourneyId(Uuid::new_v4()), "+64210000005"))
            .await
            .unwrap();
        let e = ch
            .deliver(&sms(JourneyId(Uuid::new_v4()), "+64210000006"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("sms global"), "{e}");
    }

    #[tokio::test]
    async fn destinations_outside_the_allow_list_are_refused_for_sms_and_calls() {
        let (ch, inner, _) = setup(only(ChannelLimits::default()));
        let j = JourneyId(Uuid::new_v4());
        let e = ch.deliver(&sms(j, "+88212345678")).await.unwrap_err();
        assert!(matches!(e, SendError::Permanent(ref m) if m.contains("destination not allowed")));
        let call = OutboundMessage {
            notice: false,
            idempotency_key: Uuid::new_v4(),
            journey_id: j,
            kind: MessageKind::Call {
                to: "+44201234567".into(),
                call_id: Uuid::new_v4(),
                say: "x".into(),
                expect: CallExpectation::PressPound,
            },
        };
        assert!(ch.deliver(&call).await.is_err());
        let e = ch.deliver(&sms(j, "0412345678")).await.unwrap_err();
        assert!(matches!(e, SendError::Permanent(_)), "not E.164: {e}");
        assert_eq!(inner.0.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn email_budget_per_recipient_is_case_insensitive() {
        let mut config = only(ChannelLimits::default());
        config.email.per_recipient = Some(Budget::per(1, 60));
        let (ch, _, _) = setup(config);
        let mail = |to: &str| OutboundMessage {
            notice: false,
            idempotency_key: Uuid::new_v4(),
            journey_id: JourneyId(Uuid::new_v4()),
            kind: MessageKind::Email {
                to: to.into(),
                subject: "s".into(),
                text: "t".into(),
            },
        };
        ch.deliver(&mail("alice@example.com")).await.unwrap();
        let e = ch.deliver(&mail("Alice@Example.com")).await.unwrap_err();
        assert!(e.to_string().contains("a•••e@e•••.com"), "{e}");
    }

    /// R46 under attack: resets started by anyone for alice's address spend her email
    /// budget, yet "your password was changed" still reaches her; other mail stays held.
    #[tokio::test]
    async fn a_security_notice_is_not_held_by_a_spent_recipient_budget() {
        let mut config = only(ChannelLimits::default());
        config.email.per_recipient = Some(Budget::per(2, 3600));
        config.email.per_journey = Some(Budget::per(1, 3600));
        config.email.global = Some(Budget::per(100, 3600));
        let (ch, inner, _) = setup(config);
        let journey = JourneyId(Uuid::new_v4());
        let mail = |notice: bool| OutboundMessage {
            idempotency_key: Uuid::new_v4(),
            journey_id: journey,
            kind: MessageKind::Email {
                to: "alice@example.com".into(),
                subject: "s".into(),
                text: "t".into(),
            },
            notice,
        };
        ch.deliver(&mail(false)).await.unwrap();
        assert!(ch.deliver(&mail(false)).await.is_err(), "budget spent");
        ch.deliver(&mail(true))
            .await
            .expect("the notice is sent anyway");
        assert!(
            ch.deliver(&mail(false)).await.is_err(),
            "other mail still held"
        );
        assert_eq!(inner.0.load(Ordering::SeqCst), 2, "a code and the notice");
    }

    #[test]
    fn a_refused_acquire_counts_nothing() {
        let store = InMemoryLimitStore::new();
        let k = |s| BudgetKey {
            channel: "sms",
            scope: s,
        };
        let tight = Budget::per(1, 60);
        let loose = Budget::per(10, 60);
        let a = [
            (k(Scope::Global), loose),
            (k(Scope::Journey(Uuid::nil())), tight),
        ];
        assert_eq!(
            store.acquire(Timestamp(0), Uuid::new_v4(), &a),
            Admission::Admitted
        );
        assert!(matches!(
            store.acquire(Timestamp(1), Uuid::new_v4(), &a),
            Admission::Exceeded { .. }
        ));
        let inner = store.inner.lock().unwrap();
        assert_eq!(inner.windows[&k(Scope::Global)].1.len(), 1);
    }
}
