//! Bounds the SSE streams one user holds open: each stream pins a Redis connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Gauge: SSE streams open in this replica (a slot is held for exactly the life of a stream).
pub(crate) const SSE_CONNECTIONS: &str = "kiln_sse_connections";

#[derive(Debug, Clone)]
pub struct StreamLimiter {
    max_per_user: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open stream; dropping it (the client went away or the stream ended) frees the slot.
#[derive(Debug)]
pub struct StreamSlot {
    user_id: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl StreamLimiter {
    pub fn new(max_per_user: usize) -> Self {
        Self {
            max_per_user,
            open: Arc::default(),
        }
    }

    /// A slot for `user_id`, or `None` when the user is at the limit.
    pub fn acquire(&self, user_id: &str) -> Option<StreamSlot> {
        // The map stays consistent even if a holder panicked, so a poisoned lock is usable.
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(user_id.to_owned()).or_insert(0);
        if *count >= self.max_per_user {
            return None;
        }
        *count += 1;
        ::metrics::gauge!(SSE_CONNECTIONS).increment(1.0);
        Some(StreamSlot {
            user_id: user_id.to_owned(),
            open: Arc::clone(&self.open),
        })
    }

    pub fn open_for(&self, user_id: &str) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(user_id).copied().unwrap_or(0)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        ::metrics::gauge!(SSE_CONNECTIONS).decrement(1.0);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.user_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.user_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_user_and_freed_on_drop() {
        let limiter = StreamLimiter::new(2);
        let a = limiter.acquire("u");
        let b = limiter.acquire("u");
        assert!(a.is_some() && b.is_some());
        assert!(limiter.acquire("u").is_none());
        assert!(limiter.acquire("v").is_some());
        drop(a);
        assert_eq!(limiter.open_for("u"), 1);
        assert!(limiter.acquire("u").is_some());
    }
}
