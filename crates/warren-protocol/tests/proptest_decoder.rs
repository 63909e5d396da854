//! Property tests for the master↔worker wire decoders: the frame header (`kind:u8 len:u32le`),
//! [`split_frame`], the [`RequestHead`] and [`ResponseHead`] payloads, and the 16-byte control
//! messages ([`Msg`]).
//!
//! What is proven, for every input proptest draws:
//!
//! 1. **Totality.** Arbitrary bytes (0..=64 KiB, and a "structured noise" of small
//!    little-endian counts mixed with junk that gets deeper into the heads) fed to
//!    [`parse_header`], [`split_frame`], [`RequestHead::decode`], [`ResponseHead::decode`] and
//!    [`Msg::decode`] give a value, "incomplete" (`Ok(None)`) or an error, never a panic.
//!    Whatever is accepted is checked against the input: a split frame is exactly the bytes
//!    its header announced; an accepted head is *canonical*, i.e. encoding the decoded value
//!    gives back the very payload, so no two payloads decode to the same head; and a control
//!    message is accepted exactly when it has 16 bytes and a known kind, and re-encodes to the
//!    words it was read from (its last word, and the second argument of the one-argument
//!    messages, are padding the decoder ignores).
//! 2. **Round trip.** Any valid request or response head (standard and binary methods, paths,
//!    queries, header names and values, empty ones included) encodes to one frame that splits
//!    off whole, also behind other frames, and decodes to an equal value. Every [`Msg`]
//!    variant, with any field values, survives its 16 bytes. A stream of frames fed in
//!    arbitrary chunks splits back into exactly its frames.
//! 3. **Truncation.** Every strict prefix of an encoded frame is "incomplete" to
//!    [`split_frame`], and every strict prefix of a head payload or of a control message is a
//!    `Truncated` error: never a value, so never a different valid value.
//! 4. **Corruption and lying lengths.** Changing any one byte of an encoded frame, or
//!    rewriting any one length field (frame length, string length, header count) to any `u32`,
//!    gives an error or a value, never a panic; a value, when there is one, differs from the
//!    original (for a control message, one flipped byte gives an error or some message). A declared length beyond the bytes present is refused: `TooLarge` above
//!    [`MAX_FRAME`] for a frame, `Truncated` inside a head. No declared length makes a
//!    decoder allocate in proportion to it: a counting global allocator (this test binary's
//!    only) shows that one decode asks for at most one `Vec` of pairs sized by the bytes
//!    present (`len / 8` pairs), that [`split_frame`] allocates nothing, and that a header
//!    count of 2^30 or `u32::MAX` on a tiny buffer is refused before any allocation.
//!
//! Case counts are kept moderate so the whole file runs in a few seconds; nothing here
//! measures time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::string::bytes_regex;
use warren_protocol::control::{MSG_LEN, Msg};
use warren_protocol::{
    FRAME_HEADER, Kind, MAX_FRAME, Pair, ProtocolError, RequestHead, ResponseHead, Split,
    parse_header, put_frame, split_frame,
};

// ---------------------------------------------------------------------------------------------
// Counting allocator: how many bytes one decode asks for.

/// Forwards to [`System`], adding the size of every allocation (and of every `realloc`'s new
/// block) to this thread's probe while [`allocated_by`] has it armed. Per thread, so that tests
/// running side by side under `cargo test` do not count each other's allocations.
struct Counting;

thread_local! {
    /// `Some(bytes asked for so far)` while [`allocated_by`] runs on this thread.
    static PROBE: Cell<Option<usize>> = const { Cell::new(None) };
}

fn note(size: usize) {
    // `try_with`: the allocator may be called while this thread's locals are being torn down.
    let _ = PROBE.try_with(|p| {
        if let Some(n) = p.get() {
            p.set(Some(n.saturating_add(size)));
        }
    });
}

