//! Test doubles for the Twilio tests: a stateful fake of Twilio's 2010-04-01 REST API that
//! simulates the phone (parses the TwiML, presses keys, posts SIGNED callbacks to the real
//! webhook router), and an in-test `CallbackSink` that behaves like the engine (one
//! confirmation per call, outcomes ignored once a call is closed).
//!
//! The fake signs callbacks with its own HMAC-SHA1 code, not the crate's, so the two
//! implementations check each other (and the crate's is pinned by the published vector).

#![allow(dead_code)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use passage_channels::{
    CallbackSink, Channels, ChannelsConfig, Confirmation, DevOutbox, EmailProvider, Error,
    MessageStatus, PhoneProvider, RejectedCallback, SecretSource, SystemClock, TwilioConfig,
    WebhookSettings, WebhookState, build_channels, twilio_webhooks,
};
use passage_core::journey::CallFailure;
use passage_core::ports::JourneyId;
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const AUTH_TOKEN: &str = "test-auth-token-0123456789";
pub const FROM: &str = "+61255501000";
pub const SERVICE_SID: &str = "MG0123456789abcdef0123456789abcdef";

/// Twilio's signature, written independently of the crate.
pub fn sign(token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut data = url.to_owned();
    for (k, v) in sorted {
        data.push_str(&k);
        data.push_str(&v);
    }
    let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

pub fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What the phone at a number does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phone {
    /// SMS reaches the handset; a call is answered and these keys are pressed, one by one.
    Answer {
        keys: String,
    },
    /// Answered by a person who presses nothing.
    Silent,
    NoAnswer,
    Busy,
    /// A voicemail picks up (machine detection reports it).
    Voicemail,
    /// The carrier cannot reach the handset: SMS `undelivered` with this error code.
    Unreachable {
        error_code: u32,
    },
    /// Twilio refuses the number itself (400, error 21211).
    Invalid,
    /// A call rings on and on: nobody answers and no callback is posted while the test
    /// runs (the engine's call timer decides). SMS reach the handset as with `Answer`.
    Ringing,
}

/// A canned response for the next API request, before any validation but after auth.
#[derive(Debug, Clone)]
pub enum Scripted {
    Status {
        status: u16,
        retry_after: Option<u64>,
        code: u32,
        message: String,
    },
}

#[derive(Debug, Clone)]
pub struct Recorded {
    /// `Messages` or `Calls`.
    pub resource: String,
    pub path: String,
    pub content_type: String,
    pub form: Vec<(String, String)>,
    /// The HTTP status the fake answered.
    pub status: u16,
    /// The response body.
    pub body: String,
}

#[derive(Debug, Clone)]
pub struct CallbackLog {
    pub url: String,
    pub params: Vec<(String, String)>,
    pub status: u16,
    pub body: String,
}

#[derive(Default)]
pub struct FakeState {
    pub requests: Vec<Recorded>,
    pub script: VecDeque<Scripted>,
    pub phones: HashMap<String, Phone>,
    pub callbacks: Vec<CallbackLog>,
    /// Key presses that reached a gather `action`.
    pub gathers: Vec<String>,
    pub unauthorized: usize,
}

#[derive(Clone)]
pub struct FakeTwilio {
    pub base: String,
    pub state: Arc<Mutex<FakeState>>,
    http: reqwest::Client,
}

impl FakeTwilio {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let fake = Self {
            base,
            state: Arc::default(),
            http: reqwest::Client::new(),
        };
        let app = Router::new()
            .route(
                "/2010-04-01/Accounts/{account}/{resource}",
                post(api_handler),
            )
            .with_state(fake.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        fake
    }

    pub fn phone(&self, number: &str, phone: Phone) {
        self.state
            .lock()
            .unwrap()
            .phones
            .insert(number.into(), phone);
    }

    pub fn script(&self, s: Scripted) {
        self.state.lock().unwrap().script.push_back(s);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn callbacks(&self) -> Vec<CallbackLog> {
        self.state.lock().unwrap().callbacks.clone()
    }

    /// Posts a signed callback to `url`, as Twilio does, and logs the answer.
    async fn callback(&self, url: &str, params: Vec<(String, String)>) -> CallbackLog {
        let signature = sign(AUTH_TOKEN, url, &params);
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter())
            .finish();
        let response = self
            .http
            .post(url)
            .header("X-Twilio-Signature", signature)
            .header(
                header::CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(body)
            .send()
            .await
            .unwrap();
        let log = CallbackLog {
            url: url.into(),
            params,
            status: response.status().as_u16(),
            body: response.text().await.unwrap(),
        };
        self.state.lock().unwrap().callbacks.push(log.clone());
        log
    }
}

fn new_sid(prefix: &str) -> String {
    format!("{prefix}{}", Uuid::new_v4().simple())
}

fn twilio_error(status: u16, code: u32, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [(header::CONTENT_TYPE, "application/json")],
        json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status,
        })
        .to_string(),
    )
        .into_response()
}

