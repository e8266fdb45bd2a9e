//! Headers, client addresses, rate limits, cookies and form parsing: the parts every route
//! shares (R5, R17, R32, R52).

use crate::AppState;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use passage_core::ports::{AccountDirectory, EventStore};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A scripts-from-us-only policy with no framing (R23, R52). The pages carry no inline
/// script or style, so neither needs `unsafe-inline`.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Per-client limits over a fixed window (R17). Per-address limits on sends are the
/// channels' (adapters/channels, `LimitedChannel`), and per-address failed attempts the
/// engine's (R16): both apply whatever address the request comes from.
#[derive(Debug, Clone)]
pub struct Limits {
    pub window: Duration,
    /// Journeys started ("Send verification code", `POST /api/journeys`) per client.
    pub starts_per_client: u32,
    /// Answers (codes, choices, passwords, resends, sign-ins) per client.
    pub answers_per_client: u32,
    /// Live password checks (the ticks) per client.
    pub checks_per_client: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(600),
            starts_per_client: 30,
            answers_per_client: 200,
            checks_per_client: 1000,
        }
    }
}

/// Proxies whose `X-Forwarded-For` entries are believed, as addresses or CIDR ranges.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parses `10.0.0.0/8, 127.0.0.1, ::1`.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (addr, bits) = match item.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (item, None),
            };
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| format!("`{item}` is not an IP address or CIDR range"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                Some(b) => b
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| format!("`{item}`: the prefix length must be 0 to {max}"))?,
                None => max,
            };
            out.push((ip, bits));
        }
        Ok(Self(out))
    }

    fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|(net, bits)| in_prefix(ip, *net, *bits))
    }
}

fn in_prefix(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The client as far as this server can tell: the peer, or, when the peer is a trusted
/// proxy, the right-most address in `X-Forwarded-For` that is not one (the left part of the
/// header is whatever the client wrote, attack 33).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIp(pub Option<IpAddr>);

impl ClientIp {
    fn resolve(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &TrustedProxies) -> Self {
        // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d: compare and count them
        // as the IPv4 addresses they are.
        let Some(peer) = peer.map(|p| p.to_canonical()) else {
            return Self(None);
        };
        if !trusted.contains(peer) {
            return Self(Some(peer));
        }
        let entries: Vec<String> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_owned())
            .collect();
        for entry in entries.iter().rev() {
            // An entry we cannot read ends the walk: everything left of it may be the
            // client's own writing, so the proxy we trust is the best we know.
            let Ok(ip) = entry.parse::<IpAddr>().map(|ip| ip.to_canonical()) else {
                return Self(Some(peer));
            };
            if !trusted.contains(ip) {
                return Self(Some(ip));
            }
        }
        Self(Some(peer))
    }

    /// For logs (R50): the address without its host part, IPv4 to its /24 and IPv6 to its
    /// /48, enough to see a flood's network, not to name a person's connection.
    pub fn masked(&self) -> String {
        match self.0 {
            Some(IpAddr::V4(v4)) => {
                let o = v4.octets();
                format!("{}.{}.{}.•", o[0], o[1], o[2])
            }
            Some(IpAddr::V6(v6)) => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
            }
            None => "unknown".into(),
        }
    }

    /// The limiter's key: the address, or its /64 for IPv6, since one host usually holds a
    /// whole /64 and would otherwise rotate through it (attack 33).
    pub fn limit_key(&self) -> String {
        match self.0 {
            Some(IpAddr::V6(v6)) => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
            Some(ip) => ip.to_string(),
            None => "unknown".into(),
        }
    }

    pub fn audit(&self) -> Option<String> {
        self.0.map(|ip| ip.to_string())
    }

    /// The person behind this request, as events record them (R49): the channel, the
    /// client's address and its user agent.
    pub fn person(
        client: Option<&ClientIp>,
        headers: &HeaderMap,
        channel: &str,
    ) -> passage_runtime::Actor {
        let ua = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok());
        passage_runtime::Actor::person(channel).from_client(client.and_then(ClientIp::audit), ua)
    }
}

