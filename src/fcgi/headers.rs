//! Scanning and parsing of the CGI response header block an application
//! writes at the start of its STDOUT stream.
//!
//! Stricter than mod_fastcgi: any control character in a header, a
//! malformed name, or a bad `Status` rejects the whole response, so no header
//! can ever be injected.
//!
//! The block ends at the first LF followed by zero or more CR and then LF
//! (`\n\n`, `\r\n\r\n`, `\n\r\n`, `\r\n\n`, ...). A block may also be empty: a
//! stream starting with `\n` or `\r\n` has no headers.

use std::borrow::Cow;
use std::fmt;

use memchr::{memchr, memchr_iter};

/// Default limit on the header block size (64 KiB).
pub const DEFAULT_MAX_HEADER_BLOCK: usize = 64 * 1024;

/// Longest raw line or value kept in an error (for logging).
const MAX_ERROR_BYTES: usize = 200;

/// Why a header block was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// The block did not end within `limit` bytes.
    TooLarge {
        /// The configured maximum block size.
        limit: usize,
    },
    /// A line that is not a valid header (raw bytes, at most 200).
    Malformed {
        /// The offending line, without its LF, truncated to 200 bytes.
        line: Vec<u8>,
    },
    /// A `Status` value that is not `NNN` (100..=999) plus an optional reason
    /// (the trimmed value, truncated to 200 bytes).
    InvalidStatus(Vec<u8>),
}

/// Render bytes for a log line: invalid UTF-8 becomes U+FFFD and ASCII
/// control characters (and DEL) become `\xNN`.
pub fn escape_lossy(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_control() {
            s.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            s.push(c);
        }
    }
    s
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::TooLarge { limit } => write!(f, "header block larger than {limit} bytes"),
            HeaderError::Malformed { line } => {
                write!(f, "malformed header '{}'", escape_lossy(line))
            }
            HeaderError::InvalidStatus(v) => write!(f, "invalid Status '{}'", escape_lossy(v)),
        }
    }
}

impl std::error::Error for HeaderError {}

/// Result of [`HeaderScanner::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// The block has not ended yet: feed more data.
    NeedMore,
    /// The block ended; the body starts at `body_offset` in the chunk passed
    /// to this `feed` call (may equal the chunk length).
    Done {
        /// Index in this call's chunk where the body begins.
        body_offset: usize,
    },
}

/// Parsed response header block, owned (see [`Head`] for the borrowed form).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResponseHead {
    /// Status code from the last `Status` header.
    pub status: Option<u16>,
    /// The last `Status` value, trimmed (e.g. `b"404 Not Found"`).
    pub status_line: Option<Vec<u8>>,
    /// The last `Content-Type` value.
    pub content_type: Option<Vec<u8>>,
    /// The last `Location` value.
    pub location: Option<Vec<u8>>,
    /// Every other header in order, names as sent, duplicates kept.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A validated header block, borrowed from the scanner: the values the response needs, and
/// the other headers on demand ([`Head::for_each_header`]). Nothing is copied unless a value
/// was folded over several lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head<'a> {
    /// Status code from the last `Status` header.
    pub status: Option<u16>,
    /// The last `Status` value, trimmed (e.g. `b"404 Not Found"`).
    pub status_line: Option<Cow<'a, [u8]>>,
    /// The last `Content-Type` value.
    pub content_type: Option<Cow<'a, [u8]>>,
    /// The last `Location` value.
    pub location: Option<Cow<'a, [u8]>>,
    block: &'a [u8],
}

impl<'a> Head<'a> {
    /// Every header other than `Status`, `Content-Type` and `Location`, in order, names as
    /// sent, duplicates kept.
    pub fn for_each_header(&self, mut f: impl FnMut(&[u8], &[u8])) {
        // The block was validated when this Head was made: no error is possible here.
        let _ = for_each_field(self.block, |name, value| {
            if special(name).is_none() {
                f(name, &value);
            }
        });
    }

