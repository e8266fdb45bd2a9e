//! Router-level tests of the JSON API: `router(state).oneshot(request)`.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use passage_channels::DevOutbox;
use passage_core::definition::load;
use passage_core::ports::{Account, JourneyId};
use passage_core::secrets::{Argon2id, Keys};
use passage_runtime::{Engine, EngineOptions, SystemClock, Worker, WorkerOptions};
use passage_store::SqliteStore;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use tower::ServiceExt;

struct Api {
    dir: PathBuf,
    router: Router,
    worker: Worker<SqliteStore, SqliteStore, DevOutbox>,
    outbox: DevOutbox,
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn api() -> Api {
    let dir = std::env::temp_dir().join(format!("passage-web-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::open(&dir.join("passage.db")).await.unwrap();
    let alice = Account {
        account_id: "acct-alice".into(),
        email: "alice@example.com".into(),
        display_name: "Alice Nguyen".into(),
        phone: Some("+61412345678".into()),
        enabled: true,
    };
    store
        .insert_account_if_missing(&alice, "$argon2id$v=19$m=256,t=1,p=1$c2FsdHNhbHQ$aGFzaA")
        .await
        .unwrap();
    let engine = Engine::new(
        store.clone(),
        store,
        Arc::new(SystemClock),
        EngineOptions {
            keys: Keys::derive(b"web test secret"),
            hasher: Argon2id::new(256, 1, 1),
        },
    );
    let src = include_str!("../../../workflows/password-reset.toml");
    engine
        .register(load("password-reset.toml", src).unwrap())
        .await
        .unwrap();
    let outbox = DevOutbox::open(&dir.join("outbox.db")).await.unwrap();
    let worker = Worker::new(engine.clone(), outbox.clone(), WorkerOptions::default());
    let router = passage_web::router(passage_web::AppState::new(engine));
    Api {
        dir,
        router,
        worker,
        outbox,
    }
}

impl Api {
    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.send(req.body(body).unwrap()).await
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, value)
    }

    async fn code(&self, id: &str, channel: &str) -> String {
        self.worker.drain().await.unwrap();
        let id: JourneyId = id.parse().unwrap();
        self.outbox
            .latest(id, channel)
            .await
            .unwrap()
            .unwrap()
            .code()
            .unwrap()
    }
}

#[tokio::test]
async fn a_journey_completes_through_the_api() {
    let api = api().await;
    let (status, body) = api
        .call(
            "POST",
            "/api/journeys",
            Some(json!({"email": "alice@example.com"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["journey_id"].as_str().unwrap().to_owned();
    assert_eq!(body["journey"]["step"]["kind"], "code");
    let code = api.code(&id, "email").await;
    let (status, body) = api
        .call(
            "POST",
            &format!("/api/journeys/{id}/code"),
            Some(json!({"code": code})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["journey"]["step"]["kind"], "choose");
    assert_eq!(body["journey"]["step"]["phone_masked"], "+61 ••• ••• 678");
    let (_, body) = api
        .call(
            "POST",
            &format!("/api/journeys/{id}/choice"),
            Some(json!({"option": "sms"})),
        )
        .await;
    assert_eq!(body["journey"]["step"]["channel"], "sms");
    let sms = api.code(&id, "sms").await;
    api.call(
        "POST",
        &format!("/api/journeys/{id}/code"),
        Some(json!({"code": sms})),
    )
    .await;
    let pw = json!({"new_password": "lantern harbour velvet comet", "confirm_password": "lantern harbour velvet comet"});
    let (status, body) = api
        .call("POST", &format!("/api/journeys/{id}/password"), Some(pw))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["journey"]["status"], "completed");
    assert_eq!(body["session_token"].as_str().map(str::len), Some(64));
    let (status, body) = api.call("GET", &format!("/api/journeys/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["journey"]["step"]["tiles"][0]["portal"],
        "Connections Portal"
    );
}

#[tokio::test]
async fn refusals_are_422_with_a_stable_code_and_the_view() {
    let api = api().await;
    let (_, body) = api
        .call(
            "POST",
            "/api/journeys",
            Some(json!({"email": "alice@example.com"})),
        )
        .await;
    let id = body["journey_id"].as_str().unwrap().to_owned();
    let (status, body) = api
        .call(
            "POST",
            &format!("/api/journeys/{id}/code"),
            Some(json!({"code": "000000"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "invalid-code");
    assert_eq!(body["journey"]["step"]["attempts_left"], 4);
    let pw = json!({"new_password": "x", "confirm_password": "x"});
    let (status, body) = api
        .call("POST", &format!("/api/journeys/{id}/password"), Some(pw))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["error"]["code"], "step-not-allowed",
        "R28: no skipping"
    );
}

#[tokio::test]
async fn malformed_requests_get_clear_4xx_errors() {
    let api = api().await;
    let (_, body) = api.call("POST", "/api/journeys", Some(json!({}))).await;
    let id = body["journey_id"].as_str().unwrap().to_owned();
    for (uri, payload) in [
        (
            "/api/journeys".to_owned(),
            json!({"email": ["victim@example.com", "attacker@example.com"]}),
        ),
        (
            format!("/api/journeys/{id}/email"),
            json!({"email": "alice@example.com", "user_id": "acct-bob"}),
        ),
        (format!("/api/journeys/{id}/code"), json!({"code": 123456})),
        (format!("/api/journeys/{id}/code"), json!(null)),
    ] {
        let (status, body) = api.call("POST", &uri, Some(payload.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri} {payload}: {body}");
        assert_eq!(body["error"]["code"], "bad-request");
    }
    let req = Request::post(format!("/api/journeys/{id}/email"))
        .body(Body::from("email=a"))
        .unwrap();
    let (status, _) = api.send(req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a form body is not JSON");
    for uri in [
        "/api/journeys/not-a-uuid",
        "/api/journeys/01a21bec-014a-7309-b3ed-7fab38bd923b",
    ] {
        let (status, body) = api.call("GET", uri, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "journey-not-found");
    }
    let (status, body) = api
        .call("POST", "/api/journeys", Some(json!({"workflow": "nope"})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "unknown-workflow");
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_outcome() {
    let api = api().await;
    let (_, body) = api
        .call(
            "POST",
            "/api/journeys",
            Some(json!({"email": "alice@example.com"})),
        )
        .await;
    let id = body["journey_id"].as_str().unwrap().to_owned();
    let guess = || {
        Request::post(format!("/api/journeys/{id}/code"))
            .header("content-type", "application/json")
            .header("idempotency-key", "retry-1")
            .body(Body::from(r#"{"code":"000000"}"#))
            .unwrap()
    };
    let (_, first) = api.send(guess()).await;
    let (_, again) = api.send(guess()).await;
    assert_eq!(first["error"], again["error"]);
    assert_eq!(
        again["journey"]["step"]["attempts_left"], 4,
        "the retry was not a second attempt"
    );
}

#[tokio::test]
async fn a_repeated_start_with_the_same_key_is_the_same_journey() {
    let api = api().await;
    let start = || {
        Request::post("/api/journeys")
            .header("content-type", "application/json")
            .header("idempotency-key", "start-once")
            .body(Body::from(r#"{"email":"alice@example.com"}"#))
            .unwrap()
    };
    let (s1, first) = api.send(start()).await;
    let (s2, again) = api.send(start()).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(first["journey_id"], again["journey_id"]);
    api.worker.drain().await.unwrap();
    let id: JourneyId = first["journey_id"].as_str().unwrap().parse().unwrap();
    let emails = api
        .outbox
        .list(&passage_channels::MessageFilter {
            journey: Some(id),
            channel: Some("email".into()),
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(emails.len(), 1, "one code sent, not two");
}

#[tokio::test]
async fn the_simulated_phone_route_is_closed_with_a_real_voice_provider() {
    let api = api().await;
    let (_, body) = api
        .call(
            "POST",
            "/api/journeys",
            Some(json!({"email": "alice@example.com"})),
        )
        .await;
    let id = body["journey_id"].as_str().unwrap().to_owned();
    // Same engine, but configured as with a real provider: the route must refuse.
    let store = SqliteStore::open(&api.dir.join("passage.db"))
        .await
        .unwrap();
    let engine = Engine::new(
        store.clone(),
        store,
        Arc::new(SystemClock),
        EngineOptions {
            keys: Keys::derive(b"web test secret"),
            hasher: Argon2id::new(256, 1, 1),
        },
    );
    let router = passage_web::router(passage_web::AppState::with_phone(engine, false));
    let req = Request::post(format!("/api/journeys/{id}/call"))
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"call_id": uuid::Uuid::new_v4(), "digits": "#"}).to_string(),
        ))
        .unwrap();
    let res = router.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}
