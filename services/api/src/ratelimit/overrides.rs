//! Per-user rate-limit overrides, kept in MongoDB (`rate_limit_overrides`, one document per
//! user) so they survive restarts. Each replica caches them briefly: a change made through
//! another replica applies here within [`CACHE_TTL`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bson::doc;
use chrono::{DateTime, Utc};
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};
use shared::config::RateRule;
use utoipa::ToSchema;

use crate::error::ApiError;

pub const RATE_LIMIT_OVERRIDES: &str = "rate_limit_overrides";
pub const CACHE_TTL: Duration = Duration::from_secs(5);
const MAX_MULTIPLIER: f64 = 1000.0;

/// A user's budgets, instead of the configured ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideRequest {
    /// No request budgets at all for this user (the login lockout still applies).
    #[serde(default)]
    pub exempt: bool,
    /// Scales every configured rule's `requests` (0 < multiplier <= 1000); default 1.
    #[serde(default = "one")]
    pub multiplier: f64,
    /// Exact rules for some routes, keyed like `rate_limit.routes` (`"POST /api/v1/execute"`).
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, Object>)]
    pub routes: BTreeMap<String, RateRule>,
    /// Why (for the next admin).
    #[serde(default)]
    pub note: String,
}

fn one() -> f64 {
    1.0
}

/// A stored override.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RateLimitOverride {
    #[serde(rename(serialize = "user_id", deserialize = "_id"))]
    pub user_id: String,
    pub exempt: bool,
    pub multiplier: f64,
    #[schema(value_type = BTreeMap<String, Object>)]
    pub routes: BTreeMap<String, RateRule>,
    pub note: String,
    #[serde(with = "bson::serde_helpers::chrono_datetime_as_bson_datetime")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}

/// What is written to MongoDB (`_id` is the user id).
#[derive(Debug, Serialize)]
struct OverrideDoc<'a> {
    #[serde(rename = "_id")]
    user_id: &'a str,
    exempt: bool,
    multiplier: f64,
    routes: &'a BTreeMap<String, RateRule>,
    note: &'a str,
    #[serde(with = "bson::serde_helpers::chrono_datetime_as_bson_datetime")]
    updated_at: DateTime<Utc>,
    updated_by: &'a str,
}

impl OverrideRequest {
    pub fn validate(&self) -> Result<(), ApiError> {
        let bad = |message: String| ApiError::bad_request("invalid_override", message);
        if !(self.multiplier > 0.0 && self.multiplier <= MAX_MULTIPLIER) {
            return Err(bad("multiplier: above 0 and at most 1000".into()));
        }
        for (route, rule) in &self.routes {
            let well_formed = route
                .split_once(' ')
                .is_some_and(|(m, p)| !m.is_empty() && p.starts_with("/api/"));
            if !well_formed {
                return Err(bad(format!("routes: `{route}` is not \"METHOD /api/...\"")));
            }
            if rule.requests == 0 || rule.per_seconds == 0 || rule.per_seconds > 86_400 {
                return Err(bad(format!(
                    "routes.\"{route}\": requests at least 1, per_seconds 1-86400"
                )));
            }
        }
        if self.note.chars().count() > 500 {
            return Err(bad("note: at most 500 characters".into()));
        }
        Ok(())
    }
}

impl RateLimitOverride {
    /// The rule for `route` given the configured one; `None` when the user is exempt.
    pub fn apply(&self, route: &str, configured: RateRule) -> Option<RateRule> {
        if self.exempt {
            return None;
        }
        if let Some(rule) = self.routes.get(route) {
            return Some(*rule);
        }
        let scaled = (f64::from(configured.requests) * self.multiplier).round();
        // Saturating float-to-int conversion; at least one request.
        let requests = (scaled as u32).max(1);
        Some(RateRule::new(requests, configured.per_seconds))
    }
}

/// When it was read, and what (`None`: the user has no override).
type Cached = (Instant, Option<RateLimitOverride>);

#[derive(Debug, Clone)]
pub struct Overrides {
    collection: Collection<RateLimitOverride>,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
}

