//! Input rules for accounts and tokens.

use crate::error::ApiError;

pub const MIN_PASSWORD: usize = 8;
/// argon2 accepts longer passwords, but a bound keeps one request's hashing cost bounded.
pub const MAX_PASSWORD: usize = 1024;
const MAX_EMAIL: usize = 254;
const MAX_TOKEN_NAME: usize = 64;

pub fn username(value: &str) -> Result<(), ApiError> {
    let ok = (3..=32).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_username",
            "username: 3-32 characters of a-z, 0-9, '_', '.', '-'",
        ))
    }
}

/// A pragmatic check (one `@`, a dotted domain, no spaces); delivery is the real test.
pub fn email(value: &str) -> Result<(), ApiError> {
    let ok = value.len() <= MAX_EMAIL
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        && match value.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            }
            None => false,
        };
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_email",
            "email is not a valid address",
        ))
    }
}

pub fn password(value: &str) -> Result<(), ApiError> {
    if value.chars().count() < MIN_PASSWORD {
        return Err(ApiError::bad_request(
            "weak_password",
            "password: at least 8 characters",
        ));
    }
    if value.len() > MAX_PASSWORD {
        return Err(ApiError::bad_request(
            "invalid_password",
            "password: at most 1024 bytes",
        ));
    }
    Ok(())
}

pub fn token_name(value: &str) -> Result<(), ApiError> {
    let trimmed = value.trim();
    if trimmed.is_empty() || trimmed.chars().count() > MAX_TOKEN_NAME {
        return Err(ApiError::bad_request(
            "invalid_token_name",
            "name: 1-64 characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(username("ab").is_err());
        assert!(username("Alice").is_err());
        assert!(username("alice.b-c_1").is_ok());
        assert!(username(&"a".repeat(33)).is_err());
        assert!(email("a@b.co").is_ok());
        assert!(email("a@b").is_err());
        assert!(email("a b@c.d").is_err());
        assert!(email("@c.d").is_err());
        assert!(password("1234567").is_err());
        assert!(password("12345678").is_ok());
        assert!(token_name("  ").is_err());
        assert!(token_name("ci").is_ok());
    }
}
