//! `openapi.json` (served at `GET /api/openapi.json`) checked against the real router: the
//! document lists exactly the router's routes and which of them need the journey's bearer
//! token, and every response the test provokes, on journeys driven through every operation
//! (with their token, without it and with another journey's), matches the schema documented
//! for its path, method and status.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use passage_channels::DevOutbox;
use passage_core::definition::load;
use passage_core::ports::{Account, JourneyId};
use passage_core::secrets::{Argon2id, Keys};
use passage_runtime::{
    Clock, Engine, EngineOptions, ManualClock, SystemClock, Worker, WorkerOptions,
};
use passage_store::SqliteStore;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::ServiceExt;
use uuid::Uuid;

/// The routes registered by `passage_web::router` (src/api.rs), as (method, path). This list
/// must follow `router()`: a route added or removed there is added or removed here too (and
/// in `openapi.json`, which the tests compare with this list).
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/journeys"),
    ("GET", "/api/journeys/{id}"),
    ("POST", "/api/journeys/{id}/email"),
    ("POST", "/api/journeys/{id}/code"),
    ("POST", "/api/journeys/{id}/resend"),
    ("POST", "/api/journeys/{id}/choice"),
    ("POST", "/api/journeys/{id}/call"),
    ("POST", "/api/journeys/{id}/password"),
    ("GET", "/api/health"),
    ("GET", "/api/openapi.json"),
];

/// The routes that need `Authorization: Bearer <journey_token>` (`bearerAuth` in the
/// document): every journey route but the start and the simulated phone.
const TOKEN_ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/journeys/{id}"),
    ("POST", "/api/journeys/{id}/email"),
    ("POST", "/api/journeys/{id}/code"),
    ("POST", "/api/journeys/{id}/resend"),
    ("POST", "/api/journeys/{id}/choice"),
    ("POST", "/api/journeys/{id}/password"),
];

const DOC: &str = include_str!("../openapi.json");
const START: &str = "/api/journeys";
const SHOW: &str = "/api/journeys/{id}";
const EMAIL: &str = "/api/journeys/{id}/email";
const CODE: &str = "/api/journeys/{id}/code";
const RESEND: &str = "/api/journeys/{id}/resend";
const CHOICE: &str = "/api/journeys/{id}/choice";
const CALL: &str = "/api/journeys/{id}/call";
const PASSWORD: &str = "/api/journeys/{id}/password";
const GOOD_PASSWORD: &str = "lantern harbour velvet comet";

struct Api {
    dir: PathBuf,
    router: Router,
    /// The same engine, configured as with a real voice provider (no simulated phone).
    real_phone: Router,
    worker: Worker<SqliteStore, SqliteStore, DevOutbox>,
    outbox: DevOutbox,
    clock: ManualClock,
    doc: Value,
    /// (method, path template, status) of every response checked against the document.
    seen: Mutex<BTreeSet<(String, String, u16)>>,
    /// The `journey_token` of every journey started, by journey id, as a client keeps it.
    tokens: Mutex<HashMap<String, String>>,
}

