//! The stall scanner of `passage serve`: on a cron schedule, nudge, alert and escalate the
//! journeys whose step's `stall_after` has passed (Engine::scan_stalls). Several nodes may
//! run it at once: each stall becomes one command whose id is derived from the journey and
//! its deadline, so it is handled once.

use passage_core::ports::{AccountDirectory, EventStore};
use passage_runtime::Engine;
use std::time::Duration;
use tokio::sync::watch;

/// Journeys handled per scan; the rest wait for the next run (most overdue first).
const SCAN_LIMIT: usize = 500;

pub async fn run<S: EventStore, D: AccountDirectory>(
    engine: Engine<S, D>,
    schedule: cron::Schedule,
    escalate_after: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let Some(next) = schedule.upcoming(chrono::Utc).next() else {
            tracing::warn!("the stall scan schedule has no future run; the scanner stops");
            return;
        };
        let wait = (next - chrono::Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        match engine
            .scan_stalls(engine.now(), escalate_after, SCAN_LIMIT)
            .await
        {
            Ok(r) if r.due > 0 => {
                tracing::info!(
                    due = r.due,
                    handled = r.handled,
                    failed = r.failed,
                    "stall scan"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::error!("stall scan failed: {e}"),
        }
    }
}