    /// The owned form (every header collected).
    pub fn to_owned_head(&self) -> ResponseHead {
        let mut headers = Vec::new();
        self.for_each_header(|n, v| headers.push((n.to_vec(), v.to_vec())));
        ResponseHead {
            status: self.status,
            status_line: self.status_line.as_deref().map(<[u8]>::to_vec),
            content_type: self.content_type.as_deref().map(<[u8]>::to_vec),
            location: self.location.as_deref().map(<[u8]>::to_vec),
            headers,
        }
    }
}

/// Combines the `Content-Length` values of a response (one per header line, in order) into
/// the length they declare, as RFC 9110 (8.6) allows a recipient to: every line, and every
/// element of a comma-separated list, must be a decimal number (optional spaces or tabs
/// around it) and all must be equal. `Ok(None)` when there is no value; `Err` with the first
/// offending value when a value is not a number, does not fit in 63 bits, or differs from
/// another.
pub fn declared_length<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<u64>, Vec<u8>> {
    let mut found: Option<u64> = None;
    for line in values {
        for element in line.split(|&c| c == b',') {
            let v = element.trim_ascii();
            let bad = || v.iter().take(MAX_ERROR_BYTES).copied().collect::<Vec<u8>>();
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
                return Err(bad());
            }
            let n = v
                .iter()
                .try_fold(0u64, |n, &d| {
                    n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
                })
                .filter(|&n| n <= i64::MAX as u64)
                .ok_or_else(bad)?;
            match found {
                Some(m) if m != n => return Err(bad()),
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

/// Incremental finder of the end of the header block; keeps only the block
/// (at most `max_len` bytes), scans each chunk in place before copying it and
/// never rescans bytes already examined.
#[derive(Debug, Clone)]
pub struct HeaderScanner {
    /// The header bytes received so far (the whole block once done).
    buf: Vec<u8>,
    /// Largest block accepted, terminator included.
    max_len: usize,
    /// All bytes since the last LF (or the block start) are CR: an LF next
    /// would end the block.
    after_lf: bool,
    /// End of the header lines: index of the last LF seen (0 = block start).
    lines_end: usize,
    /// The end of the block was found.
    done: bool,
    /// The block exceeded `max_len`.
    too_large: bool,
}

impl HeaderScanner {
    /// A scanner that accepts blocks of at most `max_len` bytes, terminating
    /// blank line included.
    pub fn new(max_len: usize) -> Self {
        Self::with_buffer(max_len, Vec::new())
    }

    /// Like [`HeaderScanner::new`], keeping the block in `buf` (cleared first): a caller can
    /// reuse one allocation for many responses (see [`HeaderScanner::take_buffer`]).
    pub fn with_buffer(max_len: usize, mut buf: Vec<u8>) -> Self {
        buf.clear();
        HeaderScanner {
            buf,
            max_len,
            after_lf: true,
            lines_end: 0,
            done: false,
            too_large: false,
        }
    }

    /// Feed the next piece of STDOUT. Only the header part of `chunk` is
    /// buffered. After `Done`, further calls return `Done { body_offset: 0 }`;
    /// after `TooLarge`, they return `TooLarge` again.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Feed, HeaderError> {
        if self.done {
            return Ok(Feed::Done { body_offset: 0 });
        }
        if self.too_large {
            return Err(HeaderError::TooLarge {
                limit: self.max_len,
            });
        }
        let room = self.max_len.saturating_sub(self.buf.len());
        let seg = chunk.get(..room).unwrap_or(chunk);
        if let Some(end) = self.scan(seg) {
            self.buf.extend_from_slice(seg.get(..end).unwrap_or(seg));
            self.done = true;
            return Ok(Feed::Done { body_offset: end });
        }
        self.buf.extend_from_slice(seg);
        if seg.len() < chunk.len() {
            self.too_large = true;
            return Err(HeaderError::TooLarge {
                limit: self.max_len,
            });
        }
        Ok(Feed::NeedMore)
    }

    /// Gives the block buffer back (for reuse); the scanner is left empty and done.
    pub fn take_buffer(&mut self) -> Vec<u8> {
        self.done = true;
        self.lines_end = 0;
        std::mem::take(&mut self.buf)
    }

    /// Bytes of header block held so far.
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }

    /// True once the end of the block was found.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Look for the block end in `seg`, the bytes that follow `buf`; returns
    /// the index in `seg` just past the end. Records the last LF position.
    fn scan(&mut self, seg: &[u8]) -> Option<usize> {
        let base = self.buf.len();
        let mut i = 0;
        loop {
            if self.after_lf {
                while seg.get(i) == Some(&b'\r') {
                    i += 1;
                }
                match seg.get(i) {
                    None => return None,
                    Some(b'\n') => return Some(i + 1),
                    Some(_) => self.after_lf = false,
                }
            }
            let k = memchr(b'\n', seg.get(i..).unwrap_or(&[]))?;
            self.lines_end = base + i + k;
            i += k + 1;
            self.after_lf = true;
        }
    }

    /// Parse the block after `feed` returned `Done`, without copying it. Called earlier, it
    /// returns `Malformed` carrying (the start of) the incomplete data.
    pub fn head(&self) -> Result<Head<'_>, HeaderError> {
        if !self.done {
            return Err(malformed(&self.buf));
        }
        parse_head(self.buf.get(..self.lines_end).unwrap_or(&[]))
    }

    /// [`HeaderScanner::head`] in owned form.
    pub fn parse(&self) -> Result<ResponseHead, HeaderError> {
        self.head().map(|h| h.to_owned_head())
    }
}

