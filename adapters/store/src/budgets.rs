//! Send budgets kept in the store, shared by every process on it (R17, R18): see
//! [`crate::PgStore::charge_budgets`] and [`crate::SqliteStore::charge_budgets`].

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// How often a handle deletes rows whose window has passed (they no longer count; deleting
/// them only keeps the table small).
const SWEEP_EVERY_MS: i64 = 60_000;

/// One budget a message counts against: `key` names it (the caller's keyed hash: no address
/// or number is stored), at most `max` messages per `window`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetCharge {
    pub key: String,
    pub max: u32,
    pub window: Duration,
}

impl BudgetCharge {
    pub(crate) fn window_ms(&self) -> i64 {
        // A window beyond i64 milliseconds is "forever"; a quarter of the range keeps
        // `now + window` from overflowing.
        i64::try_from(self.window.as_millis())
            .unwrap_or(i64::MAX / 4)
            .min(i64::MAX / 4)
    }
}

/// When a handle last swept one table of counters: rows past their window are deleted by
/// whichever call finds a sweep due, at most once per [`SWEEP_EVERY_MS`] per handle.
#[derive(Debug, Default)]
pub(crate) struct SweepClock(AtomicI64);

impl SweepClock {
    /// Whether a sweep is due at `now_ms`; true for one caller only, who must sweep.
    pub(crate) fn due(&self, now_ms: i64) -> bool {
        let last = self.0.load(Ordering::Relaxed);
        now_ms.saturating_sub(last) >= SWEEP_EVERY_MS
            && self
                .0
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}