// SAFETY: every method hands its arguments unchanged to `System`, which meets the
// `GlobalAlloc` contract; the bookkeeping only touches a const-initialised thread-local `Cell`
// of a `Copy` type, which neither allocates nor registers a destructor.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: our caller upholds `alloc`'s contract, which is `System::alloc`'s too.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: `ptr` and `layout` came from this allocator, i.e. from `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` and `layout` came from this allocator, i.e. from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the bytes it asked the allocator for (the result's
/// own allocations included).
fn allocated_by<R>(f: impl FnOnce() -> R) -> (R, usize) {
    PROBE.with(|p| p.set(Some(0)));
    let r = f();
    let n = PROBE.with(|p| p.replace(None)).unwrap_or(0);
    (r, n)
}

/// The most a head decode may allocate for a payload of `len` bytes: one `Vec` of pairs,
/// which the decoder caps at `len / 8` (a pair takes at least its two 4-byte lengths).
fn pairs_budget(len: usize) -> usize {
    len / 8 * size_of::<Pair<'static>>()
}

// ---------------------------------------------------------------------------------------------
// Owned heads: proptest values must own their bytes, the wire types borrow them.

#[derive(Debug, Clone)]
struct OwnedRequest {
    request_id: u64,
    method: Vec<u8>,
    script_name: Vec<u8>,
    path: Vec<u8>,
    query: Vec<u8>,
    protocol: Vec<u8>,
    scheme: Vec<u8>,
    remote_addr: Vec<u8>,
    remote_port: u16,
    server_name: Vec<u8>,
    server_port: u16,
    content_length: Option<u64>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl OwnedRequest {
    fn head(&self) -> RequestHead<'_> {
        RequestHead {
            request_id: self.request_id,
            method: &self.method,
            script_name: &self.script_name,
            path: &self.path,
            query: &self.query,
            protocol: &self.protocol,
            scheme: &self.scheme,
            remote_addr: &self.remote_addr,
            remote_port: self.remote_port,
            server_name: &self.server_name,
            server_port: self.server_port,
            content_length: self.content_length,
            headers: borrow_pairs(&self.headers),
        }
    }
}

#[derive(Debug, Clone)]
struct OwnedResponse {
    status: u16,
    reason: Vec<u8>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl OwnedResponse {
    fn head(&self) -> ResponseHead<'_> {
        ResponseHead {
            status: self.status,
            reason: &self.reason,
            headers: borrow_pairs(&self.headers),
        }
    }
}

fn borrow_pairs(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<Pair<'_>> {
    pairs.iter().map(|(k, v)| (&k[..], &v[..])).collect()
}

fn request_frame(head: &RequestHead<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    head.encode_frame(&mut out);
    out
}

fn response_frame(head: &ResponseHead<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    head.encode_frame(&mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// Strategies.

const KINDS: [Kind; 10] = [
    Kind::Request,
    Kind::Body,
    Kind::BodyEnd,
    Kind::BodyAbort,
    Kind::Cancel,
    Kind::Ready,
    Kind::RespHead,
    Kind::RespBody,
    Kind::RespEnd,
    Kind::RespAbort,
];

/// Arbitrary bytes, 0..=64 KiB. Drawn as `u64` words cut to a drawn length, which is eight
/// times cheaper for proptest than byte by byte and keeps shrinking (shorter, then smaller).
fn any_bytes() -> impl Strategy<Value = Vec<u8>> {
    const MAX: usize = 64 * 1024;
    (0..=MAX).prop_flat_map(|len| {
        vec(any::<u64>(), len.div_ceil(8)).prop_map(move |words| {
            let mut bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            bytes.truncate(len);
            bytes
        })
    })
}

/// Small little-endian `u32`s (plausible lengths and counts) among junk bytes, so that the
/// head decoders get past their first length field far more often than on uniform bytes.
fn noise() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        (0u32..8).prop_map(|n| n.to_le_bytes().to_vec()),
        any::<u8>().prop_map(|b| vec![b]),
        Just(vec![0xff; 8]),
    ];
    vec(piece, 0..96).prop_map(|pieces| pieces.concat())
}

