//! The `Idempotency-Key` header: a retried submission returns the execution it created first.

use axum::http::HeaderMap;

use crate::error::ApiError;

pub const HEADER: &str = "idempotency-key";
const MAX_LEN: usize = 128;

/// The key, if sent: 1-128 visible ASCII characters.
pub fn from_headers(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(HEADER) else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    let valid = (1..=MAX_LEN).contains(&bytes.len()) && bytes.iter().all(u8::is_ascii_graphic);
    if !valid {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key: 1-128 visible ASCII characters",
        ));
    }
    // Visible ASCII is valid UTF-8.
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// Whether a key first used at `created_at` still maps to its execution at `now`.
pub fn is_fresh(created_at: bson::DateTime, now: bson::DateTime, ttl_hours: u64) -> bool {
    let ttl_ms = i64::try_from(ttl_hours.saturating_mul(3_600_000)).unwrap_or(i64::MAX);
    now.timestamp_millis()
        .saturating_sub(created_at.timestamp_millis())
        < ttl_ms
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn header_rules() {
        let mut headers = HeaderMap::new();
        assert_eq!(from_headers(&headers).unwrap(), None);
        headers.insert(HEADER, HeaderValue::from_static("abc-123"));
        assert_eq!(from_headers(&headers).unwrap().as_deref(), Some("abc-123"));
        headers.insert(HEADER, HeaderValue::from_static("has space"));
        assert!(from_headers(&headers).is_err());
        headers.insert(HEADER, HeaderValue::from_str(&"k".repeat(129)).unwrap());
        assert!(from_headers(&headers).is_err());
        headers.insert(HEADER, HeaderValue::from_static(""));
        assert!(from_headers(&headers).is_err());
    }

    #[test]
    fn keys_expire_after_the_ttl() {
        let created = bson::DateTime::from_millis(0);
        assert!(is_fresh(created, bson::DateTime::from_millis(3_599_999), 1));
        assert!(!is_fresh(
            created,
            bson::DateTime::from_millis(3_600_000),
            1
        ));
    }
}
