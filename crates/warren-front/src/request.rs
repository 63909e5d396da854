//! What the front checks of a request head before it routes it: the method, a protocol
//! upgrade, the body's framing (RFC 9112 §6) and the host (RFC 9110 §7.2, RFC 9112 §3.2).
//! Pure functions of the head, tested on tables; `lib.rs` turns a [`Refusal`] into a response.
//!
//! **Architecture Invariant:** the framing the app is told (`CONTENT_LENGTH`, or a chunked
//! body) is the framing hyper reads: any `Transfer-Encoding` other than exactly `chunked`, once,
//! and any `Content-Length` other than one number, is refused before an app sees the request.
//! The host an app is told (`HTTP_HOST`) is the one the request was routed by.

use std::borrow::Cow;

use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, Method, StatusCode, Version};
use warren_protocol::content_length as digits;

/// A request the front answers itself, with why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: &'static str,
}

const fn refuse(status: StatusCode, reason: &'static str) -> Refusal {
    Refusal { status, reason }
}

/// How the request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length` bytes (0 without the header).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// The host a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host<'a> {
    /// Lower case, without the port: what routing compares.
    pub name: Cow<'a, str>,
    /// As the client sent it (name and port), validated: what the app sees as `HTTP_HOST`.
    pub value: &'a str,
}

/// CONNECT and protocol upgrades, which warren does not carry (an app's answer to one would
/// otherwise turn the client's connection into a tunnel to the app). An `Upgrade: h2c` is
/// ignored, as RFC 9110 §7.8 allows, so that clients that offer it still get HTTP/1.1.
pub fn method_and_upgrade(method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
    if method == Method::CONNECT {
        return Err(refuse(
            StatusCode::NOT_IMPLEMENTED,
            "CONNECT is not supported here\n",
        ));
    }
    let wants_upgrade = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
    let only_h2c = headers
        .get_all(UPGRADE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .all(|p| p.trim_ascii().eq_ignore_ascii_case(b"h2c"));
    if wants_upgrade && headers.contains_key(UPGRADE) && !only_h2c {
        return Err(refuse(
            StatusCode::NOT_IMPLEMENTED,
            "protocol upgrades (such as WebSocket) are not supported\n",
        ));
    }
    Ok(())
}

/// The body's framing, or a refusal when the head does not say it in exactly one way.
pub fn framing(version: Version, headers: &HeaderMap) -> Result<Framing, Refusal> {
    let mut te = headers.get_all(TRANSFER_ENCODING).iter().peekable();
    if te.peek().is_some() {
        if version == Version::HTTP_10 {
            // RFC 9112 §6.1: such a message's framing is faulty.
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "Transfer-Encoding in an HTTP/1.0 request\n",
            ));
        }
        let mut codings = te
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|c| !c.is_empty());
        let first = codings.next();
        let rest = codings.next();
        if [first, rest]
            .into_iter()
            .flatten()
            .any(|c| !c.eq_ignore_ascii_case(b"chunked"))
        {
            // RFC 9112 §6.1: a coding the server does not understand.
            return Err(refuse(
                StatusCode::NOT_IMPLEMENTED,
                "only the chunked transfer coding is supported\n",
            ));
        }
        if first.is_none() || rest.is_some() {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "Transfer-Encoding must be chunked, once\n",
            ));
        }
        if headers.contains_key(CONTENT_LENGTH) {
            // RFC 9112 §6.3: a request smuggling attempt as likely as a mistake.
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "both Transfer-Encoding and Content-Length\n",
            ));
        }
        return Ok(Framing::Chunked);
    }
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    match (lengths.next(), lengths.next()) {
        (None, _) => Ok(Framing::Length(0)),
        (Some(v), None) => digits(v.as_bytes())
            .map(Framing::Length)
            .ok_or(refuse(StatusCode::BAD_REQUEST, "invalid Content-Length\n")),
        (Some(_), Some(_)) => Err(refuse(
            StatusCode::BAD_REQUEST,
            "more than one Content-Length\n",
        )),
    }
}

const BAD_HOST: Refusal = refuse(StatusCode::BAD_REQUEST, "missing or invalid Host header\n");
const BAD_TARGET: Refusal = refuse(
    StatusCode::BAD_REQUEST,
    "an authority-form target is only for CONNECT\n",
);