/// Bytes from `re` most of the time, else empty or arbitrary binary up to `max` bytes: the
/// format carries any bytes in every string, so the decoders must too.
fn field(re: &'static str, max: usize) -> BoxedStrategy<Vec<u8>> {
    let text = bytes_regex(re).expect("a valid regex");
    prop_oneof![
        6 => text,
        1 => Just(Vec::new()),
        2 => vec(any::<u8>(), 0..=max),
    ]
    .boxed()
}

fn headers() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    let name = field("[a-z][a-z0-9-]{0,24}", 32);
    let value = field("[ -~]{0,80}", 96);
    vec((name, value), 0..16)
}

fn method() -> BoxedStrategy<Vec<u8>> {
    let standard = select(vec![
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ])
    .prop_map(|m| m.as_bytes().to_vec());
    prop_oneof![3 => standard, 1 => field("[A-Z]{1,16}", 16)].boxed()
}

/// `Some(u64::MAX)` is left out on purpose: the format spends that value on "no length"
/// (`None`), so it cannot round-trip. The master refuses such a body as too large before it
/// encodes a head (unless `max_body_bytes` is `u64::MAX` itself).
fn content_length() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![
        Just(None),
        Just(Some(0)),
        Just(Some(u64::MAX - 1)),
        (0..u64::MAX).prop_map(Some),
    ]
}

fn request() -> impl Strategy<Value = OwnedRequest> {
    let line = (
        any::<u64>(),
        method(),
        field("(/[a-z0-9._~%-]{0,10}){0,3}", 16),
        field("(/[A-Za-z0-9._~%-]{0,12}){0,6}", 64),
        field("[a-z0-9=&%+]{0,40}", 64),
        field("HTTP/1\\.[01]", 12),
        field("https?", 8),
    );
    let peers = (
        field("[0-9]{1,3}(\\.[0-9]{1,3}){3}|[0-9a-f:]{2,39}", 48),
        any::<u16>(),
        field("[a-z0-9-]{1,20}(\\.[a-z0-9-]{1,20}){0,3}", 64),
        any::<u16>(),
        content_length(),
        headers(),
    );
    (line, peers).prop_map(
        |(
            (request_id, method, script_name, path, query, protocol, scheme),
            (remote_addr, remote_port, server_name, server_port, content_length, headers),
        )| OwnedRequest {
            request_id,
            method,
            script_name,
            path,
            query,
            protocol,
            scheme,
            remote_addr,
            remote_port,
            server_name,
            server_port,
            content_length,
            headers,
        },
    )
}

fn response() -> impl Strategy<Value = OwnedResponse> {
    (any::<u16>(), field("[A-Za-z ]{0,30}", 40), headers()).prop_map(|(status, reason, headers)| {
        OwnedResponse {
            status,
            reason,
            headers,
        }
    })
}

fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        any::<i32>().prop_map(|pid| Msg::ZygoteReady { pid }),
        any::<u32>().prop_map(|token| Msg::Fork { token }),
        (any::<u32>(), any::<i32>()).prop_map(|(token, pid)| Msg::Forked { token, pid }),
        (any::<u32>(), any::<i32>()).prop_map(|(token, errno)| Msg::ForkFailed { token, errno }),
        (any::<i32>(), any::<i32>()).prop_map(|(pid, status)| Msg::Exited { pid, status }),
    ]
}

/// A `u32` for a length field: anything, with the edges a liar would pick drawn often.
fn lying_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => any::<u32>(),
        1 => Just(u32::MAX),
        1 => Just(1 << 30),
        1 => Just(MAX_FRAME as u32 + 1),
        1 => Just(MAX_FRAME as u32),
        2 => 0u32..64,
    ]
}

// ---------------------------------------------------------------------------------------------
// Checks that hold for any input whatsoever.

