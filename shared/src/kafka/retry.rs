//! Exponential backoff with full jitter for retryable handler errors.

use std::time::Duration;

use rand::Rng;

use crate::config::RetryConfig;

/// The upper bound of the wait before retry number `attempt` (1-based: the wait after the first
/// failure is `attempt = 1`).
pub fn backoff_ceiling(cfg: &RetryConfig, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let ms = cfg
        .initial_backoff_ms
        .saturating_mul(1u64 << exponent)
        .min(cfg.max_backoff_ms);
    Duration::from_millis(ms)
}

/// A random wait in `[ceiling / 2, ceiling]`: jitter spreads retries of many consumers while the
/// lower bound keeps the schedule predictable for operators.
pub fn backoff(cfg: &RetryConfig, attempt: u32) -> Duration {
    let ceiling = backoff_ceiling(cfg, attempt).as_millis() as u64;
    let floor = ceiling / 2;
    Duration::from_millis(rand::rng().random_range(floor..=ceiling.max(floor)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RetryConfig {
        RetryConfig {
            max_attempts: 5,
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
        }
    }

    #[test]
    fn ceiling_doubles_per_attempt_until_the_cap() {
        let c = cfg();
        let ceilings: Vec<u128> = (1..=6)
            .map(|a| backoff_ceiling(&c, a).as_millis())
            .collect();
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1_000, 1_000]);
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        assert_eq!(backoff_ceiling(&cfg(), u32::MAX).as_millis(), 1_000);
    }

    #[test]
    fn jittered_wait_stays_between_half_and_full_ceiling() {
        let c = cfg();
        for attempt in 1..=8 {
            let ceiling = backoff_ceiling(&c, attempt);
            for _ in 0..50 {
                let wait = backoff(&c, attempt);
                assert!(
                    wait <= ceiling && wait >= ceiling / 2,
                    "{wait:?} vs {ceiling:?}"
                );
            }
        }
    }
}
