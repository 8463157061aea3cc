//! Outbound host patterns, in the form Spin's `allowed_outbound_hosts` made
//! familiar: `https://api.example.com`, `https://*.example.com:8443`,
//! `http://127.0.0.1:18080`, `http://10.0.0.0/8:8080`, `https://api.example.com:*`.
//!
//! The scheme is required (`http` or `https`); the port defaults from the
//! scheme (80, 443) and `*` means any port. A host is a DNS name, a name
//! with a leading `*.` (any subdomain, not the name itself), an IP literal
//! (IPv6 in brackets), or an IP network in CIDR form.
//!
//! Names and addresses are matched separately: a request to a name must
//! match a name pattern, a request to an IP literal an address pattern. And
//! because names resolve, the host checks every address a name resolves to
//! (see [`AllowedHost::names_address`]): an address in a private, loopback,
//! link-local or multicast range is reached only when a pattern names it
//! (literal or CIDR), never merely because a name resolved to it.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use thiserror::Error;

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// The port a URL of this scheme means when it names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The scheme named `text`, if it is one of the two.
    pub fn parse(text: &str) -> Option<Scheme> {
        match text.to_ascii_lowercase().as_str() {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }
}

/// An IP network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNetwork {
    address: IpAddr,
    prefix: u8,
}

impl IpNetwork {
    /// Whether `address` is inside the network.
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.address, canonical_ip(address)) {
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

/// What host a pattern matches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    /// Exactly this name (lowercase, no trailing dot).
    Name(String),
    /// Any name ending in `.SUFFIX` (stored with its leading dot).
    Subdomains(String),
    /// Exactly this address.
    Address(IpAddr),
    /// Any address in this network.
    Network(IpNetwork),
}

/// What port a pattern matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortMatch {
    Port(u16),
    Any,
}

/// One allowed outbound destination: scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    text: String,
    scheme: Scheme,
    host: HostMatch,
    port: PortMatch,
}

/// Why a host pattern was not understood. The text says what form is
/// expected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("`{pattern}` is not an outbound host: {reason} (write it as scheme://host[:port], for example https://api.example.com, https://*.example.com:8443, http://127.0.0.1:18080 or http://10.0.0.0/8:8080)")]
pub struct BadHostPattern {
    pattern: String,
    reason: &'static str,
}

impl FromStr for AllowedHost {
    type Err = BadHostPattern;

    fn from_str(text: &str) -> Result<Self, BadHostPattern> {
        let bad = |reason| BadHostPattern {
            pattern: text.to_owned(),
            reason,
        };
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| bad("the scheme is missing"))?;
        let scheme =
            Scheme::parse(scheme).ok_or_else(|| bad("the scheme must be http or https"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() {
            return Err(bad("the host is missing"));
        }
        // Split off the port: after a bracketed IPv6 host, or after the last
        // colon of anything else.
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (address, after) = inner
                .split_once(']')
                .ok_or_else(|| bad("an IPv6 address needs its closing bracket"))?;
            let (prefix, port) = match after.split_once(':') {
                Some((prefix, port)) => (prefix, Some(port)),
                None => (after, None),
            };
            (format!("{address}{prefix}"), port)
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), Some(port)),
                None => (rest.to_owned(), None),
            }
        };
        let port = match port {
            None => PortMatch::Port(scheme.default_port()),
            Some("*") => PortMatch::Any,
            Some(port) => PortMatch::Port(
                port.parse::<u16>()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| bad("the port must be 1 to 65535 or *"))?,
            ),
        };
        let host = parse_host(&host).map_err(bad)?;
        Ok(AllowedHost {
            text: text.to_owned(),
            scheme,
            host,
            port,
        })
    }
}

fn parse_host(host: &str) -> Result<HostMatch, &'static str> {
    if let Some((address, prefix)) = host.split_once('/') {
        let address: IpAddr = address
            .parse()
            .map_err(|_| "a network is an IP address, '/' and a prefix length")?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = prefix
            .parse::<u8>()
            .ok()
            .filter(|&p| p <= max)
            .ok_or("the prefix length is out of range")?;
        return Ok(HostMatch::Network(IpNetwork {
            address: canonical_ip(address),
            prefix,
        }));
    }
    if let Ok(address) = host.parse::<IpAddr>() {
        return Ok(HostMatch::Address(canonical_ip(address)));
    }
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    let (subdomains, bare) = match name.strip_prefix("*.") {
        Some(bare) => (true, bare),
        None => (false, name.as_str()),
    };
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if bare.is_empty() || !bare.split('.').all(label_ok) {
        return Err("the host must be a DNS name, *.name, an IP address or a network");
    }
    Ok(if subdomains {
        HostMatch::Subdomains(format!(".{bare}"))
    } else {
        HostMatch::Name(bare.to_owned())
    })
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is; others unchanged.
pub fn canonical_ip(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Where a request goes: its scheme, host (a lowercase name or an IP
/// literal) and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// The host as the request names it, lowercase, without brackets.
    pub host: String,
    /// The port, defaulted from the scheme.
    pub port: u16,
}

impl Destination {
    /// The destination of `uri`, if it has an http(s) scheme and a host.
    pub fn of(uri: &http::Uri) -> Option<Destination> {
        let scheme = Scheme::parse(uri.scheme_str()?)?;
        let host = uri.host()?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        Some(Destination {
            scheme,
            port: uri.port_u16().unwrap_or(scheme.default_port()),
            host,
        })
    }

    /// The host as an IP address, when it is a literal.
    pub fn address(&self) -> Option<IpAddr> {
        self.host.parse().ok().map(canonical_ip)
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address() {
            Some(IpAddr::V6(v6)) => write!(f, "{}://[{v6}]:{}", self.scheme.as_str(), self.port),
            _ => write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port),
        }
    }
}