fn is_e164(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|d| {
        (7..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    })
}

const DATE: &str = "Thu, 24 Aug 2023 05:01:45 +0000";

async fn api_handler(
    State(fake): State<FakeTwilio>,
    Path((account, resource)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/2010-04-01/Accounts/{account}/{resource}");
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let response = api(&fake, &account, &resource, &headers, &content_type, &form).await;
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    fake.state.lock().unwrap().requests.push(Recorded {
        resource: resource.trim_end_matches(".json").into(),
        path,
        content_type,
        form,
        status: parts.status.as_u16(),
        body: String::from_utf8_lossy(&bytes).into_owned(),
    });
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

async fn api(
    fake: &FakeTwilio,
    account: &str,
    resource: &str,
    headers: &HeaderMap,
    content_type: &str,
    form: &[(String, String)],
) -> Response {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}"))
    );
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(&expected)
    {
        fake.state.lock().unwrap().unauthorized += 1;
        return twilio_error(401, 20003, "Authenticate");
    }
    if account != ACCOUNT_SID {
        return twilio_error(404, 20404, "The requested resource was not found");
    }
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return twilio_error(400, 20001, "Unsupported content type");
    }
    let scripted = fake.state.lock().unwrap().script.pop_front();
    if let Some(Scripted::Status {
        status,
        retry_after,
        code,
        message,
    }) = scripted
    {
        let mut r = twilio_error(status, code, &message);
        if let Some(s) = retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, s.to_string().parse().unwrap());
        }
        return r;
    }
    let get = |k: &str| {
        let mut v = form.iter().filter(|(n, _)| n == k).map(|(_, v)| v.as_str());
        v.next()
    };
    let count = |k: &str| form.iter().filter(|(n, _)| n == k).count();
    for (k, _) in form {
        if count(k) > 1 && k != "StatusCallbackEvent" {
            return twilio_error(400, 20001, &format!("Parameter {k} given twice"));
        }
    }
    let phone = |to: &str| {
        fake.state
            .lock()
            .unwrap()
            .phones
            .get(to)
            .cloned()
            .unwrap_or(Phone::Answer { keys: "#".into() })
    };
    match resource {
        "Messages.json" => {
            let Some(to) = get("To") else {
                return twilio_error(400, 21604, "A 'To' phone number is required.");
            };
            let Some(body) = get("Body") else {
                return twilio_error(400, 21602, "Message body is required.");
            };
            if get("From").is_none() && get("MessagingServiceSid").is_none() {
                return twilio_error(
                    400,
                    21603,
                    "A 'From' or 'MessagingServiceSid' parameter is required to send a message",
                );
            }
            if !is_e164(to) || phone(to) == Phone::Invalid {
                return twilio_error(400, 21211, &format!("Invalid 'To' Phone Number: {to}"));
            }
            if body.chars().count() > 1600 {
                return twilio_error(
                    400,
                    21617,
                    "The concatenated message body exceeds the 1600 character limit.",
                );
            }
            let sid = new_sid("SM");
            let created = json!({
                "account_sid": ACCOUNT_SID,
                "api_version": "2010-04-01",
                "body": body,
                "date_created": DATE,
                "date_sent": null,
                "date_updated": DATE,
                "direction": "outbound-api",
                "error_code": null,
                "error_message": null,
                "from": get("From"),
                "num_media": "0",
                "num_segments": "1",
                "price": null,
                "price_unit": "USD",
                "messaging_service_sid": get("MessagingServiceSid"),
                "sid": sid,
                "status": "queued",
                "subresource_uris": {
                    "media": format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}/Media.json")
                },
                "to": to,
                "uri": format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json"),
            });
            if let Some(callback) = get("StatusCallback") {
                let fake = fake.clone();
                let callback = callback.to_owned();
                let to = to.to_owned();
                let outcome = phone(&to);
                let sid = sid.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let base = |status: &str| {
                        pairs(&[
                            ("AccountSid", ACCOUNT_SID),
                            ("ApiVersion", "2010-04-01"),
                            ("From", FROM),
                            ("MessageSid", &sid),
                            ("MessageStatus", status),
                            ("SmsSid", &sid),
                            ("SmsStatus", status),
                            ("To", &to),
                        ])
                    };
                    fake.callback(&callback, base("sent")).await;
                    let last = match outcome {
                        Phone::Unreachable { error_code } => {
                            let mut p = base("undelivered");
                            p.push(("ErrorCode".into(), error_code.to_string()));
                            p
                        }
                        _ => base("delivered"),
                    };
                    fake.callback(&callback, last).await;
                });
            }
            (
                StatusCode::CREATED,
                [(header::CONTENT_TYPE, "application/json")],
                created.to_string(),
            )
                .into_response()
        }
        "Calls.json" => {
            let Some(to) = get("To") else {
                return twilio_error(400, 21201, "No 'To' number is specified");
            };
            let Some(from) = get("From") else {
                return twilio_error(400, 21213, "No 'From' number is specified");
            };
            let twiml = get("Twiml");
            if twiml.is_none() && get("Url").is_none() && get("ApplicationSid").is_none() {
                return twilio_error(400, 21205, "Url parameter is required.");
            }
            if twiml.is_some_and(|t| t.chars().count() > 4000) {
                return twilio_error(400, 21232, "Twiml exceeds 4000 characters");
            }
            for (k, v) in form {
                if k == "StatusCallbackEvent"
                    && !["initiated", "ringing", "answered", "completed"].contains(&v.as_str())
                {
                    return twilio_error(400, 21626, &format!("Invalid StatusCallbackEvent {v}"));
                }
            }
            if let Some(t) = get("Timeout")
                && t.parse::<u32>().is_err()
            {
                return twilio_error(400, 21207, "Timeout must be an integer");
            }
            if !is_e164(to) || phone(to) == Phone::Invalid {
                return twilio_error(400, 21211, &format!("Invalid 'To' Phone Number: {to}"));
            }
            let sid = new_sid("CA");
            let created = json!({
                "account_sid": ACCOUNT_SID,
                "answered_by": null,
                "api_version": "2010-04-01",
                "caller_name": null,
                "date_created": null,
                "date_updated": null,
                "direction": "outbound-api",
                "duration": null,
                "end_time": null,
                "forwarded_from": null,
                "from": from,
                "from_formatted": from,
                "group_sid": null,
                "parent_call_sid": null,
                "phone_number_sid": new_sid("PN"),
                "price": null,
                "price_unit": "USD",
                "sid": sid,
                "start_time": null,
                "status": "queued",
                "subresource_uris": {
                    "notifications": format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{sid}/Notifications.json"),
                    "recordings": format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{sid}/Recordings.json"),
                },
                "to": to,
                "to_formatted": to,
                "trunk_sid": null,
                "uri": format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{sid}.json"),
                "queue_time": "0",
            });
            let call = PlacedCall {
                sid,
                to: to.into(),
                from: from.into(),
                twiml: twiml.unwrap_or("").into(),
                status_callback: get("StatusCallback").map(str::to_owned),
                machine_detection: get("MachineDetection").is_some(),
                phone: phone(to),
            };
            let fake = fake.clone();
            tokio::spawn(async move { simulate_call(fake, call).await });
            (
                StatusCode::CREATED,
                [(header::CONTENT_TYPE, "application/json")],
                created.to_string(),
            )
                .into_response()
        }
        _ => twilio_error(404, 20404, "The requested resource was not found"),
    }
}