/// The `Authorization` a request sends.
#[derive(Debug, Clone, Copy)]
enum Auth<'a> {
    /// The journey's own token, from its start's answer (none for a journey not started
    /// here, such as an unknown id).
    Own,
    /// No `Authorization` header.
    Without,
    /// `Authorization: Bearer {token}`.
    Bearer(&'a str),
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The router as `tests/api.rs` builds it, on a clock the test moves (for resend cooldowns
/// and expiry).
async fn api() -> Api {
    let dir = std::env::temp_dir().join(format!("passage-web-openapi-{}", Uuid::new_v4()));
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
    let clock = ManualClock::new(SystemClock.now());
    let engine = Engine::new(
        store.clone(),
        store,
        Arc::new(clock.clone()),
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
    let real_phone = passage_web::router(passage_web::AppState::with_phone(engine.clone(), false));
    let router = passage_web::router(passage_web::AppState::new(engine));
    Api {
        dir,
        router,
        real_phone,
        worker,
        outbox,
        clock,
        doc: serde_json::from_str(DOC).expect("openapi.json is JSON"),
        seen: Mutex::default(),
        tokens: Mutex::default(),
    }
}

fn json_body(v: Value) -> Option<(&'static str, String)> {
    Some(("application/json", v.to_string()))
}

impl Api {
    /// A JSON request to the main router, with the journey's own token, checked against the
    /// document.
    async fn op(&self, method: &str, path: &str, id: &str, body: Option<Value>) -> (u16, Value) {
        self.op_as(Auth::Own, method, path, id, body).await
    }

    /// [`Api::op`] with the given `Authorization`.
    async fn op_as(
        &self,
        auth: Auth<'_>,
        method: &str,
        path: &str,
        id: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.exchange(
            &self.router,
            auth,
            method,
            path,
            id,
            &[],
            body.and_then(json_body),
        )
        .await
    }

    /// The token the start of journey `id` handed out.
    fn token(&self, id: &str) -> String {
        self.tokens.lock().unwrap()[id].clone()
    }

    /// Sends a request to `path` (a template of the document, `{id}` replaced by `id`) and
    /// checks the answer against the response documented for its status: content type,
    /// body schema, and (for errors) that the description names the error code. A body the
    /// server took (accepted or refused by the rules) must also match the request schema.
    /// A start's answer carries the journey's token, kept for the journey's later calls.
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &self,
        router: &Router,
        auth: Auth<'_>,
        method: &str,
        path: &str,
        id: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, String)>,
    ) -> (u16, Value) {
        let uri = path.replace("{id}", id);
        let mut req = Request::builder().method(method).uri(&uri);
        let token = match auth {
            Auth::Own => self.tokens.lock().unwrap().get(id).cloned(),
            Auth::Without => None,
            Auth::Bearer(t) => Some(t.to_owned()),
        };
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = match &body {
            Some((content_type, text)) => req
                .header("content-type", *content_type)
                .body(Body::from(text.clone())),
            None => req.body(Body::empty()),
        };
        let res = router.clone().oneshot(req.unwrap()).await.unwrap();
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .unwrap_or("")
            .trim()
            .to_owned();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(bytes.to_vec()).expect("a UTF-8 body");
        let value = match content_type.as_str() {
            "application/json" => serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{method} {uri} -> {status}: not JSON ({e}): {text}")),
            _ => Value::String(text),
        };
        let what = format!("{method} {uri} -> {status} {content_type}: {value}");
        let response = self
            .operation(method, path)
            .get("responses")
            .and_then(|r| r.get(status.to_string()))
            .map(|r| follow(&self.doc, r))
            .unwrap_or_else(|| panic!("undocumented response: {what}"));
        let schema = &response["content"]
            .get(&content_type)
            .unwrap_or_else(|| panic!("undocumented content type: {what}"))["schema"];
        if let Err(e) = check(&self.doc, schema, &value) {
            panic!("{what}\ndoes not match the document: {e}");
        }
        if value.get("result").is_some() {
            let union = if path == START {
                json!({"$ref": "#/components/schemas/StartResponse"})
            } else {
                json!({"$ref": "#/components/schemas/JourneyResponse"})
            };
            check(&self.doc, &union, &value).unwrap_or_else(|e| panic!("{what}\n{e}"));
        }
        match value.get("journey_token").and_then(Value::as_str) {
            Some(token) => {
                assert!(
                    path == START && (status == 201 || status == 422),
                    "a journey token outside a start's answer: {what}"
                );
                assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{what}");
                let journey = value["journey_id"].as_str().unwrap().to_owned();
                self.tokens
                    .lock()
                    .unwrap()
                    .insert(journey, token.to_owned());
            }
            None => assert!(
                !(path == START && (status == 201 || status == 422)),
                "a start's answer without its journey token: {what}"
            ),
        }
        if let Some(code) = value.pointer("/error/code").and_then(Value::as_str) {
            let documented = response["description"].as_str().unwrap_or("");
            assert!(
                documented.contains(&format!("`{code}`")),
                "error code `{code}` is not in the description of {method} {path} {status}"
            );
        }
        if let (Some((_, text)), true) = (&body, (200..300).contains(&status) || status == 422) {
            let sent: Value = serde_json::from_str(text).unwrap();
            if let Err(e) = check(&self.doc, self.request_schema(method, path), &sent) {
                panic!("the server took {sent} but the request schema refuses it: {e} ({what})");
            }
        }
        self.seen
            .lock()
            .unwrap()
            .insert((method.to_owned(), path.to_owned(), status));
        (status, value)
    }

    fn operation(&self, method: &str, path: &str) -> &Value {
        self.doc["paths"]
            .get(path)
            .and_then(|p| p.get(method.to_ascii_lowercase()))
            .unwrap_or_else(|| panic!("{method} {path} is not documented"))
    }

    fn request_schema(&self, method: &str, path: &str) -> &Value {
        &self.operation(method, path)["requestBody"]["content"]["application/json"]["schema"]
    }

    async fn code(&self, id: &str, channel: &str) -> String {
        self.worker.drain().await.unwrap();
        let id: JourneyId = id.parse().unwrap();
        let message = self.outbox.latest(id, channel).await.unwrap().unwrap();
        message.code().unwrap()
    }

    async fn call_id(&self, id: &str) -> Uuid {
        self.worker.drain().await.unwrap();
        let id: JourneyId = id.parse().unwrap();
        let message = self.outbox.latest(id, "voice").await.unwrap().unwrap();
        message.call_id.unwrap()
    }
}

// --- A JSON Schema subset: the keywords the document uses ------------------------------

/// Checks `value` against `schema`. Supports `type` (a name or a list, with `null`),
/// `properties`, `required`, `additionalProperties`, `enum`, `const`, `items`, `oneOf`
/// (exactly one branch), local `$ref`, `minimum`/`maximum` and `minLength`/`maxLength`;
/// annotations are ignored. Any other keyword is an error, so the document cannot promise a
/// constraint that is not checked.
fn check(doc: &Value, schema: &Value, value: &Value) -> Result<(), String> {
    check_at(doc, schema, value, "$")
}

fn check_at(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    let fail = |why: String| Err(format!("{at}: {why}"));
    let Some(keywords) = schema.as_object() else {
        return fail(format!("schema {schema} is not an object"));
    };
    let object = v.as_object();
    for (key, s) in keywords {
        match key.as_str() {
            "$ref" => check_at(doc, follow(doc, schema), v, at)?,
            "type" => {
                let types: Vec<&str> = match s {
                    Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
                    other => other.as_str().into_iter().collect(),
                };
                if !types.iter().any(|t| is_type(t, v)) {
                    return fail(format!("{v} is not of type {s}"));
                }
            }
            "enum" if !s.as_array().is_some_and(|e| e.contains(v)) => {
                return fail(format!("{v} is not one of {s}"));
            }
            "const" if s != v => return fail(format!("{v} is not {s}")),
            "properties" => {
                let props = s.as_object().expect("properties is an object");
                for (name, sub) in props {
                    if let Some(x) = object.and_then(|o| o.get(name)) {
                        check_at(doc, sub, x, &format!("{at}.{name}"))?;
                    }
                }
            }
            "required" => {
                for name in s.as_array().expect("required is a list") {
                    let name = name.as_str().expect("required names are strings");
                    if object.is_some_and(|o| !o.contains_key(name)) {
                        return fail(format!("`{name}` is missing"));
                    }
                }
            }
            "additionalProperties" => {
                let known = keywords.get("properties").and_then(Value::as_object);
                let extra = object
                    .into_iter()
                    .flatten()
                    .filter(|(name, _)| !known.is_some_and(|p| p.contains_key(*name)));
                for (name, x) in extra {
                    match s {
                        Value::Bool(false) => return fail(format!("unexpected `{name}`")),
                        Value::Bool(true) => {}
                        sub => check_at(doc, sub, x, &format!("{at}.{name}"))?,
                    }
                }
            }
            "items" => {
                for (i, x) in v.as_array().into_iter().flatten().enumerate() {
                    check_at(doc, s, x, &format!("{at}[{i}]"))?;
                }
            }
            "oneOf" => {
                let branches = s.as_array().expect("oneOf is a list");
                let results: Vec<_> = branches.iter().map(|b| check_at(doc, b, v, at)).collect();
                let matched = results.iter().filter(|r| r.is_ok()).count();
                if matched != 1 {
                    let why: Vec<String> = results.into_iter().filter_map(Result::err).collect();
                    return fail(format!(
                        "matches {matched} of {} oneOf branches, not exactly one [{}]",
                        branches.len(),
                        why.join(" | ")
                    ));
                }
            }
            "minimum" | "maximum" => {
                let limit = s.as_f64().expect("a numeric limit");
                if let Some(n) = v.as_f64()
                    && ((key == "minimum" && n < limit) || (key == "maximum" && n > limit))
                {
                    return fail(format!("{n} is beyond the {key} {limit}"));
                }
            }
            "minLength" | "maxLength" => {
                let limit = s.as_u64().expect("a length");
                if let Some(len) = v.as_str().map(|t| t.chars().count() as u64)
                    && ((key == "minLength" && len < limit) || (key == "maxLength" && len > limit))
                {
                    return fail(format!("length {len} is beyond the {key} {limit}"));
                }
            }
            "enum" | "const" | "description" | "format" | "discriminator" | "title" => {}
            other => return fail(format!("the validator does not support `{other}`")),
        }
    }
    Ok(())
}

fn is_type(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        other => panic!("unknown type `{other}`"),
    }
}

