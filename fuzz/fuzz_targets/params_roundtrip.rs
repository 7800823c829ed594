//! Name/value pairs built from the input are packed with `ParamsWriter`, read
//! back with `RequestDecoder` and `decode_pairs`, and must round-trip; every
//! record must hold only whole pairs and at most `max_content` bytes.
//!
//! Input layout: bytes 0-1 = max_content (BE), bytes 2-3 = request id (BE, 0
//! becomes 1), then pairs: control byte, name length byte, value length (2
//! bytes BE), name bytes, value bytes. Control bit 0 generates the value
//! (repeated byte) instead of taking it from the input; bit 1 scales the name
//! length by 4 and generates it too, to reach 4-byte lengths and oversize pairs.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unused_imports)]
#[path = "../../src/fcgi/mod.rs"]
mod fcgi;

use fcgi::params::{ParamsWriter, decode_pairs, encode_pair, pair_len};
use fcgi::record::{
    HEADER_LEN, MAX_CONTENT_LEN, ROLE_RESPONDER, RequestDecoder, RequestEvent, push_begin_request,
};

/// Take up to `n` bytes from the front of `rest`.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(rest.len());
    let (a, b) = rest.split_at(n);
    *rest = b;
    a
}

fn build_pairs(mut rest: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut pairs = Vec::new();
    // Bound generated data so an iteration stays fast.
    let mut budget: usize = 256 * 1024;
    while rest.len() >= 4 && pairs.len() < 256 {
        let hdr = take(&mut rest, 4);
        let (ctl, nlen, vlen) = (
            hdr[0],
            usize::from(hdr[1]),
            usize::from(u16::from_be_bytes([hdr[2], hdr[3]])),
        );
        let name = if ctl & 2 != 0 {
            vec![ctl | 0x20; nlen * 4]
        } else {
            take(&mut rest, nlen).to_vec()
        };
        let value = if ctl & 1 != 0 {
            vec![hdr[1]; vlen]
        } else {
            take(&mut rest, vlen).to_vec()
        };
        budget = budget.saturating_sub(name.len() + value.len());
        if budget == 0 {
            break;
        }
        pairs.push((name, value));
    }
    pairs
}

fuzz_target!(|data: &[u8]| {
    let [m0, m1, i0, i1, rest @ ..] = data else {
        return;
    };
    let max_content = usize::from(u16::from_be_bytes([*m0, *m1]));
    let limit = max_content.clamp(8, MAX_CONTENT_LEN);
    let request_id = match u16::from_be_bytes([*i0, *i1]) {
        0 => 1,
        id => id,
    };
    let pairs = build_pairs(rest);

    let mut out = Vec::new();
    push_begin_request(&mut out, request_id, ROLE_RESPONDER, true);
    let mut accepted: Vec<(&[u8], &[u8])> = Vec::new();
    let mut w = ParamsWriter::new(&mut out, request_id, max_content);
    for (n, v) in &pairs {
        match w.add(n, v) {
            Ok(()) => {
                assert!(pair_len(n, v) <= limit);
                accepted.push((n, v));
            }
            Err(e) => {
                assert!(pair_len(n, v) > limit);
                assert_eq!(e.encoded_len, pair_len(n, v));
                assert_eq!((e.name_len, e.value_len), (n.len(), v.len()));
            }
        }
    }
    w.finish();

    // Raw framing: every record padded to a multiple of 8, zero padding.
    let mut pos = 0;
    let mut records = 0;
    while pos < out.len() {
        let h = &out[pos..pos + HEADER_LEN];
        let cl = usize::from(u16::from_be_bytes([h[4], h[5]]));
        let pl = usize::from(h[6]);
        assert_eq!((h[0], h[7]), (1, 0));
        assert_eq!(u16::from_be_bytes([h[2], h[3]]), request_id);
        assert_eq!((cl + pl) % 8, 0);
        assert!(pl < 8);
        assert!(
            out[pos + HEADER_LEN + cl..pos + HEADER_LEN + cl + pl]
                .iter()
                .all(|&b| b == 0)
        );
        pos += HEADER_LEN + cl + pl;
        records += 1;
    }
    assert_eq!(pos, out.len());
    assert!(records >= 2);

    // Read it back as an application would.
    let mut d = RequestDecoder::new();
    let mut input = &out[..];
    let mut all = Vec::new();
    let mut decoded: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut begins = 0;
    let mut ends = 0;
    loop {
        let (n, ev) = d.decode(input).expect("writer output must decode");
        input = &input[n..];
        match ev {
            // Whole input available: one Params event = one record's content.
            Some(RequestEvent::Params(content)) => {
                assert_eq!(ends, 0);
                assert!(!content.is_empty());
                assert!(content.len() <= limit, "record content over max_content");
                let in_record = decode_pairs(content).expect("record holds a partial pair");
                decoded.extend(in_record.into_iter().map(|(n, v)| (n.to_vec(), v.to_vec())));
                all.extend_from_slice(content);
            }
            Some(RequestEvent::ParamsEnd) => ends += 1,
            Some(RequestEvent::Begin {
                request_id: id,
                role,
                keep_conn,
            }) => {
                assert_eq!((id, role, keep_conn), (request_id, ROLE_RESPONDER, true));
                begins += 1;
            }
            Some(other) => panic!("unexpected event {other:?}"),
            None if n == 0 => break,
            None => {}
        }
    }
    assert!(input.is_empty());
    assert!(d.at_record_boundary());
    assert_eq!((begins, ends), (1, 1));

    let want: Vec<(Vec<u8>, Vec<u8>)> = accepted
        .iter()
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect();
    assert_eq!(decoded, want);
    let whole: Vec<(Vec<u8>, Vec<u8>)> = decode_pairs(&all)
        .expect("concatenation decodes")
        .into_iter()
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect();
    assert_eq!(whole, want);
    let mut encoded = Vec::new();
    for (n, v) in &accepted {
        encode_pair(&mut encoded, n, v);
    }
    assert_eq!(encoded, all);

    // decode_pairs on arbitrary bytes must not panic.
    let _ = decode_pairs(rest);
});
