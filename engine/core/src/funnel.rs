//! The funnel of one workflow: how many journeys reached each step, how many moved on, how
//! many ended there, and how long people spent on it (p50/p90). Pure: built from the events
//! of each journey with their recorded times, as the support console and `passage funnel`
//! need it.

use crate::journey::{JourneyEvent, JourneyState, Status};
use crate::time::Timestamp;
use serde::Serialize;
use std::collections::BTreeMap;

/// One step's row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepStats {
    pub step: String,
    /// Journeys that entered the step.
    pub reached: u64,
    /// Journeys that went on to another step.
    pub moved_on: u64,
    /// Journeys that ended on the step without completing (failed, expired, cancelled).
    pub abandoned: u64,
    /// Journeys still on the step.
    pub waiting: u64,
    /// Time from entering the step to leaving it, over the journeys that left it.
    pub p50_ms: Option<i64>,
    pub p90_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Funnel {
    pub workflow: String,
    pub journeys: u64,
    pub completed: u64,
    /// In the order steps were first reached.
    pub steps: Vec<StepStats>,
}

/// Milliseconds as seconds with one decimal, `-` for none.
pub fn seconds(ms: Option<i64>) -> String {
    ms.map(|m| format!("{:.1}", m as f64 / 1000.0))
        .unwrap_or_else(|| "-".into())
}

impl Funnel {
    /// One row per step; the columns `passage funnel --csv` and the console's download share.
    pub fn to_csv(&self) -> String {
        let mut out =
            String::from("step,reached,moved_on,abandoned,waiting,p50_seconds,p90_seconds\n");
        for s in &self.steps {
            out.push_str(&s.cells().join(","));
            out.push('\n');
        }
        out
    }
}

impl StepStats {
    /// The step's row as text, in the CSV's column order: what the CSV, the terminal table
    /// and the console's table show.
    pub fn cells(&self) -> [String; 7] {
        [
            self.step.clone(),
            self.reached.to_string(),
            self.moved_on.to_string(),
            self.abandoned.to_string(),
            self.waiting.to_string(),
            seconds(self.p50_ms),
            seconds(self.p90_ms),
        ]
    }
}

#[derive(Default)]
struct Acc {
    order: usize,
    reached: u64,
    moved_on: u64,
    abandoned: u64,
    waiting: u64,
    durations: Vec<i64>,
}

