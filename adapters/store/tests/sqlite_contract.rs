//! The store contract suite (`passage_store::contract`) against SQLite: each function on a
//! fresh temporary file, and once more on the in-memory database.

mod common;

use common::TempDb;
use passage_store::SqliteStore;

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod file {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = TempDb::new();
                    let store = db.open().await;
                    passage_store::contract::$name(store.clone()).await;
                    store.close().await;
                }
            )*
        }

        mod in_memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let store = SqliteStore::open_in_memory().await.expect("open in memory");
                    passage_store::contract::$name(store.clone()).await;
                    store.close().await;
                }
            )*
        }
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

/// Two handles on one file (`passage serve` and `passage bot`, say) share the send budgets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_budgets_on_one_file() {
    let db = TempDb::new();
    let (a, b) = (db.open().await, db.open().await);
    passage_store::contract::send_budgets(
        passage_store::AnyStore::Sqlite(a.clone()),
        passage_store::AnyStore::Sqlite(b.clone()),
    )
    .await;
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_budgets_in_memory() {
    let store = SqliteStore::open_in_memory().await.expect("open in memory");
    let any = passage_store::AnyStore::Sqlite(store.clone());
    passage_store::contract::send_budgets(any.clone(), any).await;
    store.close().await;
}
