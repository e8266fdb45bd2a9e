//! `passage bench --scenario stalls`: the stall scanner's cost against the number of healthy
//! open journeys. 100 real journeys are stalled through the engine; N healthy open journeys
//! (stall deadline in the future) are written straight into the journeys read model, the
//! only table the scan reads. The scan must cost the same whatever N is: the due query is an
//! index range scan over the due journeys only.

use crate::bench::{Dialect, Scratch};
use passage_core::ports::EventStore;
use passage_runtime::{Actor, Input};
use std::time::{Duration, Instant};

const STALLED: usize = 100;

pub async fn run(
    args: &crate::cli::BenchArgs,
    definitions: Vec<passage_core::definition::Definition>,
) -> anyhow::Result<()> {
    let backends = args.backend.names();
    println!(
        "| backend | healthy open journeys | stalled | due query ms | full scan ms (query + {STALLED} nudges) | scan ÷ baseline |"
    );
    println!("|---|---|---|---|---|---|");
    for backend in backends {
        let scratch = Scratch::new(backend, &args.bench_postgres).await?;
        let result = async {
            let mut baseline = None;
            for healthy in [0usize, 10_000, 100_000] {
                let name = format!("stalls-{healthy}");
                let store = scratch.store(true, &name).await?;
                let people = crate::bench::demo_people(STALLED);
                let engine =
                    crate::bench::engine_for(store.clone(), &definitions, &people, false).await?;
                for person in people.iter().take(STALLED) {
                    let o = engine
                        .start("password-reset", Actor::person("bench"), None)
                        .await?;
                    let email = person.email.clone();
                    engine
                        .submit(
                            o.journey_id,
                            Input::Email(email),
                            Actor::person("bench"),
                            None,
                        )
                        .await?;
                }
                let now = engine.now();
                fill_healthy(&scratch, &name, healthy, now.as_millis()).await?;
                // Past every stalled journey's 3-minute deadline, before any healthy one's.
                let at = now.plus(Duration::from_secs(240));
                let t = Instant::now();
                let due = store.due_stalls(at, 10_000).await?;
                let query = t.elapsed();
                anyhow::ensure!(
                    due.len() == STALLED,
                    "{} journeys due instead of {STALLED}",
                    due.len()
                );
                let t = Instant::now();
                let report = engine
                    .scan_stalls(at, Duration::from_secs(600), 10_000)
                    .await?;
                let scan = t.elapsed();
                anyhow::ensure!(report.handled == STALLED, "scan: {report:?}");
                let base = *baseline.get_or_insert(scan);
                println!(
                    "| {backend} | {healthy} | {STALLED} | {:.2} | {:.1} | {:.2} |",
                    query.as_secs_f64() * 1e3,
                    scan.as_secs_f64() * 1e3,
                    scan.as_secs_f64() / base.as_secs_f64()
                );
                store.close().await;
            }
            anyhow::Ok(())
        }
        .await;
        scratch.cleanup().await;
        result?;
    }
    Ok(())
}

/// `n` healthy open journeys, straight into the read model: deadline an hour away.
async fn fill_healthy(scratch: &Scratch, name: &str, n: usize, now: i64) -> anyhow::Result<()> {
    let future = now + 3_600_000;
    scratch
        .insert_journeys(name, n, |dialect| {
            let keep = match dialect {
                Dialect::Postgres => "false",
                Dialect::Sqlite => "0",
            };
            format!(
                "'password-reset', 1, 'active', 'email-code', 'h•••y@e•••.com', {now}, {now}, 4, \
                 'healthy-' || i, 0, {future}, {keep}"
            )
        })
        .await
}