/// Decodes `payload` as a request head, checking that it stays within [`pairs_budget`] and
/// that an accepted head is canonical.
fn check_request(payload: &[u8]) -> Result<RequestHead<'_>, ProtocolError> {
    let (res, bytes) = allocated_by(|| RequestHead::decode(payload));
    assert!(
        bytes <= pairs_budget(payload.len()),
        "allocated {bytes} bytes for a {}-byte request head",
        payload.len()
    );
    if let Ok(head) = &res {
        assert_eq!(
            &request_frame(head)[FRAME_HEADER..],
            payload,
            "not canonical"
        );
    }
    res
}

/// [`check_request`] for response heads.
fn check_response(payload: &[u8]) -> Result<ResponseHead<'_>, ProtocolError> {
    let (res, bytes) = allocated_by(|| ResponseHead::decode(payload));
    assert!(
        bytes <= pairs_budget(payload.len()),
        "allocated {bytes} bytes for a {}-byte response head",
        payload.len()
    );
    if let Ok(head) = &res {
        assert_eq!(
            &response_frame(head)[FRAME_HEADER..],
            payload,
            "not canonical"
        );
    }
    res
}

/// Splits `buf` as the frame reader would, checking the answer against the bytes; never
/// allocates.
fn check_split(buf: &[u8]) -> Result<Option<Split<'_>>, ProtocolError> {
    let (res, bytes) = allocated_by(|| split_frame(buf));
    assert_eq!(bytes, 0, "split_frame allocated");
    match &res {
        Ok(Some((kind, payload, used))) => {
            assert_eq!(*used, FRAME_HEADER + payload.len());
            assert!(*used <= buf.len());
            assert_eq!(*kind as u8, buf[0]);
            assert_eq!(*payload, &buf[FRAME_HEADER..*used]);
        }
        Ok(None) => {
            if let Some(h) = buf.first_chunk::<FRAME_HEADER>() {
                let (_, len) = parse_header(*h).expect("incomplete only on a good header");
                assert!(buf.len() < FRAME_HEADER + len);
            }
        }
        Err(e) => {
            let h = buf
                .first_chunk::<FRAME_HEADER>()
                .expect("an error needs a header");
            assert_eq!(parse_header(*h).as_ref(), Err(e));
        }
    }
    res
}

/// Feeds `buf` through every decoder a peer would use on it: frame after frame, each head
/// payload to its decoder; stops at the first error or incomplete frame.
fn drive(buf: &[u8]) {
    let mut rest = buf;
    while let Ok(Some((kind, payload, used))) = check_split(rest) {
        match kind {
            Kind::Request => _ = check_request(payload),
            Kind::RespHead => _ = check_response(payload),
            _ => {}
        }
        rest = &rest[used..];
    }
}

/// Checks [`Msg::decode`] against its definition: exactly 16 bytes whose first word is a
/// known kind; and an accepted message re-encodes to the words it was read from.
fn check_msg(buf: &[u8]) {
    let res = Msg::decode(buf);
    if buf.len() < MSG_LEN {
        assert_eq!(res, Err(ProtocolError::Truncated("control message")));
        return;
    }
    if buf.len() > MSG_LEN {
        assert_eq!(
            res,
            Err(ProtocolError::Trailing(
                "control message",
                buf.len() - MSG_LEN
            ))
        );
        return;
    }
    let kind = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    match res {
        Ok(m) => {
            assert!((1..=5).contains(&kind));
            let again = m.encode();
            // The kind and first argument always count; the second only for the messages
            // that carry one. The last word is padding.
            let used = match m {
                Msg::ZygoteReady { .. } | Msg::Fork { .. } => 8,
                _ => 12,
            };
            assert_eq!(again[..used], buf[..used]);
            assert_eq!(Msg::decode(&again), Ok(m));
        }
        Err(e) => {
            assert!(!(1..=5).contains(&kind));
            assert!(matches!(e, ProtocolError::UnknownKind(_)), "{e:?}");
        }
    }
}

