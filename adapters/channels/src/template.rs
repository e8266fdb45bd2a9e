//! Email templates: `{placeholder}` substitution, HTML-escaped in the HTML body.
//!
//! The worker writes the words of each message (`engine/runtime/src/messages.rs`); the
//! templates only frame them: portal name, footer, layout. Placeholders:
//!
//! | name | value |
//! |---|---|
//! | `{portal}` | the portal's name |
//! | `{subject}` | the message's subject |
//! | `{body}` | the message text (text template only) |
//! | `{body_html}` | the message text as HTML paragraphs, every piece escaped (HTML only) |
//! | `{rule}` | a line of dashes (text template only) |
//!
//! `{{` and `}}` stand for literal braces. Substitution is one pass: a value that contains
//! `{portal}` is inserted as is and never expanded again, so a value cannot inject template
//! syntax. An unknown placeholder is an error when the templates are loaded, not when a
//! code is being sent.

use crate::Error;
use std::path::Path;

const DEFAULT_TEXT: &str = include_str!("../templates/email.txt");
const DEFAULT_HTML: &str = include_str!("../templates/email.html");

/// The text and HTML frames of every email.
#[derive(Debug, Clone)]
pub struct EmailTemplates {
    text: String,
    html: String,
}

impl Default for EmailTemplates {
    fn default() -> Self {
        Self {
            text: DEFAULT_TEXT.to_owned(),
            html: DEFAULT_HTML.to_owned(),
        }
    }
}

/// A value for one placeholder.
enum Value<'a> {
    /// Plain text: escaped when the output is HTML.
    Text(&'a str),
    /// HTML built by this module from escaped pieces.
    Html(&'a str),
}

impl EmailTemplates {
    /// The templates shipped in `adapters/channels/templates/`.
    pub fn builtin() -> Self {
        Self::default()
    }

    /// `email.txt` and `email.html` from a directory (an operator's own wording), checked now.
    pub fn from_dir(dir: &Path) -> Result<Self, Error> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).map_err(|e| Error::Template {
                name: name.to_owned(),
                reason: format!("cannot read it from {}: {e}", dir.display()),
            })
        };
        let t = Self {
            text: read("email.txt")?,
            html: read("email.html")?,
        };
        t.check()?;
        Ok(t)
    }

    /// Renders both templates with sample values, so a typo fails at start-up.
    pub fn check(&self) -> Result<(), Error> {
        render_email(self, "Portal", "Subject", "Body\n\n    123456\n").map(|_| ())
    }
}

/// Frames a message: returns the text body and the HTML body.
pub fn render_email(
    templates: &EmailTemplates,
    portal: &str,
    subject: &str,
    text: &str,
) -> Result<(String, String), Error> {
    let body_html = body_to_html(text);
    let rule = "-".repeat(60);
    let text_vars = [
        ("portal", Value::Text(portal)),
        ("subject", Value::Text(subject)),
        ("body", Value::Text(text.trim_end())),
        ("rule", Value::Text(&rule)),
    ];
    let html_vars = [
        ("portal", Value::Text(portal)),
        ("subject", Value::Text(subject)),
        ("body_html", Value::Html(&body_html)),
    ];
    let err = |name: &str| {
        let name = name.to_owned();
        move |reason| Error::Template { name, reason }
    };
    let text_out = render(&templates.text, &text_vars, false).map_err(err("email.txt"))?;
    let html_out = render(&templates.html, &html_vars, true).map_err(err("email.html"))?;
    Ok((text_out, html_out))
}

fn render(template: &str, vars: &[(&str, Value<'_>)], html: bool) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 512);
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            out.push('}');
            rest = after;
        } else if tail.starts_with('}') {
            return Err("a lone `}` (write `}}` for a literal brace)".into());
        } else {
            let Some(end) = tail.find('}') else {
                return Err("a `{` without its closing `}`".into());
            };
            let name = &tail[1..end];
            let value = vars
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v)
                .ok_or_else(|| format!("unknown placeholder {{{name}}}"))?;
            match value {
                Value::Text(t) if html => out.push_str(&escape_html(t)),
                Value::Text(t) | Value::Html(t) => out.push_str(t),
            }
            rest = &tail[end + 1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn escape_html(s: &str) -> String {
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

/// Paragraphs (blank-line separated) become `<p>`; an indented paragraph (the code line of
/// the verification email) becomes a large monospace block so the code stands out.
fn body_to_html(text: &str) -> String {
    let mut out = String::new();
    for para in text.split("\n\n") {
        let lines: Vec<&str> = para.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.is_empty() {
            continue;
        }
        let code = lines.iter().all(|l| l.starts_with("    "));
        let inner = lines
            .iter()
            .map(|l| escape_html(l.trim()))
            .collect::<Vec<_>>()
            .join("<br>\n");
        if code {
            out.push_str(
                "<p style=\"font-family:Consolas,Menlo,monospace;font-size:28px;\
                 letter-spacing:4px;margin:16px 0;\"><strong>",
            );
            out.push_str(&inner);
            out.push_str("</strong></p>\n");
        } else {
            out.push_str("<p style=\"margin:0 0 12px 0;\">");
            out.push_str(&inner);
            out.push_str("</p>\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_templates_render_and_escape() {
        let t = EmailTemplates::builtin();
        t.check().unwrap();
        let (text, html) = render_email(
            &t,
            "Portal <b>&</b>",
            "Your code",
            "Your code is:\n\n    123456\n\nIt expires <soon>.\n",
        )
        .unwrap();
        assert!(text.contains("    123456"), "{text}");
        assert!(text.contains("Portal <b>&</b>"), "text stays text: {text}");
        assert!(html.contains("Portal &lt;b&gt;&amp;&lt;/b&gt;"), "{html}");
        assert!(html.contains("<strong>123456</strong>"), "{html}");
        assert!(html.contains("It expires &lt;soon&gt;."), "{html}");
        assert!(!html.contains("<soon>"));
    }

    #[test]
    fn values_are_not_expanded_again_and_unknown_placeholders_fail() {
        let vars = [("a", Value::Text("{b}")), ("b", Value::Text("B"))];
        assert_eq!(render("x{a}y{{z}}", &vars, false).unwrap(), "x{b}y{z}");
        assert!(render("{nope}", &vars, false).unwrap_err().contains("nope"));
        assert!(render("{a", &vars, false).is_err());
        assert!(render("a}", &vars, false).is_err());
    }

    #[test]
    fn templates_from_a_directory_are_checked() {
        let dir = std::env::temp_dir().join(format!("passage-tpl-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("email.txt"), "{body}\n-- {portal}").unwrap();
        std::fs::write(dir.join("email.html"), "<p>{portal}</p>{body_html}").unwrap();
        assert!(EmailTemplates::from_dir(&dir).is_ok());
        std::fs::write(dir.join("email.html"), "<p>{portl}</p>").unwrap();
        let e = EmailTemplates::from_dir(&dir).unwrap_err().to_string();
        assert!(e.contains("portl"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
