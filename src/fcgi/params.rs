//! FastCGI name/value pairs (the content of PARAMS records): encoding,
//! packing into records that only hold whole pairs, and decoding.
//!
//! Each length is one byte when below 128, otherwise four bytes big-endian
//! with the high bit set (so at most 0x7fffffff).

use std::fmt;

use super::record::{HEADER_LEN, MAX_CONTENT_LEN, push_stream_end, rtype};

/// Largest length the 4-byte form can express.
const MAX_PAIR_FIELD: usize = 0x7fff_ffff;

/// Bytes needed to encode a length, or `None` if it cannot be encoded.
#[inline]
fn len_size(n: usize) -> Option<usize> {
    if n < 128 {
        Some(1)
    } else if n <= MAX_PAIR_FIELD {
        Some(4)
    } else {
        None
    }
}

#[inline]
fn push_len(out: &mut Vec<u8>, n: usize) {
    if n < 128 {
        out.push(n as u8);
    } else {
        // Callers check n <= 0x7fffffff, so the cast is lossless.
        out.extend_from_slice(&((n as u32) | 0x8000_0000).to_be_bytes());
    }
}

/// Encoded size of one pair (1-byte length if < 128, else 4-byte with the
/// high bit set). A name or value longer than 0x7fffffff bytes cannot be
/// encoded: the result is then `usize::MAX` (larger than any record).
pub fn pair_len(name: &[u8], value: &[u8]) -> usize {
    match (len_size(name.len()), len_size(value.len())) {
        (Some(a), Some(b)) => (a + b)
            .saturating_add(name.len())
            .saturating_add(value.len()),
        _ => usize::MAX,
    }
}

/// Append one encoded pair to `out`. A pair with a name or value longer than
/// 0x7fffffff bytes cannot be represented and appends nothing.
pub fn encode_pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    let total = pair_len(name, value);
    if total == usize::MAX {
        return;
    }
    out.reserve(total);
    push_len(out, name.len());
    push_len(out, value.len());
    out.extend_from_slice(name);
    out.extend_from_slice(value);
}

/// A pair whose encoding does not fit in one PARAMS record (it was skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairTooLarge {
    /// Length of the name.
    pub name_len: usize,
    /// Length of the value.
    pub value_len: usize,
    /// Encoded size of the pair (`usize::MAX` if not encodable at all).
    pub encoded_len: usize,
}

impl fmt::Display for PairTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "parameter too large for one FastCGI record (name {} bytes, value {} bytes, encoded {} bytes)",
            self.name_len, self.value_len, self.encoded_len
        )
    }
}

impl std::error::Error for PairTooLarge {}

/// Packs pairs into PARAMS records directly in `out`: every record holds only
/// whole pairs, its content is at most `max_content` bytes, and it is padded
/// to a multiple of 8. Call [`ParamsWriter::finish`] to close the last record
/// and append the empty PARAMS record; if the writer is dropped without
/// `finish`, the open record is still closed (but no empty record is added).
pub struct ParamsWriter<'o> {
    out: &'o mut Vec<u8>,
    request_id: u16,
    max_content: usize,
    /// Offset in `out` of the open record's header, if a record is open.
    open: Option<usize>,
}

impl<'o> ParamsWriter<'o> {
    /// A writer appending to `out`; `max_content` is clamped to 8..=65535.
    pub fn new(out: &'o mut Vec<u8>, request_id: u16, max_content: usize) -> Self {
        ParamsWriter {
            out,
            request_id,
            max_content: max_content.clamp(8, MAX_CONTENT_LEN),
            open: None,
        }
    }