/// Where the `u32` length fields of a request payload are: the eight strings, each header's
/// name and value, and the header count (marked `true`).
fn request_length_fields(h: &RequestHead<'_>) -> Vec<(usize, bool)> {
    let mut fields = Vec::new();
    let mut at = 8; // request_id
    let mut string = |at: &mut usize, b: &[u8]| {
        fields.push((*at, false));
        *at += 4 + b.len();
    };
    for b in [
        h.method,
        h.script_name,
        h.path,
        h.query,
        h.protocol,
        h.scheme,
        h.remote_addr,
    ] {
        string(&mut at, b);
    }
    at += 2; // remote_port
    string(&mut at, h.server_name);
    at += 2 + 8; // server_port, content_length
    let count = at;
    at += 4;
    for (k, v) in &h.headers {
        string(&mut at, k);
        string(&mut at, v);
    }
    fields.push((count, true));
    fields
}

/// [`request_length_fields`] for a response payload.
fn response_length_fields(h: &ResponseHead<'_>) -> Vec<(usize, bool)> {
    let mut fields = vec![(2, false), (6 + h.reason.len(), true)];
    let mut at = 10 + h.reason.len();
    for (k, v) in &h.headers {
        fields.push((at, false));
        at += 4 + k.len();
        fields.push((at, false));
        at += 4 + v.len();
    }
    fields
}