impl Overrides {
    pub fn new(db: &Database) -> Self {
        Self {
            collection: db.collection(RATE_LIMIT_OVERRIDES),
            cache: Arc::default(),
        }
    }

    fn cached(&self, user_id: &str) -> Option<Option<RateLimitOverride>> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .get(user_id)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, value)| value.clone())
    }

    fn remember(&self, user_id: &str, value: Option<RateLimitOverride>) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
        cache.insert(user_id.to_owned(), (Instant::now(), value));
    }

    /// The user's override, from the cache when fresh.
    pub async fn for_user(&self, user_id: &str) -> Result<Option<RateLimitOverride>, ApiError> {
        if let Some(hit) = self.cached(user_id) {
            return Ok(hit);
        }
        let found = self.get(user_id).await?;
        self.remember(user_id, found.clone());
        Ok(found)
    }

    /// The stored override, bypassing the cache.
    pub async fn get(&self, user_id: &str) -> Result<Option<RateLimitOverride>, ApiError> {
        Ok(self.collection.find_one(doc! { "_id": user_id }).await?)
    }

    pub async fn put(
        &self,
        user_id: &str,
        request: &OverrideRequest,
        by: &str,
    ) -> Result<RateLimitOverride, ApiError> {
        let doc = OverrideDoc {
            user_id,
            exempt: request.exempt,
            multiplier: request.multiplier,
            routes: &request.routes,
            note: &request.note,
            updated_at: bson::DateTime::now().to_chrono(),
            updated_by: by,
        };
        self.collection
            .clone_with_type::<OverrideDoc<'_>>()
            .replace_one(doc! { "_id": user_id }, &doc)
            .upsert(true)
            .await?;
        let stored = RateLimitOverride {
            user_id: user_id.to_owned(),
            exempt: doc.exempt,
            multiplier: doc.multiplier,
            routes: request.routes.clone(),
            note: request.note.clone(),
            updated_at: doc.updated_at,
            updated_by: by.to_owned(),
        };
        self.remember(user_id, Some(stored.clone()));
        Ok(stored)
    }

    /// `true` if there was one.
    pub async fn delete(&self, user_id: &str) -> Result<bool, ApiError> {
        let outcome = self.collection.delete_one(doc! { "_id": user_id }).await?;
        self.remember(user_id, None);
        Ok(outcome.deleted_count == 1)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn overrides_scale_replace_or_exempt() {
        let mut o = RateLimitOverride {
            user_id: "u".into(),
            exempt: false,
            multiplier: 2.5,
            routes: BTreeMap::from([("POST /api/v1/execute".to_owned(), RateRule::new(1, 10))]),
            note: String::new(),
            updated_at: Utc::now(),
            updated_by: "admin".into(),
        };
        let rule = RateRule::new(10, 60);
        assert_eq!(
            o.apply("GET /api/v1/scripts", rule),
            Some(RateRule::new(25, 60))
        );
        assert_eq!(
            o.apply("POST /api/v1/execute", rule),
            Some(RateRule::new(1, 10))
        );
        o.multiplier = 0.001;
        assert_eq!(
            o.apply("GET /api/v1/scripts", rule),
            Some(RateRule::new(1, 60))
        );
        o.exempt = true;
        assert_eq!(o.apply("GET /api/v1/scripts", rule), None);
    }

    #[test]
    fn requests_are_validated() {
        let ok = OverrideRequest {
            exempt: false,
            multiplier: 2.0,
            routes: BTreeMap::new(),
            note: String::new(),
        };
        assert!(ok.validate().is_ok());
        for bad in [
            OverrideRequest {
                multiplier: 0.0,
                ..ok.clone()
            },
            OverrideRequest {
                multiplier: 1001.0,
                ..ok.clone()
            },
            OverrideRequest {
                routes: BTreeMap::from([("nope".to_owned(), RateRule::new(1, 1))]),
                ..ok.clone()
            },
            OverrideRequest {
                routes: BTreeMap::from([("GET /api/v1/x".to_owned(), RateRule::new(0, 1))]),
                ..ok
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