struct PlacedCall {
    sid: String,
    to: String,
    from: String,
    twiml: String,
    status_callback: Option<String>,
    machine_detection: bool,
    phone: Phone,
}

/// The phone: rings, answers (or not), listens to the TwiML, presses keys.
async fn simulate_call(fake: FakeTwilio, call: PlacedCall) {
    tokio::time::sleep(Duration::from_millis(20)).await;
    let base = |status: &str| {
        pairs(&[
            ("AccountSid", ACCOUNT_SID),
            ("ApiVersion", "2010-04-01"),
            ("CallSid", &call.sid),
            ("CallStatus", status),
            ("Direction", "outbound-api"),
            ("From", &call.from),
            ("To", &call.to),
        ])
    };
    let mut answered_by = None;
    let final_status = match &call.phone {
        // Still ringing when the test ends: nothing to report.
        Phone::Ringing => return,
        Phone::NoAnswer => "no-answer",
        Phone::Busy => "busy",
        Phone::Invalid | Phone::Unreachable { .. } => "failed",
        Phone::Voicemail => {
            answered_by = Some("machine_end_beep");
            "completed"
        }
        Phone::Silent | Phone::Answer { .. } => {
            answered_by = Some("human");
            let keys = match &call.phone {
                Phone::Answer { keys } => keys.clone(),
                _ => String::new(),
            };
            let doc = parse_twiml(&call.twiml).expect("the call's TwiML parses");
            if let Some(Node::Gather { attrs, .. }) =
                doc.iter().find(|n| matches!(n, Node::Gather { .. }))
                && let Some(digits) = gather_digits(attrs, &keys)
            {
                let action = attrs.get("action").expect("gather has an action").clone();
                let mut params = base("in-progress");
                params.push(("Digits".into(), digits.clone()));
                params.push(("FinishedOnKey".into(), String::new()));
                if call.machine_detection {
                    params.push(("AnsweredBy".into(), "human".into()));
                }
                fake.state.lock().unwrap().gathers.push(digits);
                fake.callback(&action, params).await;
                // The answer ends with <Hangup/>: later keys go nowhere.
            }
            "completed"
        }
    };
    if let Some(url) = &call.status_callback {
        let mut params = base(final_status);
        params.push(("CallDuration".into(), "12".into()));
        params.push(("CallbackSource".into(), "call-progress-events".into()));
        params.push(("SequenceNumber".into(), "0".into()));
        if call.machine_detection
            && let Some(a) = answered_by
        {
            params.push(("AnsweredBy".into(), a.into()));
        }
        fake.callback(url, params).await;
    }
}

