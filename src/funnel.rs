//! `passage funnel`: how many journeys of a workflow reached each step, moved on, ended
//! there or are still waiting, and the time spent per step (p50/p90), as a table or CSV.

use anyhow::anyhow;
use passage_core::funnel::Funnel;
use passage_core::ports::EventStore;
use passage_core::time::Timestamp;

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
    let f = passage_runtime::compute_funnel(store, workflow, from, to).await?;
    if f.journeys == 0 {
        return Err(anyhow!(
            "no journeys of workflow `{workflow}` started in that time range"
        ));
    }
    Ok(f)
}

pub fn render(f: &Funnel, csv: bool) -> String {
    if csv {
        return f.to_csv();
    }
    let mut out = String::new();
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
        let [step, reached, on, left, waiting, p50, p90] = s.cells();
        out.push_str(&format!(
            "{step:<16} {reached:>8} {on:>9} {left:>10} {waiting:>8} {p50:>9} {p90:>9}\n"
        ));
    }
    out
}
