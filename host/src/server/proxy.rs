//! Clients behind a reverse proxy: which peers may speak for clients
//! (`[proxy] from`), the PROXY protocol header (v1 or v2) such a peer sends
//! ahead of TLS when it relays bytes, and the `X-Forwarded-For` header of
//! the HTTP request it relays when it terminates TLS itself.
//!
//! Only a trusted peer is believed. A connection from any other address
//! that starts with a PROXY header is refused: a client naming its own
//! address would otherwise dodge the per-address limits and write what it
//! likes into the audit log. Its `X-Forwarded-For` is ignored.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use tokio::io::{AsyncRead, AsyncReadExt as _};

/// The 12 bytes that open a PROXY protocol v2 header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest PROXY protocol v1 line, CRLF included.
const V1_MAX_LINE: usize = 107;
/// The most address and TLV bytes a v2 header may carry here.
const V2_MAX_BODY: usize = 4096;

/// Addresses, or networks in CIDR notation, given as `127.0.0.1`, `::1`,
/// `10.0.0.0/8` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    network: IpAddr,
    prefix: u8,
}

/// Why an address range did not parse.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an address or a network such as 10.0.0.0/8")]
pub struct BadAddressRange(String);

impl FromStr for AddressRange {
    type Err = BadAddressRange;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadAddressRange(text.to_owned());
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.trim().parse().map_err(|_| bad())?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(bad)?,
        };
        Ok(AddressRange { network, prefix })
    }
}

impl std::fmt::Display for AddressRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl AddressRange {
    /// Whether `address` is in the range (an IPv4-mapped IPv6 address
    /// counts as its IPv4 address).
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

/// The peers allowed to speak for clients: `[proxy] from`. Empty by
/// default, so nobody is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<AddressRange>);

impl TrustedProxies {
    /// The proxies in `ranges`.
    pub fn new(ranges: Vec<AddressRange>) -> TrustedProxies {
        TrustedProxies(ranges)
    }

    /// Whether `address` is a trusted proxy.
    pub fn contains(&self, address: IpAddr) -> bool {
        self.0.iter().any(|range| range.contains(address))
    }

