//! The concurrency slots in use, as the scheduler knows them between counts.
//!
//! Counting them reads every active saga, and a pass that did so each time cost a query per
//! scheduled execution. Only the lease holder takes slots, and everything else (an execution
//! ending, a cancel, a sweep) frees them, so the last count plus the slots granted since is an
//! upper bound: while it shows room there is room. The scheduler counts again only when this
//! bound says a cap is reached, when it is older than [`RECOUNT_EVERY`], and on taking the lease.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The bound is refreshed at least this often, so the running gauge follows the real count.
pub const RECOUNT_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Slots {
    by_user: HashMap<String, usize>,
    total: usize,
    counted_at: Instant,
}

/// Why a user may not take a slot now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// Every slot is taken: nobody can be scheduled.
    Global,
    /// This user holds its share; others may still be scheduled.
    User,
}

impl Slots {
    /// Slots as counted in MongoDB: active sagas by user.
    pub fn counted(by_user: HashMap<String, usize>) -> Self {
        let total = by_user.values().sum();
        Self {
            by_user,
            total,
            counted_at: Instant::now(),
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Too old to decide with (the gauge should see a fresh count now and then).
    pub fn stale(&self) -> bool {
        self.counted_at.elapsed() >= RECOUNT_EVERY
    }

    /// Whether `user` may take a slot under the caps.
    pub fn room_for(&self, user: &str, global_cap: usize, per_user_cap: usize) -> Result<(), Full> {
        if self.total >= global_cap {
            return Err(Full::Global);
        }
        if self.by_user.get(user).copied().unwrap_or(0) >= per_user_cap {
            return Err(Full::User);
        }
        Ok(())
    }

    /// Records a slot granted to `user`.
    pub fn take(&mut self, user: &str) {
        *self.by_user.entry(user.to_owned()).or_insert(0) += 1;
        self.total += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_apply_to_the_count_plus_what_was_granted_since() {
        let mut slots = Slots::counted(HashMap::from([("a".to_owned(), 1)]));
        assert_eq!(slots.room_for("a", 3, 2), Ok(()));
        slots.take("a");
        assert_eq!(slots.room_for("a", 3, 2), Err(Full::User));
        assert_eq!(slots.room_for("b", 3, 2), Ok(()));
        slots.take("b");
        assert_eq!(slots.total(), 3);
        assert_eq!(slots.room_for("c", 3, 2), Err(Full::Global));
    }

    #[test]
    fn a_fresh_count_is_not_stale() {
        assert!(!Slots::counted(HashMap::new()).stale());
    }
}