/// What a `<Gather>` collects from the keys pressed: `None` when `action` is not called
/// (silence, or a lone finish key).
pub fn gather_digits(attrs: &HashMap<String, String>, keys: &str) -> Option<String> {
    let finish = attrs.get("finishOnKey").map(String::as_str).unwrap_or("#");
    let num: Option<usize> = attrs.get("numDigits").and_then(|n| n.parse().ok());
    let mut collected = String::new();
    for k in keys.chars() {
        if !finish.is_empty() && finish.starts_with(k) {
            // A lone finish key: Twilio goes on with the next verb, action is not called.
            return if collected.is_empty() {
                None
            } else {
                Some(collected)
            };
        }
        collected.push(k);
        if num.is_some_and(|n| collected.chars().count() >= n) {
            return Some(collected);
        }
    }
    // Timeout: whatever was entered is submitted; nothing entered falls through.
    if collected.is_empty() {
        None
    } else {
        Some(collected)
    }
}

/// The TwiML subset Passage uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Say {
        attrs: HashMap<String, String>,
        text: String,
    },
    Gather {
        attrs: HashMap<String, String>,
        children: Vec<Node>,
    },
    Hangup,
    Pause,
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// A tiny XML reader for `<Response>` documents: elements, attributes, text. Errors on
/// anything unbalanced, so a malformed document fails the test.
pub fn parse_twiml(doc: &str) -> Result<Vec<Node>, String> {
    let doc = doc.trim();
    let doc = match doc.strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").ok_or("bad declaration")?.1,
        None => doc,
    };
    let mut pos = 0;
    let root = parse_element(doc, &mut pos)?;
    if doc[pos..].trim() != "" {
        return Err(format!("trailing content: {}", &doc[pos..]));
    }
    match root {
        (name, _, children, _) if name == "Response" => Ok(children),
        (name, ..) => Err(format!("root is {name}, not Response")),
    }
}