impl AllowedHost {
    /// Whether a request to `destination` is allowed by this pattern.
    pub fn matches(&self, destination: &Destination) -> bool {
        if self.scheme != destination.scheme || !self.port_matches(destination.port) {
            return false;
        }
        match (&self.host, destination.address()) {
            (HostMatch::Name(name), None) => *name == destination.host,
            (HostMatch::Subdomains(suffix), None) => destination.host.ends_with(suffix.as_str()),
            (HostMatch::Address(allowed), Some(address)) => *allowed == address,
            (HostMatch::Network(network), Some(address)) => network.contains(address),
            _ => false,
        }
    }

    /// Whether this pattern names `address` for `scheme` and `port`
    /// explicitly, as a literal or inside a network: what an address in a
    /// special range needs to be reached.
    pub fn names_address(&self, scheme: Scheme, port: u16, address: IpAddr) -> bool {
        if self.scheme != scheme || !self.port_matches(port) {
            return false;
        }
        let address = canonical_ip(address);
        match &self.host {
            HostMatch::Address(allowed) => *allowed == address,
            HostMatch::Network(network) => network.contains(address),
            _ => false,
        }
    }

    fn port_matches(&self, port: u16) -> bool {
        match self.port {
            PortMatch::Port(allowed) => allowed == port,
            PortMatch::Any => true,
        }
    }
}

/// Whether `address` is in a range an outbound request must not reach
/// unless a grant names it: unspecified, loopback, private (RFC 1918, and
/// IPv6 unique local), shared (RFC 6598), link-local, multicast, broadcast,
/// documentation and benchmarking ranges, and the IPv4-mapped forms of all
/// of these.
pub fn is_special_address(address: IpAddr) -> bool {
    match canonical_ip(address) {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first == 0x2001 && v6.segments()[1] == 0x0db8)
                || (first == 0x0064 && v6.segments()[1] == 0xff9b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(uri: &str) -> Destination {
        Destination::of(&uri.parse().unwrap()).unwrap()
    }

    fn allowed(pattern: &str) -> AllowedHost {
        pattern.parse().unwrap()
    }

    #[test]
    fn names_ports_and_schemes() {
        let api = allowed("https://api.example.com");
        assert!(api.matches(&dest("https://api.example.com/v1")));
        assert!(api.matches(&dest("https://API.example.com:443/")));
        assert!(!api.matches(&dest("http://api.example.com/")));
        assert!(!api.matches(&dest("https://api.example.com:8443/")));
        assert!(!api.matches(&dest("https://evil.example.com/")));
        assert!(!api.matches(&dest("https://api.example.com.evil.net/")));

        let any = allowed("https://*.example.com:8443");
        assert!(any.matches(&dest("https://a.example.com:8443/")));
        assert!(any.matches(&dest("https://a.b.example.com:8443/")));
        assert!(!any.matches(&dest("https://example.com:8443/")));
        assert!(!any.matches(&dest("https://badexample.com:8443/")));

        let all_ports = allowed("http://localhost:*");
        assert!(all_ports.matches(&dest("http://localhost:1/")));
        assert!(all_ports.matches(&dest("http://localhost/")));
    }

    #[test]
    fn addresses_and_networks() {
        let local = allowed("http://127.0.0.1:18080");
        assert!(local.matches(&dest("http://127.0.0.1:18080/")));
        assert!(!local.matches(&dest("http://localhost:18080/")));
        assert!(local.names_address(Scheme::Http, 18080, "127.0.0.1".parse().unwrap()));
        assert!(local.names_address(Scheme::Http, 18080, "::ffff:127.0.0.1".parse().unwrap()));
        assert!(!local.names_address(Scheme::Http, 18081, "127.0.0.1".parse().unwrap()));

        let net = allowed("http://10.0.0.0/8:8080");
        assert!(net.matches(&dest("http://10.1.2.3:8080/")));
        assert!(!net.matches(&dest("http://11.1.2.3:8080/")));
        let v6 = allowed("https://[fd00::]/8");
        assert!(v6.matches(&dest("https://[fd12::1]/")));
        assert!(allowed("http://[::1]:9000").matches(&dest("http://[::1]:9000/")));
    }

    #[test]
    fn bad_patterns_say_what_is_expected() {
        for (pattern, reason) in [
            ("api.example.com", "scheme is missing"),
            ("ftp://x.org", "http or https"),
            ("https://", "host is missing"),
            ("https://x.org:0", "port"),
            ("https://x.org:http", "port"),
            ("https://10.0.0.0/33", "prefix length"),
            ("https://exa mple.com", "DNS name"),
            ("https://*.", "DNS name"),
        ] {
            let error = pattern.parse::<AllowedHost>().unwrap_err().to_string();
            assert!(error.contains(reason), "{pattern}: {error}");
            assert!(error.contains("scheme://host[:port]"), "{error}");
        }
    }

    #[test]
    fn special_ranges() {
        for special in [
            "127.0.0.1",
            "10.1.1.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::",
        ] {
            assert!(is_special_address(special.parse().unwrap()), "{special}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(!is_special_address(public.parse().unwrap()), "{public}");
        }
    }
}
