//! `X-Twilio-Signature`: base64(HMAC-SHA1(auth token, URL ‖ sorted params as key+value)).
//!
//! The URL is the public one Twilio was given (configured, never the Host header, R22),
//! including the query string exactly as sent. Form parameters are sorted by name, then by
//! value (repeated names), and appended as `name` + `value` with no separators. The
//! comparison is constant time (`hmac`'s `verify_slice`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

type HmacSha1 = Hmac<Sha1>;

/// `None` only if the key were refused, which HMAC never does (any key length is valid).
fn mac(auth_token: &str, url: &str, params: &[(String, String)]) -> Option<HmacSha1> {
    let mut mac = <HmacSha1 as KeyInit>::new_from_slice(auth_token.as_bytes()).ok()?;
    mac.update(url.as_bytes());
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    Some(mac)
}

/// The signature Twilio would send for this request.
pub fn compute_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    mac(auth_token, url, params)
        .map(|m| STANDARD.encode(m.finalize().into_bytes()))
        .unwrap_or_default()
}

/// Whether `signature` (the header's value) signs this request. Twilio's own helpers accept
/// the URL with and without an explicit default port, because proxies differ in whether
/// they keep it; so does this.
pub fn validate_signature(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    signature: &str,
) -> bool {
    let Ok(expected) = STANDARD.decode(signature.trim()) else {
        return false;
    };
    url_variants(url)
        .iter()
        .any(|u| mac(auth_token, u, params).is_some_and(|m| m.verify_slice(&expected).is_ok()))
}

/// The URL as given, plus the same URL with the default port added or removed.
fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_owned()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return out;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => "443",
        "http" => "80",
        _ => return out,
    };
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(split);
    let host_end = authority
        .rfind(':')
        .filter(|i| !authority[*i..].contains(']'));
    match host_end {
        Some(i) if &authority[i + 1..] == default_port => {
            out.push(format!("{scheme}://{}{tail}", &authority[..i]));
        }
        Some(_) => {}
        None => out.push(format!("{scheme}://{authority}:{default_port}{tail}")),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector_params() -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The published test vector (shared/brief/channels.md §4.2).
    #[test]
    fn published_test_vector() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let sig = compute_signature("12345", url, &vector_params());
        assert_eq!(sig, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
        assert!(validate_signature(
            "12345",
            url,
            &vector_params(),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
        // Parameter order on the wire does not matter.
        let mut reversed = vector_params();
        reversed.reverse();
        assert!(validate_signature(
            "12345",
            url,
            &reversed,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
        // With the default port written out, as some proxies forward it.
        assert!(validate_signature(
            "12345",
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &vector_params(),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
    }

    #[test]
    fn anything_changed_fails() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let good = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";
        assert!(!validate_signature("12346", url, &vector_params(), good));
        assert!(!validate_signature(
            "12345",
            "https://evil.example/myapp.php?foo=1&bar=2",
            &vector_params(),
            good
        ));
        assert!(!validate_signature(
            "12345",
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            &vector_params(),
            good
        ));
        let mut p = vector_params();
        p[2].1 = "#".into();
        assert!(!validate_signature("12345", url, &p, good));
        assert!(!validate_signature(
            "12345",
            url,
            &vector_params(),
            "not base64!"
        ));
        assert!(!validate_signature("12345", url, &vector_params(), ""));
    }

    #[test]
    fn port_variants() {
        assert_eq!(
            url_variants("https://a.example/x?y=1"),
            vec!["https://a.example/x?y=1", "https://a.example:443/x?y=1"]
        );
        assert_eq!(
            url_variants("http://127.0.0.1:8080/x"),
            vec!["http://127.0.0.1:8080/x"]
        );
        assert_eq!(
            url_variants("https://a.example:443"),
            vec!["https://a.example:443", "https://a.example"]
        );
    }
}
