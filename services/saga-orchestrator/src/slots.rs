//! The concurrency slots in use, as the scheduler knows them between counts.
//!
//! Counting them reads every active saga, and a pass that did so each time cost a query per
//! scheduled execution. Only the lease holder takes slots, and everything else (an execution
//! ending, a cancel, a sweep) frees them, so the last count plus the slots granted since is an
//! upper bound: while it shows room there is room. The scheduler counts again only when this
//! bound says a cap is reached, when it is older than [`RECOUNT_EVERY`], and on taking the lease.
//!
//! The endings this replica writes itself ([`Freed`]) tighten the bound between counts: a slot
//! freed by an ending written after the count completed was in the count (or granted since), so
//! giving it back keeps the bound an upper one. Without this, a full system recounted on nearly
//! every pass, and a count reads every active saga.

use std::collections::HashMap;
use std::sync::Mutex;
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

    /// Gives back the slots of endings written after this count completed (earlier ones are
    /// not in it). An ending of unknown user frees a global slot only.
    pub fn release(&mut self, freed: &[FreedSlot]) {
        for slot in freed
            .iter()
            .filter(|slot| slot.written_at > self.counted_at)
        {
            self.total = self.total.saturating_sub(1);
            if let Some(used) = slot
                .user_id
                .as_deref()
                .and_then(|user| self.by_user.get_mut(user))
            {
                *used = used.saturating_sub(1);
            }
        }
    }
}

/// A slot this replica freed by ending a saga: whose, and when the ending's write was sent.
#[derive(Debug, Clone)]
pub struct FreedSlot {
    pub user_id: Option<String>,
    pub written_at: Instant,
}

/// Slots freed by this replica's handlers since the scheduler last looked.
#[derive(Debug, Default)]
pub struct Freed(Mutex<Vec<FreedSlot>>);

/// More unread entries than this means no scheduler pass reads them (not the leader): drop them.
const MAX_UNREAD: usize = 100_000;

impl Freed {
    /// Records an ending that moved a saga out of a slot-holding state; `written_at` is taken
    /// before its write was sent.
    pub fn record(&self, user_id: Option<String>, written_at: Instant) {
        let mut freed = self.lock();
        if freed.len() >= MAX_UNREAD {
            freed.clear();
        }
        freed.push(FreedSlot {
            user_id,
            written_at,
        });
    }

    /// Everything recorded since the last call.
    pub fn take(&self) -> Vec<FreedSlot> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<FreedSlot>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
    fn endings_written_after_the_count_give_their_slots_back() {
        let before = Instant::now();
        let mut slots = Slots::counted(HashMap::from([("a".to_owned(), 2), ("b".to_owned(), 1)]));
        let after = Instant::now() + Duration::from_millis(1);
        slots.release(&[
            // In flight while counting: maybe not in the count, so not given back.
            FreedSlot {
                user_id: Some("a".into()),
                written_at: before,
            },
            FreedSlot {
                user_id: Some("a".into()),
                written_at: after,
            },
            FreedSlot {
                user_id: None,
                written_at: after,
            },
        ]);
        assert_eq!(slots.total(), 1);
        assert_eq!(slots.room_for("a", 3, 2), Ok(()));
        assert_eq!(slots.room_for("b", 3, 1), Err(Full::User));
    }

    #[test]
    fn a_release_never_goes_below_zero() {
        let mut slots = Slots::counted(HashMap::new());
        let later = Instant::now() + Duration::from_millis(1);
        slots.release(&[FreedSlot {
            user_id: Some("a".into()),
            written_at: later,
        }]);
        assert_eq!(slots.total(), 0);
        assert_eq!(slots.room_for("a", 1, 1), Ok(()));
    }

    #[test]
    fn freed_slots_are_taken_once() {
        let freed = Freed::default();
        freed.record(Some("a".into()), Instant::now());
        assert_eq!(freed.take().len(), 1);
        assert!(freed.take().is_empty());
    }

    #[test]
    fn a_fresh_count_is_not_stale() {
        assert!(!Slots::counted(HashMap::new()).stale());
    }
}
