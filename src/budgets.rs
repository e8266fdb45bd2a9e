//! Counters shared by every node, in the event store's database (R17, R18).
//!
//! Counted in each process's memory, every node behind a load balancer (and `passage bot`
//! beside `passage serve` on one SQLite file) would allow the whole budget again: an
//! SMS-pumping script or a guesser would only have to spread its requests.
//! [`StoreBudgets`] keeps the channels' send budgets in the store, which every process
//! shares; [`StoreWindows`] keeps the web's per-client limits in PostgreSQL when several
//! nodes serve. Both name each counter by a keyed hash, so that no recipient or client
//! address is stored to do it (R50).

use passage_channels::{Admission, Budget, BudgetKey, InMemoryLimitStore, LimitStore};
use passage_core::secrets::Keys;
use passage_core::time::Timestamp;
use passage_store::{AnyStore, BudgetCharge, PgStore};
use passage_web::security::BoxFuture;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// A [`LimitStore`] over the event store's `send_budget_uses` table, or, for the
/// terminal demos, this process's memory.
#[derive(Clone)]
pub enum StoreBudgets {
    Shared {
        store: AnyStore,
        keys: Arc<Keys>,
    },
    /// `passage demo` and `passage chat` drive a reset or two per run for the same demo
    /// accounts: counted across runs, a few runs an hour would spend the demo accounts'
    /// budgets (3 calls an hour) and the next run would stall waiting for a code. Within a
    /// run the budgets still apply.
    PerProcess(InMemoryLimitStore),
}

impl fmt::Debug for StoreBudgets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shared { store, .. } => f
                .debug_struct("StoreBudgets")
                .field("backend", &store.backend())
                .finish_non_exhaustive(),
            Self::PerProcess(_) => f.write_str("StoreBudgets(per process)"),
        }
    }
}

impl StoreBudgets {
    pub fn new(store: AnyStore, keys: Arc<Keys>) -> Self {
        Self::Shared { store, keys }
    }
}

impl LimitStore for StoreBudgets {
    async fn try_acquire(
        &self,
        now: Timestamp,
        token: Uuid,
        keys: &[(BudgetKey, Budget)],
    ) -> Result<Admission, passage_channels::Error> {
        let (store, counter_keys) = match self {
            Self::Shared { store, keys } => (store, keys),
            Self::PerProcess(memory) => return memory.try_acquire(now, token, keys).await,
        };
        let charges: Vec<BudgetCharge> = keys
            .iter()
            .map(|(key, budget)| BudgetCharge {
                key: counter_keys.counter_name(&key.identity()),
                max: budget.max,
                window: budget.window(),
            })
            .collect();
        let spent = store
            .charge_budgets(now, token, &charges)
            .await
            .map_err(|e| passage_channels::Error::LimitStore(crate::causes(&e.into())))?;
        Ok(match spent.and_then(|i| keys.get(i)) {
            Some((key, budget)) => Admission::Exceeded {
                key: key.clone(),
                budget: *budget,
            },
            None => Admission::Admitted,
        })
    }
}

/// The web's per-client limits ([`passage_web::SharedWindows`]) in PostgreSQL's
/// `rate_windows`, so that N nodes behind a round-robin balancer allow a client the limit
/// once, not N times. Time is the wall clock: every node must agree on when a window ends.
#[derive(Clone)]
pub struct StoreWindows {
    store: PgStore,
    keys: Arc<Keys>,
}

impl fmt::Debug for StoreWindows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreWindows").finish_non_exhaustive()
    }
}

impl StoreWindows {
    pub fn new(store: PgStore, keys: Arc<Keys>) -> Self {
        Self { store, keys }
    }

    fn name(&self, key: &str) -> String {
        self.keys.counter_name(&format!("web\0{key}"))
    }
}

impl passage_web::SharedWindows for StoreWindows {
    fn hit<'a>(
        &'a self,
        key: &'a str,
        limit: u32,
        window: Duration,
    ) -> BoxFuture<'a, Result<Result<(), Duration>, String>> {
        Box::pin(async move {
            let now = passage_runtime::Clock::now(&passage_runtime::SystemClock);
            self.store
                .hit_window(now, &self.name(key), limit, window)
                .await
                .map_err(|e| crate::causes(&e.into()))
        })
    }

    fn give_back<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let now = passage_runtime::Clock::now(&passage_runtime::SystemClock);
            self.store
                .give_back_window(now, &self.name(key))
                .await
                .map_err(|e| crate::causes(&e.into()))
        })
    }
}