/// `journeys`: each journey's events in stream order with their recorded times. Journeys of
/// other workflows, or started outside `[from, to)`, are left out.
pub fn funnel<'a>(
    workflow: &str,
    journeys: impl IntoIterator<Item = &'a [(Timestamp, JourneyEvent)]>,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> Funnel {
    let mut steps: BTreeMap<String, Acc> = BTreeMap::new();
    let (mut count, mut completed) = (0u64, 0u64);
    for events in journeys {
        let Some((started, JourneyEvent::JourneyStarted { definition_id, .. })) = events.first()
        else {
            continue;
        };
        if definition_id != workflow
            || from.is_some_and(|f| *started < f)
            || to.is_some_and(|t| *started >= t)
        {
            continue;
        }
        count += 1;
        let mut state = JourneyState::default();
        let mut entered: Option<(String, Timestamp)> = None;
        for (at, event) in events {
            state.apply(event);
            let now_on = state.current_step.as_ref().map(|s| s.0.clone());
            match (&entered, &now_on) {
                (Some((was, since)), Some(is)) if was != is => {
                    let n = steps.len();
                    let acc = steps.entry(was.clone()).or_insert_with(|| Acc {
                        order: n,
                        ..Acc::default()
                    });
                    acc.moved_on += 1;
                    acc.durations.push(at.as_millis() - since.as_millis());
                    entered = Some((is.clone(), *at));
                    let n = steps.len();
                    steps
                        .entry(is.clone())
                        .or_insert_with(|| Acc {
                            order: n,
                            ..Acc::default()
                        })
                        .reached += 1;
                }
                (None, Some(is)) => {
                    entered = Some((is.clone(), *at));
                    let n = steps.len();
                    steps
                        .entry(is.clone())
                        .or_insert_with(|| Acc {
                            order: n,
                            ..Acc::default()
                        })
                        .reached += 1;
                }
                _ => {}
            }
        }
        if let Some((step, _)) = &entered
            && let Some(acc) = steps.get_mut(step)
        {
            match state.status {
                Status::Completed => {}
                Status::Active => acc.waiting += 1,
                _ => acc.abandoned += 1,
            }
        }
        if state.status == Status::Completed {
            completed += 1;
        }
    }
    let mut rows: Vec<(usize, StepStats)> = steps
        .into_iter()
        .map(|(step, mut acc)| {
            acc.durations.sort_unstable();
            let pct = |p: usize| {
                (!acc.durations.is_empty())
                    .then(|| acc.durations[(acc.durations.len() - 1) * p / 100])
            };
            (
                acc.order,
                StepStats {
                    step,
                    reached: acc.reached,
                    moved_on: acc.moved_on,
                    abandoned: acc.abandoned,
                    waiting: acc.waiting,
                    p50_ms: pct(50),
                    p90_ms: pct(90),
                },
            )
        })
        .collect();
    rows.sort_by_key(|(order, _)| *order);
    Funnel {
        workflow: workflow.to_owned(),
        journeys: count,
        completed,
        steps: rows.into_iter().map(|(_, s)| s).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::StepId;

    fn started(at: i64) -> (Timestamp, JourneyEvent) {
        (
            Timestamp(at),
            JourneyEvent::JourneyStarted {
                definition_id: "password-reset".into(),
                definition_version: 1,
                definition_hash: "h".into(),
                origin: "web".into(),
                first_step: StepId("email".into()),
                started_at: Timestamp(at),
                expires_at: Timestamp(at + 900_000),
            },
        )
    }

    fn email(at: i64) -> (Timestamp, JourneyEvent) {
        (
            Timestamp(at),
            JourneyEvent::EmailSubmitted {
                step: StepId("email".into()),
                email_masked: "a•••e@e•••.com".into(),
                account_id: Some("a".into()),
                phone_masked: None,
                next: StepId("email-code".into()),
                subject: None,
            },
        )
    }

    #[test]
    fn counts_reached_moved_on_abandoned_and_waiting_with_percentiles() {
        let a = vec![started(0), email(1_000)];
        let b = vec![
            started(0),
            email(3_000),
            (
                Timestamp(10_000),
                JourneyEvent::JourneyCancelled {
                    reason: "support".into(),
                },
            ),
        ];
        let other = vec![(
            Timestamp(0),
            JourneyEvent::JourneyStarted {
                definition_id: "email-sms".into(),
                definition_version: 1,
                definition_hash: "h".into(),
                origin: "web".into(),
                first_step: StepId("email".into()),
                started_at: Timestamp(0),
                expires_at: Timestamp(1),
            },
        )];
        let late = vec![started(50_000)];
        let all = [
            a.as_slice(),
            b.as_slice(),
            other.as_slice(),
            late.as_slice(),
        ];
        let f = funnel("password-reset", all, None, Some(Timestamp(40_000)));
        assert_eq!(
            (f.journeys, f.completed),
            (2, 0),
            "other workflow and late start left out"
        );
        assert_eq!(f.steps[0].step, "email");
        assert_eq!(
            (
                f.steps[0].reached,
                f.steps[0].moved_on,
                f.steps[0].p50_ms,
                f.steps[0].p90_ms
            ),
            (2, 2, Some(1_000), Some(1_000))
        );
        let code = &f.steps[1];
        assert_eq!(code.step, "email-code");
        assert_eq!((code.reached, code.waiting, code.abandoned), (2, 1, 1));
        assert_eq!(code.p50_ms, None, "nobody left it");
    }
}
