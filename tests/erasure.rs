//! Erasure by crypto-shredding and retention (issue #7, point 6; ADR 0005), through the real
//! binary on a SQLite file and on PostgreSQL: after `passage subjects erase`, no byte of
//! the person's address, phone or name is left in the database files (SQLite) or in any
//! table (PostgreSQL), the chain still verifies, and the timeline still shows every step
//! with `[erased]` where the masked data was.

mod common;

use common::{Passage, Run, TestDir};

const EMAIL: &str = "alice@example.com";
/// The phone as the directory stores it, its national digits, and a spaced form.
const PERSONAL: [&str; 5] = [
    EMAIL,
    "+61412345678",
    "412345678",
    "412 345 678",
    "Alice Nguyen",
];

/// Journey ids in the order `journeys list` prints them.
fn journeys(run: &Run) -> Vec<String> {
    run.stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| common::looks_like_uuid(w))
        .map(str::to_owned)
        .collect()
}

/// The demo (an SMS and a voice reset of alice, both completed) plus an open journey of
/// bob's; returns alice's journeys and bob's.
fn populate(pg: &dyn Fn(&[&str]) -> Run) -> (Vec<String>, String) {
    pg(&["demo"]).expect_ok();
    let started = pg(&["journey", "start", "--email", "bob.smith@example.com"]);
    started.expect_ok();
    let bob = common::journey_id(&started.stdout);
    let alice = journeys(pg(&["journeys", "list", "--email", EMAIL]).expect_ok());
    assert_eq!(alice.len(), 2, "the demo resets alice twice");
    (alice, bob)
}

/// Timeline lines as (version, event type, line).
fn timeline(pg: &dyn Fn(&[&str]) -> Run, id: &str) -> Vec<(u64, String, String)> {
    let run = pg(&["journey", "show", id]);
    run.expect_ok();
    common::timeline(&run.stdout)
}

/// Erases alice and checks everything but the storage search, which is the backend's.
fn erase_and_check(pg: &dyn Fn(&[&str]) -> Run, alice: &[String], bob: &str) {
    let before: Vec<_> = alice.iter().map(|id| timeline(pg, id)).collect();
    assert!(
        before[0]
            .iter()
            .any(|(_, _, l)| l.contains("a•••e@e•••.com")),
        "masked address shown before erasure: {before:?}"
    );
    pg(&[
        "subjects",
        "erase",
        "--email",
        EMAIL,
        "--reason",
        "GDPR request #77",
        "--by",
        "ada",
    ])
    .expect_ok()
    .stdout_has("2 journeys (2 newly recorded), 2 keys destroyed, account removed");

    pg(&["audit", "verify"])
        .expect_ok()
        .stdout_has("audit verify ok");
    for (id, old) in alice.iter().zip(&before) {
        let now = timeline(pg, id);
        assert_eq!(
            now.len(),
            old.len() + 1,
            "every step is still there, plus the erasure"
        );
        for ((v1, t1, _), (v2, t2, _)) in old.iter().zip(&now) {
            assert_eq!((v1, t1), (v2, t2), "same steps in the same order");
        }
        let last = &now.last().expect("an erasure line").2;
        assert!(
            last.contains("PersonalDataErased") && last.contains("GDPR request #77"),
            "{last}"
        );
        assert!(
            last.contains("support:ada"),
            "the operator is the actor: {last}"
        );
        let text: String = now.iter().map(|(_, _, l)| format!("{l}\n")).collect();
        assert!(
            text.contains("email [erased] submitted") && text.contains("issued to [erased]"),
            "{text}"
        );
        assert!(!text.contains("•••"), "no masked data left: {text}");
        // The JSON view opens what it can: nothing is left to open.
        let json = pg(&["journey", "show", id, "--json"]);
        json.expect_ok();
        assert!(
            json.stdout.contains("[erased]") && !json.stdout.contains("•••"),
            "{}",
            json.stdout
        );
    }
    pg(&["journeys", "list", "--email", EMAIL])
        .expect_ok()
        .stdout_has("no journeys");
    // An erased journey cannot be resumed, nor the erased account reset again.
    pg(&["journey", "resend", &alice[0]]).expect_code(1);
    let again = pg(&["journey", "start", "--email", EMAIL]);
    again.expect_ok();
    assert!(
        !again.stdout.contains("acct-0001"),
        "the account is gone: {again}"
    );
    // Twice is harmless.
    pg(&["subjects", "erase", "--email", EMAIL, "--reason", "again"])
        .expect_ok()
        .stdout_has("erasure recorded");
    pg(&["audit", "verify"]).expect_ok();
    // Bob's open journey was not touched.
    assert!(
        timeline(pg, bob)
            .iter()
            .all(|(_, t, _)| t != "PersonalDataErased")
    );
}