/// The request's host. An absolute-form target's authority wins over `Host` (RFC 9112
/// §3.2.2), but a `Host` must still be there in HTTP/1.1, only once, and valid (RFC 9112
/// §3.2); a port that is not digits or a user name (`h.test:@evil.example`) is a 400.
pub fn host<'a>(
    version: Version,
    uri: &'a http::Uri,
    headers: &'a HeaderMap,
) -> Result<Host<'a>, Refusal> {
    let mut hosts = headers.get_all(HOST).iter();
    let header = match (hosts.next(), hosts.next()) {
        (Some(h), None) => Some(h.to_str().map_err(|_| BAD_HOST)?),
        (Some(_), Some(_)) => return Err(BAD_HOST),
        (None, _) if version == Version::HTTP_11 => return Err(BAD_HOST),
        (None, _) => None,
    };
    if let Some(h) = header {
        split_host(h).ok_or(BAD_HOST)?;
    }
    let value = match uri.authority() {
        // Authority form (`h.test:443`) is CONNECT's alone (RFC 9112 §3.2.3), refused before.
        Some(_) if uri.scheme().is_none() => return Err(BAD_TARGET),
        Some(authority) => authority.as_str(),
        None => header.ok_or(BAD_HOST)?,
    };
    let name = split_host(value).ok_or(BAD_HOST)?;
    Ok(Host {
        name: if name.bytes().any(|b| b.is_ascii_uppercase()) {
            name.to_ascii_lowercase().into()
        } else {
            name.into()
        },
        value,
    })
}