type Element = (String, HashMap<String, String>, Vec<Node>, String);

fn parse_element(doc: &str, pos: &mut usize) -> Result<Element, String> {
    let rest = &doc[*pos..];
    let start = rest.find('<').ok_or("no element")?;
    if !rest[..start].trim().is_empty() {
        return Err("text outside an element".into());
    }
    *pos += start + 1;
    let end = doc[*pos..].find('>').ok_or("unclosed tag")? + *pos;
    let mut tag = &doc[*pos..end];
    let self_closing = tag.ends_with('/');
    if self_closing {
        tag = &tag[..tag.len() - 1];
    }
    let (name, attr_text) = tag.split_once(' ').unwrap_or((tag, ""));
    let mut attrs = HashMap::new();
    let mut a = attr_text.trim();
    while !a.is_empty() {
        let (key, after) = a
            .split_once("=\"")
            .ok_or(format!("bad attribute in {tag}"))?;
        let (value, after) = after.split_once('"').ok_or("unterminated attribute")?;
        attrs.insert(key.trim().to_owned(), unescape(value));
        a = after.trim();
    }
    *pos = end + 1;
    if self_closing {
        return Ok((name.into(), attrs, vec![], String::new()));
    }
    let mut children = vec![];
    let mut text = String::new();
    loop {
        let rest = &doc[*pos..];
        let lt = rest.find('<').ok_or(format!("{name} is not closed"))?;
        text.push_str(&unescape(&rest[..lt]));
        if rest[lt..].starts_with("</") {
            let close_end = rest[lt..].find('>').ok_or("unclosed end tag")? + lt;
            let close = &rest[lt + 2..close_end];
            if close != name {
                return Err(format!("<{name}> closed by </{close}>"));
            }
            *pos += close_end + 1;
            break;
        }
        *pos += lt;
        let (cname, cattrs, cchildren, ctext) = parse_element(doc, pos)?;
        children.push(match cname.as_str() {
            "Say" => Node::Say {
                attrs: cattrs,
                text: ctext,
            },
            "Gather" => Node::Gather {
                attrs: cattrs,
                children: cchildren,
            },
            "Hangup" => Node::Hangup,
            "Pause" => Node::Pause,
            other => return Err(format!("unexpected verb {other}")),
        });
    }
    Ok((name.into(), attrs, children, text))
}

// ---------------------------------------------------------------------------------------

/// How the in-test engine sees a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallState {
    Open,
    Confirmed,
    Failed(CallFailure),
}

#[derive(Debug, Default)]
pub struct SinkState {
    pub calls: HashMap<Uuid, CallState>,
    /// Events the engine would have recorded, in order (`CallConfirmed`, `CallFailed(..)`).
    pub events: Vec<String>,
    pub keys: Vec<(JourneyId, Uuid, String)>,
    pub statuses: Vec<(JourneyId, Uuid, MessageStatus)>,
    pub rejected: Vec<RejectedCallback>,
}

/// An engine stand-in: one confirmation per open call, outcomes ignored once closed.
#[derive(Debug, Clone, Default)]
pub struct TestSink(pub Arc<Mutex<SinkState>>);

impl TestSink {
    pub fn open_call(&self, call: Uuid) {
        self.0.lock().unwrap().calls.insert(call, CallState::Open);
    }

    pub fn call(&self, call: Uuid) -> Option<CallState> {
        self.0.lock().unwrap().calls.get(&call).cloned()
    }

    pub fn events(&self) -> Vec<String> {
        self.0.lock().unwrap().events.clone()
    }

    pub fn rejected(&self) -> Vec<RejectedCallback> {
        self.0.lock().unwrap().rejected.clone()
    }

    pub fn statuses(&self) -> Vec<(JourneyId, Uuid, MessageStatus)> {
        self.0.lock().unwrap().statuses.clone()
    }
}