fn truncated(bytes: &[u8]) -> Vec<u8> {
    bytes.get(..MAX_ERROR_BYTES).unwrap_or(bytes).to_vec()
}

fn malformed(line: &[u8]) -> HeaderError {
    HeaderError::Malformed {
        line: truncated(line),
    }
}

/// RFC 7230 `tchar` lookup table.
const TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        c += 1;
    }
    t
};

#[inline]
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

#[inline]
fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_ws(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if is_ws(*first) {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if is_ws(*last) {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// Calls `f` with every header of `block` (the header lines without the terminating blank
/// line) in order: the name as sent and the value trimmed, with folded continuation lines
/// joined by one space (the only case that allocates). Stops at the first malformed line.
fn for_each_field<'a>(
    block: &'a [u8],
    mut f: impl FnMut(&'a [u8], Cow<'a, [u8]>),
) -> Result<(), HeaderError> {
    if block.is_empty() {
        return Ok(());
    }
    let mut pending: Option<(&'a [u8], Cow<'a, [u8]>)> = None;
    let mut start = 0;
    for lf in memchr_iter(b'\n', block).chain(std::iter::once(block.len())) {
        let raw = block.get(start..lf).unwrap_or(&[]);
        start = lf + 1;
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.is_empty() || line.iter().any(|&b| is_ctl(b)) {
            return Err(malformed(line));
        }
        if line.first().is_some_and(|&b| is_ws(b)) {
            // Obsolete line folding: continue the previous header's value.
            let Some((_, value)) = pending.as_mut() else {
                return Err(malformed(line));
            };
            let more = trim_ws(line);
            if !more.is_empty() {
                let v = value.to_mut();
                if !v.is_empty() {
                    v.push(b' ');
                }
                v.extend_from_slice(more);
            }
            continue;
        }
        let Some(colon) = memchr(b':', line) else {
            return Err(malformed(line));
        };
        let name = line.get(..colon).unwrap_or(&[]);
        if name.is_empty() || !name.iter().all(|&b| TCHAR[usize::from(b)]) {
            return Err(malformed(line));
        }
        let value = trim_ws(line.get(colon + 1..).unwrap_or(&[]));
        if let Some((n, v)) = pending.replace((name, Cow::Borrowed(value))) {
            f(n, v);
        }
    }
    if let Some((n, v)) = pending {
        f(n, v);
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Special {
    Status,
    ContentType,
    Location,
}

fn special(name: &[u8]) -> Option<Special> {
    if name.eq_ignore_ascii_case(b"status") {
        Some(Special::Status)
    } else if name.eq_ignore_ascii_case(b"content-type") {
        Some(Special::ContentType)
    } else if name.eq_ignore_ascii_case(b"location") {
        Some(Special::Location)
    } else {
        None
    }
}

/// Validate a whole block: every line, then every `Status` (the first invalid one is the
/// error); the last `Status`, `Content-Type` and `Location` win.
fn parse_head(block: &[u8]) -> Result<Head<'_>, HeaderError> {
    let mut head = Head {
        status: None,
        status_line: None,
        content_type: None,
        location: None,
        block,
    };
    let mut bad_status: Option<HeaderError> = None;
    for_each_field(block, |name, value| match special(name) {
        Some(Special::Status) => match parse_status(&value) {
            Ok(code) => {
                head.status = Some(code);
                head.status_line = Some(value);
            }
            Err(e) => {
                bad_status.get_or_insert(e);
            }
        },
        Some(Special::ContentType) => head.content_type = Some(value),
        Some(Special::Location) => head.location = Some(value),
        None => {}
    })?;
    match bad_status {
        Some(e) => Err(e),
        None => Ok(head),
    }
}

/// Validate a `Status` value: 3 digits (100..=999), then end or SP/HTAB.
fn parse_status(v: &[u8]) -> Result<u16, HeaderError> {
    let bad = || HeaderError::InvalidStatus(truncated(v));
    let (digits, rest) = match v {
        [a, b, c, rest @ ..] => ([*a, *b, *c], rest),
        _ => return Err(bad()),
    };
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    if rest.first().is_some_and(|&b| !is_ws(b)) {
        return Err(bad());
    }
    let code = digits
        .iter()
        .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
    if code < 100 {
        return Err(bad());
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: &str, v: &str) -> (Vec<u8>, Vec<u8>) {
        (n.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    /// Feed `input` in pieces ending at `cuts`; returns the body and the
    /// parsed head, or the error.
    fn scan(
        input: &[u8],
        cuts: &[usize],
        max: usize,
    ) -> Result<(Vec<u8>, ResponseHead), HeaderError> {
        let mut s = HeaderScanner::new(max);
        let mut bounds = cuts.to_vec();
        bounds.push(input.len());
        let mut start = 0;
        let mut body: Option<Vec<u8>> = None;
        for &end in &bounds {
            let chunk = &input[start..end];
            start = end;
            match &mut body {
                Some(b) => b.extend_from_slice(chunk),
                None => match s.feed(chunk)? {
                    Feed::NeedMore => {}
                    Feed::Done { body_offset } => {
                        assert!(body_offset <= chunk.len());
                        body = Some(chunk[body_offset..].to_vec());
                    }
                },
            }
        }
        match body {
            Some(b) => {
                assert!(s.buffered_len() <= max);
                Ok((b, s.parse()?))
            }
            None => Err(HeaderError::Malformed {
                line: b"<incomplete>".to_vec(),
            }),
        }
    }

    /// Same result for one piece, every 2-piece split, every 3-piece split
    /// (for short inputs), and byte-at-a-time.
    fn scan_all(input: &[u8]) -> Result<(Vec<u8>, ResponseHead), HeaderError> {
        scan_all_max(input, DEFAULT_MAX_HEADER_BLOCK)
    }

    fn scan_all_max(input: &[u8], max: usize) -> Result<(Vec<u8>, ResponseHead), HeaderError> {
        let whole = scan(input, &[], max);
        for a in 0..=input.len() {
            assert_eq!(scan(input, &[a], max), whole, "cut at {a}");
            if input.len() <= 40 {
                for b in a..=input.len() {
                    assert_eq!(scan(input, &[a, b], max), whole, "cuts at {a},{b}");
                }
            }
        }
        let every: Vec<usize> = (0..input.len()).collect();
        assert_eq!(scan(input, &every, max), whole, "byte at a time");
        whole
    }

    #[test]
    fn spec_example_response() {
        let (body, head) = scan_all(b"Content-type: text/html\r\n\r\n<html>\n<head> ... ").unwrap();
        assert_eq!(body, b"<html>\n<head> ... ");
        assert_eq!(head.content_type.as_deref(), Some(&b"text/html"[..]));
        assert_eq!(head.status, None);
        assert!(head.headers.is_empty());
    }

    #[test]
    fn php_like_response() {
        let input = b"X-Powered-By: PHP/8.2.7\r\nSet-Cookie: a=1; path=/\r\nSet-Cookie: b=2\r\n\
Status: 404 Not Found\r\nContent-type: text/html; charset=UTF-8\r\nContent-Length: 5\r\n\r\nhello";
        let (body, head) = scan_all(input).unwrap();
        assert_eq!(body, b"hello");
        assert_eq!(head.status, Some(404));
        assert_eq!(head.status_line.as_deref(), Some(&b"404 Not Found"[..]));
        assert_eq!(
            head.content_type.as_deref(),
            Some(&b"text/html; charset=UTF-8"[..])
        );
        assert_eq!(head.location, None);
        assert_eq!(
            head.headers,
            vec![
                h("X-Powered-By", "PHP/8.2.7"),
                h("Set-Cookie", "a=1; path=/"),
                h("Set-Cookie", "b=2"),
                h("Content-Length", "5")
            ]
        );
    }

    #[test]
    fn all_terminator_forms() {
        for (input, body) in [
            (&b"A: 1\n\nBODY"[..], &b"BODY"[..]),
            (b"A: 1\r\n\r\nBODY", b"BODY"),
            (b"A: 1\n\r\nBODY", b"BODY"),
            (b"A: 1\r\n\nBODY", b"BODY"),
            (b"A: 1\n\r\r\r\nBODY", b"BODY"),
            (b"A: 1\r\n\r\n", b""),
            (b"A: 1\r\n\r\n\r\n", b"\r\n"),
            (b"A: 1\n\n\n", b"\n"),
        ] {
            let (b, head) = scan_all(input).unwrap();
            assert_eq!(b, body, "{input:?}");
            assert_eq!(head.headers, vec![h("A", "1")], "{input:?}");
        }
    }

    #[test]
    fn body_offset_exact() {
        let mut s = HeaderScanner::new(100);
        assert_eq!(s.feed(b"A: 1\r").unwrap(), Feed::NeedMore);
        assert_eq!(s.feed(b"\n\r").unwrap(), Feed::NeedMore);
        assert_eq!(s.buffered_len(), 7);
        assert_eq!(s.feed(b"\nxyz").unwrap(), Feed::Done { body_offset: 1 });
        assert_eq!(s.buffered_len(), 8);
        assert_eq!(s.feed(b"more").unwrap(), Feed::Done { body_offset: 0 });
        assert_eq!(s.parse().unwrap().headers, vec![h("A", "1")]);

        let mut s = HeaderScanner::new(100);
        assert_eq!(s.feed(b"A: 1\n").unwrap(), Feed::NeedMore);
        assert_eq!(s.feed(b"\n").unwrap(), Feed::Done { body_offset: 1 });
        assert_eq!(s.feed(b"").unwrap(), Feed::Done { body_offset: 0 });

        let mut s = HeaderScanner::new(100);
        assert_eq!(s.feed(b"").unwrap(), Feed::NeedMore);
        assert_eq!(s.feed(b"A: 1\n\nB").unwrap(), Feed::Done { body_offset: 6 });
    }

    #[test]
    fn lone_cr_not_a_terminator() {
        // "\n\r" followed by something other than CR/LF is not an end.
        let r = scan_all(b"A: 1\n\rB: 2\n\n");
        assert_eq!(
            r,
            Err(HeaderError::Malformed {
                line: b"\rB: 2".to_vec()
            })
        );
        // CR CR LF after a LF still ends.
        let (b, _) = scan_all(b"A: 1\n\r\r\nx").unwrap();
        assert_eq!(b, b"x");
    }

    #[test]
    fn empty_block() {
        let (b, head) = scan_all(b"\r\nbody").unwrap();
        assert_eq!(b, b"body");
        assert_eq!(head, ResponseHead::default());
        let (b, head) = scan_all(b"\nbody").unwrap();
        assert_eq!(b, b"body");
        assert_eq!(head, ResponseHead::default());
    }

    #[test]
    fn too_large() {
        // Exactly at the limit is fine.
        let input = b"A: 1\r\n\r\nbody";
        assert_eq!(scan_all_max(input, 8).unwrap().0, b"body");
        // One byte less is not.
        assert_eq!(
            scan_all_max(input, 7),
            Err(HeaderError::TooLarge { limit: 7 })
        );
        // Never buffers more than the limit.
        let mut s = HeaderScanner::new(10);
        assert_eq!(s.feed(&[b'a'; 10]).unwrap(), Feed::NeedMore);
        assert_eq!(s.buffered_len(), 10);
        assert_eq!(s.feed(b"b"), Err(HeaderError::TooLarge { limit: 10 }));
        assert_eq!(s.buffered_len(), 10);
        assert_eq!(s.feed(b"\n\n"), Err(HeaderError::TooLarge { limit: 10 }));
        let mut s = HeaderScanner::new(4);
        assert_eq!(
            s.feed(&[b'x'; 1000]),
            Err(HeaderError::TooLarge { limit: 4 })
        );
        assert_eq!(s.buffered_len(), 4);
        // Zero limit.
        let mut s = HeaderScanner::new(0);
        assert_eq!(s.feed(b""), Ok(Feed::NeedMore));
        assert_eq!(s.feed(b"\n"), Err(HeaderError::TooLarge { limit: 0 }));
        assert_eq!(
            HeaderError::TooLarge { limit: 65536 }.to_string(),
            "header block larger than 65536 bytes"
        );
    }

    #[test]
    fn default_limit() {
        let mut input = b"X: ".to_vec();
        input.extend(std::iter::repeat_n(b'a', DEFAULT_MAX_HEADER_BLOCK - 5));
        input.extend_from_slice(b"\n\n");
        assert_eq!(input.len(), DEFAULT_MAX_HEADER_BLOCK);
        let mut s = HeaderScanner::new(DEFAULT_MAX_HEADER_BLOCK);
        assert_eq!(
            s.feed(&input).unwrap(),
            Feed::Done {
                body_offset: input.len()
            }
        );
        input.insert(0, b'Y');
        let mut s = HeaderScanner::new(DEFAULT_MAX_HEADER_BLOCK);
        assert_eq!(s.feed(&input), Err(HeaderError::TooLarge { limit: 65536 }));
    }

    #[test]
    fn malformed_lines() {
        for (input, line) in [
            (&b"NoColon\r\n\r\n"[..], &b"NoColon"[..]),
            (b"A: 1\r\nBad Name: x\r\n\r\n", b"Bad Name: x"),
            (b"A : 1\n\n", b"A : 1"),
            (b": v\n\n", b": v"),
            (b"A: x\0y\n\n", b"A: x\0y"),
            (b"A: x\ry\n\n", b"A: x\ry"),
            (b"A: x\x7fy\n\n", b"A: x\x7fy"),
            (b"A: x\x1by\n\n", b"A: x\x1by"),
            (b"A: 1\r\r\n\r\n", b"A: 1\r"),
            (b"N\xc3\xa9: v\n\n", b"N\xc3\xa9: v"),
            (b"A(b): v\n\n", b"A(b): v"),
            (b" folded: first\n\n", b" folded: first"),
            (b"\tX: y\r\n\r\n", b"\tX: y"),
        ] {
            assert_eq!(
                scan_all(input),
                Err(HeaderError::Malformed {
                    line: line.to_vec()
                }),
                "{input:?}"
            );
        }
    }

    #[test]
    fn malformed_line_truncated_and_display() {
        let mut input = b"X".repeat(300);
        input.extend_from_slice(b"\n\n");
        match scan_all(&input) {
            Err(HeaderError::Malformed { line }) => assert_eq!(line, b"X".repeat(200)),
            other => panic!("{other:?}"),
        }
        let e = HeaderError::Malformed {
            line: b"bad\x01line\xff\x7f".to_vec(),
        };
        assert_eq!(
            e.to_string(),
            "malformed header 'bad\\x01line\u{fffd}\\x7f'"
        );
    }

    #[test]
    fn tab_allowed_in_value_and_trimmed() {
        let (_, head) = scan_all(b"A:\tx\ty \t\r\nB:\r\nC:   \r\n\r\n").unwrap();
        assert_eq!(head.headers, vec![h("A", "x\ty"), h("B", ""), h("C", "")]);
    }

    #[test]
    fn tchar_names() {
        let (_, head) = scan_all(b"!#$%&'*+-.^_`|~09azAZ: v\n\n").unwrap();
        assert_eq!(head.headers, vec![h("!#$%&'*+-.^_`|~09azAZ", "v")]);
    }

    #[test]
    fn value_with_colons_and_high_bytes() {
        let (_, head) = scan_all(b"Location: http://x/\xff?a=b:c\n\n").unwrap();
        assert_eq!(head.location.as_deref(), Some(&b"http://x/\xff?a=b:c"[..]));
        assert!(head.headers.is_empty());
    }

    #[test]
    fn obs_fold() {
        let (_, head) =
            scan_all(b"X-A: one\r\n  two \r\n\tthree\r\nX-B:\r\n  four\r\nX-C: c\r\n \r\n\r\n")
                .unwrap();
        assert_eq!(
            head.headers,
            vec![h("X-A", "one two three"), h("X-B", "four"), h("X-C", "c")]
        );
        // Folding applies to Status too, before validation.
        let (_, head) = scan_all(b"Status: 404\r\n Not Found\r\n\r\n").unwrap();
        assert_eq!(head.status, Some(404));
        assert_eq!(head.status_line.as_deref(), Some(&b"404 Not Found"[..]));
    }

    #[test]
    fn status_valid() {
        for (v, code) in [
            (&b"200"[..], 200),
            (b"404 Not Found", 404),
            (b"100", 100),
            (b"999 x", 999),
            (b"302\tFound", 302),
            (b"500   Internal  Error", 500),
        ] {
            let mut input = b"status: ".to_vec();
            input.extend_from_slice(v);
            input.extend_from_slice(b"\r\n\r\n");
            let (_, head) = scan(&input, &[], 1000).unwrap();
            assert_eq!(head.status, Some(code), "{v:?}");
            assert_eq!(head.status_line.as_deref(), Some(v));
        }
    }

    #[test]
    fn status_invalid() {
        for v in [
            &b"abc"[..],
            b"-1",
            b"20",
            b"2000",
            b"099",
            b"000",
            b"20x",
            b"200x OK",
            b"+20",
            b"",
            b"2 00",
        ] {
            let mut input = b"Status: ".to_vec();
            input.extend_from_slice(v);
            input.extend_from_slice(b"\n\n");
            assert_eq!(
                scan(&input, &[], 1000),
                Err(HeaderError::InvalidStatus(v.to_vec())),
                "{v:?}"
            );
        }
        assert_eq!(
            HeaderError::InvalidStatus(b"abc".to_vec()).to_string(),
            "invalid Status 'abc'"
        );
    }

    #[test]
    fn last_status_content_type_location_win() {
        let (_, head) = scan_all(
            b"Status: 200 OK\nContent-Type: a/b\nLocation: /x\nSTATUS: 301 Moved\ncontent-type: c/d\nLOCATION: /y\n\n",
        )
        .unwrap();
        assert_eq!(head.status, Some(301));
        assert_eq!(head.status_line.as_deref(), Some(&b"301 Moved"[..]));
        assert_eq!(head.content_type.as_deref(), Some(&b"c/d"[..]));
        assert_eq!(head.location.as_deref(), Some(&b"/y"[..]));
        assert!(head.headers.is_empty());
        // An invalid earlier Status still rejects the response.
        assert_eq!(
            scan(b"Status: xx\nStatus: 200\n\n", &[], 100),
            Err(HeaderError::InvalidStatus(b"xx".to_vec()))
        );
    }

    #[test]
    fn declared_length_values() {
        let d = |v: &[&[u8]]| declared_length(v.iter().copied());
        assert_eq!(d(&[]), Ok(None));
        assert_eq!(d(&[b"0"]), Ok(Some(0)));
        assert_eq!(d(&[b" 3000000\t"]), Ok(Some(3_000_000)));
        assert_eq!(d(&[b"42", b"42"]), Ok(Some(42)));
        assert_eq!(d(&[b"42, 42"]), Ok(Some(42)));
        assert_eq!(d(&[b"007"]), Ok(Some(7)));
        assert_eq!(d(&[b"9223372036854775807"]), Ok(Some(i64::MAX as u64)));
        assert_eq!(
            d(&[b"9223372036854775808"]),
            Err(b"9223372036854775808".to_vec())
        );
        assert_eq!(
            d(&[b"99999999999999999999999"]),
            Err(b"99999999999999999999999".to_vec())
        );
        assert_eq!(d(&[b"42", b"43"]), Err(b"43".to_vec()));
        assert_eq!(d(&[b"42, 43"]), Err(b"43".to_vec()));
        assert_eq!(d(&[b""]), Err(b"".to_vec()));
        assert_eq!(d(&[b"42,"]), Err(b"".to_vec()));
        assert_eq!(d(&[b"-1"]), Err(b"-1".to_vec()));
        assert_eq!(d(&[b"+1"]), Err(b"+1".to_vec()));
        assert_eq!(d(&[b"1 2"]), Err(b"1 2".to_vec()));
        assert_eq!(d(&[b"0x10"]), Err(b"0x10".to_vec()));
    }

    #[test]
    fn content_length_and_transfer_encoding_kept() {
        let (_, head) =
            scan_all(b"Content-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert_eq!(
            head.headers,
            vec![h("Content-Length", "10"), h("Transfer-Encoding", "chunked")]
        );
    }

    #[test]
    fn parse_before_done() {
        let mut s = HeaderScanner::new(100);
        assert_eq!(s.feed(b"A: 1\r\n").unwrap(), Feed::NeedMore);
        assert!(!s.is_done());
        assert_eq!(
            s.parse(),
            Err(HeaderError::Malformed {
                line: b"A: 1\r\n".to_vec()
            })
        );
    }

    #[test]
    fn no_rescan_state_across_feeds() {
        // Terminator straddling three feeds, with CRs in between.
        let mut s = HeaderScanner::new(100);
        assert_eq!(s.feed(b"A: 1\r\n").unwrap(), Feed::NeedMore);
        assert_eq!(s.feed(b"\r").unwrap(), Feed::NeedMore);
        assert_eq!(s.feed(b"\r").unwrap(), Feed::NeedMore);
        assert_eq!(s.feed(b"\nB").unwrap(), Feed::Done { body_offset: 1 });
        assert_eq!(s.parse().unwrap().headers, vec![h("A", "1")]);
    }

    #[test]
    fn head_borrows_unless_folded() {
        let mut s = HeaderScanner::new(1000);
        let block =
            b"Status: 404 Nope\r\nContent-Type: text/plain\r\nX-A: 1\r\nX-B: 2\r\n  more\r\n\r\n";
        assert_eq!(
            s.feed(block).unwrap(),
            Feed::Done {
                body_offset: block.len()
            }
        );
        let head = s.head().unwrap();
        assert!(matches!(head.status_line, Some(Cow::Borrowed(b"404 Nope"))));
        assert!(matches!(
            head.content_type,
            Some(Cow::Borrowed(b"text/plain"))
        ));
        let mut seen = Vec::new();
        head.for_each_header(|n, v| seen.push((n.to_vec(), v.to_vec())));
        assert_eq!(seen, vec![h("X-A", "1"), h("X-B", "2 more")]);
        assert_eq!(head.to_owned_head(), s.parse().unwrap());
    }

    #[test]
    fn buffer_is_reused() {
        let mut s = HeaderScanner::new(1000);
        s.feed(b"A: 1\n\n").unwrap();
        let buf = s.take_buffer();
        let cap = buf.capacity();
        let ptr = buf.as_ptr();
        let mut s = HeaderScanner::with_buffer(1000, buf);
        assert_eq!(s.buffered_len(), 0, "a reused buffer starts empty");
        assert_eq!(
            s.feed(b"B: 2\n\nbody").unwrap(),
            Feed::Done { body_offset: 6 }
        );
        assert_eq!(s.parse().unwrap().headers, vec![h("B", "2")]);
        let buf = s.take_buffer();
        assert_eq!((buf.as_ptr(), buf.capacity()), (ptr, cap));
    }
}
