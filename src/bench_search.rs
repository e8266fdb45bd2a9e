//! `passage bench --scenario search`: support's search by masked address against a journeys
//! read model of 10 000 and 1 000 000 journeys (written straight into the table, the only one
//! the search reads), timed as the median of repeated queries.

use crate::bench::{Dialect, Scratch};
use passage_core::ports::{EventStore, JourneyFilter};
use std::time::{Duration, Instant};

const QUERIES: usize = 25;

pub async fn run(args: &crate::cli::BenchArgs) -> anyhow::Result<()> {
    use crate::cli::BenchBackend;
    let backends: &[&'static str] = match args.backend {
        BenchBackend::Sqlite => &["sqlite"],
        BenchBackend::Postgres => &["postgres"],
        BenchBackend::Both => &["sqlite", "postgres"],
    };
    println!(
        "| backend | journeys | matches per address | median search ms | p90 ms | ÷ 10 000-journey baseline |"
    );
    println!("|---|---|---|---|---|---|");
    for backend in backends {
        let scratch = Scratch::new(backend, &args.bench_postgres).await?;
        let result = async {
            let mut baseline = None;
            for n in [10_000usize, 1_000_000] {
                let name = format!("search-{n}");
                let store = scratch.store(true, &name).await?;
                fill(&scratch, &name, n).await?;
                let mut times = Vec::with_capacity(QUERIES);
                let mut found = 0;
                for q in 0..QUERIES {
                    // A different address each time, so no query is served from a warm page
                    // that the previous one loaded.
                    let mask = mask_of(q * 7919 % n.min(17_576));
                    let t = Instant::now();
                    let rows = store
                        .list_journeys(JourneyFilter {
                            email_masked: Some(mask),
                            limit: 50,
                            ..JourneyFilter::default()
                        })
                        .await?;
                    times.push(t.elapsed());
                    found = rows.len();
                }
                times.sort();
                let median = times[QUERIES / 2];
                let p90 = times[QUERIES * 9 / 10];
                let base = *baseline.get_or_insert(median);
                println!(
                    "| {backend} | {n} | {found} | {:.2} | {:.2} | {:.2} |",
                    ms(median),
                    ms(p90),
                    median.as_secs_f64() / base.as_secs_f64()
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The i-th of 26³ masked addresses (`a•••b@c•••.com`), as the read model stores them.
fn mask_of(i: usize) -> String {
    let c = |k: usize| char::from(b'a' + (k % 26) as u8);
    format!("{}•••{}@{}•••.com", c(i), c(i / 26), c(i / 676))
}

/// `n` finished journeys spread over 26³ masked addresses.
async fn fill(scratch: &Scratch, name: &str, n: usize) -> anyhow::Result<()> {
    scratch
        .insert_journeys(name, n, |dialect| {
            let (letter, keep) = match dialect {
                Dialect::Postgres => ("chr((97 + {}) :: int)", "false"),
                Dialect::Sqlite => ("char(97 + {})", "0"),
            };
            let at = |e: &str| letter.replace("{}", e);
            format!(
                "'password-reset', 1, 'completed', NULL, \
                 {} || '•••' || {} || '@' || {} || '•••.com', \
                 1795000000000 + i, 1795000000000 + i, 9, NULL, 0, NULL, {keep}",
                at("i % 26"),
                at("(i / 26) % 26"),
                at("(i / 676) % 26")
            )
        })
        .await
}
