//! `passage subjects`: erasure of a person's data by crypto-shredding, and retention
//! (ADR 0005, docs/audit.md "Erasure").

use crate::app::App;
use crate::cli::SubjectsCommand;
use anyhow::Context as _;
use passage_core::ports::JourneyId;
use passage_runtime::{Actor, Error as RuntimeError};
use std::time::Duration;

pub async fn run(app: &App, cmd: SubjectsCommand) -> anyhow::Result<()> {
    match cmd {
        SubjectsCommand::Erase { email, reason, by } => {
            // `cli::parse_reason` already cleaned and checked it.
            let reason = reason.as_str();
            let report = match app
                .engine
                .erase_subject(&email, reason, Actor::support(&by, "cli"))
                .await
            {
                Err(RuntimeError::InvalidEmail(e)) => {
                    return Err(crate::Usage(format!(
                        "--email must be the person's address (e.g. alice@example.com): {e}"
                    ))
                    .into());
                }
                other => other.context("erase the person's personal data")?,
            };
            let ids: Vec<JourneyId> = report.journeys.iter().map(|j| j.journey_id).collect();
            let messages = app
                .outbox
                .forget_journeys(&ids)
                .await
                .context("delete the erased journeys' messages from the dev outbox")?;
            let masked = passage_core::mask::normalize_email(&email)
                .map(|e| passage_core::mask::mask_email(&e))
                .unwrap_or_default();
            if report.journeys.is_empty() && !report.account_removed {
                println!(
                    "nothing to erase for {masked}: no journey names it and no account has it"
                );
                return Ok(());
            }
            for j in &report.journeys {
                println!(
                    "journey {}: {}{}",
                    j.journey_id,
                    if j.recorded {
                        "erasure recorded"
                    } else {
                        "erasure already recorded"
                    },
                    if j.key_destroyed {
                        ", key destroyed"
                    } else {
                        ", key already destroyed"
                    }
                );
            }
            let recorded = report.journeys.iter().filter(|j| j.recorded).count();
            let destroyed = report.journeys.iter().filter(|j| j.key_destroyed).count();
            println!(
                "erased {masked}: {} journey{} ({recorded} newly recorded), {destroyed} key{} destroyed, account {}, {messages} dev-outbox message{} deleted",
                report.journeys.len(),
                plural(report.journeys.len()),
                plural(destroyed),
                if report.account_removed {
                    "removed"
                } else {
                    "not found (already removed?)"
                },
                plural(messages as usize)
            );
            println!(
                "the events stay in the chain (`passage audit verify`); their personal fields now read [erased]"
            );
            Ok(())
        }
        SubjectsCommand::Retain {
            older_than,
            all_finished,
        } => {
            // clap requires exactly one of the two: --all-finished is a period of zero.
            debug_assert!(older_than.is_some() != all_finished);
            let period = older_than.unwrap_or_default();
            let report = app
                .engine
                .apply_retention(period)
                .await
                .context("apply retention")?;
            let (rule, which) = match older_than {
                Some(p) => (
                    describe(p),
                    format!(" started more than {} ago", describe(p)),
                ),
                None => ("all finished journeys".to_owned(), String::new()),
            };
            println!(
                "retention ({rule}): erased the personal data of {} finished journey{}{which}{}",
                report.erased,
                plural(report.erased),
                if report.failed > 0 {
                    format!(
                        "; {} could not be erased (see the log), run it again",
                        report.failed
                    )
                } else {
                    String::new()
                }
            );
            Ok(())
        }
    }
}

/// `serve --retention`: one pass at start, then one per `every`, until shutdown.
pub async fn retention_loop(
    engine: crate::app::AppEngine,
    older_than: Duration,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match engine.apply_retention(older_than).await {
            Ok(r) if r.erased > 0 || r.failed > 0 => {
                tracing::info!(erased = r.erased, failed = r.failed, "retention pass")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("retention pass failed: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

pub(crate) fn describe(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s >= 3_600 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s if s > 0 => format!("{s}s"),
        _ => format!("{}ms", d.as_millis()),
    }
}
