//! The channels' send budgets counted in the event store's database (R17, R18).
//!
//! Counted in each process's memory, every node behind a load balancer (and `passage bot`
//! beside `passage serve` on one SQLite file) would allow the whole budget again: an
//! SMS-pumping script would only have to spread its requests. [`StoreBudgets`] keeps the
//! counts in the store, which every process shares, and names each budget by a keyed hash
//! so that no recipient is stored to do it (R50).

use passage_channels::{Admission, Budget, BudgetKey, LimitStore};
use passage_core::secrets::Keys;
use passage_core::time::Timestamp;
use passage_store::{AnyStore, BudgetCharge};
use std::fmt;
use std::sync::Arc;
use uuid::Uuid;

/// A [`LimitStore`] over the event store's `send_budget_uses` table.
#[derive(Clone)]
pub struct StoreBudgets {
    store: AnyStore,
    keys: Arc<Keys>,
}

impl fmt::Debug for StoreBudgets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreBudgets")
            .field("backend", &self.store.backend())
            .finish_non_exhaustive()
    }
}

impl StoreBudgets {
    pub fn new(store: AnyStore, keys: Arc<Keys>) -> Self {
        Self { store, keys }
    }
}

impl LimitStore for StoreBudgets {
    async fn try_acquire(
        &self,
        now: Timestamp,
        token: Uuid,
        keys: &[(BudgetKey, Budget)],
    ) -> Result<Admission, passage_channels::Error> {
        let charges: Vec<BudgetCharge> = keys
            .iter()
            .map(|(key, budget)| BudgetCharge {
                key: self.keys.budget_name(&key.identity()),
                max: budget.max,
                window: budget.window(),
            })
            .collect();
        let spent = self
            .store
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
