//! Where a webhook may go: absolute http(s) URLs without credentials, and (unless
//! `--allow-private-webhooks`) only public addresses. A URL naming an IP is checked
//! when the job is created; every name is checked again after DNS resolution, per
//! delivery, and the request then goes to the address that was checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;

/// Longest accepted webhook URL.
pub const MAX_URL_CHARS: usize = 2048;

/// Why a webhook URL is not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("webhook_url must be at most {MAX_URL_CHARS} characters")]
    TooLong,
    #[error("webhook_url must be an absolute http:// or https:// URL: {0}")]
    Invalid(String),
    #[error("webhook_url must not carry a user name or password")]
    Credentials,
    #[error(
        "webhook_url points at {ip}, a {reason} address; webhooks go to public addresses only \
         (unless the server runs with --allow-private-webhooks)"
    )]
    Refused { ip: IpAddr, reason: &'static str },
}

/// Checks a webhook URL as given at job creation. Names are not resolved here (that
/// happens per delivery); an IP is checked now.
pub fn check_url(raw: &str, allow_private: bool) -> Result<Url, UrlError> {
    if raw.chars().count() > MAX_URL_CHARS {
        return Err(UrlError::TooLong);
    }
    // The schema's pattern, exactly: lower-case scheme, then `://`.
    if !raw.starts_with("http://") && !raw.starts_with("https://") {
        return Err(UrlError::Invalid(
            "it must start with http:// or https://".into(),
        ));
    }
    let url = Url::parse(raw).map_err(|err| UrlError::Invalid(err.to_string()))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::Invalid("it has no host".into()));
    }
    match host_ip(&url).map(|ip| (ip, refused(ip))) {
        Some((ip, Some(reason))) if !allow_private => Err(UrlError::Refused { ip, reason }),
        _ => Ok(url),
    }
}

/// The IP a URL names as its host (the URL parser has already turned forms such as
/// `0x7f.1` or `2130706433` into `127.0.0.1`); `None` for a name.
fn host_ip(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host)
        .parse()
        .ok()
}

/// The kind of a non-public address, or `None` for an address webhooks may reach.
pub fn refused(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => refused_v4(ip),
        IpAddr::V6(ip) => refused_v6(ip),
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "unspecified (0.0.0.0/8)",
        (127, _, _) => "loopback",
        (10, _, _) | (192, 168, _) => "private",
        (172, 16..=31, _) => "private",
        (169, 254, _) => "link-local (cloud metadata)",
        (100, 64..=127, _) => "shared (CGNAT)",
        (192, 0, 0) => "IETF protocol",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        _ if ip.is_broadcast() => "broadcast",
        (240..=255, _, _) => "reserved",
        _ => return None,
    })
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if let Some(v4) = embedded_v4(ip) {
        return refused_v4(v4);
    }
    let first = ip.segments()[0];
    Some(match first {
        // fd00:ec2::254 (the AWS metadata service over IPv6) is one of these.
        0xfc00..=0xfdff => "unique local (private)",
        0xfe80..=0xfebf => "link-local",
        0xfec0..=0xfeff => "site-local",
        0xff00..=0xffff => "multicast",
        _ => return None,
    })
}

/// The IPv4 address an IPv6 one stands for: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`) and NAT64 (`64:ff9b::a.b.c.d`) forms reach it.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s[..6] {
        [0, 0, 0, 0, 0, 0xffff] | [0, 0, 0, 0, 0, 0] | [0x64, 0xff9b, 0, 0, 0, 0] => Some(tail),
        _ => None,
    }
}

/// Why a delivery's host cannot be reached.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Every address of the host is refused: the delivery fails.
    #[error("refused: {0}")]
    Refused(String),
    /// Resolution failed (maybe for now): the delivery is retried.
    #[error("cannot resolve {host}: {error}")]
    Lookup { host: String, error: std::io::Error },
}

/// The address a delivery to `url` connects to: a name's first allowed address after
/// DNS resolution (`None` for a URL that names an IP, which is checked and used as is).
pub async fn pin(url: &Url, allow_private: bool) -> Result<Option<SocketAddr>, ResolveError> {
    let port = url.port_or_known_default().unwrap_or(80);
    let describe = |ip: IpAddr, reason: &str| format!("{ip} is a {reason} address");
    if let Some(ip) = host_ip(url) {
        return literal(ip, allow_private).map(|()| None);
    }
    let host = url
        .host_str()
        .ok_or_else(|| ResolveError::Refused("the URL has no host".into()))?;
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|error| ResolveError::Lookup {
            host: host.to_string(),
            error,
        })?
        .collect();
    if let Some(allowed) = addresses
        .iter()
        .find(|address| allow_private || refused(address.ip()).is_none())
    {
        return Ok(Some(*allowed));
    }
    let reasons: Vec<String> = addresses
        .iter()
        .filter_map(|address| refused(address.ip()).map(|reason| describe(address.ip(), reason)))
        .collect();
    Err(ResolveError::Refused(format!(
        "{host} resolves to no public address ({})",
        reasons.join(", ")
    )))
}

