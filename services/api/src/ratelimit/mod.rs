//! Request budgets in Redis, shared by every api replica: one GCRA bucket per route and caller.
//! The caller is the signed-in user, or the client address when the request carries no valid
//! credentials (login, register, public routes); see [`client_ip`] for when a forwarded address
//! is believed. Rules come from `[rate_limit]`, per-user overrides from MongoDB.
//!
//! Every limited response carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
//! `X-RateLimit-Reset` (seconds until the bucket is full); a refused one is 429 `rate_limited`
//! with `Retry-After`. SSE streams are not metered here: they are capped by concurrent count.

pub mod client_ip;
mod gcra;
pub mod lockout;
pub mod overrides;

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mongodb::Database;
use shared::config::{Cidr, Config, RateLimitConfig};

pub use gcra::{Decision, Gcra};
pub use lockout::Lockout;
pub use overrides::Overrides;

use crate::auth::CurrentUser;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Clone)]
pub struct RateLimiter {
    config: RateLimitConfig,
    proxies: Vec<Cidr>,
    key_prefix: String,
    gcra: Gcra,
    pub overrides: Overrides,
    pub lockout: Lockout,
}

impl RateLimiter {
    pub fn new(config: &Config, db: &Database) -> Self {
        Self {
            config: config.rate_limit.clone(),
            // Validated at start-up; an entry that does not parse cannot be trusted anyway.
            proxies: config
                .api
                .trusted_proxies
                .iter()
                .filter_map(|p| p.parse().ok())
                .collect(),
            key_prefix: config.redis.key_prefix.clone(),
            gcra: Gcra::default(),
            overrides: Overrides::new(db),
            lockout: Lockout::new(config.rate_limit.clone(), config.redis.key_prefix.clone()),
        }
    }
}

fn seconds(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

fn set_headers(response: &mut Response, decision: &Decision) {
    let headers = response.headers_mut();
    let mut put = |name: &'static str, value: u64| {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
    };
    put("x-ratelimit-limit", u64::from(decision.limit));
    put("x-ratelimit-remaining", decision.remaining);
    put("x-ratelimit-reset", seconds(decision.reset_ms));
    if !decision.allowed {
        put("retry-after", seconds(decision.retry_after_ms).max(1));
    }
}

/// Middleware on the metered routes.
pub async fn enforce(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limiter = &state.rate_limiter;
    if !limiter.config.enabled {
        return next.run(request).await;
    }
    let Some(pattern) = request.extensions().get::<MatchedPath>().cloned() else {
        return next.run(request).await;
    };
    let route = format!("{} {}", request.method(), pattern.as_str());
    let (mut parts, body) = request.into_parts();
    let user = CurrentUser::from_request_parts(&mut parts, &state)
        .await
        .ok();
    let configured = limiter.config.rule_for(&route);
    let (caller, rule) = match &user {
        Some(user) => {
            let rule = match limiter.overrides.for_user(&user.id).await {
                Ok(Some(o)) => o.apply(&route, configured),
                Ok(None) => Some(configured),
                Err(error) => return error.into_response(),
            };
            (format!("user:{}", user.id), rule)
        }
        None => {
            let peer = parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip());
            let ip = client_ip::client_ip(peer, &parts.headers, &limiter.proxies);
            let ip = ip.map_or_else(|| "unknown".to_owned(), |ip: IpAddr| ip.to_string());
            (format!("ip:{ip}"), Some(configured))
        }
    };
    let request = Request::from_parts(parts, body);
    let Some(rule) = rule else {
        return next.run(request).await;
    };
    let key = format!("{}rl:{route}:{caller}", limiter.key_prefix);
    let decision = match limiter.gcra.take(&state.redis, &key, rule).await {
        Ok(decision) => decision,
        // Redis is down: serve rather than refuse everyone; the failure shows in the log.
        Err(error) => {
            tracing::warn!(%error, "rate limit check failed; request let through");
            return next.run(request).await;
        }
    };
    let mut response = if decision.allowed {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "too many requests; try again in {} s",
                seconds(decision.retry_after_ms).max(1)
            ),
        )
        .into_response()
    };
    set_headers(&mut response, &decision);
    response
}
