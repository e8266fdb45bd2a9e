//! A circuit breaker around a provider.
//!
//! The worker already retries with exponential backoff per message; the breaker adds what
//! per-message retries cannot: when a provider is down, stop sending every due message to
//! it (each one waiting for a timeout) and fail fast with a transient error, so the worker
//! backs off and the provider is not hammered while it recovers.
//!
//! Closed → (N consecutive transient failures) → Open → (cool-down) → HalfOpen: one probe
//! is let through; success closes the circuit, a transient failure opens it again.
//! Permanent failures (a bad number) prove the provider answers, so they reset the count;
//! rate limiting is neither success nor failure (the worker honours `retry_after`).

use crate::clock::SharedClock;
use passage_core::ports::{Channel, OutboundMessage, Receipt, SendError};
use passage_core::time::Timestamp;
use serde::Deserialize;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tracing::{info, warn};

fn default_failures() -> u32 {
    5
}
fn default_cool_down() -> u64 {
    30
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive transient failures that open the circuit.
    #[serde(default = "default_failures")]
    pub failures: u32,
    /// How long the circuit stays open before one probe is let through.
    #[serde(default = "default_cool_down")]
    pub cool_down_secs: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: default_failures(),
            cool_down_secs: default_cool_down(),
        }
    }
}

/// The breaker's state, as observed from outside (for tests and health output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed { consecutive_failures: u32 },
    Open { until: Timestamp },
    HalfOpen { probe_in_flight: bool },
}

/// Wraps a [`Channel`]; clones share one state.
#[derive(Clone)]
pub struct CircuitBreaker<C> {
    inner: C,
    name: &'static str,
    config: BreakerConfig,
    clock: SharedClock,
    state: Arc<Mutex<CircuitState>>,
}

impl<C: fmt::Debug> fmt::Debug for CircuitBreaker<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("inner", &self.inner)
            .field("config", &self.config)
            .field("state", &self.state())
            .finish()
    }
}

enum Admit {
    Call { probe: bool },
    Refuse,
}

impl<C> CircuitBreaker<C> {
    /// `name` appears in logs and in the "circuit open" error (e.g. `twilio-sms`).
    pub fn new(inner: C, name: &'static str, config: BreakerConfig, clock: SharedClock) -> Self {
        Self {
            inner,
            name,
            config,
            clock,
            state: Arc::new(Mutex::new(CircuitState::Closed {
                consecutive_failures: 0,
            })),
        }
    }

    pub fn inner(&self) -> &C {
        &self.inner
    }

    pub fn state(&self) -> CircuitState {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn admit(&self) -> Admit {
        let now = self.clock.now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match *state {
            CircuitState::Closed { .. } => Admit::Call { probe: false },
            CircuitState::Open { until } if now >= until => {
                *state = CircuitState::HalfOpen {
                    probe_in_flight: true,
                };
                Admit::Call { probe: true }
            }
            CircuitState::Open { .. } => Admit::Refuse,
            CircuitState::HalfOpen {
                probe_in_flight: false,
            } => {
                *state = CircuitState::HalfOpen {
                    probe_in_flight: true,
                };
                Admit::Call { probe: true }
            }
            CircuitState::HalfOpen {
                probe_in_flight: true,
            } => Admit::Refuse,
        }
    }

    fn record(&self, outcome: &Result<Receipt, SendError>, probe: bool) {
        let now = self.clock.now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let transient = matches!(outcome, Err(SendError::Transient(_)));
        let neutral = matches!(outcome, Err(SendError::RateLimited { .. }));
        let next = match (*state, transient, neutral) {
            // A rate-limited probe proves nothing: let the next message probe again.
            (CircuitState::HalfOpen { .. }, _, true) => CircuitState::HalfOpen {
                probe_in_flight: false,
            },
            (s, _, true) => s,
            (_, false, false) => CircuitState::Closed {
                consecutive_failures: 0,
            },
            (
                CircuitState::Closed {
                    consecutive_failures,
                },
                true,
                false,
            ) if !probe => {
                let n = consecutive_failures.saturating_add(1);
                if n >= self.config.failures.max(1) {
                    CircuitState::Open {
                        until: now.plus(Duration::from_secs(self.config.cool_down_secs)),
                    }
                } else {
                    CircuitState::Closed {
                        consecutive_failures: n,
                    }
                }
            }
            // A failed probe, or a failure reported after another call opened the circuit.
            (_, true, false) => CircuitState::Open {
                until: now.plus(Duration::from_secs(self.config.cool_down_secs)),
            },
        };
        let was_open = !matches!(*state, CircuitState::Closed { .. });
        let is_open = matches!(next, CircuitState::Open { .. });
        if is_open && !matches!(*state, CircuitState::Open { .. }) {
            warn!(
                provider = self.name,
                cool_down_secs = self.config.cool_down_secs,
                "circuit opened after repeated transient failures"
            );
        } else if was_open && matches!(next, CircuitState::Closed { .. }) {
            info!(
                provider = self.name,
                "circuit closed: the provider answers again"
            );
        }
        *state = next;
    }
}

impl<C: Channel> Channel for CircuitBreaker<C> {
    fn remembered(&self, idempotency_key: uuid::Uuid) -> Option<Receipt> {
        self.inner.remembered(idempotency_key)
    }