/// `v` itself, or what its `$ref` (a local JSON pointer such as
/// `#/components/schemas/JourneyView`) points to.
fn follow<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("not local: {r}"));
            doc.pointer(pointer)
                .unwrap_or_else(|| panic!("unresolved $ref {r}"))
        }
        None => v,
    }
}

/// Every (method, path) the document describes.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            assert!(
                ["get", "post", "put", "patch", "delete"].contains(&method.as_str()),
                "{path}: unexpected key `{method}`"
            );
            out.insert((method.to_ascii_uppercase(), path.clone()));
        }
    }
    out
}

/// Every (method, path) whose operation requires the `bearerAuth` scheme (the journey token);
/// no other security requirement may appear.
fn secured_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (method, path) in operations(doc) {
        let op = &doc["paths"][&path][method.to_ascii_lowercase()];
        let Some(requirements) = op.get("security") else {
            continue;
        };
        assert_eq!(
            requirements,
            &json!([{"bearerAuth": []}]),
            "{method} {path}: only the journey token is a security requirement"
        );
        out.insert((method, path));
    }
    out
}

/// A request body each journey route accepts the shape of (`None`: the route takes none).
fn valid_body(path: &str) -> Option<Value> {
    match path {
        EMAIL => Some(json!({"email": "alice@example.com"})),
        CODE => Some(json!({"code": "123456"})),
        CHOICE => Some(json!({"option": "sms"})),
        CALL => Some(json!({"call_id": Uuid::new_v4(), "digits": "#"})),
        PASSWORD => Some(json!({"new_password": "a", "confirm_password": "a"})),
        _ => None,
    }
}