/// A boxed future, for the object-safe [`SharedWindows`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Fixed-window counters kept outside the process, shared by every node (the binary keeps
/// them in PostgreSQL), so that N nodes behind a load balancer do not allow N times a limit.
pub trait SharedWindows: fmt::Debug + Send + Sync + 'static {
    /// Counts one hit of `key` in its window (which starts at the first hit and lasts
    /// `window`): `Ok(Ok(()))` if counted, `Ok(Err(retry_after))` if `limit` hits were
    /// counted already, `Err` if the counters cannot be reached.
    fn hit<'a>(
        &'a self,
        key: &'a str,
        limit: u32,
        window: Duration,
    ) -> BoxFuture<'a, Result<Result<(), Duration>, String>>;

    /// Takes back one hit of `key` in its current window, if it has any.
    fn give_back<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), String>>;
}

/// How long a request waits for the shared counters before this process's own count
/// decides.
const SHARED_TIMEOUT: Duration = Duration::from_millis(500);

/// Fixed-window counters: in [`SharedWindows`] when the deployment has them (several nodes),
/// else in this process. With shared counters this process still counts what it admitted,
/// so a client this node alone has seen reach the limit is refused without a database
/// round trip (a flood costs the database nothing). That count errs on the strict side
/// only: its window starts at this node's first admitted hit, so it can outlast the shared
/// window by as much and refuse a client the deployment would already admit again. When
/// the shared counters cannot be reached (or do not answer within half a second) the own
/// count decides, so that a database outage neither lets every request through nor turns
/// every person away.
#[derive(Debug, Default)]
pub struct RateLimiter {
    windows: Mutex<Windows>,
    shared: Option<Arc<dyn SharedWindows>>,
    /// When an unreachable shared counter was last logged: once a minute is enough.
    complained: Mutex<Option<Instant>>,
    /// Whether the shared counters failed since they last answered: their return is logged.
    shared_down: std::sync::atomic::AtomicBool,
    /// Keys refused lately, and until when: each is logged once per window.
    refused: Mutex<Refused>,
}

/// Keys with what the limiter keeps for each, dropped once no longer live: swept when the
/// map is large, at most every 10 seconds, so a flood of new keys cannot make every request
/// pay for a full sweep.
#[derive(Debug)]
struct Swept<V> {
    map: HashMap<String, V>,
    last_sweep: Option<Instant>,
}

impl<V> Default for Swept<V> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            last_sweep: None,
        }
    }
}

impl<V> Swept<V> {
    fn sweep(&mut self, now: Instant, large: usize, live: impl Fn(&V) -> bool) {
        let due = self
            .last_sweep
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10));
        if self.map.len() > large && due {
            self.map.retain(|_, v| live(v));
            self.last_sweep = Some(now);
        }
    }
}

/// Per key: when its window started, how long it lasts, and the count in it.
type Windows = Swept<(Instant, Duration, u32)>;

/// Per key refused lately: until when its window is full.
type Refused = Swept<Instant>;

impl RateLimiter {
    /// Counters in `shared` (every node's), or in this process when `None`.
    pub fn new(shared: Option<Arc<dyn SharedWindows>>) -> Self {
        Self {
            shared,
            ..Self::default()
        }
    }

    /// Counts one request; `Err(retry_after)` when over `limit` in `window`.
    pub async fn hit(&self, key: &str, limit: u32, window: Duration) -> Result<(), Duration> {
        let Some(shared) = &self.shared else {
            return self.hit_here(key, limit, window);
        };
        if let Some(retry) = self.full_here(key, limit) {
            return Err(retry);
        }
        match tokio::time::timeout(SHARED_TIMEOUT, shared.hit(key, limit, window)).await {
            Ok(Ok(verdict)) => {
                if self
                    .shared_down
                    .swap(false, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::info!("the shared rate-limit counters answer again");
                }
                if verdict.is_ok() {
                    // Kept in step for the shortcut above and for an outage; its own verdict
                    // is the shared one's or stricter, and the shared one decides.
                    let _ = self.hit_here(key, limit, window);
                }
                verdict
            }
            Ok(Err(e)) => {
                self.complain(&e);
                self.hit_here(key, limit, window)
            }
            Err(_) => {
                self.complain("no answer within 500 ms");
                self.hit_here(key, limit, window)
            }
        }
    }

