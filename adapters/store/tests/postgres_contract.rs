//! The store contract suite (`passage_store::contract`) against PostgreSQL: each function
//! on a fresh schema of its own (see `pg/mod.rs` for where the server is and when these
//! tests skip or fail).

mod pg;

use passage_store::PgOptions;

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                pg::with_store(PgOptions::default(), |store, _, _| async move {
                    passage_store::contract::$name(store).await;
                })
                .await;
            }
        )*
    };
}

contract!(
    conflicting_appends,
    idempotent_retry,
    global_order,
    outbox_timer_atomicity,
    read_all_paging,
    definitions_roundtrip,
    journeys_summary,
    journeys_by_subject,
    checkpoints_roundtrip,
    claim_skips_a_kind,
    claim_one_journey,
    lease_fencing,
    wait_for_work_wakes_on_append,
    personal_data_keys,
);

/// Two handles on one schema: two nodes sharing the send budgets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_budgets() {
    pg::with_store(PgOptions::default(), |store, url, schema| async move {
        let other = pg::connect(&url, pg::options(&schema)).await;
        passage_store::contract::send_budgets(
            passage_store::AnyStore::Postgres(store),
            passage_store::AnyStore::Postgres(other.clone()),
        )
        .await;
        other.close().await;
    })
    .await;
}