    /// The ranges, as configured.
    pub fn ranges(&self) -> &[AddressRange] {
        &self.0
    }
}

/// Why a connection was refused before TLS.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyHeaderError {
    /// A PROXY header from a peer that is not a trusted proxy.
    #[error("a PROXY protocol header from {0}, which is not in [proxy] from")]
    Untrusted(IpAddr),
    /// A trusted proxy sent a header that does not parse.
    #[error("a malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    /// The connection failed or closed first.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The client's address, from the PROXY header a trusted proxy sends ahead
/// of TLS, or the peer's own; and the bytes read past the header, which
/// belong to TLS.
pub(crate) async fn read_client_address<S: AsyncRead + Unpin>(
    stream: &mut S,
    peer: SocketAddr,
    trusted: &TrustedProxies,
) -> Result<(SocketAddr, Vec<u8>), ProxyHeaderError> {
    let mut read = Vec::with_capacity(256);
    fill(stream, &mut read, 1).await?;
    let kind = loop {
        match header_kind(&read) {
            Some(kind) => break kind,
            None => fill_more(stream, &mut read).await?,
        }
    };
    if kind == HeaderKind::None {
        return Ok((peer, read));
    }
    if !trusted.contains(peer.ip()) {
        return Err(ProxyHeaderError::Untrusted(peer.ip()));
    }
    let (client, used) = match kind {
        HeaderKind::V1 => loop {
            if let Some(end) = read.windows(2).position(|w| w == b"\r\n") {
                break (parse_v1(&read[..end])?, end + 2);
            }
            if read.len() >= V1_MAX_LINE {
                return Err(ProxyHeaderError::Malformed(
                    "a v1 line longer than 107 bytes",
                ));
            }
            fill_more(stream, &mut read).await?;
        },
        _ => {
            fill(stream, &mut read, 16).await?;
            let length = usize::from(u16::from_be_bytes([read[14], read[15]]));
            if length > V2_MAX_BODY {
                return Err(ProxyHeaderError::Malformed("a v2 header longer than 4 KiB"));
            }
            fill(stream, &mut read, 16 + length).await?;
            (parse_v2(&read[..16 + length])?, 16 + length)
        }
    };
    read.drain(..used);
    Ok((client.unwrap_or(peer), read))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderKind {
    None,
    V1,
    V2,
}

/// What the first bytes are, or `None` while they could still be either.
fn header_kind(read: &[u8]) -> Option<HeaderKind> {
    for (signature, kind) in [
        (&b"PROXY "[..], HeaderKind::V1),
        (&V2_SIGNATURE[..], HeaderKind::V2),
    ] {
        let n = read.len().min(signature.len());
        if read[..n] == signature[..n] {
            return (n == signature.len()).then_some(kind);
        }
    }
    Some(HeaderKind::None)
}

/// Reads until `read` holds at least `want` bytes.
async fn fill<S: AsyncRead + Unpin>(
    stream: &mut S,
    read: &mut Vec<u8>,
    want: usize,
) -> io::Result<()> {
    let mut chunk = [0u8; 512];
    while read.len() < want {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        read.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

/// Reads at least one more byte into `read`.
async fn fill_more<S: AsyncRead + Unpin>(stream: &mut S, read: &mut Vec<u8>) -> io::Result<()> {
    let want = read.len() + 1;
    fill(stream, read, want).await
}

/// `PROXY TCP4 192.0.2.1 198.51.100.1 56324 443` (without CRLF): the
/// source address; `None` for `PROXY UNKNOWN`.
fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let bad = |what| ProxyHeaderError::Malformed(what);
    let line = std::str::from_utf8(line).map_err(|_| bad("a v1 line that is not ASCII"))?;
    let mut fields = line.split(' ');
    fields.next(); // "PROXY"
    let family = fields
        .next()
        .ok_or_else(|| bad("a v1 line without a protocol"))?;
    if family == "UNKNOWN" {
        return Ok(None);
    }
    let (source, _destination, port) = (fields.next(), fields.next(), fields.next());
    let source: IpAddr = source
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("a v1 line without a valid source address"))?;
    let port: u16 = port
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| bad("a v1 line without a valid source port"))?;
    match (family, source) {
        ("TCP4", IpAddr::V4(_)) | ("TCP6", IpAddr::V6(_)) => {
            Ok(Some(SocketAddr::new(source, port)))
        }
        _ => Err(bad(
            "a v1 line whose protocol is not TCP4 or TCP6 of its address",
        )),
    }
}

/// A whole v2 header: the source address of a `PROXY` command over TCP or
/// UDP; `None` for `LOCAL` (the proxy's own health checks) or another
/// family.
fn parse_v2(header: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let bad = |what| ProxyHeaderError::Malformed(what);
    let version_command = header[12];
    if version_command >> 4 != 2 {
        return Err(bad("a v2 header of another version"));
    }
    let body = &header[16..];
    match version_command & 0x0f {
        0 => return Ok(None),
        1 => {}
        _ => return Err(bad("a v2 header with an unknown command")),
    }
    match header[13] >> 4 {
        1 if body.len() >= 12 => {
            let address = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let port = u16::from_be_bytes([body[8], body[9]]);
            Ok(Some(SocketAddr::new(IpAddr::V4(address), port)))
        }
        2 if body.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            let port = u16::from_be_bytes([body[32], body[33]]);
            Ok(Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(octets)),
                port,
            )))
        }
        1 | 2 => Err(bad("a v2 header too short for its addresses")),
        _ => Ok(None),
    }
}

/// The client a trusted proxy relayed an HTTP request for: walking
/// `X-Forwarded-For` from the right (the entry the nearest proxy added),
/// the first address that is not itself a trusted proxy. A request from any
/// other peer, or without the header, is the peer's own.
pub(crate) fn forwarded_client(
    headers: &hyper::HeaderMap,
    peer: SocketAddr,
    trusted: &TrustedProxies,
) -> SocketAddr {
    if !trusted.contains(peer.ip()) {
        return peer;
    }
    let mut client = peer;
    let entries = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect::<Vec<_>>();
    for entry in entries.iter().rev() {
        let Some(address) = parse_forwarded_address(entry.trim()) else {
            // Past what a proxy wrote: nothing further left is believable.
            return client;
        };
        client = SocketAddr::new(address, 0);
        if !trusted.contains(address) {
            return client;
        }
    }
    client
}