    /// Add one pair. If its encoded size exceeds `max_content`, nothing is
    /// written and `PairTooLarge` is returned (the writer stays usable).
    pub fn add(&mut self, name: &[u8], value: &[u8]) -> Result<(), PairTooLarge> {
        let len = pair_len(name, value);
        if len > self.max_content {
            return Err(PairTooLarge {
                name_len: name.len(),
                value_len: value.len(),
                encoded_len: len,
            });
        }
        if let Some(start) = self.open {
            let used = self.out.len().saturating_sub(start + HEADER_LEN);
            if used + len > self.max_content {
                self.close();
            }
        }
        if self.open.is_none() {
            self.open = Some(self.out.len());
            self.out.extend_from_slice(&[0u8; HEADER_LEN]);
        }
        encode_pair(self.out, name, value);
        Ok(())
    }

    /// Close the open record (if any) and append the empty PARAMS record.
    pub fn finish(mut self) {
        self.close();
        push_stream_end(self.out, rtype::PARAMS, self.request_id);
    }

    /// Patch the open record's header and append its padding.
    fn close(&mut self) {
        let Some(start) = self.open.take() else {
            return;
        };
        let content = self.out.len().saturating_sub(start + HEADER_LEN);
        // content <= max_content <= 0xffff, so the cast is lossless.
        let (hdr, pad) = header_for(
            rtype::PARAMS,
            self.request_id,
            content.min(MAX_CONTENT_LEN) as u16,
        );
        if let Some(slot) = self.out.get_mut(start..start + HEADER_LEN) {
            slot.copy_from_slice(&hdr);
        }
        self.out.resize(self.out.len() + pad, 0);
    }
}

impl Drop for ParamsWriter<'_> {
    fn drop(&mut self) {
        self.close();
    }
}

/// Record header with padding to a multiple of 8 (content may be up to 0xffff,
/// unlike `stream_header`, which caps at 65528).
fn header_for(rt: u8, request_id: u16, content_len: u16) -> ([u8; HEADER_LEN], usize) {
    let pad = usize::from(content_len).wrapping_neg() & 7;
    let id = request_id.to_be_bytes();
    let cl = content_len.to_be_bytes();
    (
        [
            super::record::VERSION_1,
            rt,
            id[0],
            id[1],
            cl[0],
            cl[1],
            pad as u8,
            0,
        ],
        pad,
    )
}

/// The PARAMS content ended in the middle of a pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamsDecodeError;

impl fmt::Display for ParamsDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("truncated FastCGI name/value pair")
    }
}

impl std::error::Error for ParamsDecodeError {}

/// Read one length at `*pos`, advancing it.
fn read_len(data: &[u8], pos: &mut usize) -> Result<usize, ParamsDecodeError> {
    let b0 = *data.get(*pos).ok_or(ParamsDecodeError)?;
    if b0 & 0x80 == 0 {
        *pos += 1;
        return Ok(usize::from(b0));
    }
    let end = pos.checked_add(4).ok_or(ParamsDecodeError)?;
    let b: [u8; 4] = data
        .get(*pos..end)
        .and_then(|s| s.try_into().ok())
        .ok_or(ParamsDecodeError)?;
    *pos = end;
    let n = u32::from_be_bytes(b) & 0x7fff_ffff;
    usize::try_from(n).map_err(|_| ParamsDecodeError)
}

/// Take `n` bytes at `*pos`, advancing it.
fn take<'a>(data: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], ParamsDecodeError> {
    let end = pos.checked_add(n).ok_or(ParamsDecodeError)?;
    let s = data.get(*pos..end).ok_or(ParamsDecodeError)?;
    *pos = end;
    Ok(s)
}

/// One decoded name/value pair, borrowed from the input.
pub type Pair<'a> = (&'a [u8], &'a [u8]);