fn literal(ip: IpAddr, allow_private: bool) -> Result<(), ResolveError> {
    match refused(ip) {
        Some(reason) if !allow_private => {
            Err(ResolveError::Refused(format!("{ip} is a {reason} address")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(ip: &str) -> Option<&'static str> {
        refused(ip.parse().unwrap())
    }

    #[test]
    fn every_refused_ipv4_range() {
        for (ip, expected) in [
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("10.0.0.1", "private"),
            ("10.255.255.255", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("169.254.0.1", "link-local"),
            ("100.64.0.1", "shared"),
            ("100.127.255.255", "shared"),
            ("192.0.0.8", "IETF"),
            ("198.18.0.1", "benchmarking"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "broadcast"),
        ] {
            let found = kind(ip).unwrap_or_else(|| panic!("{ip} must be refused"));
            assert!(found.starts_with(expected), "{ip}: {found}");
        }
    }

    #[test]
    fn public_ipv4_neighbours_of_refused_ranges_pass() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.167.1.1",
            "192.169.0.1",
            "169.253.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "126.255.255.255",
            "128.0.0.1",
            "223.255.255.255",
            "198.20.0.1",
        ] {
            assert_eq!(kind(ip), None, "{ip} is public");
        }
    }

    #[test]
    fn every_refused_ipv6_range_and_embedded_ipv4() {
        for (ip, expected) in [
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fc00::1", "unique local"),
            ("fd12:3456::1", "unique local"),
            ("fd00:ec2::254", "unique local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.1.2.3", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:0.0.0.0", "unspecified"),
            ("::127.0.0.1", "loopback"),
            ("::192.168.0.1", "private"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("64:ff9b::100.64.0.1", "shared"),
        ] {
            let found = kind(ip).unwrap_or_else(|| panic!("{ip} must be refused"));
            assert!(found.starts_with(expected), "{ip}: {found}");
        }
        for ip in [
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "fbff::1",
        ] {
            assert_eq!(kind(ip), None, "{ip} is public");
        }
    }

    #[test]
    fn urls_are_checked_at_creation() {
        assert!(check_url("https://hooks.example.com/zeroshot?x=1", false).is_ok());
        assert!(
            check_url("http://localhost:9000/", false).is_ok(),
            "names wait for delivery"
        );
        assert!(check_url("http://8.8.8.8/", false).is_ok());
        for (raw, why) in [
            ("ftp://example.com/", "scheme"),
            ("HTTP://example.com/", "scheme case"),
            ("example.com/hook", "relative"),
            ("https://user:pw@example.com/", "credentials"),
            ("https://user@example.com/", "user name"),
            ("http://127.0.0.1:8080/", "loopback"),
            ("http://[::1]/", "loopback v6"),
            ("http://[::ffff:169.254.169.254]/", "mapped metadata"),
            ("http://169.254.169.254/latest/meta-data/", "metadata"),
            ("http://2130706433/", "decimal loopback"),
            ("http://0x7f.1/", "hex loopback"),
        ] {
            assert!(check_url(raw, false).is_err(), "{raw} ({why}) is refused");
        }
        assert!(check_url("http://127.0.0.1:8080/", true).is_ok());
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_CHARS));
        assert_eq!(check_url(&long, true), Err(UrlError::TooLong));
    }

    #[tokio::test]
    async fn names_are_pinned_to_a_checked_address() {
        let url = Url::parse("http://localhost:9/").unwrap();
        match pin(&url, false).await {
            Err(ResolveError::Refused(message)) => {
                assert!(message.contains("loopback"), "{message}")
            }
            other => panic!("localhost must be refused: {other:?}"),
        }
        let pinned = pin(&url, true).await.unwrap().expect("a name is pinned");
        assert!(pinned.ip().is_loopback());
        assert_eq!(pinned.port(), 9);
        let literal = Url::parse("http://127.0.0.1:9/").unwrap();
        assert!(matches!(
            pin(&literal, false).await,
            Err(ResolveError::Refused(_))
        ));
        assert_eq!(pin(&literal, true).await.unwrap(), None);
    }
}
