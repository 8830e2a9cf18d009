//! Who an API token belongs to, remembered for a few seconds.
//!
//! Clients send their token with every request; looking it and its user up each time costs the
//! database two reads (and a write for `last_used_at`) per request, more than the request itself.
//! An entry lives [`TTL`]: a token revoked on another replica stops working within it (on this
//! replica at once: revoking clears the cache). `last_used_at` is written at most once per
//! [`LAST_USED_EVERY`] per token.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::CurrentUser;

pub const TTL: Duration = Duration::from_secs(5);
pub const LAST_USED_EVERY: Duration = Duration::from_secs(60);
/// Entries kept at most; beyond it expired ones are dropped, then everything.
const CAPACITY: usize = 10_000;

#[derive(Debug, Clone)]
pub struct CachedToken {
    pub token_id: String,
    pub user: CurrentUser,
    cached_at: Instant,
}

#[derive(Debug, Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<String, CachedToken>>,
    last_used: Mutex<HashMap<String, Instant>>,
}

impl TokenCache {
    /// The live entry for a token hash.
    pub fn get(&self, hash: &str) -> Option<CachedToken> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(hash)
            .filter(|entry| entry.cached_at.elapsed() < TTL)
            .cloned()
    }

    pub fn insert(&self, hash: String, token_id: String, user: CurrentUser) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= CAPACITY {
            entries.retain(|_, entry| entry.cached_at.elapsed() < TTL);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        let cached_at = Instant::now();
        entries.insert(
            hash,
            CachedToken {
                token_id,
                user,
                cached_at,
            },
        );
    }

    /// Forgets every token (a revocation: the revoked one's hash is not at hand).
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Whether `last_used_at` of `token_id` is due for a write; marks it written if so.
    pub fn last_used_due(&self, token_id: &str) -> bool {
        let mut last_used = self
            .last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if last_used
            .get(token_id)
            .is_some_and(|at| now.duration_since(*at) < LAST_USED_EVERY)
        {
            return false;
        }
        if last_used.len() >= CAPACITY {
            last_used.retain(|_, at| now.duration_since(*at) < LAST_USED_EVERY);
        }
        last_used.insert(token_id.to_owned(), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn user() -> CurrentUser {
        CurrentUser {
            id: "u1".into(),
            username: "user".into(),
            role: Role::User,
        }
    }

    #[test]
    fn a_cached_token_is_found_until_cleared() {
        let cache = TokenCache::default();
        assert!(cache.get("h").is_none());
        cache.insert("h".into(), "t1".into(), user());
        assert_eq!(cache.get("h").map(|e| e.user), Some(user()));
        cache.clear();
        assert!(cache.get("h").is_none());
    }

    #[test]
    fn last_used_is_due_once_per_interval() {
        let cache = TokenCache::default();
        assert!(cache.last_used_due("t1"));
        assert!(!cache.last_used_due("t1"));
        assert!(cache.last_used_due("t2"));
    }
}
