use super::*;

fn sample() -> RequestHead<'static> {
    RequestHead {
        request_id: 42,
        method: b"POST",
        script_name: b"",
        path: b"/a%20b",
        query: b"x=1",
        protocol: b"HTTP/1.1",
        scheme: b"http",
        remote_addr: b"127.0.0.1",
        remote_port: 5555,
        server_name: b"hello.localhost",
        server_port: 8080,
        content_length: Some(10),
        headers: vec![(b"host", b"hello.localhost"), (b"x-a", b"\xe9")],
    }
}

#[test]
fn request_head_round_trips() {
    for cl in [Some(0), Some(10), None] {
        let mut head = sample();
        head.content_length = cl;
        let mut out = Vec::new();
        head.encode_frame(&mut out);
        let (kind, payload, used) = split_frame(&out).unwrap().unwrap();
        assert_eq!((kind, used), (Kind::Request, out.len()));
        assert_eq!(RequestHead::decode(payload).unwrap(), head);
    }
}

#[test]
fn response_head_round_trips() {
    let head = ResponseHead {
        status: 404,
        reason: b"Not Found",
        headers: vec![(b"Content-Type", b"text/plain")],
    };
    let mut out = Vec::new();
    head.encode_frame(&mut out);
    put_frame(&mut out, Kind::RespEnd, b"");
    let (kind, payload, used) = split_frame(&out).unwrap().unwrap();
    assert_eq!(kind, Kind::RespHead);
    assert_eq!(ResponseHead::decode(payload).unwrap(), head);
    let (kind, payload, _) = split_frame(&out[used..]).unwrap().unwrap();
    assert_eq!((kind, payload), (Kind::RespEnd, &b""[..]));
}

#[test]
fn every_truncation_is_an_error_or_incomplete() {
    let mut out = Vec::new();
    sample().encode_frame(&mut out);
    for cut in 0..out.len() {
        assert_eq!(split_frame(&out[..cut]), Ok(None), "cut at {cut}");
        let payload = &out[FRAME_HEADER..];
        if cut < payload.len() {
            assert!(RequestHead::decode(&payload[..cut]).is_err());
        }
    }
}

#[test]
fn bad_headers_are_refused() {
    let check = |bytes: &[u8], want: ProtocolError| {
        assert_eq!(split_frame(bytes).unwrap_err(), want);
    };
    check(&[0x7f, 0, 0, 0, 0], ProtocolError::UnknownKind(0x7f));
    check(
        &[0x02, 0xff, 0xff, 0xff, 0x7f],
        ProtocolError::TooLarge(0x7fff_ffff),
    );
}

#[test]
fn lying_pair_count_does_not_allocate() {
    let mut payload = Vec::new();
    payload.extend_from_slice(&200u16.to_le_bytes());
    payload.extend_from_slice(&0u32.to_le_bytes());
    payload.extend_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        ResponseHead::decode(&payload),
        Err(ProtocolError::Truncated("response head"))
    );
}

#[test]
fn trailing_bytes_are_refused() {
    let mut out = Vec::new();
    ResponseHead {
        status: 200,
        reason: b"OK",
        headers: vec![],
    }
    .encode_frame(&mut out);
    let mut payload = out[FRAME_HEADER..].to_vec();
    payload.push(0);
    assert_eq!(
        ResponseHead::decode(&payload),
        Err(ProtocolError::Trailing("response head", 1))
    );
}

#[test]
fn content_length_is_digits_only() {
    let check = |v: &str, want: Option<u64>| assert_eq!(content_length(v.as_bytes()), want, "{v}");
    check("0", Some(0));
    check("0012", Some(12));
    check("18446744073709551615", None);
    check("1844674407370955161", Some(1_844_674_407_370_955_161));
    check("+5", None);
    check("5 5", None);
    check("0x10", None);
}
