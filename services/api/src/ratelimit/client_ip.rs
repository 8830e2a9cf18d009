//! Which address a request comes from. `X-Forwarded-For` is believed only as far as it was
//! written by trusted proxies: from an untrusted peer the peer's own address counts, so a client
//! cannot pick its own rate-limit bucket by sending the header.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use shared::config::Cidr;

const FORWARDED_FOR: &str = "x-forwarded-for";

fn trusted(ip: IpAddr, proxies: &[Cidr]) -> bool {
    proxies.iter().any(|block| block.contains(ip))
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the nearest address
/// in `X-Forwarded-For` (read right to left) that is not a trusted proxy itself.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, proxies: &[Cidr]) -> Option<IpAddr> {
    let peer = peer?;
    if !trusted(peer, proxies) {
        return Some(peer);
    }
    let hops: Vec<&str> = headers
        .get_all(FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        // A hop we cannot read ends what we can believe; the last proxy is then the client.
        let Some(ip) = parse_hop(hop) else {
            break;
        };
        client = ip;
        if !trusted(ip, proxies) {
            break;
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_header_counts_only_from_trusted_proxies() {
        let proxies: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut headers = HeaderMap::new();
        headers.insert(
            FORWARDED_FOR,
            HeaderValue::from_static("6.6.6.6, 1.2.3.4, 10.0.0.7"),
        );
        // Spoofed by a client that connects directly: ignored.
        assert_eq!(
            client_ip(Some(ip("9.9.9.9")), &headers, &proxies),
            Some(ip("9.9.9.9"))
        );
        // Through our proxies: the first untrusted hop from the right.
        assert_eq!(
            client_ip(Some(ip("10.0.0.1")), &headers, &proxies),
            Some(ip("1.2.3.4"))
        );
        headers.insert(FORWARDED_FOR, HeaderValue::from_static("junk, 10.0.0.9"));
        assert_eq!(
            client_ip(Some(ip("10.0.0.1")), &headers, &proxies),
            Some(ip("10.0.0.9"))
        );
        headers.insert(FORWARDED_FOR, HeaderValue::from_static("1.2.3.4:5678"));
        assert_eq!(
            client_ip(Some(ip("10.0.0.1")), &headers, &proxies),
            Some(ip("1.2.3.4"))
        );
        assert_eq!(
            client_ip(Some(ip("10.0.0.1")), &HeaderMap::new(), &proxies),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(client_ip(None, &headers, &proxies), None);
    }
}
