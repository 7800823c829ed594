//! Header block scanner: arbitrary bytes fed whole and split at arbitrary
//! points must agree (end position, body, parse result); parse never panics and
//! never accepts a header containing CR, LF, NUL or another control byte.
//! The Content-Length values of an accepted block are combined by `declared_length`,
//! checked against a plain reference (decimal, equal, at most i64::MAX).
//!
//! Input layout: byte 0 = split seed and limit selector, rest = STDOUT stream.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unused_imports)]
#[path = "../../src/fcgi/mod.rs"]
mod fcgi;

use fcgi::headers::{
    DEFAULT_MAX_HEADER_BLOCK, Feed, HeaderError, HeaderScanner, ResponseHead, declared_length,
};

/// Chunk lengths from a seed: a small xorshift generator.
fn chunk_lens(seed: u8, total: usize) -> Vec<usize> {
    let mut state = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    let max = match (seed >> 2) & 3 {
        0 => 1,
        1 => 3,
        2 => 17,
        _ => 512,
    };
    let mut out = Vec::new();
    let mut left = total;
    while left > 0 {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state as usize % max + 1).min(left);
        out.push(n);
        left -= n;
    }
    out
}

/// Result of one run: body bytes and parse result, or the feed error, or
/// "incomplete" (None) with the buffered length.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Done {
        body: Vec<u8>,
        parsed: Result<ResponseHead, HeaderError>,
        block_len: usize,
    },
    Failed(HeaderError),
    Incomplete(usize),
}

fn run(max: usize, input: &[u8], lens: &[usize]) -> Outcome {
    let mut s = HeaderScanner::new(max);
    let mut start = 0;
    let mut body: Option<Vec<u8>> = None;
    for &len in lens {
        let chunk = &input[start..start + len];
        start += len;
        if let Some(b) = &mut body {
            b.extend_from_slice(chunk);
            continue;
        }
        match s.feed(chunk) {
            Ok(Feed::NeedMore) => assert!(s.buffered_len() <= max),
            Ok(Feed::Done { body_offset }) => {
                assert!(body_offset <= chunk.len());
                body = Some(chunk[body_offset..].to_vec());
            }
            Err(e) => {
                assert_eq!(e, HeaderError::TooLarge { limit: max });
                assert!(s.buffered_len() <= max);
                return Outcome::Failed(e);
            }
        }
    }
    match body {
        Some(body) => {
            let block_len = s.buffered_len();
            assert!(block_len <= max);
            Outcome::Done {
                body,
                parsed: s.parse(),
                block_len,
            }
        }
        None => {
            // parse before Done must not panic either.
            let _ = s.parse();
            Outcome::Incomplete(s.buffered_len())
        }
    }
}

/// What `declared_length` must answer, computed another way: every comma-separated element
/// of every value, trimmed of spaces and tabs, is a non-empty run of digits whose value (via
/// u128, leading zeros allowed) fits in an i64, and all are equal.
fn reference_length(values: &[&[u8]]) -> Option<Option<u64>> {
    let mut all = Vec::new();
    for v in values {
        for e in v.split(|&c| c == b',') {
            let e = e.trim_ascii();
            if e.is_empty() || !e.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let digits = e.iter().skip_while(|&&c| c == b'0').count();
            if digits > 19 {
                return None;
            }
            let n: u128 = std::str::from_utf8(e).ok()?.parse().ok()?;
            if n > i64::MAX as u128 {
                return None;
            }
            all.push(n as u64);
        }
    }
    if all.windows(2).any(|w| w[0] != w[1]) {
        return None;
    }
    Some(all.first().copied())
}

fn clean(bytes: &[u8]) -> bool {
    !bytes.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fuzz_target!(|data: &[u8]| {
    let [seed, input @ ..] = data else {
        return;
    };
    let max = match seed & 3 {
        0 => DEFAULT_MAX_HEADER_BLOCK,
        1 => 64,
        2 => 300,
        _ => 4096,
    };
    let whole = run(max, input, &[input.len()]);
    let split = run(max, input, &chunk_lens(*seed, input.len()));
    assert_eq!(whole, split);
    if input.len() <= 2048 {
        assert_eq!(whole, run(max, input, &vec![1; input.len()]));
    }

    if let Outcome::Done {
        body,
        parsed,
        block_len,
    } = &whole
    {
        // The block and body partition the input.
        assert_eq!(block_len + body.len(), input.len());
        assert_eq!(&input[*block_len..], &body[..]);
        // The block ends with LF CR* LF (or is CR* LF at the very start).
        let block = &input[..*block_len];
        assert_eq!(block.last(), Some(&b'\n'));
        if let Ok(head) = parsed {
            for (n, v) in &head.headers {
                assert!(!n.is_empty() && n.iter().all(|&b| is_tchar(b)));
                assert!(clean(v), "control byte in accepted value");
                assert!(!n.eq_ignore_ascii_case(b"status"));
                assert!(!n.eq_ignore_ascii_case(b"content-type"));
                assert!(!n.eq_ignore_ascii_case(b"location"));
            }
            for v in [&head.status_line, &head.content_type, &head.location]
                .into_iter()
                .flatten()
            {
                assert!(clean(v));
            }
            let lengths: Vec<&[u8]> = head
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(b"content-length"))
                .map(|(_, v)| v.as_slice())
                .collect();
            assert_eq!(
                declared_length(lengths.iter().copied()).ok(),
                reference_length(&lengths)
            );
            assert_eq!(head.status.is_some(), head.status_line.is_some());
            if let (Some(code), Some(line)) = (head.status, &head.status_line) {
                assert!((100..=999).contains(&code));
                assert!(line.starts_with(code.to_string().as_bytes()));
            }
        }
    }
});
