//! `passage funnel`: how many journeys of a workflow reached each step, moved on, ended
//! there or are still waiting, and the time spent per step (p50/p90), as a table or CSV.

use anyhow::{Context as _, anyhow};
use passage_core::funnel::{Funnel, funnel};
use passage_core::journey::JourneyEvent;
use passage_core::ports::{EventStore, JourneyId};
use passage_core::time::Timestamp;
use std::collections::HashMap;

/// `2026-11-27T10:00:00Z` (or with an offset), or milliseconds since the epoch.
pub fn parse_time(s: &str) -> Result<Timestamp, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(Timestamp(ms));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| Timestamp(t.timestamp_millis()))
        .map_err(|_| format!("`{s}` is not a time: write e.g. 2026-11-27T10:00:00Z"))
}

pub async fn compute<S: EventStore>(
    store: &S,
    workflow: &str,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> anyhow::Result<Funnel> {
    const PAGE: usize = 5_000;
    let mut by_journey: HashMap<JourneyId, Vec<(Timestamp, JourneyEvent)>> = HashMap::new();
    let mut after = 0;
    loop {
        let page = store.read_all(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for e in &page {
            let event: JourneyEvent = serde_json::from_str(&e.payload)
                .with_context(|| format!("decode the event at position {}", e.position))?;
            by_journey
                .entry(e.stream)
                .or_default()
                .push((e.recorded_at, event));
        }
    }
    let f = funnel(workflow, by_journey.values().map(Vec::as_slice), from, to);
    if f.journeys == 0 {
        return Err(anyhow!(
            "no journeys of workflow `{workflow}` started in that time range"
        ));
    }
    Ok(f)
}

fn seconds(ms: Option<i64>) -> String {
    ms.map(|m| format!("{:.1}", m as f64 / 1000.0))
        .unwrap_or_else(|| "-".into())
}

pub fn render(f: &Funnel, csv: bool) -> String {
    let mut out = String::new();
    if csv {
        out.push_str("step,reached,moved_on,abandoned,waiting,p50_seconds,p90_seconds\n");
        for s in &f.steps {
            out.push_str(&format!(
                "{},{},{},{},{},{},{}\n",
                s.step,
                s.reached,
                s.moved_on,
                s.abandoned,
                s.waiting,
                seconds(s.p50_ms),
                seconds(s.p90_ms)
            ));
        }
        return out;
    }
    out.push_str(&format!(
        "{}: {} journeys, {} completed\n\n{:<16} {:>8} {:>9} {:>10} {:>8} {:>9} {:>9}\n",
        f.workflow,
        f.journeys,
        f.completed,
        "step",
        "reached",
        "moved on",
        "abandoned",
        "waiting",
        "p50 s",
        "p90 s"
    ));
    for s in &f.steps {
        out.push_str(&format!(
            "{:<16} {:>8} {:>9} {:>10} {:>8} {:>9} {:>9}\n",
            s.step,
            s.reached,
            s.moved_on,
            s.abandoned,
            s.waiting,
            seconds(s.p50_ms),
            seconds(s.p90_ms)
        ));
    }
    out
}
