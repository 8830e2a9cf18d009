//! `[rate_limit]`: request budgets of the api (shared by its replicas through Redis), the login
//! lockout and the concurrent SSE streams per user. Also the CIDR type of `api.trusted_proxies`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};

/// `requests` per `per_seconds`, with bursts of up to `requests` (GCRA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateRule {
    pub requests: u32,
    pub per_seconds: u32,
}

impl RateRule {
    pub const fn new(requests: u32, per_seconds: u32) -> Self {
        Self {
            requests,
            per_seconds,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// `false` turns request budgets off (the lockout and the stream cap stay on).
    pub enabled: bool,
    /// The budget of every route without its own rule.
    pub default: RateRule,
    /// Rules keyed by `"METHOD /route/{pattern}"`, e.g. `"POST /api/v1/execute"`.
    pub routes: BTreeMap<String, RateRule>,
    /// Failed logins of one username within `lockout_window_seconds` that lock it...
    pub lockout_failures: u32,
    pub lockout_window_seconds: u64,
    /// ...for this long.
    pub lockout_seconds: u64,
    /// Server-Sent Event streams one user may hold open at once (on one api replica).
    pub max_streams_per_user: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        let routes = [
            ("POST /api/v1/auth/login", RateRule::new(20, 60)),
            ("POST /api/v1/auth/register", RateRule::new(10, 60)),
            ("POST /api/v1/execute", RateRule::new(60, 60)),
        ]
        .into_iter()
        .map(|(route, rule)| (route.to_owned(), rule))
        .collect();
        Self {
            enabled: true,
            default: RateRule::new(300, 60),
            routes,
            lockout_failures: 5,
            lockout_window_seconds: 900,
            lockout_seconds: 900,
            max_streams_per_user: 20,
        }
    }
}

impl RateLimitConfig {
    /// The rule of a route key (`"METHOD /pattern"`).
    pub fn rule_for(&self, route: &str) -> RateRule {
        self.routes.get(route).copied().unwrap_or(self.default)
    }
}

/// An address block such as `10.0.0.0/8` or `::1/128`; a bare address is a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 peer reached over an IPv6 socket is `::ffff:a.b.c.d`.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or CIDR block"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0-{max}"))?,
        };
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

fn check_rule(key: &str, rule: RateRule) -> Result<(), ConfigError> {
    if rule.requests == 0 || rule.per_seconds == 0 || rule.per_seconds > 86_400 {
        return Err(invalid(
            key,
            "requests must be at least 1 and per_seconds 1-86400",
        ));
    }
    Ok(())
}

impl Config {
    pub(super) fn validate_rate_limit(&self) -> Result<(), ConfigError> {
        let r = &self.rate_limit;
        check_rule("rate_limit.default", r.default)?;
        for (route, rule) in &r.routes {
            let key = format!("rate_limit.routes.\"{route}\"");
            let well_formed = route.split_once(' ').is_some_and(|(method, path)| {
                !method.is_empty()
                    && method.bytes().all(|b| b.is_ascii_uppercase())
                    && path.starts_with('/')
            });
            if !well_formed {
                return Err(invalid(&key, "the key must be \"METHOD /path\""));
            }
            check_rule(&key, *rule)?;
        }
        if r.lockout_failures == 0 || r.lockout_window_seconds == 0 || r.lockout_seconds == 0 {
            return Err(invalid(
                "rate_limit.lockout_failures",
                "lockout_failures, lockout_window_seconds and lockout_seconds must be at least 1",
            ));
        }
        if !(1..=1000).contains(&r.max_streams_per_user) {
            return Err(invalid("rate_limit.max_streams_per_user", "must be 1-1000"));
        }
        for (i, proxy) in self.api.trusted_proxies.iter().enumerate() {
            proxy
                .parse::<Cidr>()
                .map_err(|reason| invalid(&format!("api.trusted_proxies[{i}]"), reason))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cidr_membership() {
        let block: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(block.contains("10.1.200.3".parse().unwrap()));
        assert!(!block.contains("10.2.0.1".parse().unwrap()));
        assert!(block.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope".parse::<Cidr>().is_err());
    }

    #[test]
    fn routes_fall_back_to_the_default() {
        let config = RateLimitConfig::default();
        assert_eq!(
            config.rule_for("POST /api/v1/execute"),
            RateRule::new(60, 60)
        );
        assert_eq!(config.rule_for("GET /api/v1/scripts"), config.default);
    }
}
