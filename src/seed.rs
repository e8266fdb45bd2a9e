//! The demo account directory, so `passage demo` has someone to reset.

use passage_core::ports::Account;

/// Demo accounts: full addresses live only in the directory, never in events.
pub fn demo_accounts() -> Vec<Account> {
    vec![
        Account {
            account_id: "acct-0001".into(),
            email: "alice@example.com".into(),
            display_name: "Alice Nguyen".into(),
            phone: Some("+61412345678".into()),
            enabled: true,
        },
        Account {
            account_id: "acct-0002".into(),
            email: "bob.smith@example.com".into(),
            display_name: "Bob Smith".into(),
            phone: Some("+61298765432".into()),
            enabled: true,
        },
        Account {
            account_id: "acct-0003".into(),
            email: "carol@example.com".into(),
            display_name: "Carol Jones".into(),
            phone: None,
            enabled: true,
        },
        Account {
            account_id: "acct-0004".into(),
            email: "dave@example.com".into(),
            display_name: "Dave Disabled".into(),
            phone: Some("+61400000004".into()),
            enabled: false,
        },
    ]
}