fn walk<'a>(v: &'a Value, visit: &mut impl FnMut(&'a serde_json::Map<String, Value>)) {
    match v {
        Value::Object(map) => {
            visit(map);
            map.values().for_each(|x| walk(x, visit));
        }
        Value::Array(list) => list.iter().for_each(|x| walk(x, visit)),
        _ => {}
    }
}

/// The body of an error answered outside the documented operations: JSON in the
/// document's `Error` shape.
async fn error_body(doc: &Value, res: axum::response::Response) -> Value {
    let kind = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("application/json"), "{kind}");
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    check(doc, &json!({"$ref": "#/components/schemas/Error"}), &body)
        .unwrap_or_else(|e| panic!("{body}: {e}"));
    body
}

// --- Tests ----------------------------------------------------------------------------

#[tokio::test]
async fn the_document_is_served_and_describes_exactly_the_routes() {
    let api = api().await;
    let (status, served) = api.op("GET", "/api/openapi.json", "", None).await;
    assert_eq!(status, 200);
    assert_eq!(served, api.doc, "the route serves openapi.json");
    assert_eq!(served["openapi"], "3.1.0");
    for key in ["title", "version", "description"] {
        assert!(served["info"][key].is_string(), "info.{key}");
    }

    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let documented = operations(&api.doc);
    let missing: Vec<_> = routes.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routes).collect();
    assert!(missing.is_empty(), "routes not documented: {missing:?}");
    assert!(extra.is_empty(), "documented but not routed: {extra:?}");

    // The journey token: one HTTP bearer scheme, required by exactly the token routes (not
    // by the start, the simulated phone or the service routes), and no document-wide
    // requirement that would cover those.
    let scheme = &api.doc["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!(
        (&scheme["type"], &scheme["scheme"]),
        (&json!("http"), &json!("bearer"))
    );
    assert!(
        scheme["description"]
            .as_str()
            .is_some_and(|d| d.contains("journey_token") && d.contains("`404`")),
        "{scheme}"
    );
    assert!(
        api.doc.get("security").is_none(),
        "no document-wide security"
    );
    let token_routes: BTreeSet<(String, String)> = TOKEN_ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(secured_operations(&api.doc), token_routes);
    for (method, path) in &token_routes {
        let op = api.operation(method, path);
        let description = op["description"].as_str().unwrap_or("");
        assert!(
            description.contains("Authorization: Bearer") && description.contains("`404`"),
            "{method} {path}: the description states the token rule"
        );
    }
    let key = &follow(
        &api.doc,
        &api.doc["components"]["parameters"]["IdempotencyKey"],
    );
    assert_eq!(
        (&key["schema"]["minLength"], &key["schema"]["maxLength"]),
        (&json!(16), &json!(200))
    );

    // Path parameters: exactly the template's, each required and in the path.
    for (method, path) in &documented {
        let op = api.operation(method, path);
        let declared: BTreeSet<&str> = op
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| follow(&api.doc, p))
            .filter(|p| p["in"] == "path")
            .inspect(|p| assert_eq!(p["required"], true, "{method} {path}: {p}"))
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let in_template: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        assert_eq!(declared, in_template, "{method} {path}: path parameters");
        assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()));
    }

    // Every $ref resolves, and every discriminator maps each value to the oneOf branch
    // whose property is that constant.
    let mut refs = 0;
    walk(&api.doc, &mut |map| {
        if map.contains_key("$ref") {
            follow(&api.doc, &Value::Object(map.clone()));
            refs += 1;
        }
        let (Some(d), Some(branches)) = (map.get("discriminator"), map.get("oneOf")) else {
            return;
        };
        let property = d["propertyName"].as_str().expect("propertyName");
        let branches: Vec<&Value> = branches.as_array().unwrap().iter().collect();
        for branch in &branches {
            let value = &follow(&api.doc, branch)["properties"][property]["const"];
            assert!(value.is_string(), "{property} of a oneOf branch: {branch}");
            if let Some(mapping) = d.get("mapping") {
                let target = &mapping[value.as_str().unwrap()];
                assert_eq!(&branch["$ref"], target, "discriminator mapping for {value}");
            }
        }
        if let Some(mapping) = d.get("mapping").and_then(Value::as_object) {
            assert_eq!(mapping.len(), branches.len(), "mapping of {property}");
        }
    });
    assert!(
        refs > 50,
        "the document reuses its components ({refs} $refs)"
    );

    // The router serves nothing else on these paths: other methods are 405, and nothing
    // else under /api/: 404, both in the error shape the document describes.
    let paths: BTreeSet<&str> = ROUTES.iter().map(|(_, p)| *p).collect();
    for path in paths {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if ROUTES.contains(&(method, path)) {
                continue;
            }
            let uri = path.replace("{id}", &Uuid::new_v4().to_string());
            let req = Request::builder().method(method).uri(&uri);
            let res = api.router.clone().oneshot(req.body(Body::empty()).unwrap());
            let res = res.await.unwrap();
            assert_eq!(
                res.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {uri}"
            );
            assert!(res.headers().contains_key("allow"), "{method} {uri}");
            let body = error_body(&api.doc, res).await;
            assert_eq!(
                body["error"]["code"], "method-not-allowed",
                "{method} {uri}"
            );
        }
    }
    for uri in ["/api/nope", "/api/journeys/x/y/z", "/api"] {
        let req = Request::builder().method("GET").uri(uri);
        let res = api.router.clone().oneshot(req.body(Body::empty()).unwrap());
        let res = res.await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(
            error_body(&api.doc, res).await["error"]["code"],
            "not-found",
            "{uri}"
        );
    }
}

