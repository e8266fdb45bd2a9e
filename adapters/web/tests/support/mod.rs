//! A browser stand-in for router-level tests: the real router behind `oneshot`, a cookie
//! jar, a client address per request, the dev outbox for codes and a worker to deliver.
#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt;
use passage_channels::DevOutbox;
use passage_core::definition::load;
use passage_core::ports::{Account, JourneyId};
use passage_core::secrets::{Argon2id, Keys};
use passage_runtime::{Engine, EngineOptions, ManualClock, Worker, WorkerOptions};
use passage_store::SqliteStore;
use passage_web::{AppState, Limits, TrustedProxies, WebOptions};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

pub const STRONG: &str = "lantern harbour velvet comet ember";
pub const T0: i64 = 1_800_000_000_000;

pub struct Portal {
    pub dir: PathBuf,
    pub router: Router,
    pub engine: Engine<SqliteStore, SqliteStore>,
    pub worker: Worker<SqliteStore, SqliteStore, DevOutbox>,
    pub outbox: DevOutbox,
    pub clock: ManualClock,
    pub store: SqliteStore,
}

impl Drop for Portal {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn accounts() -> Vec<Account> {
    let a = |id: &str, email: &str, name: &str, phone: Option<&str>, enabled: bool| Account {
        account_id: id.into(),
        email: email.into(),
        display_name: name.into(),
        phone: phone.map(str::to_owned),
        enabled,
    };
    vec![
        a(
            "acct-alice",
            "alice@example.com",
            "Alice Nguyen",
            Some("+61412345678"),
            true,
        ),
        a(
            "acct-bob",
            "bob@example.com",
            "Bob Smith",
            Some("+61298765432"),
            true,
        ),
        a(
            "acct-dave",
            "dave@example.com",
            "Dave Disabled",
            Some("+61400000004"),
            false,
        ),
    ]
}

/// Options for [`portal_with`]: generous limits unless a test is about limits.
pub fn options() -> WebOptions {
    WebOptions {
        limits: Limits {
            starts_per_client: 100_000,
            answers_per_client: 100_000,
            checks_per_client: 100_000,
            ..Limits::default()
        },
        ..WebOptions::default()
    }
}

pub async fn portal() -> Portal {
    portal_with(options()).await
}

pub async fn portal_with(mut options: WebOptions) -> Portal {
    let dir = std::env::temp_dir().join(format!("passage-portal-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::open(&dir.join("passage.db")).await.unwrap();
    let weak = "$argon2id$v=19$m=256,t=1,p=1$c2FsdHNhbHQ$aGFzaA";
    for a in accounts() {
        store.insert_account_if_missing(&a, weak).await.unwrap();
    }
    let clock = ManualClock::new(passage_core::time::Timestamp(T0));
    let engine = Engine::new(
        store.clone(),
        store.clone(),
        Arc::new(clock.clone()),
        EngineOptions {
            keys: Keys::derive(b"portal test secret"),
            hasher: Argon2id::new(256, 1, 1),
        },
    );
    let src = include_str!("../../../../workflows/password-reset.toml");
    engine
        .register(load("password-reset.toml", src).unwrap())
        .await
        .unwrap();
    let outbox = DevOutbox::open(&dir.join("outbox.db")).await.unwrap();
    let worker = Worker::new(engine.clone(), outbox.clone(), WorkerOptions::default());
    if options.dev_outbox.is_none() {
        options.dev_outbox = Some(outbox.clone());
    }
    let router = passage_web::router(AppState::configured(engine.clone(), options));
    Portal {
        dir,
        router,
        engine,
        worker,
        outbox,
        clock,
        store,
    }
}

pub fn trusted(list: &str) -> TrustedProxies {
    TrustedProxies::parse(list).unwrap()
}

#[derive(Debug, Clone)]
pub struct Res {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Res {
    pub fn location(&self) -> Option<&str> {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
    }

    /// The value of `<input ... name="{name}" value="...">` or of an attribute `name="..."`.
    pub fn input(&self, name: &str) -> String {
        let key = format!("name=\"{name}\" value=\"");
        let at = self
            .body
            .find(&key)
            .unwrap_or_else(|| panic!("no input `{name}` in:\n{}", self.body));
        let rest = &self.body[at + key.len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }

    pub fn attr(&self, attr: &str) -> Option<String> {
        let key = format!("{attr}=\"");
        let at = self.body.find(&key)?;
        let rest = &self.body[at + key.len()..];
        Some(rest[..rest.find('"')?].to_owned())
    }

    pub fn has(&self, needle: &str) -> bool {
        self.body.contains(needle)
    }
}

/// One browser: its cookies and its address.
#[derive(Clone)]
pub struct Browser {
    router: Router,
    jar: Arc<Mutex<BTreeMap<String, String>>>,
    pub ip: SocketAddr,
    pub extra: Vec<(String, String)>,
}

impl Portal {
    pub fn browser(&self) -> Browser {
        self.browser_at("198.51.100.10:40000")
    }

    pub fn browser_at(&self, ip: &str) -> Browser {
        Browser {
            router: self.router.clone(),
            jar: Arc::default(),
            ip: ip.parse().unwrap(),
            extra: Vec::new(),
        }
    }

    /// Delivers what is due, then reads the newest code sent for the journey on `channel`.
    pub async fn code(&self, journey: &str, channel: &str) -> String {
        self.worker.drain().await.unwrap();
        let id: JourneyId = journey.parse().unwrap();
        self.outbox
            .latest(id, channel)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no {channel} message for {journey}"))
            .code()
            .unwrap()
    }

    pub async fn event_types(&self, journey: &str) -> Vec<String> {
        let id: JourneyId = journey.parse().unwrap();
        self.engine
            .timeline(id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event_type)
            .collect()
    }

    pub async fn timeline_json(&self, journey: &str) -> String {
        let id: JourneyId = journey.parse().unwrap();
        let t = self.engine.timeline(id).await.unwrap();
        t.iter()
            .map(|e| format!("{} {:?} {:?}", e.event_type, e.actor, e.description))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Browser {
    pub async fn get(&self, uri: &str) -> Res {
        self.send("GET", uri, None, &[]).await
    }

    pub async fn post(&self, uri: &str, form: &[(&str, &str)]) -> Res {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.post_raw(uri, &body).await
    }

    pub async fn post_raw(&self, uri: &str, body: &str) -> Res {
        self.send(
            "POST",
            uri,
            Some(body.to_owned()),
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await
    }

    pub async fn send(
        &self,
        method: &str,
        uri: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> Res {
        let mut req = Request::builder().method(method).uri(uri);
        let cookies = {
            let jar = self.jar.lock().unwrap();
            jar.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        if !cookies.is_empty() {
            req = req.header(header::COOKIE, cookies);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        for (k, v) in &self.extra {
            req = req.header(k.as_str(), v.as_str());
        }
        let mut req = req.body(body.map(Body::from).unwrap_or_default()).unwrap();
        req.extensions_mut().insert(ConnectInfo(self.ip));
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        for c in headers.get_all(header::SET_COOKIE) {
            let c = c.to_str().unwrap();
            let (kv, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            let mut jar = self.jar.lock().unwrap();
            if attrs.contains("Max-Age=0") {
                jar.remove(k);
            } else {
                jar.insert(k.to_owned(), v.to_owned());
            }
        }
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        Res {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.jar.lock().unwrap().get(name).cloned()
    }

    pub fn set_cookie(&self, name: &str, value: &str) {
        self.jar
            .lock()
            .unwrap()
            .insert(name.to_owned(), value.to_owned());
    }

    pub fn forget(&self, name: &str) {
        self.jar.lock().unwrap().remove(name);
    }

    /// "Forgot Password?" → email → "Send verification code"; returns the journey id and the
    /// response to the submit.
    pub async fn start(&self, email: &str) -> (String, Res) {
        let page = self.get("/reset").await;
        assert_eq!(page.status, StatusCode::OK);
        let res = self
            .post("/reset", &[("email", email), ("csrf", &page.input("csrf"))])
            .await;
        let id = res
            .location()
            .and_then(|l| l.strip_prefix("/reset/"))
            .map(str::to_owned)
            .unwrap_or_default();
        (id, res)
    }

    /// The journey's page.
    pub async fn page(&self, id: &str) -> Res {
        self.get(&format!("/reset/{id}")).await
    }

    /// Posts a form of the journey's current page, with its CSRF token.
    pub async fn answer(&self, id: &str, action: &str, fields: &[(&str, &str)]) -> Res {
        let page = self.page(id).await;
        let csrf = page.input("csrf");
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        form.push(("csrf", &csrf));
        self.post(&format!("/reset/{id}/{action}"), &form).await
    }
}

/// Options of a deployment behind TLS.
pub fn options_secure() -> WebOptions {
    WebOptions {
        secure: true,
        ..options()
    }
}

/// A portal whose channels are real providers: no dev inbox, no simulated phone.
pub async fn portal_without_dev(mut options: WebOptions) -> Portal {
    options.simulated_phone = false;
    let mut p = portal_with(options.clone()).await;
    p.router = passage_web::router(AppState::configured(
        p.engine.clone(),
        WebOptions {
            dev_outbox: None,
            ..options
        },
    ));
    p
}

/// The password every test operator is given.
pub const OPERATOR_PASSWORD: &str = "correct horse battery staple";

/// Adds an operator with [`OPERATOR_PASSWORD`] (a cheap Argon2id, for speed).
pub async fn add_operator(p: &Portal, name: &str, role: passage_core::roles::Role) {
    use passage_core::secrets::PasswordHasher as _;
    let phc = Argon2id::new(256, 1, 1)
        .hash(
            &passage_core::password::normalize(OPERATOR_PASSWORD),
            &[3u8; 16],
        )
        .unwrap();
    assert!(
        p.store
            .add_operator(name, role, &phc, passage_core::time::Timestamp(T0))
            .await
            .unwrap()
    );
}