/// The name part of `host [ ":" port ]` (RFC 3986 §3.2.2), or `None` when it is not one: an
/// IP literal in brackets or a registered name, and a port of digits that fits 16 bits.
fn split_host(value: &str) -> Option<&str> {
    let (name, port) = if let Some(rest) = value.strip_prefix('[') {
        let end = rest.find(']')?;
        let literal = &rest[..end];
        if literal.is_empty()
            || !literal
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        (&value[..end + 2], &rest[end + 1..])
    } else {
        let (name, port) = match value.find(':') {
            Some(i) => (&value[..i], &value[i..]),
            None => (value, ""),
        };
        let reg_name = |b: u8| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b);
        if name.is_empty() || !name.bytes().all(reg_name) {
            return None;
        }
        (name, port)
    };
    match port.strip_prefix(':') {
        None if port.is_empty() => Some(name),
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u16>().ok().map(|_| name)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in list {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn framing_is_said_in_exactly_one_way() {
        let check = |version, list: &[(&str, &str)], want: Result<Framing, StatusCode>| {
            let got = framing(version, &headers(list)).map_err(|r| r.status);
            assert_eq!(got, want, "{version:?} {list:?}");
        };
        use Framing::*;
        let v11 = Version::HTTP_11;
        check(v11, &[], Ok(Length(0)));
        check(v11, &[("content-length", "5")], Ok(Length(5)));
        check(v11, &[("content-length", " 5 ")], Ok(Length(5)));
        check(v11, &[("transfer-encoding", "chunked")], Ok(Chunked));
        check(v11, &[("transfer-encoding", "Chunked")], Ok(Chunked));
        let bad = Err(StatusCode::BAD_REQUEST);
        let unsupported = Err(StatusCode::NOT_IMPLEMENTED);
        check(v11, &[("content-length", "+5")], bad);
        check(v11, &[("content-length", "-1")], bad);
        check(v11, &[("content-length", "5, 5")], bad);
        check(v11, &[("content-length", "abc")], bad);
        check(v11, &[("content-length", "")], bad);
        check(v11, &[("content-length", "99999999999999999999")], bad);
        check(
            v11,
            &[("content-length", "5"), ("content-length", "5")],
            bad,
        );
        check(v11, &[("transfer-encoding", "gzip, chunked")], unsupported);
        check(v11, &[("transfer-encoding", "identity")], unsupported);
        check(v11, &[("transfer-encoding", "chunked, gzip")], unsupported);
        check(v11, &[("transfer-encoding", "chunked, chunked")], bad);
        check(
            v11,
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
            bad,
        );
        check(v11, &[("transfer-encoding", "")], bad);
        check(v11, &[("transfer-encoding", " , ")], bad);
        check(
            v11,
            &[("transfer-encoding", "chunked"), ("content-length", "3")],
            bad,
        );
        check(Version::HTTP_10, &[("transfer-encoding", "chunked")], bad);
        check(Version::HTTP_10, &[("content-length", "3")], Ok(Length(3)));
    }

    #[test]
    fn hosts_are_validated_and_the_target_wins() {
        let check = |version, target: &str, list: &[(&str, &str)], want: Option<(&str, &str)>| {
            let uri: http::Uri = target.parse().unwrap();
            let map = headers(list);
            let got = host(version, &uri, &map).ok();
            let got = got.as_ref().map(|h| (&*h.name, h.value));
            assert_eq!(got, want, "{version:?} {target} {list:?}");
        };
        let v11 = Version::HTTP_11;
        check(v11, "/", &[("host", "a.test")], Some(("a.test", "a.test")));
        check(
            v11,
            "/",
            &[("host", "A.Test:8080")],
            Some(("a.test", "A.Test:8080")),
        );
        check(
            v11,
            "/",
            &[("host", "[::1]:8080")],
            Some(("[::1]", "[::1]:8080")),
        );
        check(v11, "/", &[("host", "[::1]")], Some(("[::1]", "[::1]")));
        check(
            v11,
            "/",
            &[("host", "127.0.0.1")],
            Some(("127.0.0.1", "127.0.0.1")),
        );
        // A port that is not digits, a user name, an empty or too large port.
        check(v11, "/", &[("host", "h2.test:@evil.example")], None);
        check(v11, "/", &[("host", "user@h2.test")], None);
        check(v11, "/", &[("host", "h2.test:")], None);
        check(v11, "/", &[("host", "h2.test:65536")], None);
        check(v11, "/", &[("host", "h2.test:80:80")], None);
        check(v11, "/", &[("host", "h2.test/x")], None);
        check(v11, "/", &[("host", "h2 test")], None);
        check(v11, "/", &[("host", "")], None);
        check(v11, "/", &[("host", "[::1")], None);
        check(v11, "/", &[("host", "[zz]")], None);
        check(v11, "/", &[("host", "a.test"), ("host", "b.test")], None);
        check(v11, "/", &[], None);
        check(Version::HTTP_10, "/", &[], None);
        check(
            Version::HTTP_10,
            "/",
            &[("host", "a.test")],
            Some(("a.test", "a.test")),
        );
        // Absolute form: the target's authority wins; the Host must still be valid.
        check(
            v11,
            "http://neighbour.test/",
            &[("host", "h2.test")],
            Some(("neighbour.test", "neighbour.test")),
        );
        check(
            v11,
            "http://neighbour.test:8080/x",
            &[("host", "h2.test")],
            Some(("neighbour.test", "neighbour.test:8080")),
        );
        check(
            v11,
            "http://user@neighbour.test/",
            &[("host", "h2.test")],
            None,
        );
        check(
            v11,
            "http://neighbour.test/",
            &[("host", "h2.test:x")],
            None,
        );
        check(v11, "http://neighbour.test/", &[], None);
        // Authority form outside CONNECT.
        check(
            v11,
            "neighbour.test:443",
            &[("host", "neighbour.test")],
            None,
        );
        check(
            Version::HTTP_10,
            "http://neighbour.test/",
            &[],
            Some(("neighbour.test", "neighbour.test")),
        );
    }

    #[test]
    fn connect_and_upgrades_are_refused() {
        let check = |method: Method, list: &[(&str, &str)], refused: bool| {
            let got = method_and_upgrade(&method, &headers(list)).is_err();
            assert_eq!(got, refused, "{method} {list:?}");
        };
        check(Method::GET, &[], false);
        check(Method::CONNECT, &[], true);
        check(
            Method::GET,
            &[("connection", "Upgrade"), ("upgrade", "websocket")],
            true,
        );
        check(
            Method::GET,
            &[("connection", "keep-alive, upgrade"), ("upgrade", "foo/2")],
            true,
        );
        // Not asked for: the Upgrade header alone is not an upgrade request.
        check(Method::GET, &[("upgrade", "websocket")], false);
        // h2c is declined by ignoring it.
        check(
            Method::GET,
            &[
                ("connection", "Upgrade, HTTP2-Settings"),
                ("upgrade", "h2c"),
            ],
            false,
        );
    }
}