#[tokio::test]
async fn every_operation_answers_as_documented() {
    let api = api().await;

    // Service routes.
    let (status, body) = api.op("GET", "/api/health", "", None).await;
    assert_eq!((status, body), (200, json!("ok")));
    let (status, _) = api.op("GET", "/api/openapi.json", "", None).await;
    assert_eq!(status, 200);

    // Journey 1: start with the email (and an idempotency key), then the email code with a
    // resend, SMS, the new password; a refusal at each step.
    let key = Uuid::new_v4().to_string();
    let start = json!({"email": "alice@example.com"});
    let headers = [("idempotency-key", key.as_str())];
    let (status, first) = api
        .exchange(
            &api.router,
            Auth::Own,
            "POST",
            START,
            "",
            &headers,
            json_body(start.clone()),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(first["result"], "accepted");
    assert_eq!(first["journey"]["status"], "active");
    assert_eq!(first["journey"]["step"]["kind"], "code");
    assert_eq!(first["journey"]["step"]["channel"], "email");
    assert!(first.get("error").is_none() && first.get("session_token").is_none());
    assert!(
        !first.to_string().contains("alice@example.com"),
        "the address is not echoed: {first}"
    );
    let id = first["journey_id"].as_str().unwrap().to_owned();
    let (status, again) = api
        .exchange(
            &api.router,
            Auth::Own,
            "POST",
            START,
            "",
            &headers,
            json_body(start),
        )
        .await;
    assert_eq!((status, &again["journey_id"]), (201, &first["journey_id"]));
    assert_eq!(
        again["journey_token"], first["journey_token"],
        "the same token"
    );

    let (status, body) = api
        .op("POST", CODE, &id, Some(json!({"code": "000000"})))
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["result"], "rejected");
    assert_eq!(body["error"]["code"], "invalid-code");
    assert_eq!(body["journey"]["step"]["attempts_left"], 4);
    let (status, body) = api.op("POST", RESEND, &id, None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("resend-too-soon"))
    );
    // A worker pass delivers concurrently: deliver the first code before the second is
    // issued so that the outbox's latest message is the valid code.
    api.worker.drain().await.unwrap();
    api.clock.advance(Duration::from_secs(31));
    let (status, body) = api.op("POST", RESEND, &id, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["journey"]["step"]["resends_left"], 2);
    let code = api.code(&id, "email").await;
    let (status, body) = api.op("POST", CODE, &id, Some(json!({"code": code}))).await;
    assert_eq!(status, 200, "{body}");
    let step = &body["journey"]["step"];
    assert_eq!(step["kind"], "choose");
    assert_eq!(step["phone_masked"], "+61 ••• ••• 678");
    assert!(step["risk_notice"].is_string());

    let (status, body) = api
        .op("POST", CHOICE, &id, Some(json!({"option": "fax"})))
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("unknown-option"))
    );
    let pw = json!({"new_password": GOOD_PASSWORD, "confirm_password": GOOD_PASSWORD});
    let (status, body) = api.op("POST", PASSWORD, &id, Some(pw.clone())).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("step-not-allowed"))
    );
    let (status, body) = api
        .op("POST", CHOICE, &id, Some(json!({"option": "sms"})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["journey"]["step"]["channel"], "sms");
    let sms = api.code(&id, "sms").await;
    let (status, body) = api.op("POST", CODE, &id, Some(json!({"code": sms}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["journey"]["step"]["kind"], "set-password");
    assert!(
        body["journey"]["step"]["requirements"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    );

    let weak = json!({"new_password": "short", "confirm_password": "short"});
    let (status, body) = api.op("POST", PASSWORD, &id, Some(weak)).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("password-policy"))
    );
    let (status, body) = api.op("POST", PASSWORD, &id, Some(pw)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["journey"]["status"], "completed");
    assert_eq!(body["journey"]["step"]["kind"], "complete");
    assert_eq!(body["session_token"].as_str().map(str::len), Some(64));
    assert!(
        !body.to_string().contains(GOOD_PASSWORD),
        "no password echoed"
    );
    // Apply the reset now: applying it cancels the account's other open journeys (R44).
    api.worker.drain().await.unwrap();

    let (status, body) = api.op("GET", SHOW, &id, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["journey_id"], id.as_str());
    assert_eq!(
        body["journey"]["step"]["tiles"][0]["portal"],
        "Connections Portal"
    );
    let (status, body) = api
        .op("POST", CODE, &id, Some(json!({"code": "123456"})))
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("journey-finished"))
    );

    // Journey 2: start empty, answer the email step on its own route, confirm by call.
    let (status, body) = api.op("POST", START, "", Some(json!({}))).await;
    assert_eq!(status, 201);
    assert_eq!(body["journey"]["step"]["kind"], "identify");
    assert!(body["journey"]["expires_at"].is_i64());
    let id = body["journey_id"].as_str().unwrap().to_owned();
    let email = json!({"email": "alice@example.com"});
    let (status, body) = api.op("POST", EMAIL, &id, Some(email)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["journey"]["step"]["kind"], "code");
    let code = api.code(&id, "email").await;
    let (status, body) = api.op("POST", CODE, &id, Some(json!({"code": code}))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api
        .op("POST", CHOICE, &id, Some(json!({"option": "call"})))
        .await;
    assert_eq!(status, 200, "{body}");
    let step = &body["journey"]["step"];
    assert_eq!(step["kind"], "voice");
    assert_eq!(step["confirm"], json!({"mode": "press-pound"}));
    assert_eq!(step["call_open"], true);
    let call_id = api.call_id(&id).await;
    let stranger = json!({"call_id": Uuid::new_v4(), "digits": "#"});
    let (status, body) = api.op("POST", CALL, &id, Some(stranger)).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("call-not-active"))
    );
    let keys = json!({"call_id": call_id, "digits": "#"});
    let (status, body) = api.op("POST", CALL, &id, Some(keys)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["journey"]["step"]["kind"], "set-password");

    // Journey 3: too many wrong codes fail it; a failed journey has no step.
    let bad_email = json!({"email": "not an address"});
    let (status, body) = api.op("POST", START, "", Some(bad_email)).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("invalid-email"))
    );
    let id = body["journey_id"].as_str().unwrap().to_owned();
    let email = json!({"email": "alice@example.com"});
    let (status, _) = api.op("POST", EMAIL, &id, Some(email)).await;
    assert_eq!(status, 200);
    for left in (0..5).rev() {
        let (status, body) = api
            .op("POST", CODE, &id, Some(json!({"code": "000000"})))
            .await;
        assert_eq!(status, 422);
        if left > 0 {
            assert_eq!(body["journey"]["step"]["attempts_left"], left);
        } else {
            assert_eq!(body["error"]["code"], "too-many-attempts");
        }
    }
    let (status, body) = api.op("GET", SHOW, &id, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["journey"]["status"], "failed");
    assert!(body["journey"]["step"].is_null() && body["journey"]["finish_reason"].is_string());

    // 400: bodies the server refuses are ones the document refuses too.
    let (_, body) = api.op("POST", START, "", Some(json!({}))).await;
    let id = body["journey_id"].as_str().unwrap().to_owned();
    for (path, payload) in [
        (START, json!({"colour": "red"})),
        (
            START,
            json!({"email": ["victim@example.com", "attacker@example.com"]}),
        ),
        (
            EMAIL,
            json!({"email": "alice@example.com", "user_id": "acct-bob"}),
        ),
        (CODE, json!({"code": 123456})),
        (CODE, json!(null)),
        (CHOICE, json!({})),
        (CALL, json!({"digits": "#"})),
        (PASSWORD, json!({"new_password": GOOD_PASSWORD})),
    ] {
        let refused = check(&api.doc, api.request_schema("POST", path), &payload);
        assert!(
            refused.is_err(),
            "the document accepts {payload} for {path}"
        );
        let (status, body) = api.op("POST", path, &id, Some(payload.clone())).await;
        assert_eq!(status, 400, "{path} {payload}: {body}");
        assert_eq!(body["error"]["code"], "bad-request");
    }
    let form = Some(("application/x-www-form-urlencoded", "email=a".to_owned()));
    let (status, _) = api
        .exchange(&api.router, Auth::Own, "POST", EMAIL, &id, &[], form)
        .await;
    assert_eq!(status, 400, "a form body is not JSON");
    let long_key = "k".repeat(201);
    let headers = [("idempotency-key", long_key.as_str())];
    let (status, body) = api
        .exchange(&api.router, Auth::Own, "POST", RESEND, &id, &headers, None)
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("bad-request"))
    );
    let (status, body) = api
        .op("POST", START, "", Some(json!({"workflow": "nope"})))
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("unknown-workflow"))
    );

    // 404: unknown (or malformed) journey ids on every journey route, with valid bodies;
    // an id that is not even text (`%FF`) too, not the framework's `text/plain` 400.
    let unknown = Uuid::new_v4().to_string();
    for (method, path, payload) in [
        ("GET", SHOW, None),
        ("POST", EMAIL, Some(json!({"email": "alice@example.com"}))),
        ("POST", CODE, Some(json!({"code": "123456"}))),
        ("POST", RESEND, None),
        ("POST", CHOICE, Some(json!({"option": "sms"}))),
        (
            "POST",
            CALL,
            Some(json!({"call_id": Uuid::new_v4(), "digits": "#"})),
        ),
        (
            "POST",
            PASSWORD,
            Some(json!({"new_password": "a", "confirm_password": "a"})),
        ),
    ] {
        for journey in [unknown.as_str(), "not-a-uuid", "%FF", "%C0%AF"] {
            let (status, body) = api.op(method, path, journey, payload.clone()).await;
            assert_eq!(status, 404, "{method} {path} {journey}: {body}");
            assert_eq!(body["error"]["code"], "journey-not-found");
        }
    }
    let keys = Some(json!({"call_id": Uuid::new_v4(), "digits": "#"}));
    let (status, body) = api
        .exchange(
            &api.real_phone,
            Auth::Without,
            "POST",
            CALL,
            &id,
            &[],
            keys.and_then(json_body),
        )
        .await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not-found")));

    // 404: a journey's token missing or another journey's, on every operation the document
    // marks `bearerAuth`, answers as an unknown journey does, and the journey does not move.
    // The simulated phone needs no token (the journey is not voice-confirming: 422).
    let (status, unknown_answer) = api.op("GET", SHOW, &unknown, None).await;
    assert_eq!(status, 404);
    let start = json!({"email": "alice@example.com"});
    let (_, body) = api.op("POST", START, "", Some(start)).await;
    let mine = body["journey_id"].as_str().unwrap().to_owned();
    let others = api.token(&id);
    assert_ne!(api.token(&mine), others, "each journey has its own token");
    let (_, before) = api.op("GET", SHOW, &mine, None).await;
    for (method, path) in secured_operations(&api.doc) {
        let bad_tokens = [
            Auth::Without,
            Auth::Bearer(&others),
            Auth::Bearer(""),
            Auth::Bearer(&unknown),
        ];
        for auth in bad_tokens {
            let (status, body) = api
                .op_as(auth, &method, &path, &mine, valid_body(&path))
                .await;
            assert_eq!(
                (status, &body),
                (404, &unknown_answer),
                "{method} {path} {auth:?}"
            );
        }
    }
    let (_, after) = api.op("GET", SHOW, &mine, None).await;
    assert_eq!(before, after, "the journey did not move");
    let (status, body) = api
        .op_as(Auth::Without, "POST", CALL, &mine, valid_body(CALL))
        .await;
    assert_eq!(status, 422, "the simulated phone needs no token: {body}");

    // 400: an Idempotency-Key outside the document's 16 to 200 characters, on a start and
    // on a step answered with the journey's token; 16 and 200 are taken.
    let key_schema = &follow(
        &api.doc,
        &api.doc["components"]["parameters"]["IdempotencyKey"],
    )["schema"];
    for (length, taken) in [
        (1, false),
        (15, false),
        (16, true),
        (200, true),
        (201, false),
    ] {
        let key = "k".repeat(length);
        assert_eq!(
            check(&api.doc, key_schema, &json!(key)).is_ok(),
            taken,
            "the document on a key of {length}"
        );
        let headers = [("idempotency-key", key.as_str())];
        let calls = [
            (START, "", Some(json!({}))),
            (CODE, mine.as_str(), Some(json!({"code": "000000"}))),
        ];
        for (path, journey, payload) in calls {
            let (status, body) = api
                .exchange(
                    &api.router,
                    Auth::Own,
                    "POST",
                    path,
                    journey,
                    &headers,
                    payload.and_then(json_body),
                )
                .await;
            if taken {
                assert!(matches!(status, 200 | 201 | 422), "{path} {length}: {body}");
                continue;
            }
            assert_eq!(status, 400, "{path} {length}: {body}");
            assert_eq!(body["error"]["code"], "bad-request");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(
                message.starts_with("Idempotency-Key must be 16 to 200 visible characters"),
                "{message}"
            );
        }
    }

    // Journey 4: the lifetime elapses (15 minutes).
    let (_, body) = api.op("POST", START, "", Some(json!({}))).await;
    let id = body["journey_id"].as_str().unwrap().to_owned();
    api.clock.advance(Duration::from_secs(16 * 60));
    let email = json!({"email": "alice@example.com"});
    let (status, body) = api.op("POST", EMAIL, &id, Some(email)).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("journey-expired"))
    );
    assert_eq!(body["journey"]["status"], "expired");

    // Every documented operation was exercised, with every documented status but 429 and
    // 503, which the router alone cannot be made to answer here (the per-IP limiter sits
    // outside it; 503 needs a failing store).
    let seen = api.seen.lock().unwrap().clone();
    for (method, path) in operations(&api.doc) {
        let got: BTreeSet<u16> = seen
            .iter()
            .filter(|(m, p, _)| *m == method && *p == path)
            .map(|(_, _, s)| *s)
            .collect();
        assert!(!got.is_empty(), "{method} {path} was never exercised");
        let documented = api.operation(&method, &path)["responses"]
            .as_object()
            .unwrap();
        for status in documented.keys() {
            let status: u16 = status.parse().expect("numeric statuses");
            assert!(
                got.contains(&status) || [429, 503].contains(&status),
                "{method} {path}: documented {status} never seen (seen {got:?})"
            );
        }
    }
}

