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

/// A journey started through the API: its id and the bearer token its start response handed
/// out, which every later call on it sends.
struct Started {
    id: String,
    token: String,
}

impl Api {
    /// A request without an `Authorization` header (starts, unknown journeys).
    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_as(None, method, uri, body).await
    }

    /// A request with `Authorization: Bearer {token}` when a token is given.
    async fn call_as(
        &self,
        token: Option<&str>,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
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

    /// `POST /api/journeys` with `body`: the journey and its token (checked to be 64 hex).
    async fn start(&self, body: Value) -> Started {
        let (status, v) = self.call("POST", "/api/journeys", Some(body)).await;
        assert!(
            status == StatusCode::CREATED || status == StatusCode::UNPROCESSABLE_ENTITY,
            "{status}: {v}"
        );
        started(&v)
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

/// The id and the token of a start response.
fn started(v: &Value) -> Started {
    let token = v["journey_token"].as_str().unwrap_or_else(|| panic!("{v}"));
    assert!(
        token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "journey_token: {token}"
    );
    Started {
        id: v["journey_id"].as_str().unwrap().to_owned(),
        token: token.to_owned(),
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
    let Started { id, token } = started(&body);
    let token = Some(token.as_str());
    assert_eq!(body["journey"]["step"]["kind"], "code");
    let code = api.code(&id, "email").await;
    let (status, body) = api
        .call_as(
            token,
            "POST",
            &format!("/api/journeys/{id}/code"),
            Some(json!({"code": code})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("journey_token").is_none(), "on the start only");
    assert_eq!(body["journey"]["step"]["kind"], "choose");
    assert_eq!(body["journey"]["step"]["phone_masked"], "+61 ••• ••• 678");
    let (_, body) = api
        .call_as(
            token,
            "POST",
            &format!("/api/journeys/{id}/choice"),
            Some(json!({"option": "sms"})),
        )
        .await;
    assert_eq!(body["journey"]["step"]["channel"], "sms");
    let sms = api.code(&id, "sms").await;
    api.call_as(
        token,
        "POST",
        &format!("/api/journeys/{id}/code"),
        Some(json!({"code": sms})),
    )
    .await;
    let pw = json!({"new_password": "lantern harbour velvet comet", "confirm_password": "lantern harbour velvet comet"});
    let (status, body) = api
        .call_as(
            token,
            "POST",
            &format!("/api/journeys/{id}/password"),
            Some(pw),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["journey"]["status"], "completed");
    assert_eq!(body["session_token"].as_str().map(str::len), Some(64));
    assert!(body.get("journey_token").is_none(), "on the start only");
    let (status, body) = api
        .call_as(token, "GET", &format!("/api/journeys/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.get("journey_token").is_none(), "on the start only");
    assert_eq!(
        body["journey"]["step"]["tiles"][0]["portal"],
        "Connections Portal"
    );
}

#[tokio::test]
async fn refusals_are_422_with_a_stable_code_and_the_view() {
    let api = api().await;
    let j = api.start(json!({"email": "alice@example.com"})).await;
    let (id, token) = (&j.id, Some(j.token.as_str()));
    let (status, body) = api
        .call_as(
            token,
            "POST",
            &format!("/api/journeys/{id}/code"),
            Some(json!({"code": "000000"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "invalid-code");
    assert_eq!(body["journey"]["step"]["attempts_left"], 4);
    assert!(body.get("journey_token").is_none(), "on the start only");
    let pw = json!({"new_password": "x", "confirm_password": "x"});
    let (status, body) = api
        .call_as(
            token,
            "POST",
            &format!("/api/journeys/{id}/password"),
            Some(pw),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["error"]["code"], "step-not-allowed",
        "R28: no skipping"
    );
    // A start the rules refuse (422) hands out the token too: the journey exists.
    let (status, body) = api
        .call(
            "POST",
            "/api/journeys",
            Some(json!({"email": "not an address"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "invalid-email");
    let j = started(&body);
    let (status, body) = api
        .call_as(
            Some(&j.token),
            "POST",
            &format!("/api/journeys/{}/email", j.id),
            Some(json!({"email": "alice@example.com"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn malformed_requests_get_clear_4xx_errors() {
    let api = api().await;
    let Started { id, token } = api.start(json!({})).await;
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
        let (status, body) = api
            .call_as(Some(&token), "POST", &uri, Some(payload.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri} {payload}: {body}");
        assert_eq!(body["error"]["code"], "bad-request");
    }
    let req = Request::post(format!("/api/journeys/{id}/email"))
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from("email=a"))
        .unwrap();
    let (status, _) = api.send(req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a form body is not JSON");
    for uri in [
        "/api/journeys/not-a-uuid",
        "/api/journeys/01a21bec-014a-7309-b3ed-7fab38bd923b",
    ] {
        let (status, body) = api.call_as(Some(&token), "GET", uri, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "journey-not-found");
    }
    let (status, body) = api
        .call("POST", "/api/journeys", Some(json!({"workflow": "nope"})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "unknown-workflow");
}

/// A journey id alone drives nothing: without the start's token, with a malformed
/// `Authorization` or with another journey's token, every route but the simulated phone
/// answers exactly like an unknown journey, and the journey does not move.
#[tokio::test]
async fn a_journey_needs_the_token_from_its_start() {
    let api = api().await;
    let mine = api.start(json!({"email": "alice@example.com"})).await;
    let other = api.start(json!({})).await;
    let id = &mine.id;
    let (_, unknown) = api
        .call(
            "GET",
            "/api/journeys/01a21bec-014a-7309-b3ed-7fab38bd923b",
            None,
        )
        .await;
    assert_eq!(unknown["error"]["code"], "journey-not-found");
    let (_, before) = api
        .call_as(
            Some(&mine.token),
            "GET",
            &format!("/api/journeys/{id}"),
            None,
        )
        .await;
    let routes: [(&str, String, Option<Value>); 6] = [
        ("GET", format!("/api/journeys/{id}"), None),
        (
            "POST",
            format!("/api/journeys/{id}/email"),
            Some(json!({"email": "alice@example.com"})),
        ),
        (
            "POST",
            format!("/api/journeys/{id}/code"),
            Some(json!({"code": "000000"})),
        ),
        ("POST", format!("/api/journeys/{id}/resend"), None),
        (
            "POST",
            format!("/api/journeys/{id}/choice"),
            Some(json!({"option": "sms"})),
        ),
        (
            "POST",
            format!("/api/journeys/{id}/password"),
            Some(json!({"new_password": "a", "confirm_password": "a"})),
        ),
    ];
    let wrong_case = mine.token.to_ascii_uppercase();
    let authorizations: [Option<String>; 6] = [
        None,
        Some(String::new()),
        Some(mine.token.clone()),
        Some(format!("Bearer {}", other.token)),
        Some(format!("Bearer {}", &mine.token[..63])),
        Some(format!("Bearer {wrong_case}")),
    ];
    for (method, uri, body) in &routes {
        for authorization in &authorizations {
            let mut req = Request::builder().method(*method).uri(uri);
            if let Some(value) = authorization {
                req = req.header("authorization", value.as_str());
            }
            let req = match body {
                Some(v) => req
                    .header("content-type", "application/json")
                    .body(Body::from(v.to_string())),
                None => req.body(Body::empty()),
            };
            let (status, answer) = api.send(req.unwrap()).await;
            assert_eq!(
                (status, &answer),
                (StatusCode::NOT_FOUND, &unknown),
                "{method} {uri} with authorization {authorization:?}"
            );
        }
    }
    let (_, after) = api
        .call_as(
            Some(&mine.token),
            "GET",
            &format!("/api/journeys/{id}"),
            None,
        )
        .await;
    assert_eq!(before, after, "nothing moved");
    assert_eq!(after["journey"]["step"]["attempts_left"], 5);
    // The simulated phone stands in for the voice provider: it needs no token.
    let keys = json!({"call_id": uuid::Uuid::new_v4(), "digits": "#"});
    let (status, body) = api
        .call("POST", &format!("/api/journeys/{id}/call"), Some(keys))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "call-not-active", "{body}");
}

#[tokio::test]
async fn idempotency_keys_are_16_to_200_characters() {
    let api = api().await;
    let Started { id, token } = api.start(json!({})).await;
    let with_key = |uri: &str, key: &str| {
        Request::post(uri)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .header("idempotency-key", key)
            .body(Body::from(r#"{"email":"alice@example.com"}"#))
            .unwrap()
    };
    let email = format!("/api/journeys/{id}/email");
    for key in ["k".repeat(15), "k".repeat(201), String::new()] {
        for uri in ["/api/journeys", email.as_str()] {
            let (status, body) = api.send(with_key(uri, &key)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri} {key:?}: {body}");
            assert_eq!(body["error"]["code"], "bad-request");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(
                message.starts_with("Idempotency-Key must be 16 to 200 visible characters"),
                "{message}"
            );
        }
    }
    for key in ["k".repeat(16), "k".repeat(200)] {
        let (status, body) = api.send(with_key("/api/journeys", &key)).await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{} characters: {body}",
            key.len()
        );
    }
    let (status, body) = api.send(with_key(&email, &"e".repeat(16))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_outcome() {
    let api = api().await;
    let Started { id, token } = api.start(json!({"email": "alice@example.com"})).await;
    let key = uuid::Uuid::new_v4().to_string();
    let guess = || {
        Request::post(format!("/api/journeys/{id}/code"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .header("idempotency-key", &key)
            .body(Body::from(r#"{"code":"000000"}"#))
            .unwrap()
    };
    let (_, first) = api.send(guess()).await;
    let (_, again) = api.send(guess()).await;
    assert_eq!(first["error"]["code"], "invalid-code", "{first}");
    assert_eq!(first["error"], again["error"]);
    assert_eq!(
        again["journey"]["step"]["attempts_left"], 4,
        "the retry was not a second attempt"
    );
}

#[tokio::test]
async fn a_repeated_start_with_the_same_key_is_the_same_journey() {
    let api = api().await;
    let key = uuid::Uuid::new_v4().to_string();
    let start = || {
        Request::post("/api/journeys")
            .header("content-type", "application/json")
            .header("idempotency-key", &key)
            .body(Body::from(r#"{"email":"alice@example.com"}"#))
            .unwrap()
    };
    let (s1, first) = api.send(start()).await;
    let (s2, again) = api.send(start()).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(first["journey_id"], again["journey_id"]);
    assert_eq!(
        started(&first).token,
        started(&again).token,
        "the retry gets the same token"
    );
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

/// The start endpoint is open to anyone, so a key is scoped to the address asked for: the
/// same key with another address (a client's mistake, or someone who guessed it) starts a
/// journey of its own and never answers with the first one's id or token.
#[tokio::test]
async fn a_start_key_reused_with_another_address_does_not_return_the_first_journey() {
    let api = api().await;
    let key = "my-app-retry-0001";
    let start = |email: &str| {
        Request::post("/api/journeys")
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(Body::from(json!({ "email": email }).to_string()))
            .unwrap()
    };
    let (s1, carol) = api.send(start("carol@example.com")).await;
    let (s2, other) = api.send(start("mallory@example.com")).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_ne!(carol["journey_id"], other["journey_id"], "{other}");
    assert_ne!(started(&carol).token, started(&other).token);
    assert!(
        !other.to_string().contains("c\u{2022}\u{2022}\u{2022}l"),
        "carol's masked address leaked: {other}"
    );
    let (_, carol_again) = api.send(start("carol@example.com")).await;
    assert_eq!(
        carol["journey_id"], carol_again["journey_id"],
        "a true retry"
    );
}

#[tokio::test]
async fn the_simulated_phone_route_is_closed_with_a_real_voice_provider() {
    let api = api().await;
    let Started { id, .. } = api.start(json!({"email": "alice@example.com"})).await;
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
