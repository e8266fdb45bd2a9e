//! What the console logs about refused sign-ins (R50). In its own test binary because it
//! captures logs with a thread-scoped subscriber: tracing caches each call site's interest
//! process-wide, so another test thread reaching the same call site at the same moment
//! could have the event dropped before this subscriber sees it.

mod support;

use axum::http::StatusCode;
use passage_core::roles::Role;
use support::{Browser, OPERATOR_PASSWORD as PASSWORD, Res, add_operator, portal};

/// A tracing subscriber that keeps every event's fields as text, for the test's thread.
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

struct Line<'a>(&'a mut String);

impl tracing::field::Visit for Line<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
}

impl tracing::Subscriber for Logs {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = String::new();
        event.record(&mut Line(&mut line));
        self.0.lock().unwrap().push(line);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

impl Logs {
    fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

async fn sign_in_as(b: &Browser, name: &str, password: &str) -> Res {
    let form = b.get("/console/sign-in").await;
    b.post(
        "/console/sign-in",
        &[
            ("name", name),
            ("password", password),
            ("csrf", &form.input("csrf")),
        ],
    )
    .await
}

/// R50: what a refused sign-in typed as the name is not logged unless it is an operator's
/// name (it may be a password typed in the wrong field, or a person's address).
#[tokio::test]
async fn refused_sign_ins_do_not_log_what_was_typed_as_the_name() {
    let p = portal().await;
    add_operator(&p, "sam", Role::Support).await;
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.clone());
    for name in ["alice@example.com", "my-Secret-Passw0rd-typed-here"] {
        let res = sign_in_as(&p.browser(), name, PASSWORD).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    }
    let res = sign_in_as(&p.browser(), "sam", "not sam's password").await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    let text = logs.text();
    assert!(text.contains("console sign-in refused"), "{text}");
    assert!(!text.contains("alice@example.com"), "{text}");
    assert!(!text.contains("my-Secret-Passw0rd-typed-here"), "{text}");
    assert!(
        text.contains("sam"),
        "a known operator's failures still name them: {text}"
    );
}

/// R50: the per-name sign-in limit logs its refusal without what was typed as the name,
/// known or not.
#[tokio::test]
async fn a_throttled_sign_in_does_not_log_what_was_typed_as_the_name() {
    let p = portal().await;
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.clone());
    let b = p.browser();
    let typed = "my-Secret-Passw0rd-in-the-name-field";
    for _ in 0..10 {
        assert_eq!(
            sign_in_as(&b, typed, PASSWORD).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let res = sign_in_as(&b, typed, PASSWORD).await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
    let text = logs.text();
    assert!(
        text.contains("console sign-ins for one operator name over their limit"),
        "{text}"
    );
    assert!(!text.contains(typed), "{text}");
}