    async fn deliver(&self, message: &OutboundMessage) -> Result<Receipt, SendError> {
        // A message the provider already accepted is answered from the receipt, whatever
        // the circuit's state: no call is made, so none is admitted or counted (a probe
        // answered this way would close the circuit without the provider being asked).
        if let Some(receipt) = self.inner.remembered(message.idempotency_key) {
            return Ok(receipt);
        }
        let probe = match self.admit() {
            Admit::Refuse => {
                return Err(SendError::Transient(format!(
                    "circuit open: {} is failing, not called",
                    self.name
                )));
            }
            Admit::Call { probe } => probe,
        };
        let mut pending = Pending {
            breaker: self,
            probe,
            open: true,
        };
        let outcome = self.inner.deliver(message).await;
        pending.open = false;
        self.record(&outcome, probe);
        outcome
    }
}

/// A call let through and not yet answered. The worker drops a delivery that outlives its
/// budget; without this the outcome would never be recorded, and a dropped probe would
/// leave the circuit half-open with its probe "in flight" for good, refusing every message.
/// A call given up on counts as a transient failure: the provider did not answer in time.
struct Pending<'a, C> {
    breaker: &'a CircuitBreaker<C>,
    probe: bool,
    open: bool,
}

impl<C> Drop for Pending<'_, C> {
    fn drop(&mut self) {
        if self.open {
            let gave_up = Err(SendError::Transient(format!(
                "{} gave no answer before the call was given up",
                self.breaker.name
            )));
            self.breaker.record(&gave_up, self.probe);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use passage_core::ports::{JourneyId, MessageKind};
    use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
    use uuid::Uuid;

    /// Fails transiently while `fail` is set; counts calls.
    #[derive(Clone, Default)]
    struct Flaky {
        calls: Arc<AtomicU32>,
        fail: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Channel for Flaky {
        async fn deliver(&self, _: &OutboundMessage) -> Result<Receipt, SendError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                Err(SendError::Transient("503".into()))
            } else {
                Ok(Receipt {
                    provider_ref: "ok".into(),
                })
            }
        }
    }

    fn message() -> OutboundMessage {
        OutboundMessage {
            notice: false,
            idempotency_key: Uuid::new_v4(),
            journey_id: JourneyId(Uuid::new_v4()),
            kind: MessageKind::Sms {
                to: "+61412345678".into(),
                text: "x".into(),
            },
        }
    }

    #[tokio::test]
    async fn opens_after_n_failures_then_half_opens_after_cool_down() {
        let now = Arc::new(AtomicI64::new(1_000_000));
        let t = now.clone();
        let clock: SharedClock = Arc::new(move || Timestamp(t.load(Ordering::SeqCst)));
        let flaky = Flaky::default();
        flaky.fail.store(true, Ordering::SeqCst);
        let config = BreakerConfig {
            failures: 3,
            cool_down_secs: 30,
        };
        let b = CircuitBreaker::new(flaky.clone(), "test", config, clock);
        for _ in 0..3 {
            assert!(matches!(
                b.deliver(&message()).await,
                Err(SendError::Transient(_))
            ));
        }
        assert!(matches!(b.state(), CircuitState::Open { .. }));
        // Open: the provider is not called.
        let e = b.deliver(&message()).await.unwrap_err().to_string();
        assert!(e.contains("circuit open"), "{e}");
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);
        // Cool-down passes: one probe, which fails and opens the circuit again.
        now.fetch_add(30_000, Ordering::SeqCst);
        assert!(b.deliver(&message()).await.is_err());
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 4);
        assert!(matches!(b.state(), CircuitState::Open { .. }));
        // Next cool-down: the provider is back, the probe succeeds and the circuit closes.
        now.fetch_add(30_000, Ordering::SeqCst);
        flaky.fail.store(false, Ordering::SeqCst);
        assert!(b.deliver(&message()).await.is_ok());
        assert_eq!(
            b.state(),
            CircuitState::Closed {
                consecutive_failures: 0
            }
        );
    }

    /// Never answers, like a provider whose connection hangs; counts the calls.
    #[derive(Clone, Default)]
    struct Hangs(Arc<AtomicU32>);

    impl Channel for Hangs {
        async fn deliver(&self, _: &OutboundMessage) -> Result<Receipt, SendError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn calls_given_up_on_count_as_failures_and_never_leave_a_probe_in_flight() {
        let now = Arc::new(AtomicI64::new(1_000_000));
        let t = now.clone();
        let clock: SharedClock = Arc::new(move || Timestamp(t.load(Ordering::SeqCst)));
        let config = BreakerConfig {
            failures: 2,
            cool_down_secs: 30,
        };
        let hangs = Hangs::default();
        let b = CircuitBreaker::new(hangs.clone(), "hangs", config, clock);
        let calls = || hangs.0.load(Ordering::SeqCst);
        let open_until = || match b.state() {
            CircuitState::Open { until } => until,
            other => panic!("not open: {other:?}"),
        };
        let give_up = Duration::from_millis(20);
        let abandoned = tokio::time::timeout(give_up, b.deliver(&message())).await;
        assert!(abandoned.is_err(), "the call hangs");
        assert_eq!(
            b.state(),
            CircuitState::Closed {
                consecutive_failures: 1
            }
        );
        let _ = tokio::time::timeout(give_up, b.deliver(&message())).await;
        let first_until = open_until();
        assert_eq!(calls(), 2);

        // After the cool-down, the probe is let through; given up on, it opens the circuit
        // again for a new cool-down instead of staying "in flight" and refusing every
        // later message.
        for round in 1..=2 {
            now.fetch_add(30_000, Ordering::SeqCst);
            let _ = tokio::time::timeout(give_up, b.deliver(&message())).await;
            assert_eq!(
                calls(),
                2 + round,
                "round {round}: the probe reached the provider"
            );
            assert!(open_until() > first_until, "round {round}: a new cool-down");
        }
    }

    /// Fails transiently, except for messages it already holds a receipt for.
    #[derive(Clone, Default)]
    struct Remembers {
        calls: Arc<AtomicU32>,
        known: Arc<Mutex<Vec<Uuid>>>,
    }

    impl Channel for Remembers {
        fn remembered(&self, key: Uuid) -> Option<Receipt> {
            self.known.lock().unwrap().contains(&key).then(|| Receipt {
                provider_ref: "earlier".into(),
            })
        }

        async fn deliver(&self, _: &OutboundMessage) -> Result<Receipt, SendError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Err(SendError::Transient("503".into()))
        }
    }

    #[tokio::test]
    async fn a_redelivery_the_provider_already_accepted_is_answered_without_a_call() {
        let now = Arc::new(AtomicI64::new(1_000_000));
        let t = now.clone();
        let clock: SharedClock = Arc::new(move || Timestamp(t.load(Ordering::SeqCst)));
        let inner = Remembers::default();
        let config = BreakerConfig {
            failures: 1,
            cool_down_secs: 30,
        };
        let b = CircuitBreaker::new(inner.clone(), "remembers", config, clock);
        assert!(b.deliver(&message()).await.is_err());
        assert!(matches!(b.state(), CircuitState::Open { .. }));
        let accepted = message();
        inner.known.lock().unwrap().push(accepted.idempotency_key);

        // Open: the receipt is returned instead of "circuit open".
        assert_eq!(b.deliver(&accepted).await.unwrap().provider_ref, "earlier");
        // After the cool-down the same redelivery is no probe: the circuit stays as it
        // was, and the next real message is the probe.
        now.fetch_add(30_000, Ordering::SeqCst);
        assert_eq!(b.deliver(&accepted).await.unwrap().provider_ref, "earlier");
        assert!(
            matches!(b.state(), CircuitState::Open { .. }),
            "{:?}",
            b.state()
        );
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
        assert!(b.deliver(&message()).await.is_err());
        assert_eq!(inner.calls.load(Ordering::SeqCst), 2, "the probe was made");
    }

    #[tokio::test]
    async fn permanent_failures_reset_the_count() {
        #[derive(Clone)]
        struct Seq(Arc<Mutex<Vec<Result<(), bool>>>>);
        impl Channel for Seq {
            async fn deliver(&self, _: &OutboundMessage) -> Result<Receipt, SendError> {
                match self.0.lock().unwrap().remove(0) {
                    Ok(()) => Ok(Receipt {
                        provider_ref: "x".into(),
                    }),
                    Err(true) => Err(SendError::Permanent("bad number".into())),
                    Err(false) => Err(SendError::Transient("timeout".into())),
                }
            }
        }
        let clock: SharedClock = Arc::new(|| Timestamp(0));
        let seq = Seq(Arc::new(Mutex::new(vec![
            Err(false),
            Err(false),
            Err(true),
            Err(false),
            Err(false),
        ])));
        let b = CircuitBreaker::new(
            seq,
            "t",
            BreakerConfig {
                failures: 3,
                cool_down_secs: 1,
            },
            clock,
        );
        for _ in 0..5 {
            let _ = b.deliver(&message()).await;
        }
        assert_eq!(
            b.state(),
            CircuitState::Closed {
                consecutive_failures: 2
            }
        );
    }
}
