//! The session and CSRF cookies. Parsing is deliberately minimal: our cookies hold only
//! base64url/JWT characters, so no quoting or escaping is involved.

use axum::http::header::COOKIE;
use axum::http::{HeaderMap, HeaderValue};

/// The session JWT; httpOnly so scripts cannot read it.
pub const SESSION_COOKIE: &str = "kiln_session";
/// The CSRF token; readable by the web app, which echoes it in `X-CSRF-Token`.
pub const CSRF_COOKIE: &str = "kiln_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A `Set-Cookie` value. `max_age_seconds == 0` deletes the cookie.
pub fn set(
    name: &str,
    value: &str,
    max_age_seconds: u64,
    http_only: bool,
    secure: bool,
) -> Option<HeaderValue> {
    let mut cookie = format!("{name}={value}; Path=/; Max-Age={max_age_seconds}; SameSite=Lax");
    if http_only {
        cookie.push_str("; HttpOnly");
    }
    if secure {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn finds_a_cookie_among_several() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=1; kiln_csrf=xyz"));
        headers.append(COOKIE, HeaderValue::from_static("kiln_session=t.o.k"));
        assert_eq!(get(&headers, CSRF_COOKIE), Some("xyz"));
        assert_eq!(get(&headers, SESSION_COOKIE), Some("t.o.k"));
        assert_eq!(get(&headers, "missing"), None);
        let value = set(SESSION_COOKIE, "v", 60, true, true).unwrap();
        assert_eq!(
            value.to_str().unwrap(),
            "kiln_session=v; Path=/; Max-Age=60; SameSite=Lax; HttpOnly; Secure"
        );
    }
}
