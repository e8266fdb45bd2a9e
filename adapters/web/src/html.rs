//! Page frame and escaping. Every value that reaches a page goes through [`esc`] (attack 27).

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

const CSS: &str = include_str!("../assets/portal.css");
const JS: &str = include_str!("../assets/portal.js");

pub(crate) fn asset_routes() -> Router {
    Router::new()
        .route(
            "/assets/portal.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS) }),
        )
        .route(
            "/assets/portal.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    JS,
                )
            }),
        )
}

/// HTML-escapes text for element content and quoted attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// At most `n` characters, for echoing untrusted names in messages.
pub(crate) fn clip(s: &str, n: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(n).collect()
}

/// The portal's frame: header bar, one `main` with the page's data attributes, the script.
pub(crate) struct Page<'a> {
    pub title: &'a str,
    /// Attributes for `<main>`, already escaped (e.g. `data-step="email-code"`).
    pub main_attrs: String,
    pub body: String,
    /// Seconds after which the page loads the given URL without JavaScript (the call page).
    /// Always an explicit URL: a page rendered as the answer to a POST would otherwise
    /// reload its own address, a POST-only route, as a GET.
    pub refresh: Option<(u32, String)>,
    /// The sign-out form's CSRF token (the browser's visit token) when signed in.
    pub signed_in: Option<String>,
}

impl Page<'_> {
    pub(crate) fn render(self, status: StatusCode) -> Response {
        let refresh = self
            .refresh
            .map(|(s, url)| {
                format!(
                    "<meta http-equiv=\"refresh\" content=\"{s}; url={}\">",
                    esc(&url)
                )
            })
            .unwrap_or_default();
        let nav = match &self.signed_in {
            Some(token) => format!(
                "<form method=\"post\" action=\"/sign-out\" class=\"nav-form\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\" class=\"link-button\" id=\"sign-out\">Sign out</button></form>",
                esc(token)
            ),
            None => String::new(),
        };
        let html = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{refresh}\
<title>{title} · Enterprise Customer Portal</title>\
<link rel=\"stylesheet\" href=\"/assets/portal.css\">\
<script src=\"/assets/portal.js\" defer></script></head>\
<body><header class=\"bar\"><a class=\"brand\" href=\"/\">Enterprise Customer Portal</a>{nav}</header>\
<main id=\"main\" {attrs}>{body}</main>\
<footer class=\"foot\">Need help? Contact the service desk.</footer></body></html>\n",
            title = esc(self.title),
            attrs = self.main_attrs,
            body = self.body,
        );
        (status, Html(html)).into_response()
    }
}

/// A page with a heading, a message and an optional link onwards.
pub(crate) fn message_page(
    status: StatusCode,
    title: &str,
    message: &str,
    link: Option<(&str, &str)>,
) -> Response {
    let link = link
        .map(|(href, label)| {
            format!(
                "<p><a class=\"button primary\" id=\"continue\" href=\"{}\">{}</a></p>",
                esc(href),
                esc(label)
            )
        })
        .unwrap_or_default();
    Page {
        title,
        main_attrs: format!("data-kind=\"message\" data-status=\"{}\"", status.as_u16()),
        body: format!(
            "<section class=\"card\"><h1>{}</h1><p class=\"message\" role=\"alert\">{}</p>{link}</section>",
            esc(title),
            esc(message)
        ),
        refresh: None,
        signed_in: None,
    }
    .render(status)
}