#[test]
fn the_validator_enforces_the_schemas() {
    let doc: Value = serde_json::from_str(DOC).unwrap();
    let accepted = json!({"$ref": "#/components/schemas/JourneyAccepted"});
    let valid = json!({
        "journey_id": "01a21bec-014a-7309-b3ed-7fab38bd923b",
        "result": "accepted",
        "journey": {
            "status": "active",
            "definition_id": "password-reset",
            "definition_version": 1,
            "expires_at": 1_795_762_327_123_i64,
            "finish_reason": null,
            "step": {
                "kind": "voice", "id": "voice-call", "prompt": "Answer",
                "confirm": {"mode": "spoken-code", "digits": 6},
                "calling": null, "call_open": false, "call_expires_at": null,
                "calls_left": 3, "call_again_available_at": null
            }
        }
    });
    assert_eq!(check(&doc, &accepted, &valid), Ok(()));
    let broken: [(&str, Value); 10] = [
        ("/colour", json!("red")),
        ("/result", json!("rejected")),
        ("/journey/expires_at", json!("2026-11-27T06:52:07.123Z")),
        ("/journey/expires_at", json!(1.5)),
        ("/journey/status", json!("paused")),
        ("/journey/step/kind", json!("fax")),
        ("/journey/step/calls_left", json!(-1)),
        (
            "/journey/step/confirm",
            json!({"mode": "press-pound", "digits": 6}),
        ),
        ("/journey/step/calling", json!(7)),
        ("/session_token", json!("too short")),
    ];
    for (pointer, replacement) in broken {
        let mut v = valid.clone();
        let (parent, field) = pointer.rsplit_once('/').unwrap();
        v.pointer_mut(parent).unwrap()[field] = replacement.clone();
        assert!(
            check(&doc, &accepted, &v).is_err(),
            "{pointer} = {replacement}"
        );
    }
    let mut v = valid.clone();
    v["journey"]
        .as_object_mut()
        .unwrap()
        .remove("finish_reason");
    assert!(check(&doc, &accepted, &v).is_err(), "a missing null field");

    // The journey token is in a start's answer, and only there.
    let token = "0123456789abcdef".repeat(4);
    let mut with_token = valid.clone();
    with_token["journey_token"] = json!(token);
    assert!(
        check(&doc, &accepted, &with_token).is_err(),
        "a step answer has no journey token"
    );
    let started = json!({"$ref": "#/components/schemas/JourneyStarted"});
    assert_eq!(check(&doc, &started, &with_token), Ok(()));
    assert!(
        check(&doc, &started, &valid).is_err(),
        "a start without its token"
    );
    let mut short = with_token.clone();
    short["journey_token"] = json!(&token[..63]);
    assert!(
        check(&doc, &started, &short).is_err(),
        "a 63-character token"
    );
    let start_union = json!({"$ref": "#/components/schemas/StartResponse"});
    assert_eq!(check(&doc, &start_union, &with_token), Ok(()));

    // oneOf means exactly one; unknown keywords are refused, not ignored.
    let two = json!({"oneOf": [{"type": "string"}, {"type": ["string", "null"]}]});
    assert!(check(&doc, &two, &json!("x")).is_err());
    assert_eq!(check(&doc, &two, &json!(null)), Ok(()));
    assert!(check(&doc, &json!({"pattern": "^a"}), &json!("a")).is_err());
}