/// Decode the concatenated content of PARAMS records into pairs (for test
/// backends and fuzz round trips). Empty input gives no pairs.
pub fn decode_pairs(data: &[u8]) -> Result<Vec<Pair<'_>>, ParamsDecodeError> {
    let mut pairs = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let nlen = read_len(data, &mut pos)?;
        let vlen = read_len(data, &mut pos)?;
        let name = take(data, &mut pos, nlen)?;
        let value = take(data, &mut pos, vlen)?;
        pairs.push((name, value));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::super::record::{RequestDecoder, RequestEvent, push_begin_request};
    use super::*;

    fn enc(name: &[u8], value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_pair(&mut v, name, value);
        v
    }

    /// Split PARAMS output into (header, content) per record, checking padding.
    fn records(out: &[u8]) -> Vec<([u8; 8], Vec<u8>)> {
        let mut recs = Vec::new();
        let mut pos = 0;
        while pos < out.len() {
            let h: [u8; 8] = out[pos..pos + 8].try_into().unwrap();
            let cl = u16::from_be_bytes([h[4], h[5]]) as usize;
            let pl = h[6] as usize;
            assert_eq!((cl + pl) % 8, 0, "record not padded to a multiple of 8");
            assert!(pl < 8);
            let content = out[pos + 8..pos + 8 + cl].to_vec();
            assert!(out[pos + 8 + cl..pos + 8 + cl + pl].iter().all(|&b| b == 0));
            recs.push((h, content));
            pos += 8 + cl + pl;
        }
        assert_eq!(pos, out.len());
        recs
    }

    #[test]
    fn spec_example_pairs() {
        // Spec appendix B: "\013\002SERVER_PORT80\013\016SERVER_ADDR199.170.183.42"
        let mut v = enc(b"SERVER_PORT", b"80");
        v.extend(enc(b"SERVER_ADDR", b"199.170.183.42"));
        assert_eq!(v, b"\x0b\x02SERVER_PORT80\x0b\x0eSERVER_ADDR199.170.183.42");
        assert_eq!(
            decode_pairs(&v).unwrap(),
            vec![
                (&b"SERVER_PORT"[..], &b"80"[..]),
                (&b"SERVER_ADDR"[..], &b"199.170.183.42"[..])
            ]
        );
    }

    #[test]
    fn length_127_vs_128() {
        let n127 = vec![b'n'; 127];
        let v128 = vec![b'v'; 128];
        let e = enc(&n127, &v128);
        assert_eq!(&e[..5], &[0x7f, 0x80, 0x00, 0x00, 0x80]);
        assert_eq!(e.len(), 1 + 4 + 127 + 128);
        assert_eq!(pair_len(&n127, &v128), e.len());

        let e = enc(&v128, &n127);
        assert_eq!(&e[..5], &[0x80, 0x00, 0x00, 0x80, 0x7f]);
        assert_eq!(pair_len(&v128, &n127), 4 + 1 + 128 + 127);

        let big = vec![b'x'; 0x12345];
        let e = enc(b"", &big);
        assert_eq!(&e[..5], &[0x00, 0x80, 0x01, 0x23, 0x45]);
        assert_eq!(decode_pairs(&e).unwrap(), vec![(&b""[..], &big[..])]);

        assert_eq!(pair_len(b"", b""), 2);
        assert_eq!(enc(b"", b""), [0, 0]);
        assert_eq!(decode_pairs(&[0, 0]).unwrap(), vec![(&b""[..], &b""[..])]);
    }

    #[test]
    fn four_byte_length_high_bit_masked() {
        // 4-byte form may encode small values too; high bit is the marker.
        let data = b"\x80\x00\x00\x01\x01AB";
        assert_eq!(decode_pairs(data).unwrap(), vec![(&b"A"[..], &b"B"[..])]);
    }

    #[test]
    fn decode_truncated() {
        assert_eq!(decode_pairs(b""), Ok(vec![]));
        for bad in [
            &b"\x01"[..],
            b"\x01\x01A",
            b"\x80\x00\x00",
            b"\x01\x80\x00\x00",
            b"\x05\x00abc",
            b"\x00\x05ab",
            b"\xff\xff\xff\xff\x00",
            b"\x01\x01AB\x01",
        ] {
            assert_eq!(decode_pairs(bad), Err(ParamsDecodeError), "{bad:?}");
        }
    }

    #[test]
    fn writer_single_record() {
        let mut out = Vec::new();
        let mut w = ParamsWriter::new(&mut out, 1, 16384);
        w.add(b"SERVER_PORT", b"80").unwrap();
        w.add(b"SERVER_ADDR", b"199.170.183.42").unwrap();
        w.finish();
        let content = b"\x0b\x02SERVER_PORT80\x0b\x0eSERVER_ADDR199.170.183.42";
        assert_eq!(content.len(), 42);
        let mut expect = vec![1, 4, 0, 1, 0, 42, 6, 0];
        expect.extend_from_slice(content);
        expect.extend_from_slice(&[0; 6]);
        expect.extend_from_slice(&[1, 4, 0, 1, 0, 0, 0, 0]);
        assert_eq!(out, expect);
    }

    #[test]
    fn writer_empty_only_end_record() {
        let mut out = Vec::new();
        ParamsWriter::new(&mut out, 3, 65535).finish();
        assert_eq!(out, [1, 4, 0, 3, 0, 0, 0, 0]);
    }

    #[test]
    fn writer_splits_on_whole_pairs() {
        // Each pair "\x01\x05Avalue" is 8 bytes; max 20 => 2 pairs per record.
        let mut out = Vec::new();
        let mut w = ParamsWriter::new(&mut out, 2, 20);
        for c in b"ABCDE" {
            w.add(&[*c], b"value").unwrap();
        }
        w.finish();
        let recs = records(&out);
        assert_eq!(recs.len(), 4);
        assert_eq!(recs[0].0, [1, 4, 0, 2, 0, 16, 0, 0]);
        assert_eq!(recs[0].1, b"\x01\x05Avalue\x01\x05Bvalue");
        assert_eq!(recs[1].1, b"\x01\x05Cvalue\x01\x05Dvalue");
        assert_eq!(recs[2].0, [1, 4, 0, 2, 0, 8, 0, 0]);
        assert_eq!(recs[2].1, b"\x01\x05Evalue");
        assert_eq!(recs[3].0, [1, 4, 0, 2, 0, 0, 0, 0]);
    }

    #[test]
    fn writer_exact_fit_and_too_large() {
        // max 16: a 16-byte pair fits exactly (no padding); 18 does not.
        let mut out = Vec::new();
        let mut w = ParamsWriter::new(&mut out, 1, 16);
        w.add(b"N", b"0123456789abc").unwrap(); // 2 + 1 + 13 = 16
        let err = w.add(b"NN", b"0123456789abcd").unwrap_err();
        assert_eq!(
            err,
            PairTooLarge {
                name_len: 2,
                value_len: 14,
                encoded_len: 18
            }
        );
        w.add(b"", b"").unwrap();
        w.finish();
        let recs = records(&out);
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].0, [1, 4, 0, 1, 0, 16, 0, 0]);
        assert_eq!(recs[0].1, b"\x01\x0dN0123456789abc");
        assert_eq!(recs[1].0, [1, 4, 0, 1, 0, 2, 6, 0]);
        assert_eq!(recs[1].1, b"\x00\x00");
        assert_eq!(recs[2].0, [1, 4, 0, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn writer_clamps_max_content() {
        // max_content below 8 is raised to 8.
        let mut out = Vec::new();
        let mut w = ParamsWriter::new(&mut out, 1, 0);
        w.add(b"abc", b"def").unwrap(); // 8 bytes: fits
        assert_eq!(
            w.add(b"abc", b"defg"),
            Err(PairTooLarge {
                name_len: 3,
                value_len: 4,
                encoded_len: 9
            })
        );
        w.finish();
        assert_eq!(records(&out).len(), 2);

        // Above 65535 is lowered to 65535; a pair of exactly 65535 bytes fits,
        // and the record gets 1 byte of padding.
        let name = vec![b'N'; 100];
        let value = vec![b'V'; 65535 - 100 - 5];
        assert_eq!(pair_len(&name, &value), 65535);
        let mut out = Vec::new();
        let mut w = ParamsWriter::new(&mut out, 1, usize::MAX);
        w.add(&name, &value).unwrap();
        assert_eq!(
            w.add(&name, &[b'V'; 65535 - 100 - 4])
                .unwrap_err()
                .encoded_len,
            65536
        );
        w.add(b"a", b"b").unwrap();
        w.finish();
        let recs = records(&out);
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].0, [1, 4, 0, 1, 0xff, 0xff, 1, 0]);
        assert_eq!(
            decode_pairs(&recs[0].1).unwrap(),
            vec![(&name[..], &value[..])]
        );
        assert_eq!(recs[1].1, b"\x01\x01ab");
    }

    #[test]
    fn writer_dropped_without_finish_closes_record() {
        let mut out = Vec::new();
        {
            let mut w = ParamsWriter::new(&mut out, 1, 100);
            w.add(b"A", b"B").unwrap();
        }
        assert_eq!(out, [1, 4, 0, 1, 0, 4, 4, 0, 1, 1, b'A', b'B', 0, 0, 0, 0]);
    }

    #[test]
    fn writer_appends_after_existing_bytes() {
        let mut out = vec![0xee; 3];
        let mut w = ParamsWriter::new(&mut out, 1, 100);
        w.add(b"A", b"B").unwrap();
        w.finish();
        assert_eq!(&out[..3], &[0xee; 3]);
        assert_eq!(&out[3..11], &[1, 4, 0, 1, 0, 4, 4, 0]);
    }

    #[test]
    fn writer_roundtrip_through_request_decoder() {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..300)
            .map(|i| {
                (
                    format!("NAME_{i}").into_bytes(),
                    vec![b'a' + (i % 26) as u8; i * 3],
                )
            })
            .collect();
        let mut out = Vec::new();
        let mut w = ParamsWriter::new(&mut out, 9, 1000);
        let mut accepted = Vec::new();
        for (n, v) in &pairs {
            if w.add(n, v).is_ok() {
                accepted.push((n.clone(), v.clone()));
            }
        }
        w.finish();
        assert_eq!(
            accepted.len(),
            pairs.iter().filter(|(n, v)| pair_len(n, v) <= 1000).count()
        );
        let mut all = Vec::new();
        for (h, content) in records(&out) {
            assert!(content.len() <= 1000);
            assert!(
                decode_pairs(&content).is_ok(),
                "record holds a partial pair"
            );
            all.extend_from_slice(&content);
            assert_eq!(&h[..4], &[1, 4, 0, 9]);
        }
        // Also through the request decoder.
        let mut begin = Vec::new();
        push_begin_request(&mut begin, 9, 1, false);
        begin.extend_from_slice(&out);
        let mut d = RequestDecoder::new();
        let mut rest = &begin[..];
        let mut content = Vec::new();
        let mut ended = false;
        loop {
            let (n, ev) = d.decode(rest).unwrap();
            rest = &rest[n..];
            match ev {
                Some(RequestEvent::Params(p)) => content.extend_from_slice(p),
                Some(RequestEvent::ParamsEnd) => ended = true,
                Some(_) => {}
                None if n == 0 => break,
                None => {}
            }
        }
        assert!(ended);
        assert_eq!(content, all);
        let decoded = decode_pairs(&content).unwrap();
        let want: Vec<(&[u8], &[u8])> = accepted.iter().map(|(n, v)| (&n[..], &v[..])).collect();
        assert_eq!(decoded, want);
    }

    #[test]
    fn display_texts() {
        assert_eq!(
            ParamsDecodeError.to_string(),
            "truncated FastCGI name/value pair"
        );
        let e = PairTooLarge {
            name_len: 1,
            value_len: 2,
            encoded_len: 3,
        };
        assert!(e.to_string().contains("value 2 bytes"));
    }
}