    /// Gives back one count taken by [`RateLimiter::hit`] in the same window (an attempt
    /// that turned out not to count, such as a sign-in that succeeded).
    pub async fn give_back(&self, key: &str) {
        self.give_back_here(key);
        if let Some(shared) = &self.shared {
            match tokio::time::timeout(SHARED_TIMEOUT, shared.give_back(key)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => self.complain(&e),
                Err(_) => self.complain("no answer within 500 ms"),
            }
        }
    }

    /// Whether this is the first refusal of `key` since its window was full (the refusal
    /// says the window ends after `retry`): for logging once per client and window.
    pub fn first_refusal(&self, key: &str, retry: Duration) -> bool {
        let now = Instant::now();
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        refused.sweep(now, 10_000, |until| *until > now);
        match refused.map.get(key) {
            Some(until) if *until > now => false,
            _ => {
                refused.map.insert(key.to_owned(), now + retry);
                true
            }
        }
    }

    fn complain(&self, error: &str) {
        self.shared_down
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let now = Instant::now();
        let mut last = self.complained.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60)) {
            *last = Some(now);
            tracing::error!(
                "the shared rate-limit counters are unavailable; this node counts in its own \
                 memory meanwhile (logged once a minute): {error}"
            );
        }
    }

    /// `Some(retry_after)` when this process alone has counted `limit` in the key's window.
    fn full_here(&self, key: &str, limit: u32) -> Option<Duration> {
        let now = Instant::now();
        let w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let (start, window, count) = w.map.get(key)?;
        let elapsed = now.duration_since(*start);
        (elapsed < *window && *count >= limit).then(|| window.saturating_sub(elapsed))
    }

    fn hit_here(&self, key: &str, limit: u32, window: Duration) -> Result<(), Duration> {
        let now = Instant::now();
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        // Each by its own length: a short window's caller must not cut a longer one short.
        w.sweep(now, 100_000, |(start, window, _)| {
            now.duration_since(*start) < *window
        });
        let entry = w.map.entry(key.to_owned()).or_insert((now, window, 0));
        if now.duration_since(entry.0) >= entry.1 {
            *entry = (now, window, 0);
        }
        if entry.2 >= limit {
            return Err(entry.1.saturating_sub(now.duration_since(entry.0)));
        }
        entry.2 += 1;
        Ok(())
    }

    fn give_back_here(&self, key: &str) {
        let now = Instant::now();
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = w.map.get_mut(key)
            && now.duration_since(entry.0) < entry.1
        {
            entry.2 = entry.2.saturating_sub(1);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Start,
    Answer,
    Check,
}

fn classify(method: &Method, path: &str) -> Option<Class> {
    if method != Method::POST {
        return None;
    }
    if path == "/reset" || path == "/api/journeys" {
        return Some(Class::Start);
    }
    if path.ends_with("/check") {
        return Some(Class::Check);
    }
    let answer = path.starts_with("/reset/")
        || path.starts_with("/api/journeys/")
        || path == "/sign-in"
        || path == "/console/sign-in"
        || path.starts_with("/dev/");
    answer.then_some(Class::Answer)
}

/// Resolves the client, applies its limits, then adds the security headers to whatever the
/// route answered (R52).
async fn guard<S: EventStore, D: AccountDirectory>(
    State(app): State<Arc<AppState<S, D>>>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let client = ClientIp::resolve(peer, req.headers(), &app.options.trusted_proxies);
    let path = req.uri().path().to_owned();
    let limits = &app.options.limits;
    if let Some(class) = classify(req.method(), &path) {
        let (limit, name) = match class {
            Class::Start => (limits.starts_per_client, "start"),
            Class::Answer => (limits.answers_per_client, "answer"),
            Class::Check => (limits.checks_per_client, "check"),
        };
        let key = format!("{name}|{}", client.limit_key());
        if let Err(retry) = app.limiter.hit(&key, limit, limits.window).await {
            // Once per client and window, not once per refused request: a flood must not
            // flood the logs too.
            if app.limiter.first_refusal(&key, retry) {
                tracing::warn!(client = %client.masked(), class = name, "rate limit reached");
            }
            let mut resp = too_many(&path, retry);
            secure_headers(resp.headers_mut(), &path, app.options.secure);
            return resp;
        }
    }
    req.extensions_mut().insert(client);
    let method = req.method().clone();
    let mut resp = next.run(req).await;
    if is_bare_error(&resp) {
        // The framework answered by itself (an unknown route, a method the route does not
        // take, an oversized body): the documented format instead of its empty or plain
        // text body, keeping the headers that say what to do next.
        let mut documented = crate::error::framework_error(resp.status(), &method, &path);
        for name in [header::ALLOW, header::RETRY_AFTER] {
            if let Some(v) = resp.headers().get(&name) {
                documented.headers_mut().insert(name, v.clone());
            }
        }
        resp = documented;
    }
    secure_headers(resp.headers_mut(), &path, app.options.secure);
    resp
}

/// An error status whose body is neither JSON nor HTML: one of the framework's own answers,
/// never one of ours (every handler answers through `ApiError` or a page).
fn is_bare_error(resp: &Response) -> bool {
    let status = resp.status();
    let kind = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    (status.is_client_error() || status.is_server_error())
        && !kind.starts_with("application/json")
        && !kind.starts_with("text/html")
}

/// The same answer for every account: limits here are per client, never per account, so
/// they say nothing about whether an address is registered (attack 3).
fn too_many(path: &str, retry: Duration) -> Response {
    let message = format!(
        "Too many requests from your network. Try again in {}.",
        in_minutes(retry)
    );
    // By route, not by client: the password check is JSON its script reads, even though it
    // sits beside the pages under `/reset/`.
    let resp = if crate::error::json_route(path) {
        crate::ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", message).into_response()
    } else {
        crate::html::message_page(StatusCode::TOO_MANY_REQUESTS, "Please wait", &message, None)
    };
    with_retry_after(resp, retry)
}

/// A limiter's wait as people read it: "1 minute", "15 minutes" (rounded up).
pub(crate) fn in_minutes(retry: Duration) -> String {
    let minutes = retry.as_secs().max(1).div_ceil(60);
    format!("{minutes} minute{}", if minutes == 1 { "" } else { "s" })
}

/// `resp` with the `Retry-After` header a limiter's refusal carries, in whole seconds.
pub(crate) fn with_retry_after(mut resp: Response, retry: Duration) -> Response {
    if let Ok(v) = HeaderValue::from_str(&retry.as_secs().max(1).to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

fn secure_headers(h: &mut HeaderMap, path: &str, secure: bool) {
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "no-referrer");
    set(h, "x-frame-options", "DENY");
    set(h, "cross-origin-opener-policy", "same-origin");
    set(h, "content-security-policy", CSP);
    if path.starts_with("/assets/") {
        set(h, "cache-control", "public, max-age=3600");
    } else {
        // Codes, passwords, masked numbers and session state: never cached (R52).
        set(h, "cache-control", "no-store");
    }
    if secure {
        set(h, "strict-transport-security", "max-age=31536000");
    }
}

pub(crate) fn layer<S: EventStore, D: AccountDirectory>(
    routes: Router,
    state: Arc<AppState<S, D>>,
) -> Router {
    routes.layer(axum::middleware::from_fn_with_state(state, guard::<S, D>))
}

/// Cookie names: `__Host-` and `Secure` only over TLS, where browsers accept them (R52).
pub(crate) fn cookie_name(secure: bool, base: &str) -> String {
    if secure {
        format!("__Host-{base}")
    } else {
        base.to_owned()
    }
}

pub(crate) fn set_cookie(
    secure: bool,
    base: &str,
    value: &str,
    max_age: Option<u64>,
) -> HeaderValue {
    let mut c = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax",
        cookie_name(secure, base)
    );
    if secure {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

pub(crate) fn clear_cookie(secure: bool, base: &str) -> HeaderValue {
    set_cookie(secure, base, "", Some(0))
}

pub(crate) fn get_cookie(headers: &HeaderMap, secure: bool, base: &str) -> Option<String> {
    let name = cookie_name(secure, base);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// Checks `password` against `phc`, or against a decoy hash when there is none (unknown or
/// disabled name), off the async workers: every refused sign-in, portal or console, costs
/// the same argon2id work whether the name exists or not (no timing oracle, R1's spirit).
/// True only for a real hash that matches.
///
/// At most [`hashing_permits`] checks run at once; the others wait their turn. Each one
/// holds 19 MiB while it runs, and the blocking pool would otherwise start up to 512 of
/// them: a review sent 100 concurrent wrong sign-ins (within one address's answer limit)
/// and took the process from 140 MB to 2 GB.
pub(crate) async fn verify_or_decoy(password: String, phc: Option<String>) -> bool {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let known = phc.is_some();
    // The semaphore is never closed, so acquiring only fails if it were: refuse then.
    let Ok(permit) = hashing_permits().acquire_owned().await else {
        return false;
    };
    let ok = tokio::task::spawn_blocking(move || {
        // Held by the hashing itself: a client that disconnects drops the request's
        // future, and the permit with it, while the hash would still be running.
        let _permit = permit;
        #[cfg(test)]
        let _running = tests::Running::enter();
        let phc = phc.unwrap_or_else(|| {
            DECOY
                .get_or_init(|| {
                    use passage_core::secrets::PasswordHasher as _;
                    passage_core::secrets::Argon2id::default()
                        .hash("decoy password that matches nothing", &[7u8; 16])
                        .unwrap_or_default()
                })
                .clone()
        });
        passage_core::secrets::verify_password(&password, &phc)
    })
    .await
    .unwrap_or(false);
    ok && known
}

/// Password checks allowed at once: two per core (a check is CPU-bound, so more would
/// only queue inside the kernel while holding their memory), at least two.
fn hashing_permits() -> Arc<tokio::sync::Semaphore> {
    static PERMITS: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    PERMITS
        .get_or_init(|| Arc::new(tokio::sync::Semaphore::new(max_concurrent_hashes())))
        .clone()
}

fn max_concurrent_hashes() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get() * 2)
}

/// Constant-time comparison of two tags.
pub(crate) fn tags_equal(a: &str, b: &str) -> bool {
    passage_core::secrets::tags_equal(a.as_bytes(), b.as_bytes())
}

/// A form body with exactly the named fields, each once (R5): duplicates, unknown fields and
/// bodies over 64 KiB are refused, so `email=victim&email=attacker` never reaches a lookup.
pub(crate) fn parse_form(
    body: &[u8],
    required: &[&str],
    optional: &[&str],
) -> Result<HashMap<String, String>, String> {
    if body.len() > 64 * 1024 {
        return Err("The form is too large.".into());
    }
    let mut out = HashMap::new();
    for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        // Strictly: a lossy decode would turn bytes that are not UTF-8 into U+FFFD, and
        // different bytes into one password or address (attack 29, R6).
        let (Some(k), Some(v)) = (form_text(k), form_text(v)) else {
            return Err("The form holds text that is not valid UTF-8.".into());
        };
        if !required.contains(&k.as_str()) && !optional.contains(&k.as_str()) {
            return Err(format!(
                "The form has an unexpected field `{}`.",
                crate::html::clip(&k, 40)
            ));
        }
        if out.insert(k.clone(), v).is_some() {
            return Err(format!("The field `{k}` was sent more than once."));
        }
    }
    if let Some(missing) = required.iter().find(|f| !out.contains_key(**f)) {
        return Err(format!("The form is missing the field `{missing}`."));
    }
    Ok(out)
}

/// One `application/x-www-form-urlencoded` name or value: `+` is a space, `%XX` a byte (a
/// `%` not followed by two hex digits stays as it is, as browsers and the WHATWG parser
/// do); `None` unless the bytes are UTF-8.
fn form_text(raw: &[u8]) -> Option<String> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => bytes.push(b' '),
            b'%' => match (
                raw.get(i + 1).copied().and_then(hex),
                raw.get(i + 2).copied().and_then(hex),
            ) {
                (Some(hi), Some(lo)) => {
                    bytes.push(hi << 4 | lo);
                    i += 2;
                }
                _ => bytes.push(b'%'),
            },
            b => bytes.push(b),
        }
        i += 1;
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);

    /// Counts the password checks running at this moment, and the most seen at once.
    pub(super) struct Running;

    impl Running {
        pub(super) fn enter() -> Self {
            let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
            PEAK.fetch_max(now, Ordering::SeqCst);
            Running
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            RUNNING.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Attack 29, R6: bytes that are not UTF-8 are refused, not replaced by U+FFFD (which
    /// would make `%FF` and `%FE` the same password); everything else decodes as browsers
    /// encode it.
    #[test]
    fn forms_that_are_not_utf8_are_refused_and_the_rest_decodes_exactly() {
        for body in [
            &b"new_password=%FF%FF%FF%FF%FF%FF%FF%FF%FF%FF%FF%FF%FF%FF%FF%FF&confirm_password=x"[..],
            b"email=%ff%fealice@example.com",
            b"email=\xffalice@example.com",
            b"em%C0il=a",
        ] {
            assert_eq!(
                parse_form(
                    body,
                    &[],
                    &["email", "new_password", "confirm_password", "em\u{fffd}il"]
                ),
                Err("The form holds text that is not valid UTF-8.".to_owned()),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let form = parse_form(
            b"email=al%C3%A9+x%40example.com&password=100%25+sure%zz&empty=",
            &["email", "password"],
            &["empty"],
        )
        .expect("a valid form");
        assert_eq!(form["email"], "al\u{e9} x@example.com");
        assert_eq!(form["password"], "100% sure%zz");
        assert_eq!(form["empty"], "");
        assert_eq!(
            parse_form(b"email=a&email=b", &["email"], &[]),
            Err("The field `email` was sent more than once.".to_owned())
        );
    }

    /// Many sign-ins at once (wrong passwords, unknown names: the decoy) run at most
    /// `max_concurrent_hashes` argon2id checks at a time, and every one is answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_password_checks_are_bounded_and_all_answered() {
        let n = max_concurrent_hashes() * 5;
        // Requests whose clients went away: their futures are dropped mid-wait or
        // mid-hash, which must not free a permit while a hash still runs.
        let mut abandoned = tokio::task::JoinSet::new();
        for i in 0..n {
            abandoned.spawn(verify_or_decoy(format!("abandoned {i}"), None));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        abandoned.abort_all();
        let mut checks = tokio::task::JoinSet::new();
        for i in 0..n {
            checks.spawn(verify_or_decoy(format!("wrong guess {i}"), None));
        }
        let mut answered = 0;
        while let Some(ok) = checks.join_next().await {
            assert!(!ok.expect("a check task"), "the decoy matches nothing");
            answered += 1;
        }
        assert_eq!(answered, n);
        let peak = PEAK.load(Ordering::SeqCst);
        assert!(
            (1..=max_concurrent_hashes()).contains(&peak),
            "{peak} checks ran at once, the bound is {}",
            max_concurrent_hashes()
        );
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, ::1").unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.9, 10.1.2.3"),
        );
        let direct = ClientIp::resolve(Some("198.51.100.7".parse().unwrap()), &h, &trusted);
        assert_eq!(
            direct.audit().as_deref(),
            Some("198.51.100.7"),
            "untrusted peer: header ignored"
        );
        let proxied = ClientIp::resolve(Some("10.0.0.1".parse().unwrap()), &h, &trusted);
        assert_eq!(
            proxied.audit().as_deref(),
            Some("203.0.113.9"),
            "right-most untrusted entry"
        );
        // A dual-stack listener's view of an IPv4 proxy is still that proxy.
        let mapped = ClientIp::resolve(Some("::ffff:10.0.0.1".parse().unwrap()), &h, &trusted);
        assert_eq!(mapped.audit().as_deref(), Some("203.0.113.9"));
        let direct4 = ClientIp::resolve(Some("::ffff:198.51.100.7".parse().unwrap()), &h, &trusted);
        assert_eq!(
            direct4.limit_key(),
            "198.51.100.7",
            "IPv4 clients are not one /64"
        );
        // An entry that does not parse (a port, garbage) stops the walk at the proxy.
        let mut odd = HeaderMap::new();
        odd.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.9:5555"),
        );
        let stopped = ClientIp::resolve(Some("10.0.0.1".parse().unwrap()), &odd, &trusted);
        assert_eq!(stopped.audit().as_deref(), Some("10.0.0.1"));
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.local").is_err());
    }

    #[test]
    fn ipv6_clients_share_their_slash_64() {
        let a = ClientIp(Some("2001:db8:1:2:aaaa::1".parse().unwrap()));
        let b = ClientIp(Some("2001:db8:1:2:ffff::9".parse().unwrap()));
        assert_eq!(a.limit_key(), b.limit_key());
    }

    #[test]
    fn limiter_counts_per_key_and_window() {
        let l = RateLimiter::default();
        let w = Duration::from_secs(60);
        assert!(l.hit_here("a", 2, w).is_ok());
        assert!(l.hit_here("a", 2, w).is_ok());
        assert!(l.hit_here("a", 2, w).is_err());
        assert!(l.hit_here("b", 2, w).is_ok());
        assert!(l.hit_here("c", 1, Duration::ZERO).is_ok());
        assert!(
            l.hit_here("c", 1, Duration::ZERO).is_ok(),
            "a new window starts"
        );
    }

    #[test]
    fn logged_addresses_are_masked() {
        let v4 = ClientIp(Some("203.0.113.77".parse().unwrap()));
        assert_eq!(v4.masked(), "203.0.113.•");
        let v6 = ClientIp(Some("2001:db8:1:2:aaaa::1".parse().unwrap()));
        assert_eq!(v6.masked(), "2001:db8:1::/48");
        assert_eq!(ClientIp(None).masked(), "unknown");
    }

    #[test]
    fn a_refused_client_is_logged_once_per_window() {
        let l = RateLimiter::default();
        let minute = Duration::from_secs(60);
        assert!(l.first_refusal("start|203.0.113.77", minute));
        assert!(!l.first_refusal("start|203.0.113.77", minute));
        assert!(
            l.first_refusal("start|198.51.100.1", minute),
            "another client"
        );
        assert!(
            l.first_refusal("answer|203.0.113.77", Duration::ZERO),
            "another limit"
        );
        assert!(
            l.first_refusal("answer|203.0.113.77", minute),
            "its window ended: a new refusal is logged"
        );
    }

    #[test]
    fn ended_windows_are_swept_when_the_map_is_large_and_not_more_often() {
        let l = RateLimiter::default();
        let hour = Duration::from_secs(3600);
        assert!(l.hit_here("long", 1, hour).is_ok());
        for i in 0..100_001 {
            assert!(l.hit_here(&format!("flood-{i}"), 1, Duration::ZERO).is_ok());
        }
        let size = |l: &RateLimiter| l.windows.lock().unwrap().map.len();
        // The hit that found the map over 100 000 keys swept the ended windows.
        assert!(size(&l) < 10, "ended windows swept: {} keys left", size(&l));
        assert!(
            l.hit_here("long", 1, hour).is_err(),
            "a live window survives the sweep with its count"
        );
        for i in 0..100_001 {
            let _ = l.hit_here(&format!("again-{i}"), 1, Duration::ZERO);
        }
        assert!(
            size(&l) > 100_000,
            "no second sweep within 10 seconds: a flood of new keys cannot make every \
             request pay for one"
        );
    }

    /// Shared counters whose database cannot be reached.
    #[derive(Debug)]
    struct Unreachable;

    impl SharedWindows for Unreachable {
        fn hit<'a>(
            &'a self,
            _: &'a str,
            _: u32,
            _: Duration,
        ) -> BoxFuture<'a, Result<Result<(), Duration>, String>> {
            Box::pin(async { Err("connection refused".to_owned()) })
        }

        fn give_back<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), String>> {
            Box::pin(async { Err("connection refused".to_owned()) })
        }
    }

    /// Shared counters that admit everything and count the calls they get.
    #[derive(Debug, Default)]
    struct Lenient(std::sync::atomic::AtomicU32);

    impl SharedWindows for Lenient {
        fn hit<'a>(
            &'a self,
            _: &'a str,
            _: u32,
            _: Duration,
        ) -> BoxFuture<'a, Result<Result<(), Duration>, String>> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async { Ok(Ok(())) })
        }

        fn give_back<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), String>> {
            Box::pin(async { Ok(()) })
        }
    }

    #[tokio::test]
    async fn a_client_this_node_saw_reach_the_limit_is_refused_without_asking() {
        let shared = Arc::new(Lenient::default());
        let l = RateLimiter::new(Some(shared.clone()));
        let w = Duration::from_secs(60);
        for _ in 0..3 {
            assert!(l.hit("a", 3, w).await.is_ok());
        }
        let retry = l
            .hit("a", 3, w)
            .await
            .expect_err("this node alone counted 3");
        assert!(retry > Duration::from_secs(59) && retry <= w, "{retry:?}");
        assert_eq!(
            shared.0.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "the refusal cost the shared counters nothing"
        );
        assert!(l.hit("b", 3, w).await.is_ok(), "other keys still ask");
        assert_eq!(shared.0.load(std::sync::atomic::Ordering::SeqCst), 4);
    }

    /// Shared counters that never answer (a database holding every connection).
    #[derive(Debug)]
    struct Silent;

    impl SharedWindows for Silent {
        fn hit<'a>(
            &'a self,
            _: &'a str,
            _: u32,
            _: Duration,
        ) -> BoxFuture<'a, Result<Result<(), Duration>, String>> {
            Box::pin(std::future::pending())
        }

        fn give_back<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), String>> {
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test]
    async fn silent_shared_counters_are_waited_for_half_a_second_at_most() {
        let l = RateLimiter::new(Some(Arc::new(Silent)));
        let w = Duration::from_secs(60);
        let started = Instant::now();
        assert!(l.hit("a", 1, w).await.is_ok(), "counted here");
        let waited = started.elapsed();
        assert!(
            waited >= SHARED_TIMEOUT,
            "waited for the shared count: {waited:?}"
        );
        assert!(
            waited < Duration::from_secs(5),
            "and gave up on it: {waited:?}"
        );
        // The next hit of a client this node saw reach the limit does not ask (or wait).
        let started = Instant::now();
        assert!(l.hit("a", 1, w).await.is_err(), "refused here");
        assert!(
            started.elapsed() < SHARED_TIMEOUT,
            "without waiting: {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn unreachable_shared_counters_fall_back_to_this_process() {
        let l = RateLimiter::new(Some(Arc::new(Unreachable)));
        let w = Duration::from_secs(60);
        assert!(l.hit("a", 2, w).await.is_ok());
        assert!(l.hit("a", 2, w).await.is_ok());
        assert!(
            l.hit("a", 2, w).await.is_err(),
            "the limit still holds, counted here"
        );
        l.give_back("a").await;
        assert!(l.hit("a", 2, w).await.is_ok(), "and gives back here");
    }

    #[test]
    fn forms_are_single_valued_and_closed() {
        assert!(parse_form(b"email=a%40b.c&csrf=x", &["email", "csrf"], &[]).is_ok());
        assert!(parse_form(b"email=a&email=b&csrf=x", &["email", "csrf"], &[]).is_err());
        assert!(parse_form(b"email[]=a&csrf=x", &["email", "csrf"], &[]).is_err());
        assert!(parse_form(b"csrf=x", &["email", "csrf"], &[]).is_err());
        assert!(parse_form(b"email=a&csrf=x&user_id=7", &["email", "csrf"], &[]).is_err());
    }
}
