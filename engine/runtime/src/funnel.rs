//! The funnel of a workflow over the whole log, for `passage funnel` and the console.

use crate::Error;
use passage_core::funnel::{Funnel, funnel};
use passage_core::journey::JourneyEvent;
use passage_core::ports::{EventStore, JourneyId};
use passage_core::time::Timestamp;
use std::collections::HashMap;

/// Reads the log page by page and groups events per journey before counting: one pass,
/// memory proportional to the log (fine for the console's ranges; an index per step would
/// be the next step if logs outgrow memory).
pub async fn compute_funnel<S: EventStore>(
    store: &S,
    workflow: &str,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> Result<Funnel, Error> {
    const PAGE: usize = 5_000;
    let mut by_journey: HashMap<JourneyId, Vec<(Timestamp, JourneyEvent)>> = HashMap::new();
    let mut after = 0;
    loop {
        let page = store.read_all(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for e in &page {
            let event: JourneyEvent = serde_json::from_str(&e.payload).map_err(|err| {
                Error::Decode(format!("the event at position {}: {err}", e.position))
            })?;
            by_journey
                .entry(e.stream)
                .or_default()
                .push((e.recorded_at, event));
        }
    }
    Ok(funnel(
        workflow,
        by_journey.values().map(Vec::as_slice),
        from,
        to,
    ))
}