/// Rewrites the length field `field` (its offset, and whether it is the header count) of
/// `payload` to `value` and decodes the result with `decode`, which answers whether the value
/// it decoded equals the original head; checks what any lie must give.
fn check_lie(
    payload: &[u8],
    field: (usize, bool),
    value: u32,
    what: &'static str,
    decode: impl Fn(&[u8]) -> Result<bool, ProtocolError>,
) {
    let (at, is_count) = field;
    let truth = u32::from_le_bytes(payload[at..at + 4].try_into().unwrap());
    let mut lied = payload.to_vec();
    lied[at..at + 4].copy_from_slice(&value.to_le_bytes());
    let res = decode(&lied);
    let after = (payload.len() - at - 4) as u64;
    if value == truth {
        assert_eq!(res, Ok(true));
        return;
    }
    assert_ne!(res, Ok(true), "a lie decoded to the original");
    // More than the bytes left could hold is refused as truncated. (`decode` goes through
    // `check_request` / `check_response`, which also hold it to the allocation budget.)
    if u64::from(value) > after || (is_count && value > truth) {
        assert_eq!(res, Err(ProtocolError::Truncated(what)), "{value} at {at}");
    }
    if is_count && value < truth {
        assert!(matches!(res, Err(ProtocolError::Trailing(w, _)) if w == what));
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Totality on arbitrary input.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic_any_decoder(buf in any_bytes()) {
        drive(&buf);
        let _ = check_request(&buf);
        let _ = check_response(&buf);
        check_msg(&buf);
        if let Some(h) = buf.first_chunk::<FRAME_HEADER>() {
            let _ = parse_header(*h);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn structured_noise_never_panics_and_what_decodes_is_canonical(buf in noise()) {
        drive(&buf);
        let _ = check_request(&buf);
        let _ = check_response(&buf);
        for at in 0..buf.len().min(16) {
            let _ = check_request(&buf[at..]);
            let _ = check_response(&buf[at..]);
        }
        // Behind a real frame header, so that `drive` gets to the head decoders.
        for kind in [Kind::Request, Kind::RespHead] {
            let mut framed = Vec::new();
            put_frame(&mut framed, kind, &buf);
            drive(&framed);
        }
    }

    #[test]
    fn frame_header_is_decoded_exactly(h in any::<[u8; FRAME_HEADER]>()) {
        let len = u32::from_le_bytes([h[1], h[2], h[3], h[4]]) as usize;
        let want = match Kind::from_u8(h[0]) {
            None => Err(ProtocolError::UnknownKind(h[0])),
            Some(_) if len > MAX_FRAME => Err(ProtocolError::TooLarge(len)),
            Some(kind) => Ok((kind, len)),
        };
        prop_assert_eq!(parse_header(h), want);
        check_split(&h).ok();
    }

    #[test]
    fn kinds_are_their_bytes(b in any::<u8>()) {
        match Kind::from_u8(b) {
            Some(kind) => prop_assert_eq!(kind as u8, b),
            None => prop_assert!(!KINDS.iter().any(|k| *k as u8 == b)),
        }
    }

    #[test]
    fn control_messages_of_sixteen_bytes_decode_exactly(
        kind in prop_oneof![0u32..=6, any::<u32>()],
        rest in any::<[u8; MSG_LEN - 4]>(),
    ) {
        let mut buf = [0u8; MSG_LEN];
        buf[..4].copy_from_slice(&kind.to_le_bytes());
        buf[4..].copy_from_slice(&rest);
        check_msg(&buf);
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Round trips.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn request_head_round_trips(
        req in request(),
        before in vec((select(KINDS.to_vec()), vec(any::<u8>(), 0..64)), 0..3),
    ) {
        let head = req.head();
        // Behind other frames, so that the encoder's in-place length patch is tested off zero.
        let mut out = Vec::new();
        for (kind, payload) in &before {
            put_frame(&mut out, *kind, payload);
        }
        let start = out.len();
        head.encode_frame(&mut out);
        let mut rest = &out[..];
        for (kind, payload) in &before {
            let (k, p, used) = check_split(rest).unwrap().unwrap();
            prop_assert_eq!((k, p), (*kind, &payload[..]));
            rest = &rest[used..];
        }
        let (kind, payload, used) = check_split(rest).unwrap().unwrap();
        prop_assert_eq!((kind, used), (Kind::Request, out.len() - start));
        prop_assert_eq!(check_request(payload).unwrap(), head);
    }

    #[test]
    fn response_head_round_trips(resp in response()) {
        let head = resp.head();
        let mut out = response_frame(&head);
        put_frame(&mut out, Kind::RespEnd, b"");
        let (kind, payload, used) = check_split(&out).unwrap().unwrap();
        prop_assert_eq!(kind, Kind::RespHead);
        prop_assert_eq!(check_response(payload).unwrap(), head);
        let (kind, payload, _) = check_split(&out[used..]).unwrap().unwrap();
        prop_assert_eq!((kind, payload), (Kind::RespEnd, &b""[..]));
    }

    #[test]
    fn control_messages_round_trip(m in msg()) {
        let bytes = m.encode();
        prop_assert_eq!(&bytes[12..], &[0u8; 4][..]);
        prop_assert_eq!(Msg::decode(&bytes), Ok(m));
        check_msg(&bytes);
    }

    #[test]
    fn a_stream_fed_in_any_chunks_splits_back_into_its_frames(
        frames in vec((select(KINDS.to_vec()), vec(any::<u8>(), 0..300)), 0..8),
        cuts in vec(any::<Index>(), 0..12),
    ) {
        let mut stream = Vec::new();
        for (kind, payload) in &frames {
            put_frame(&mut stream, *kind, payload);
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.push(stream.len());
        cuts.sort_unstable();
        let (mut buf, mut got, mut fed) = (Vec::new(), Vec::new(), 0);
        for cut in cuts {
            buf.extend_from_slice(&stream[fed..cut]);
            fed = cut;
            while let Some((kind, payload, used)) = check_split(&buf).unwrap() {
                got.push((kind, payload.to_vec()));
                buf.drain(..used);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, frames);
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Truncation.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_prefix_of_a_request_is_incomplete_or_truncated(req in request()) {
        let head = req.head();
        let frame = request_frame(&head);
        let payload = &frame[FRAME_HEADER..];
        for cut in 0..frame.len() {
            prop_assert_eq!(check_split(&frame[..cut]), Ok(None), "frame cut at {}", cut);
        }
        for cut in 0..payload.len() {
            prop_assert_eq!(
                check_request(&payload[..cut]),
                Err(ProtocolError::Truncated("request head")),
                "payload cut at {}", cut
            );
        }
    }

    #[test]
    fn every_prefix_of_a_response_is_incomplete_or_truncated(resp in response()) {
        let head = resp.head();
        let frame = response_frame(&head);
        let payload = &frame[FRAME_HEADER..];
        for cut in 0..frame.len() {
            prop_assert_eq!(check_split(&frame[..cut]), Ok(None), "frame cut at {}", cut);
        }
        for cut in 0..payload.len() {
            prop_assert_eq!(
                check_response(&payload[..cut]),
                Err(ProtocolError::Truncated("response head")),
                "payload cut at {}", cut
            );
        }
    }

    #[test]
    fn a_cut_stream_yields_only_the_whole_frames_before_the_cut(
        req in request(),
        resp in response(),
        cut in any::<Index>(),
    ) {
        let mut stream = request_frame(&req.head());
        let first = stream.len();
        stream.extend_from_slice(&response_frame(&resp.head()));
        let cut = cut.index(stream.len());
        let part = &stream[..cut];
        match check_split(part).unwrap() {
            None => prop_assert!(cut < first),
            Some((kind, payload, used)) => {
                prop_assert_eq!((kind, used), (Kind::Request, first));
                prop_assert_eq!(check_request(payload).unwrap(), req.head());
                prop_assert_eq!(check_split(&part[used..]), Ok(None));
            }
        }
    }

    #[test]
    fn every_prefix_of_a_control_message_is_truncated(m in msg()) {
        let bytes = m.encode();
        for cut in 0..MSG_LEN {
            prop_assert_eq!(
                Msg::decode(&bytes[..cut]),
                Err(ProtocolError::Truncated("control message"))
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Corruption and lying lengths.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn one_corrupt_byte_in_a_request_frame_is_harmless(
        req in request(),
        at in any::<Index>(),
        flip in 1u8..=255,
    ) {
        let head = req.head();
        let mut frame = request_frame(&head);
        let at = at.index(frame.len());
        frame[at] ^= flip;
        drive(&frame);
        if let Ok(Some((Kind::Request, payload, _))) = split_frame(&frame)
            && let Ok(other) = RequestHead::decode(payload)
        {
            prop_assert_ne!(other, head);
        }
    }

    #[test]
    fn one_corrupt_byte_in_a_response_frame_is_harmless(
        resp in response(),
        at in any::<Index>(),
        flip in 1u8..=255,
    ) {
        let head = resp.head();
        let mut frame = response_frame(&head);
        let at = at.index(frame.len());
        frame[at] ^= flip;
        drive(&frame);
        if let Ok(Some((Kind::RespHead, payload, _))) = split_frame(&frame)
            && let Ok(other) = ResponseHead::decode(payload)
        {
            prop_assert_ne!(other, head);
        }
    }

    #[test]
    fn one_corrupt_byte_in_a_control_message_is_harmless(
        m in msg(),
        at in 0..MSG_LEN,
        flip in 1u8..=255,
    ) {
        let mut bytes = m.encode();
        bytes[at] ^= flip;
        check_msg(&bytes);
    }

    #[test]
    fn a_lying_frame_length_is_refused_or_waited_for_without_allocating(
        req in request(),
        len in lying_u32(),
    ) {
        let mut frame = request_frame(&req.head());
        let truth = frame.len() - FRAME_HEADER;
        frame[1..FRAME_HEADER].copy_from_slice(&len.to_le_bytes());
        let len = len as usize;
        // `check_split` also asserts that nothing was allocated.
        let res = check_split(&frame);
        if len > MAX_FRAME {
            prop_assert_eq!(res, Err(ProtocolError::TooLarge(len)));
        } else if len > truth {
            prop_assert_eq!(res, Ok(None));
        } else {
            let (_, payload, used) = res.unwrap().unwrap();
            prop_assert_eq!(used, FRAME_HEADER + len);
            let decoded = check_request(payload);
            if len < truth {
                prop_assert_eq!(decoded, Err(ProtocolError::Truncated("request head")));
            } else {
                prop_assert_eq!(decoded.unwrap(), req.head());
            }
        }
    }

    #[test]
    fn a_lying_length_inside_a_request_head_is_harmless(
        req in request(),
        which in any::<Index>(),
        value in lying_u32(),
    ) {
        let head = req.head();
        let frame = request_frame(&head);
        let payload = &frame[FRAME_HEADER..];
        let fields = request_length_fields(&head);
        let field = fields[which.index(fields.len())];
        check_lie(payload, field, value, "request head", |p| {
            check_request(p).map(|v| v == head)
        });
    }

    #[test]
    fn a_lying_length_inside_a_response_head_is_harmless(
        resp in response(),
        which in any::<Index>(),
        value in lying_u32(),
    ) {
        let head = resp.head();
        let frame = response_frame(&head);
        let payload = &frame[FRAME_HEADER..];
        let fields = response_length_fields(&head);
        let field = fields[which.index(fields.len())];
        check_lie(payload, field, value, "response head", |p| {
            check_response(p).map(|v| v == head)
        });
    }

    #[test]
    fn a_header_count_beyond_the_bytes_is_refused_before_allocating(
        count in prop_oneof![Just(1u32 << 30), Just(u32::MAX), any::<u32>()],
        tail in vec(any::<u8>(), 0..64),
    ) {
        // A response head with an empty reason, then `count`, then `tail`.
        let mut payload = vec![200, 0, 0, 0, 0, 0];
        payload.extend_from_slice(&count.to_le_bytes());
        payload.extend_from_slice(&tail);
        prop_assume!(count as usize > tail.len() / 8);
        let (res, bytes) = allocated_by(|| ResponseHead::decode(&payload));
        prop_assert_eq!(res, Err(ProtocolError::Truncated("response head")));
        prop_assert_eq!(bytes, 0);
    }
}

// ---------------------------------------------------------------------------------------------
// The liars' favourite numbers, spelled out.

/// A request payload with every string empty, no length, and `count` headers announced.
fn empty_request_with_count(count: u32) -> Vec<u8> {
    let mut frame = request_frame(&RequestHead::default());
    let n = frame.len();
    frame[n - 4..].copy_from_slice(&count.to_le_bytes());
    frame.split_off(FRAME_HEADER)
}

#[test]
fn a_billion_headers_on_a_tiny_buffer_are_refused_without_allocating() {
    for count in [1 << 30, u32::MAX] {
        let payload = empty_request_with_count(count);
        assert!(payload.len() < 100);
        let (res, bytes) = allocated_by(|| RequestHead::decode(&payload));
        assert_eq!(res, Err(ProtocolError::Truncated("request head")));
        assert_eq!(bytes, 0, "count {count}");

        let mut payload = vec![200, 0, 0, 0, 0, 0];
        payload.extend_from_slice(&count.to_le_bytes());
        let (res, bytes) = allocated_by(|| ResponseHead::decode(&payload));
        assert_eq!(res, Err(ProtocolError::Truncated("response head")));
        assert_eq!(bytes, 0, "count {count}");
    }
}

#[test]
fn a_frame_of_u32_max_bytes_is_refused_from_its_header_alone() {
    for kind in KINDS {
        for len in [MAX_FRAME as u32 + 1, 1 << 30, u32::MAX] {
            let mut h = vec![kind as u8];
            h.extend_from_slice(&len.to_le_bytes());
            let (res, bytes) = allocated_by(|| split_frame(&h));
            assert_eq!(res, Err(ProtocolError::TooLarge(len as usize)));
            assert_eq!(bytes, 0);
        }
    }
}

#[test]
fn a_string_of_u32_max_bytes_is_refused_without_allocating() {
    // The method's length, right after the request id.
    let mut payload = empty_request_with_count(0);
    payload[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let (res, bytes) = allocated_by(|| RequestHead::decode(&payload));
    assert_eq!(res, Err(ProtocolError::Truncated("request head")));
    assert_eq!(bytes, 0);
}