/// `192.0.2.1`, `2001:db8::1`, `192.0.2.1:4711` or `[2001:db8::1]:4711`.
fn parse_forwarded_address(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(ranges: &[&str]) -> TrustedProxies {
        TrustedProxies::new(ranges.iter().map(|r| r.parse().unwrap()).collect())
    }

    #[test]
    fn ranges_match_their_networks_only() {
        let range: AddressRange = "10.1.0.0/16".parse().unwrap();
        assert!(range.contains("10.1.200.3".parse().unwrap()));
        assert!(!range.contains("10.2.0.1".parse().unwrap()));
        assert!(range.contains("::ffff:10.1.0.9".parse().unwrap()));
        let single: AddressRange = "::1".parse().unwrap();
        assert!(single.contains("::1".parse().unwrap()));
        assert!(!single.contains("::2".parse().unwrap()));
        let everything: AddressRange = "0.0.0.0/0".parse().unwrap();
        assert!(everything.contains("203.0.113.9".parse().unwrap()));
        assert!(!everything.contains("2001:db8::1".parse().unwrap()));
        for bad in [
            "10.0.0.0/33",
            "10.0.0",
            "host.example",
            "::/129",
            "10.0.0.0/x",
        ] {
            assert!(bad.parse::<AddressRange>().is_err(), "{bad}");
        }
    }

    async fn read(
        bytes: &[u8],
        peer: &str,
        from: &[&str],
    ) -> Result<(SocketAddr, Vec<u8>), String> {
        let peer: SocketAddr = peer.parse().unwrap();
        let mut stream = bytes;
        match read_client_address(&mut stream, peer, &trusted(from)).await {
            Ok((client, mut rest)) => {
                rest.extend_from_slice(stream);
                Ok((client, rest))
            }
            Err(error) => Err(error.to_string()),
        }
    }

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut header = V2_SIGNATURE.to_vec();
        header.push(0x20 | command);
        header.push(family);
        header.extend_from_slice(&(body.len() as u16).to_be_bytes());
        header.extend_from_slice(body);
        header
    }

    #[tokio::test]
    async fn a_trusted_proxy_names_the_client_and_the_rest_is_replayed() {
        let from = ["127.0.0.1"];
        let mut bytes = b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 8765\r\n".to_vec();
        bytes.extend_from_slice(b"\x16\x03\x01hello");
        let (client, rest) = read(&bytes, "127.0.0.1:5000", &from).await.unwrap();
        assert_eq!(client, "203.0.113.7:40000".parse().unwrap());
        assert_eq!(rest, b"\x16\x03\x01hello");

        let mut body = vec![203, 0, 113, 8, 127, 0, 0, 1];
        body.extend_from_slice(&4711u16.to_be_bytes());
        body.extend_from_slice(&8765u16.to_be_bytes());
        body.extend_from_slice(&[1, 0, 1, 0xff]); // a TLV, skipped
        let mut bytes = v2(1, 0x11, &body);
        bytes.extend_from_slice(b"\x16tls");
        let (client, rest) = read(&bytes, "127.0.0.1:5000", &from).await.unwrap();
        assert_eq!(client, "203.0.113.8:4711".parse().unwrap());
        assert_eq!(rest, b"\x16tls");

        let mut body = "2001:db8::5".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        body.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        body.extend_from_slice(&[0, 80, 0, 81]);
        let (client, _) = read(&v2(1, 0x21, &body), "127.0.0.1:5000", &from)
            .await
            .unwrap();
        assert_eq!(client, "[2001:db8::5]:80".parse().unwrap());

        // LOCAL and UNKNOWN: the proxy speaks for itself.
        let (client, _) = read(&v2(0, 0x00, &[]), "127.0.0.1:5000", &from)
            .await
            .unwrap();
        assert_eq!(client, "127.0.0.1:5000".parse().unwrap());
        let (client, _) = read(b"PROXY UNKNOWN\r\n\x16", "127.0.0.1:5000", &from)
            .await
            .unwrap();
        assert_eq!(client, "127.0.0.1:5000".parse().unwrap());
    }

    #[tokio::test]
    async fn without_a_header_the_peer_is_the_client_and_nothing_is_lost() {
        let (client, rest) = read(b"\x16\x03\x01 client hello", "192.0.2.1:1", &[])
            .await
            .unwrap();
        assert_eq!(client, "192.0.2.1:1".parse().unwrap());
        assert_eq!(rest, b"\x16\x03\x01 client hello");
        // Bytes that only begin like a header are not one.
        let (_, rest) = read(b"PROXZ", "192.0.2.1:1", &[]).await.unwrap();
        assert_eq!(rest, b"PROXZ");
    }

    #[tokio::test]
    async fn a_header_from_anyone_else_is_refused() {
        let error = read(
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            "192.0.2.1:1",
            &["127.0.0.1"],
        )
        .await
        .unwrap_err();
        assert_eq!(
            error,
            "a PROXY protocol header from 192.0.2.1, which is not in [proxy] from"
        );
        let error = read(&v2(1, 0x11, &[0; 12]), "192.0.2.1:1", &[])
            .await
            .unwrap_err();
        assert!(error.contains("not in [proxy] from"), "{error}");
    }

    #[tokio::test]
    async fn malformed_headers_are_refused() {
        let from = ["127.0.0.1"];
        for (bytes, reason) in [
            (
                b"PROXY TCP4 nonsense 1.2.3.4 1 2\r\n".to_vec(),
                "valid source address",
            ),
            (
                b"PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n".to_vec(),
                "not TCP4 or TCP6",
            ),
            (
                b"PROXY TCP4 1.2.3.4 1.2.3.4 99999 2\r\n".to_vec(),
                "valid source port",
            ),
            (
                [b"PROXY ".as_slice(), &[b'x'; 120]].concat(),
                "longer than 107",
            ),
            (v2(1, 0x11, &[1, 2, 3]), "too short"),
            (v2(7, 0x11, &[0; 12]), "unknown command"),
            (b"PROXY TCP4 1.2.3.4".to_vec(), "unexpected end of file"),
        ] {
            let error = read(&bytes, "127.0.0.1:1", &from).await.unwrap_err();
            assert!(error.contains(reason), "{error} for {bytes:?}");
        }
    }

    #[test]
    fn forwarded_for_is_believed_from_trusted_proxies_only() {
        let mut headers = hyper::HeaderMap::new();
        headers.append(
            "x-forwarded-for",
            "198.51.100.1, 203.0.113.9".parse().unwrap(),
        );
        headers.append("x-forwarded-for", "10.0.0.2".parse().unwrap());
        let proxy: SocketAddr = "10.0.0.1:3000".parse().unwrap();
        // Right to left, past the trusted 10.0.0.2, to the first untrusted.
        assert_eq!(
            forwarded_client(&headers, proxy, &trusted(&["10.0.0.0/8"])),
            "203.0.113.9:0".parse().unwrap()
        );
        // From anyone else, the header counts for nothing.
        assert_eq!(forwarded_client(&headers, proxy, &trusted(&[])), proxy);
        // Without the header, the proxy speaks for itself.
        let bare = hyper::HeaderMap::new();
        assert_eq!(
            forwarded_client(&bare, proxy, &trusted(&["10.0.0.1"])),
            proxy
        );
        // A garbled entry stops the walk at what was believable.
        let mut garbled = hyper::HeaderMap::new();
        garbled.append(
            "x-forwarded-for",
            "unknown, [2001:db8::7]:443".parse().unwrap(),
        );
        assert_eq!(
            forwarded_client(&garbled, proxy, &trusted(&["10.0.0.1"])),
            "[2001:db8::7]:0".parse().unwrap()
        );
    }
}