/// `needle` in `haystack`, byte for byte.
fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn erasure_leaves_no_personal_byte_in_the_sqlite_files_and_the_chain_verifies() {
    let dir = TestDir::new("erasure-sqlite");
    let p = Passage::new(&dir);
    let run = |args: &[&str]| {
        let r = p.run(args);
        r.no_panic();
        r
    };
    let (alice, bob) = populate(&run);
    let files = || {
        ["passage.db", "passage-outbox.db"]
            .iter()
            .flat_map(|f| ["", "-wal", "-shm"].map(|s| dir.join(&format!("{f}{s}"))))
            .filter(|p| p.exists())
            .collect::<Vec<_>>()
    };
    let found = |needle: &str| {
        files()
            .into_iter()
            .filter(|f| contains(&std::fs::read(f).expect("read a database file"), needle))
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
    };
    // The search finds what is there: the directory and the dev outbox hold alice in full.
    assert!(
        !found(EMAIL).is_empty(),
        "the search must see the account first"
    );
    assert!(!found("+61412345678").is_empty());

    erase_and_check(&run, &alice, &bob);
    for needle in PERSONAL {
        assert_eq!(
            found(needle),
            Vec::<String>::new(),
            "{needle:?} is still on disk"
        );
    }
    assert!(
        !found("bob.smith@example.com").is_empty(),
        "only alice was erased"
    );
}

#[test]
fn retention_erases_only_finished_journeys_older_than_the_period() {
    let dir = TestDir::new("retention");
    let p = Passage::new(&dir);
    let run = |args: &[&str]| {
        let r = p.run(args);
        r.no_panic();
        r
    };
    let (alice, bob) = populate(&run);
    run(&["subjects", "retain", "--older-than", "1d"])
        .expect_ok()
        .stdout_has("erased the personal data of 0 finished journeys");
    run(&["subjects", "retain", "--all-finished"])
        .expect_ok()
        .stdout_has("erased the personal data of 2 finished journeys");
    for id in &alice {
        let last = timeline(&run, id).pop().expect("events").2;
        assert!(
            last.contains("personal data erased: retention") && last.contains("system"),
            "{last}"
        );
    }
    assert!(
        timeline(&run, &bob)
            .iter()
            .all(|(_, t, _)| t != "PersonalDataErased"),
        "an open journey is kept"
    );
    run(&["subjects", "retain", "--all-finished"])
        .expect_ok()
        .stdout_has("of 0 finished journeys");
    run(&["audit", "verify"]).expect_ok();
    // Retention keeps the account: alice can reset again.
    run(&["journey", "start", "--email", EMAIL])
        .expect_ok()
        .stdout_has("a•••e@e•••.com");
}

#[test]
fn subjects_erase_explains_bad_input() {
    let dir = TestDir::new("erasure-usage");
    let p = Passage::new(&dir);
    p.refuses(
        &[
            "subjects",
            "erase",
            "--email",
            "not-an-address",
            "--reason",
            "ticket 5",
        ],
        "--email",
        "must be the person's address",
    );
    for blank in ["  ", "x", "\n\t-", "\u{1b}\u{7}"] {
        p.refuses(
            &["subjects", "erase", "--email", EMAIL, "--reason", blank],
            "--reason",
            "must say why, in at least 3 characters",
        );
    }
    p.refuses(
        &[
            "subjects", "erase", "--email", EMAIL, "--reason", "ticket 9", "--by", "ada\nbob",
        ],
        "--by",
        "must be an operator id",
    );
    p.run(&["subjects", "retain", "--older-than", "soon"])
        .expect_code(2)
        .stderr_has("is not a duration");
    p.run(&["subjects", "retain"])
        .expect_code(2)
        .stderr_has("<--older-than <PERIOD>|--all-finished>");
    p.run(&[
        "subjects",
        "retain",
        "--older-than",
        "90d",
        "--all-finished",
    ])
    .expect_code(2)
    .stderr_has("cannot be used with");
    p.run(&["subjects", "erase", "--help"])
        .expect_ok()
        .stdout_has("crypto-shredding")
        .stdout_has("[erased]");
    p.run(&[
        "subjects", "erase", "--email", EMAIL, "--reason", "ticket 7",
    ])
    .expect_code(1)
    .stderr_has("there is no event store at");
    p.start("bob.smith@example.com");
    p.run(&[
        "subjects",
        "erase",
        "--email",
        "nobody@example.com",
        "--reason",
        "ticket 6",
    ])
    .expect_ok()
    .stdout_has("nothing to erase");
}

