//! `[dlq]`: how dlq-processor retries dead-lettered messages. Each message falls into one policy by
//! the category of its original topic's event type; a policy says how often, how far apart and for
//! how long the message is re-published before it is parked for an admin.

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, RetryConfig};
use crate::events::Category;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DlqConfig {
    /// How often the scheduler looks for messages whose next attempt is due.
    pub scan_interval_ms: u64,
    /// A claimed message whose re-publish was not recorded within this time (its instance died)
    /// may be claimed again by another instance.
    pub claim_lease_seconds: u64,
    /// How often the pending-messages gauge is refreshed from MongoDB.
    pub gauge_interval_seconds: u64,
    /// `create_pod_command`, `delete_pod_command`.
    pub commands: DlqPolicy,
    /// `execution_*`, `pod_*` and `saga_*` events.
    pub execution_events: DlqPolicy,
    /// `result_stored`, `result_failed`.
    pub results: DlqPolicy,
    /// Everything else, including topics Kiln does not know.
    pub default: DlqPolicy,
}

/// Exponential backoff with jitter between re-publishes, bounded by a number of attempts and an
/// age (from the first failure).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DlqPolicy {
    /// Re-publishes before the message is parked.
    pub max_attempts: u32,
    /// The wait before the first re-publish; doubled per attempt up to `max_backoff_ms`, then
    /// jittered into `[wait / 2, wait]`.
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// A message this old (since its first failure) is parked instead of re-published.
    pub max_age_seconds: u64,
}

impl DlqPolicy {
    const fn new(max_attempts: u32, initial_backoff_ms: u64, max_age_seconds: u64) -> Self {
        Self {
            max_attempts,
            initial_backoff_ms,
            max_backoff_ms: 3_600_000,
            max_age_seconds,
        }
    }

    /// The policy as the backoff settings `shared::kafka::retry` computes waits from.
    pub fn backoff(&self) -> RetryConfig {
        RetryConfig {
            max_attempts: self.max_attempts,
            initial_backoff_ms: self.initial_backoff_ms,
            max_backoff_ms: self.max_backoff_ms,
        }
    }
}

impl Default for DlqPolicy {
    fn default() -> Self {
        Self::new(5, 60_000, 3 * 24 * 3_600)
    }
}

impl Default for DlqConfig {
    fn default() -> Self {
        Self {
            scan_interval_ms: 1_000,
            claim_lease_seconds: 60,
            gauge_interval_seconds: 15,
            // A stale command could create a pod for an execution that has long timed out, so
            // commands get a short life.
            commands: DlqPolicy::new(3, 10_000, 15 * 60),
            execution_events: DlqPolicy::new(5, 30_000, 24 * 3_600),
            results: DlqPolicy::new(8, 30_000, 3 * 24 * 3_600),
            default: DlqPolicy::default(),
        }
    }
}

impl DlqConfig {
    /// The policy name and policy for messages of `category` (`None`: not a Kiln event topic).
    pub fn policy_for(&self, category: Option<Category>) -> (&'static str, &DlqPolicy) {
        match category {
            Some(Category::Command) => ("commands", &self.commands),
            Some(Category::Execution | Category::Executor | Category::Saga) => {
                ("execution_events", &self.execution_events)
            }
            Some(Category::Result) => ("results", &self.results),
            Some(Category::Dlq) | None => ("default", &self.default),
        }
    }

    fn policies(&self) -> [(&'static str, &DlqPolicy); 4] {
        [
            ("commands", &self.commands),
            ("execution_events", &self.execution_events),
            ("results", &self.results),
            ("default", &self.default),
        ]
    }
}

fn invalid(key: String, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.to_owned(),
    }
}

impl Config {
    pub(crate) fn validate_dlq(&self) -> Result<(), ConfigError> {
        let d = &self.dlq;
        for (key, value) in [
            ("scan_interval_ms", d.scan_interval_ms),
            ("claim_lease_seconds", d.claim_lease_seconds),
            ("gauge_interval_seconds", d.gauge_interval_seconds),
        ] {
            if value == 0 {
                return Err(invalid(format!("dlq.{key}"), "must be at least 1"));
            }
        }
        // A lease shorter than a publish may take would let a second instance re-publish a
        // message whose first re-publish is still in flight.
        if d.claim_lease_seconds * 1_000 <= u64::from(self.kafka.delivery_timeout_ms) {
            return Err(invalid(
                "dlq.claim_lease_seconds".into(),
                "must exceed kafka.delivery_timeout_ms",
            ));
        }
        for (name, policy) in d.policies() {
            if policy.max_attempts == 0 {
                return Err(invalid(
                    format!("dlq.{name}.max_attempts"),
                    "must be at least 1",
                ));
            }
            if policy.initial_backoff_ms == 0 {
                return Err(invalid(
                    format!("dlq.{name}.initial_backoff_ms"),
                    "must be at least 1",
                ));
            }
            if policy.max_backoff_ms < policy.initial_backoff_ms {
                return Err(invalid(
                    format!("dlq.{name}.max_backoff_ms"),
                    "must be at least initial_backoff_ms",
                ));
            }
            if policy.max_age_seconds == 0 {
                return Err(invalid(
                    format!("dlq.{name}.max_age_seconds"),
                    "must be at least 1",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid_key(config: &Config) -> Option<String> {
        match config.validate_dlq() {
            Err(ConfigError::Invalid { key, .. }) => Some(key),
            _ => None,
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert!(Config::default().validate_dlq().is_ok());
    }

    #[test]
    fn each_category_has_its_policy() {
        let d = DlqConfig::default();
        assert_eq!(d.policy_for(Some(Category::Command)).0, "commands");
        assert_eq!(d.policy_for(Some(Category::Executor)).0, "execution_events");
        assert_eq!(d.policy_for(Some(Category::Result)).0, "results");
        assert_eq!(d.policy_for(None).0, "default");
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut config = Config::default();
        config.dlq.results.max_attempts = 0;
        assert_eq!(
            invalid_key(&config).as_deref(),
            Some("dlq.results.max_attempts")
        );
        let mut config = Config::default();
        config.dlq.commands.max_backoff_ms = 1;
        assert_eq!(
            invalid_key(&config).as_deref(),
            Some("dlq.commands.max_backoff_ms")
        );
        let mut config = Config::default();
        config.dlq.claim_lease_seconds = 1;
        assert_eq!(
            invalid_key(&config).as_deref(),
            Some("dlq.claim_lease_seconds")
        );
    }
}
