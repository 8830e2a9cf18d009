//! Session tokens: compact JWS with HS256 (RFC 7515/7519), built on the RustCrypto `hmac` and
//! `sha2` crates. Only our own fixed header is accepted, so `alg: none` or algorithm confusion
//! cannot get through.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::Role;

const HEADER_JSON: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    pub username: String,
    pub role: Role,
    /// The CSRF token issued with this session: a request's `X-CSRF-Token` must match it as well
    /// as the cookie, so a cookie planted from a sibling domain cannot pass.
    pub csrf: String,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("token is malformed")]
    Malformed,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
}

/// The keyed HMAC, ready to clone per token.
#[derive(Clone)]
pub struct JwtKey(Hmac<Sha256>);

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKey(redacted)")
    }
}

impl JwtKey {
    pub fn new(secret: &[u8]) -> Result<Self, hmac::digest::InvalidLength> {
        Hmac::<Sha256>::new_from_slice(secret).map(Self)
    }

    fn mac(&self) -> Hmac<Sha256> {
        self.0.clone()
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, serde_json::Error> {
        let header = URL_SAFE_NO_PAD.encode(HEADER_JSON);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?);
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        Ok(format!("{signing_input}.{signature}"))
    }

    /// The claims of `token` if our key signed it and it has not expired at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, JwtError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let header_json = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| JwtError::Malformed)?;
        if header_json != HEADER_JSON.as_bytes() {
            return Err(JwtError::Malformed);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| JwtError::Malformed)?;
        let mut mac = self.mac();
        mac.update(header.as_bytes());
        mac.update(b".");
        mac.update(payload.as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| JwtError::BadSignature)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| JwtError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| JwtError::Malformed)?;
        if claims.exp <= now {
            return Err(JwtError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: "u1".into(),
            username: "alice".into(),
            role: Role::User,
            csrf: "c".into(),
            iat: 0,
            exp,
        }
    }

    #[test]
    fn round_trip_and_rejections() {
        let key = JwtKey::new(b"0123456789abcdef0123456789abcdef").unwrap();
        let token = key.sign(&claims(100)).unwrap();
        assert_eq!(key.verify(&token, 50).unwrap(), claims(100));
        assert_eq!(key.verify(&token, 100), Err(JwtError::Expired));
        let other = JwtKey::new(b"another key another key another!").unwrap();
        assert_eq!(other.verify(&token, 50), Err(JwtError::BadSignature));
        assert_eq!(key.verify("a.b", 50), Err(JwtError::Malformed));
        // Tampered payload.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Claims {
                role: Role::Admin,
                ..claims(100)
            })
            .unwrap(),
        );
        parts[1] = &forged;
        assert_eq!(
            key.verify(&parts.join("."), 50),
            Err(JwtError::BadSignature)
        );
        // alg none.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            parts[1]
        );
        assert_eq!(key.verify(&none, 50), Err(JwtError::Malformed));
    }
}