impl CallbackSink for TestSink {
    async fn call_keys(
        &self,
        journey: JourneyId,
        call_id: Uuid,
        digits: String,
    ) -> Result<Confirmation, Error> {
        let mut s = self.0.lock().unwrap();
        s.keys.push((journey, call_id, digits.clone()));
        if s.calls.get(&call_id) != Some(&CallState::Open) {
            return Ok(Confirmation::NotConfirmed);
        }
        if digits == "#" {
            s.calls.insert(call_id, CallState::Confirmed);
            s.events.push(format!("CallConfirmed({call_id})"));
            Ok(Confirmation::Confirmed)
        } else {
            s.calls
                .insert(call_id, CallState::Failed(CallFailure::WrongKey));
            s.events.push(format!("CallFailed({call_id}, wrong-key)"));
            Ok(Confirmation::NotConfirmed)
        }
    }

    async fn call_ended(
        &self,
        _journey: JourneyId,
        call_id: Uuid,
        reason: CallFailure,
    ) -> Result<(), Error> {
        let mut s = self.0.lock().unwrap();
        if s.calls.get(&call_id) == Some(&CallState::Open) {
            s.calls.insert(call_id, CallState::Failed(reason));
            s.events
                .push(format!("CallFailed({call_id}, {})", reason.as_str()));
        }
        Ok(())
    }

    async fn message_status(
        &self,
        journey: JourneyId,
        effect_id: Uuid,
        status: MessageStatus,
    ) -> Result<(), Error> {
        self.0
            .lock()
            .unwrap()
            .statuses
            .push((journey, effect_id, status));
        Ok(())
    }

    async fn rejected_callback(&self, rejected: RejectedCallback) {
        self.0.lock().unwrap().rejected.push(rejected);
    }
}

/// The webhook router on 127.0.0.1:0, with the public base URL it serves.
pub struct Webhooks {
    pub base: String,
    pub sink: TestSink,
}

/// Binds first, so the public base URL is known before the channel is configured.
pub async fn bind() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    (listener, base)
}

pub fn serve_webhooks(
    listener: tokio::net::TcpListener,
    settings: WebhookSettings,
    sink: TestSink,
) {
    let app = twilio_webhooks(WebhookState::new(settings, sink));
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
}

/// Polls `check` until it holds or 5 s pass.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------

/// The whole channel stack wired to a fresh fake Twilio and a webhook router.
pub struct Rig {
    pub fake: FakeTwilio,
    pub sink: TestSink,
    pub channels: Channels,
    pub webhooks: String,
    pub files: Vec<PathBuf>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        for f in &self.files {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", f.display()));
            }
        }
    }
}

pub fn twilio_config(fake: &FakeTwilio, public: &str, token_file: PathBuf) -> TwilioConfig {
    TwilioConfig {
        api_base: fake.base.clone(),
        account_sid: ACCOUNT_SID.into(),
        auth_token: SecretSource::File(token_file),
        from: Some(FROM.into()),
        messaging_service_sid: None,
        voice_from: None,
        public_base_url: public.into(),
        message_status_callbacks: true,
        ring_timeout_secs: 30,
        gather_timeout_secs: 10,
        machine_detection: true,
        say_voice: None,
        say_language: Some("en-AU".into()),
        request_timeout_secs: 5,
    }
}

pub async fn rig_with(tweak: impl FnOnce(&mut ChannelsConfig)) -> Rig {
    let fake = FakeTwilio::start().await;
    let (listener, public) = bind().await;
    let token_file = std::env::temp_dir().join(format!("passage-twilio-token-{}", Uuid::new_v4()));
    std::fs::write(&token_file, format!("{AUTH_TOKEN}\n")).unwrap();
    let outbox = std::env::temp_dir().join(format!("passage-outbox-{}.db", Uuid::new_v4()));
    let mut config = ChannelsConfig {
        email: EmailProvider::Dev,
        sms: PhoneProvider::Twilio,
        voice: PhoneProvider::Twilio,
        twilio: Some(twilio_config(&fake, &public, token_file.clone())),
        ..Default::default()
    };
    tweak(&mut config);
    let dev = DevOutbox::open(&outbox).await.unwrap();
    let channels = build_channels(&config, Some(dev), Arc::new(SystemClock)).unwrap();
    let sink = TestSink::default();
    let settings = channels
        .inner()
        .webhook_settings()
        .expect("twilio webhooks configured");
    serve_webhooks(listener, settings, sink.clone());
    Rig {
        fake,
        sink,
        channels,
        webhooks: public,
        files: vec![token_file, outbox],
    }
}

pub async fn rig() -> Rig {
    rig_with(|_| {}).await
}
