//! Redaction of secrets wherever configuration is printed.

use secrecy::{ExposeSecret, SecretString};
use serde::Serializer;

const MARKER: &str = "[REDACTED]";

/// `serialize_with` helper: a secret is always printed as a fixed marker.
pub fn redacted<S: Serializer>(_secret: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(MARKER)
}

/// `serialize_with` helper for connection URLs: keeps scheme, user and host (useful when debugging)
/// and replaces only the password.
pub fn redacted_url<S: Serializer>(url: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&redact_url(url.expose_secret()))
}

/// Replaces the password of `scheme://user:password@host/...` with a marker.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The authority ends at the first '/', '?' or '#'; only an '@' inside it delimits credentials.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    if user.len() == userinfo.len() {
        return url.to_owned();
    }
    format!("{scheme}://{user}:{MARKER}{}", &rest[at..])
}