/// The same on PostgreSQL: every table of the database is searched as text.
#[tokio::test]
async fn erasure_leaves_no_personal_data_in_any_postgres_table() {
    use sqlx::postgres::PgPoolOptions;
    let Some(server) = common::postgres::ScratchServer::connect().await else {
        return;
    };
    let db = format!("passage_erasure_{}", std::process::id());
    let url = server.fresh_database(&db).await;
    let dir = TestDir::new("erasure-pg");
    let p = Passage::new(&dir);
    let run = |args: &[&str]| {
        let mut all = vec!["--database-url", url.as_str()];
        all.extend_from_slice(args);
        let r = p.run(&all);
        r.no_panic();
        r
    };
    let (alice, bob) = populate(&run);
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .expect("connect");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&pool)
    .await
    .expect("list the tables");
    assert!(tables.iter().any(|t| t == "journey_keys"), "{tables:?}");
    let rows_with = |needle: &'static str| {
        let pool = pool.clone();
        let tables = tables.clone();
        async move {
            let mut hits = Vec::new();
            for t in &tables {
                let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT count(*) FROM \"{t}\" AS r WHERE r::text ILIKE '%' || $1 || '%'"
                )))
                .bind(needle)
                .fetch_one(&pool)
                .await
                .unwrap_or_else(|e| panic!("search {t}: {e}"));
                if n > 0 {
                    hits.push(format!("{t}: {n}"));
                }
            }
            hits
        }
    };
    assert!(
        !rows_with(EMAIL).await.is_empty(),
        "the search must see the account first"
    );
    erase_and_check(&run, &alice, &bob);
    for needle in PERSONAL {
        assert_eq!(
            rows_with(needle).await,
            Vec::<String>::new(),
            "{needle:?} is still in a table"
        );
    }
    assert!(!rows_with("bob.smith@example.com").await.is_empty());
    pool.close().await;
    server.drop_database(&db).await;
}

/// Every demo account, the seed's four.
const DEMO: [&str; 4] = [
    "alice@example.com",
    "bob.smith@example.com",
    "carol@example.com",
    "dave@example.com",
];

/// Erasing every account of the demo seed is final: the next commands (each opens the
/// store, which seeds a directory that was never seeded) must not bring them back.
fn erased_demo_accounts_stay_gone(run: &dyn Fn(&[&str]) -> Run) {
    // The store, seeded, as a first reset request makes it (for an address nobody has).
    run(&["journey", "start", "--email", "nobody@example.com"]).expect_ok();
    for email in DEMO {
        run(&[
            "subjects",
            "erase",
            "--email",
            email,
            "--reason",
            "leaver #12",
        ])
        .expect_ok()
        .stdout_has("account removed");
    }
    run(&["journeys", "list"]).expect_ok();
    // The demo would start a journey no code is sent for (R1): it says why and starts none.
    run(&["demo"])
        .expect_code(2)
        .stderr_has("is not an enabled account in the directory");
    run(&["journey", "start", "--email", EMAIL]).expect_ok();
    for email in DEMO {
        let again = run(&["subjects", "erase", "--email", email, "--reason", "check"]);
        again.expect_ok();
        assert!(
            again.stdout.contains("no account has it")
                || again
                    .stdout
                    .contains("account not found (already removed?)"),
            "{email} came back: {again}"
        );
    }
    run(&["audit", "verify"]).expect_ok();
}

#[test]
fn erasing_every_demo_account_is_final_on_sqlite() {
    let dir = TestDir::new("erasure-all-demo");
    let p = Passage::new(&dir);
    erased_demo_accounts_stay_gone(&|args: &[&str]| {
        let r = p.run(args);
        r.no_panic();
        r
    });
}

#[tokio::test]
async fn erasing_every_demo_account_is_final_on_postgres() {
    let Some(server) = common::postgres::ScratchServer::connect().await else {
        return;
    };
    let db = format!("passage_erasure_all_{}", std::process::id());
    let url = server.fresh_database(&db).await;
    let dir = TestDir::new("erasure-all-demo-pg");
    let p = Passage::new(&dir);
    erased_demo_accounts_stay_gone(&|args: &[&str]| {
        let mut all = vec!["--database-url", url.as_str()];
        all.extend_from_slice(args);
        let r = p.run(&all);
        r.no_panic();
        r
    });
    server.drop_database(&db).await;
}
