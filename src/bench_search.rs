//! `passage bench --scenario search`: support's search by masked address against a journeys
//! read model of 10 000 and 1 000 000 journeys (written straight into the table, the only one
//! the search reads), timed as the median of repeated queries: once at the store, and once
//! end to end through the support console's API (`GET /console/api/journeys?q=…` with an
//! operator's token, over HTTP on a local port).

use crate::bench::{Dialect, Scratch};
use passage_core::ports::{EventStore, JourneyFilter};
use passage_core::roles::Role;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const QUERIES: usize = 25;

pub async fn run(args: &crate::cli::BenchArgs) -> anyhow::Result<()> {
    let backends = args.backend.names();
    println!(
        "| backend | journeys | matches per address | median search ms | p90 ms | ÷ 10 000-journey baseline | console API median ms | console p90 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|");
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
                let mut console = through_console(store.clone(), n).await?;
                console.sort();
                println!(
                    "| {backend} | {n} | {found} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                    ms(median),
                    ms(p90),
                    median.as_secs_f64() / base.as_secs_f64(),
                    ms(console[QUERIES / 2]),
                    ms(console[QUERIES * 9 / 10])
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

/// Times `QUERIES` console searches over HTTP against a server on this store, each for a
/// different masked address; checks each answer lists journeys of that address.
async fn through_console(
    store: passage_store::AnyStore,
    n: usize,
) -> anyhow::Result<Vec<Duration>> {
    let engine = crate::bench::engine_for(store.clone(), &[], &[], false).await?;
    let now = engine.now();
    store
        .add_operator(
            "bench-support",
            Role::Support,
            "$argon2id$v=19$m=256,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
            now,
        )
        .await?;
    let token = format!("pst_bench_{}", uuid::Uuid::new_v4().simple());
    store
        .add_api_token(
            &passage_core::secrets::session_hash(&token),
            "bench-support",
            Role::Support,
            "bench",
            now,
        )
        .await?;
    let router = passage_web::router(passage_web::AppState::new(engine));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    let mut times = Vec::with_capacity(QUERIES);
    let result = async {
        for q in 0..QUERIES {
            let mask = mask_of((q * 7919 + 13) % n.min(17_576));
            let query: String = form_urlencoded::byte_serialize(mask.as_bytes()).collect();
            let t = Instant::now();
            let mut conn = tokio::net::TcpStream::connect(addr).await?;
            conn.write_all(
                format!(
                    "GET /console/api/journeys?q={query} HTTP/1.1\r\nHost: {addr}\r\n\
                     Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .await?;
            let mut answer = Vec::new();
            conn.read_to_end(&mut answer).await?;
            times.push(t.elapsed());
            let text = String::from_utf8_lossy(&answer);
            anyhow::ensure!(
                text.starts_with("HTTP/1.1 200") && text.contains(&mask),
                "the console search for {mask} answered: {}",
                text.chars().take(300).collect::<String>()
            );
        }
        anyhow::Ok(())
    }
    .await;
    server.abort();
    result.map(|()| times)
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
