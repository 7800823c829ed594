//! FastCGI 1.0 record framing: encoders for the records a web server sends
//! (and END_REQUEST for test backends), and incremental, zero-copy decoders
//! for both directions.
//!
//! A record is an 8-byte header (version, type, request id, content length,
//! padding length, reserved) followed by `content length` content bytes and
//! `padding length` padding bytes.

use std::fmt;

/// The only protocol version (`FCGI_VERSION_1`).
pub const VERSION_1: u8 = 1;
/// Size of a record header (`FCGI_HEADER_LEN`).
pub const HEADER_LEN: usize = 8;
/// Largest content length a record can carry.
pub const MAX_CONTENT_LEN: usize = 0xffff;
/// Largest content chunk [`push_stream`] puts in one record: the biggest
/// multiple of 8 not above [`MAX_CONTENT_LEN`], so full chunks need no padding.
pub const MAX_STREAM_CHUNK: usize = 65528;

/// Record types (`FCGI_*` type constants).
pub mod rtype {
    /// `FCGI_BEGIN_REQUEST`
    pub const BEGIN_REQUEST: u8 = 1;
    /// `FCGI_ABORT_REQUEST`
    pub const ABORT_REQUEST: u8 = 2;
    /// `FCGI_END_REQUEST`
    pub const END_REQUEST: u8 = 3;
    /// `FCGI_PARAMS`
    pub const PARAMS: u8 = 4;
    /// `FCGI_STDIN`
    pub const STDIN: u8 = 5;
    /// `FCGI_STDOUT`
    pub const STDOUT: u8 = 6;
    /// `FCGI_STDERR`
    pub const STDERR: u8 = 7;
    /// `FCGI_DATA`
    pub const DATA: u8 = 8;
    /// `FCGI_GET_VALUES`
    pub const GET_VALUES: u8 = 9;
    /// `FCGI_GET_VALUES_RESULT`
    pub const GET_VALUES_RESULT: u8 = 10;
    /// `FCGI_UNKNOWN_TYPE`
    pub const UNKNOWN_TYPE: u8 = 11;
    /// Highest defined type (`FCGI_MAXTYPE`).
    pub const MAX: u8 = 11;
}

/// `FCGI_RESPONDER` role.
pub const ROLE_RESPONDER: u16 = 1;
/// `FCGI_AUTHORIZER` role.
pub const ROLE_AUTHORIZER: u16 = 2;
/// `FCGI_FILTER` role.
pub const ROLE_FILTER: u16 = 3;

/// `FCGI_KEEP_CONN` flag of a BEGIN_REQUEST body.
pub const FLAG_KEEP_CONN: u8 = 1;

/// `protocolStatus` values of an END_REQUEST body.
pub mod protocol_status {
    /// `FCGI_REQUEST_COMPLETE`
    pub const REQUEST_COMPLETE: u8 = 0;
    /// `FCGI_CANT_MPX_CONN`
    pub const CANT_MPX_CONN: u8 = 1;
    /// `FCGI_OVERLOADED`
    pub const OVERLOADED: u8 = 2;
    /// `FCGI_UNKNOWN_ROLE`
    pub const UNKNOWN_ROLE: u8 = 3;
}

/// Padding needed to bring `len` up to a multiple of 8.
#[inline]
fn padding_for(len: usize) -> usize {
    len.wrapping_neg() & 7
}

#[inline]
fn header_bytes(rtype: u8, request_id: u16, content_len: u16, padding_len: u8) -> [u8; HEADER_LEN] {
    let id = request_id.to_be_bytes();
    let cl = content_len.to_be_bytes();
    [VERSION_1, rtype, id[0], id[1], cl[0], cl[1], padding_len, 0]
}

/// Append an 8-byte record header.
pub fn push_header(
    out: &mut Vec<u8>,
    rtype: u8,
    request_id: u16,
    content_len: u16,
    padding_len: u8,
) {
    out.extend_from_slice(&header_bytes(rtype, request_id, content_len, padding_len));
}

/// Append a BEGIN_REQUEST record (8-byte body: role, flags, 5 reserved zero bytes).
pub fn push_begin_request(out: &mut Vec<u8>, request_id: u16, role: u16, keep_conn: bool) {
    push_header(out, rtype::BEGIN_REQUEST, request_id, 8, 0);
    let r = role.to_be_bytes();
    let flags = if keep_conn { FLAG_KEEP_CONN } else { 0 };
    out.extend_from_slice(&[r[0], r[1], flags, 0, 0, 0, 0, 0]);
}

/// Append stream data (STDIN/STDOUT/STDERR/DATA/PARAMS) as records of at most
/// [`MAX_STREAM_CHUNK`] content bytes each; a record whose content length is not
/// a multiple of 8 is padded up to the next multiple of 8. Empty `data` appends
/// nothing (use [`push_stream_end`] to close a stream).
pub fn push_stream(out: &mut Vec<u8>, rtype: u8, request_id: u16, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let records = data.len().div_ceil(MAX_STREAM_CHUNK);
    out.reserve(data.len() + records * HEADER_LEN + 7);
    for chunk in data.chunks(MAX_STREAM_CHUNK) {
        let (hdr, pad) = stream_header(rtype, request_id, chunk.len());
        out.extend_from_slice(&hdr);
        out.extend_from_slice(chunk);
        out.resize(out.len() + pad, 0);
    }
}

/// Append the empty record (content length 0) that ends a stream.
pub fn push_stream_end(out: &mut Vec<u8>, rtype: u8, request_id: u16) {
    push_header(out, rtype, request_id, 0, 0);
}

/// Header bytes for a stream record of `len` content bytes plus the padding
/// length to write after the content, so a caller can frame data from its own
/// buffer: header, `len` data bytes, then `padding_len` zero bytes.
///
/// `len` must not exceed [`MAX_STREAM_CHUNK`]; a larger value is clamped to it
/// (the header then describes only `MAX_STREAM_CHUNK` bytes).
pub fn stream_header(rtype: u8, request_id: u16, len: usize) -> ([u8; 8], usize) {
    let len = len.min(MAX_STREAM_CHUNK);
    let pad = padding_for(len);
    // len <= 65528 and pad <= 7: both casts are lossless.
    (header_bytes(rtype, request_id, len as u16, pad as u8), pad)
}

/// Append an END_REQUEST record (used by test backends): app_status u32 BE,
/// protocol_status u8, 3 reserved zero bytes.
pub fn push_end_request(out: &mut Vec<u8>, request_id: u16, app_status: u32, protocol_status: u8) {
    push_header(out, rtype::END_REQUEST, request_id, 8, 0);
    let s = app_status.to_be_bytes();
    out.extend_from_slice(&[s[0], s[1], s[2], s[3], protocol_status, 0, 0, 0]);
}

/// A protocol violation found while decoding records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// Record version is not [`VERSION_1`].
    BadVersion(u8),
    /// Record type 0 or above [`rtype::MAX`].
    BadType(u8),
    /// A record addressed to another request id.
    WrongRequestId {
        /// The request id this decoder serves.
        expected: u16,
        /// The request id found in the record header.
        got: u16,
    },
    /// END_REQUEST content length is not 8.
    BadEndRequestLen(u16),
    /// A record type the peer must not send in this direction.
    UnexpectedType(u8),
    /// Bytes follow a completely consumed END_REQUEST record.
    DataAfterEnd,
    /// BEGIN_REQUEST content length is not 8 (only [`RequestDecoder`] reports it).
    BadBeginRequestLen(u16),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::BadVersion(v) => {
                write!(f, "invalid version: {v} != FCGI_VERSION({VERSION_1})")
            }
            ProtocolError::BadType(t) => {
                write!(f, "invalid type: {t} > FCGI_MAXTYPE({})", rtype::MAX)
            }
            ProtocolError::WrongRequestId { expected, got } => {
                write!(f, "record for request id {got}, expected {expected}")
            }
            ProtocolError::BadEndRequestLen(n) => write!(
                f,
                "invalid FCGI_END_REQUEST size: {n} != sizeof(FCGI_EndRequestBody)(8)"
            ),
            ProtocolError::UnexpectedType(t) => write!(f, "unexpected record type {t}"),
            ProtocolError::DataAfterEnd => f.write_str("data after FCGI_END_REQUEST"),
            ProtocolError::BadBeginRequestLen(n) => write!(
                f,
                "invalid FCGI_BEGIN_REQUEST size: {n} != sizeof(FCGI_BeginRequestBody)(8)"
            ),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Parsed fields of a complete record header.
struct RecordHeader {
    rtype: u8,
    request_id: u16,
    content_len: u16,
    padding_len: u8,
}

/// Collects the 8 header bytes of a record, possibly one byte at a time.
#[derive(Debug, Clone, Default)]
struct HeaderCollector {
    buf: [u8; HEADER_LEN],
    got: usize,
}

impl HeaderCollector {
    /// Take header bytes from `input`; returns bytes consumed and the header
    /// once all 8 bytes are present (validating version and type).
    fn collect(&mut self, input: &[u8]) -> Result<(usize, Option<RecordHeader>), ProtocolError> {
        let need = HEADER_LEN.saturating_sub(self.got);
        let take = need.min(input.len());
        if let (Some(dst), Some(src)) = (
            self.buf.get_mut(self.got..self.got + take),
            input.get(..take),
        ) {
            dst.copy_from_slice(src);
        }
        self.got += take;
        if self.got < HEADER_LEN {
            return Ok((take, None));
        }
        self.got = 0;
        let h = self.buf;
        if h[0] != VERSION_1 {
            return Err(ProtocolError::BadVersion(h[0]));
        }
        if h[1] == 0 || h[1] > rtype::MAX {
            return Err(ProtocolError::BadType(h[1]));
        }
        Ok((
            take,
            Some(RecordHeader {
                rtype: h[1],
                request_id: u16::from_be_bytes([h[2], h[3]]),
                content_len: u16::from_be_bytes([h[4], h[5]]),
                padding_len: h[6],
            }),
        ))
    }
}

/// Collects a fixed 8-byte record body (END_REQUEST / BEGIN_REQUEST).
#[derive(Debug, Clone, Default)]
struct BodyCollector {
    buf: [u8; 8],
    got: usize,
}

impl BodyCollector {
    fn push(&mut self, piece: &[u8]) {
        let end = (self.got + piece.len()).min(self.buf.len());
        let take = end.saturating_sub(self.got);
        if let (Some(dst), Some(src)) = (self.buf.get_mut(self.got..end), piece.get(..take)) {
            dst.copy_from_slice(src);
        }
        self.got = end;
    }
}

/// One decoded piece of a response (see [`Decoder::decode`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A piece of STDOUT content (never empty); one record's content may come in several pieces.
    Stdout(&'a [u8]),
    /// A piece of STDERR content (never empty).
    Stderr(&'a [u8]),
    /// The empty STDOUT record (end-of-stream marker) was consumed, padding included.
    StdoutEnd,
    /// The complete 8-byte END_REQUEST body and its padding were consumed.
    EndRequest {
        /// Application status (exit code).
        app_status: u32,
        /// Protocol status (see [`protocol_status`]).
        protocol_status: u8,
    },
}

/// What the content of the current response record is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RespBody {
    Stdout,
    Stderr,
    EndRequest,
    Skip,
}

/// Incremental, zero-copy decoder of the records an application sends to the
/// web server for one request.
///
/// Records for other request ids are errors, except management records
/// (request id 0) of type GET_VALUES_RESULT or UNKNOWN_TYPE, which are skipped.
/// GET_VALUES_RESULT/UNKNOWN_TYPE carrying this decoder's own request id are
/// reported as [`ProtocolError::UnexpectedType`]. Errors are sticky: once
/// `decode` has failed, every later call returns the same error.
#[derive(Debug, Clone)]
pub struct Decoder {
    request_id: u16,
    header: HeaderCollector,
    in_record: bool,
    body: RespBody,
    content_left: usize,
    padding_left: usize,
    end_body: BodyCollector,
    stdout_end_pending: bool,
    ended: bool,
    error: Option<ProtocolError>,
}

impl Decoder {
    /// A decoder for the response to `request_id`.
    pub fn new(request_id: u16) -> Self {
        Decoder {
            request_id,
            header: HeaderCollector::default(),
            in_record: false,
            body: RespBody::Skip,
            content_left: 0,
            padding_left: 0,
            end_body: BodyCollector::default(),
            stdout_end_pending: false,
            ended: false,
            error: None,
        }
    }

    /// Decode from `input`; returns how many bytes were consumed and at most
    /// one event. Call repeatedly (with the unconsumed rest, then with new
    /// input) until it consumes 0 bytes with no event, which means it needs
    /// more input. Padding is consumed silently. Works when input is split at
    /// any byte boundary.
    pub fn decode<'a>(
        &mut self,
        input: &'a [u8],
    ) -> Result<(usize, Option<Event<'a>>), ProtocolError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let r = self.decode_inner(input);
        if let Err(e) = &r {
            self.error = Some(e.clone());
        }
        r
    }

    /// True after [`Event::EndRequest`] was returned.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// True when not in the middle of a record (no partial header, content or
    /// padding pending).
    pub fn at_record_boundary(&self) -> bool {
        !self.in_record && self.header.got == 0
    }

    fn decode_inner<'a>(
        &mut self,
        input: &'a [u8],
    ) -> Result<(usize, Option<Event<'a>>), ProtocolError> {
        let mut pos = 0usize;
        loop {
            let rest = input.get(pos..).unwrap_or(&[]);
            if self.ended {
                if rest.is_empty() {
                    return Ok((pos, None));
                }
                return Err(ProtocolError::DataAfterEnd);
            }
            if !self.in_record {
                if rest.is_empty() {
                    return Ok((pos, None));
                }
                let (n, hdr) = self.header.collect(rest)?;
                pos += n;
                if let Some(h) = hdr {
                    self.start_record(h)?;
                }
                continue;
            }
            if self.content_left > 0 {
                if rest.is_empty() {
                    return Ok((pos, None));
                }
                let take = self.content_left.min(rest.len());
                let piece = rest.get(..take).unwrap_or(&[]);
                self.content_left -= take;
                pos += take;
                match self.body {
                    RespBody::Stdout | RespBody::Stderr => {
                        if self.content_left == 0 && self.padding_left == 0 {
                            self.in_record = false;
                        }
                        let ev = if self.body == RespBody::Stdout {
                            Event::Stdout(piece)
                        } else {
                            Event::Stderr(piece)
                        };
                        return Ok((pos, Some(ev)));
                    }
                    RespBody::EndRequest => self.end_body.push(piece),
                    RespBody::Skip => {}
                }
                continue;
            }
            if self.padding_left > 0 {
                if rest.is_empty() {
                    return Ok((pos, None));
                }
                let take = self.padding_left.min(rest.len());
                self.padding_left -= take;
                pos += take;
                continue;
            }
            // The current record is complete.
            self.in_record = false;
            if self.stdout_end_pending {
                self.stdout_end_pending = false;
                return Ok((pos, Some(Event::StdoutEnd)));
            }
            if self.body == RespBody::EndRequest {
                self.ended = true;
                let b = self.end_body.buf;
                return Ok((
                    pos,
                    Some(Event::EndRequest {
                        app_status: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                        protocol_status: b[4],
                    }),
                ));
            }
        }
    }

    fn start_record(&mut self, h: RecordHeader) -> Result<(), ProtocolError> {
        let body = if h.request_id == 0
            && (h.rtype == rtype::GET_VALUES_RESULT || h.rtype == rtype::UNKNOWN_TYPE)
        {
            RespBody::Skip
        } else if h.request_id != self.request_id {
            return Err(ProtocolError::WrongRequestId {
                expected: self.request_id,
                got: h.request_id,
            });
        } else {
            match h.rtype {
                rtype::STDOUT if h.content_len == 0 => {
                    self.stdout_end_pending = true;
                    RespBody::Skip
                }
                rtype::STDOUT => RespBody::Stdout,
                rtype::STDERR if h.content_len == 0 => RespBody::Skip,
                rtype::STDERR => RespBody::Stderr,
                rtype::END_REQUEST if h.content_len != 8 => {
                    return Err(ProtocolError::BadEndRequestLen(h.content_len));
                }
                rtype::END_REQUEST => {
                    self.end_body = BodyCollector::default();
                    RespBody::EndRequest
                }
                other => return Err(ProtocolError::UnexpectedType(other)),
            }
        };
        self.body = body;
        self.in_record = true;
        self.content_left = usize::from(h.content_len);
        self.padding_left = usize::from(h.padding_len);
        Ok(())
    }
}

/// One decoded piece of what a web server sends (see [`RequestDecoder::decode`]).
#[derive(Debug, PartialEq, Eq)]
pub enum RequestEvent<'a> {
    /// A complete BEGIN_REQUEST record (body and padding consumed).
    Begin {
        /// Request id of the new request.
        request_id: u16,
        /// Requested role (see [`ROLE_RESPONDER`]).
        role: u16,
        /// Whether `FCGI_KEEP_CONN` was set.
        keep_conn: bool,
    },
    /// A piece of PARAMS content (never empty).
    Params(&'a [u8]),
    /// The empty PARAMS record was consumed.
    ParamsEnd,
    /// A piece of STDIN content (never empty).
    Stdin(&'a [u8]),
    /// The empty STDIN record was consumed.
    StdinEnd,
    /// An ABORT_REQUEST record for the current request was consumed.
    Abort,
}

/// What the content of the current request record is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReqBody {
    Begin,
    Params,
    Stdin,
    Skip,
}

/// Event emitted once the current request record is completely consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReqPending {
    None,
    Begin,
    ParamsEnd,
    StdinEnd,
    Abort,
}

/// Incremental, zero-copy decoder of the records a web server sends to an
/// application (for test backends and fuzzing).
///
/// Each BEGIN_REQUEST starts a new current request (so sequential requests on
/// a kept-open connection work); other request records must carry the current
/// request id. Management GET_VALUES records (request id 0) are skipped. Record
/// types an application never receives (and DATA, as the filter role is not
/// supported) are [`ProtocolError::UnexpectedType`]. Errors are sticky.
#[derive(Debug, Clone)]
pub struct RequestDecoder {
    current: Option<u16>,
    header: HeaderCollector,
    in_record: bool,
    body: ReqBody,
    content_left: usize,
    padding_left: usize,
    begin_body: BodyCollector,
    begin_id: u16,
    pending: ReqPending,
    error: Option<ProtocolError>,
}

impl Default for RequestDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestDecoder {
    /// A decoder for a fresh connection (no current request yet).
    pub fn new() -> Self {
        RequestDecoder {
            current: None,
            header: HeaderCollector::default(),
            in_record: false,
            body: ReqBody::Skip,
            content_left: 0,
            padding_left: 0,
            begin_body: BodyCollector::default(),
            begin_id: 0,
            pending: ReqPending::None,
            error: None,
        }
    }

    /// Request id of the last BEGIN_REQUEST seen, if any.
    pub fn current_request_id(&self) -> Option<u16> {
        self.current
    }

    /// True when not in the middle of a record.
    pub fn at_record_boundary(&self) -> bool {
        !self.in_record && self.header.got == 0
    }

    /// Decode from `input`; returns bytes consumed and at most one event, with
    /// the same calling convention as [`Decoder::decode`].
    pub fn decode<'a>(
        &mut self,
        input: &'a [u8],
    ) -> Result<(usize, Option<RequestEvent<'a>>), ProtocolError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let r = self.decode_inner(input);
        if let Err(e) = &r {
            self.error = Some(e.clone());
        }
        r
    }

    fn decode_inner<'a>(
        &mut self,
        input: &'a [u8],
    ) -> Result<(usize, Option<RequestEvent<'a>>), ProtocolError> {
        let mut pos = 0usize;
        loop {
            let rest = input.get(pos..).unwrap_or(&[]);
            if !self.in_record {
                if rest.is_empty() {
                    return Ok((pos, None));
                }
                let (n, hdr) = self.header.collect(rest)?;
                pos += n;
                if let Some(h) = hdr {
                    self.start_record(h)?;
                }
                continue;
            }
            if self.content_left > 0 {
                if rest.is_empty() {
                    return Ok((pos, None));
                }
                let take = self.content_left.min(rest.len());
                let piece = rest.get(..take).unwrap_or(&[]);
                self.content_left -= take;
                pos += take;
                match self.body {
                    ReqBody::Params | ReqBody::Stdin => {
                        if self.content_left == 0 && self.padding_left == 0 {
                            self.in_record = false;
                        }
                        let ev = if self.body == ReqBody::Params {
                            RequestEvent::Params(piece)
                        } else {
                            RequestEvent::Stdin(piece)
                        };
                        return Ok((pos, Some(ev)));
                    }
                    ReqBody::Begin => self.begin_body.push(piece),
                    ReqBody::Skip => {}
                }
                continue;
            }
            if self.padding_left > 0 {
                if rest.is_empty() {
                    return Ok((pos, None));
                }
                let take = self.padding_left.min(rest.len());
                self.padding_left -= take;
                pos += take;
                continue;
            }
            self.in_record = false;
            let pending = std::mem::replace(&mut self.pending, ReqPending::None);
            let ev = match pending {
                ReqPending::None => continue,
                ReqPending::Begin => {
                    let b = self.begin_body.buf;
                    self.current = Some(self.begin_id);
                    RequestEvent::Begin {
                        request_id: self.begin_id,
                        role: u16::from_be_bytes([b[0], b[1]]),
                        keep_conn: b[2] & FLAG_KEEP_CONN != 0,
                    }
                }
                ReqPending::ParamsEnd => RequestEvent::ParamsEnd,
                ReqPending::StdinEnd => RequestEvent::StdinEnd,
                ReqPending::Abort => RequestEvent::Abort,
            };
            return Ok((pos, Some(ev)));
        }
    }

    fn start_record(&mut self, h: RecordHeader) -> Result<(), ProtocolError> {
        let empty = h.content_len == 0;
        let (body, pending) = if h.request_id == 0 {
            if h.rtype == rtype::GET_VALUES {
                (ReqBody::Skip, ReqPending::None)
            } else {
                return Err(ProtocolError::UnexpectedType(h.rtype));
            }
        } else if h.rtype == rtype::BEGIN_REQUEST {
            if h.content_len != 8 {
                return Err(ProtocolError::BadBeginRequestLen(h.content_len));
            }
            self.begin_body = BodyCollector::default();
            self.begin_id = h.request_id;
            (ReqBody::Begin, ReqPending::Begin)
        } else if Some(h.request_id) != self.current {
            return Err(ProtocolError::WrongRequestId {
                expected: self.current.unwrap_or(0),
                got: h.request_id,
            });
        } else {
            match h.rtype {
                rtype::PARAMS if empty => (ReqBody::Skip, ReqPending::ParamsEnd),
                rtype::PARAMS => (ReqBody::Params, ReqPending::None),
                rtype::STDIN if empty => (ReqBody::Skip, ReqPending::StdinEnd),
                rtype::STDIN => (ReqBody::Stdin, ReqPending::None),
                rtype::ABORT_REQUEST => (ReqBody::Skip, ReqPending::Abort),
                other => return Err(ProtocolError::UnexpectedType(other)),
            }
        };
        self.body = body;
        self.pending = pending;
        self.in_record = true;
        self.content_left = usize::from(h.content_len);
        self.padding_left = usize::from(h.padding_len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Owned copy of an [`Event`], to compare results of different splits.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Ev {
        Out(Vec<u8>),
        Err(Vec<u8>),
        OutEnd,
        End(u32, u8),
    }

    /// Feed `input` in pieces ending at `cuts` (sorted), merging adjacent
    /// Stdout/Stderr pieces; returns the events and the final error, if any.
    fn run(dec: &mut Decoder, input: &[u8], cuts: &[usize]) -> (Vec<Ev>, Option<ProtocolError>) {
        let mut evs: Vec<Ev> = Vec::new();
        let mut start = 0;
        let mut bounds: Vec<usize> = cuts.to_vec();
        bounds.push(input.len());
        for &end in &bounds {
            let mut chunk = &input[start..end];
            start = end;
            loop {
                match dec.decode(chunk) {
                    Err(e) => return (evs, Some(e)),
                    Ok((n, ev)) => {
                        assert!(n <= chunk.len());
                        chunk = &chunk[n..];
                        match ev {
                            None => {
                                if n == 0 {
                                    assert!(chunk.is_empty(), "stalled with input left");
                                    break;
                                }
                            }
                            Some(Event::Stdout(p)) => {
                                assert!(!p.is_empty());
                                if let Some(Ev::Out(v)) = evs.last_mut() {
                                    v.extend_from_slice(p);
                                } else {
                                    evs.push(Ev::Out(p.to_vec()));
                                }
                            }
                            Some(Event::Stderr(p)) => {
                                assert!(!p.is_empty());
                                if let Some(Ev::Err(v)) = evs.last_mut() {
                                    v.extend_from_slice(p);
                                } else {
                                    evs.push(Ev::Err(p.to_vec()));
                                }
                            }
                            Some(Event::StdoutEnd) => evs.push(Ev::OutEnd),
                            Some(Event::EndRequest {
                                app_status,
                                protocol_status,
                            }) => evs.push(Ev::End(app_status, protocol_status)),
                        }
                    }
                }
            }
        }
        (evs, None)
    }

    fn run_whole(input: &[u8], id: u16) -> (Vec<Ev>, Option<ProtocolError>) {
        run(&mut Decoder::new(id), input, &[])
    }

    /// Check that every single split point and byte-at-a-time feeding give the
    /// same result as feeding everything at once; returns that result.
    fn run_all_splits(input: &[u8], id: u16) -> (Vec<Ev>, Option<ProtocolError>) {
        let whole = run_whole(input, id);
        for cut in 0..=input.len() {
            assert_eq!(
                run(&mut Decoder::new(id), input, &[cut]),
                whole,
                "cut at {cut}"
            );
        }
        let every: Vec<usize> = (0..input.len()).collect();
        assert_eq!(
            run(&mut Decoder::new(id), input, &every),
            whole,
            "byte at a time"
        );
        whole
    }

    // ---- encoders ----

    #[test]
    fn header_bytes_exact() {
        let mut out = Vec::new();
        push_header(&mut out, rtype::STDIN, 0x1234, 0xabcd, 5);
        assert_eq!(out, [1, 5, 0x12, 0x34, 0xab, 0xcd, 5, 0]);
    }

    #[test]
    fn begin_request_bytes() {
        let mut out = Vec::new();
        push_begin_request(&mut out, 1, ROLE_RESPONDER, false);
        assert_eq!(out, [1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        out.clear();
        push_begin_request(&mut out, 0x0102, ROLE_FILTER, true);
        assert_eq!(out, [1, 1, 1, 2, 0, 8, 0, 0, 0, 3, 1, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn end_request_bytes() {
        let mut out = Vec::new();
        push_end_request(&mut out, 1, 938, protocol_status::REQUEST_COMPLETE);
        assert_eq!(out, [1, 3, 0, 1, 0, 8, 0, 0, 0, 0, 0x03, 0xaa, 0, 0, 0, 0]);
        out.clear();
        push_end_request(&mut out, 7, 0xdeadbeef, protocol_status::UNKNOWN_ROLE);
        assert_eq!(
            out,
            [1, 3, 0, 7, 0, 8, 0, 0, 0xde, 0xad, 0xbe, 0xef, 3, 0, 0, 0]
        );
    }

    #[test]
    fn stream_small_is_padded() {
        let mut out = Vec::new();
        push_stream(&mut out, rtype::STDIN, 1, b"hello");
        assert_eq!(out, b"\x01\x05\x00\x01\x00\x05\x03\x00hello\x00\x00\x00");
        out.clear();
        push_stream(&mut out, rtype::STDIN, 1, b"12345678");
        assert_eq!(out, b"\x01\x05\x00\x01\x00\x08\x00\x0012345678");
        out.clear();
        push_stream(&mut out, rtype::PARAMS, 2, b"x");
        assert_eq!(out, b"\x01\x04\x00\x02\x00\x01\x07\x00x\0\0\0\0\0\0\0");
    }

    #[test]
    fn stream_empty_appends_nothing() {
        let mut out = vec![9u8];
        push_stream(&mut out, rtype::STDIN, 1, b"");
        assert_eq!(out, [9]);
    }

    #[test]
    fn stream_end_bytes() {
        let mut out = Vec::new();
        push_stream_end(&mut out, rtype::STDIN, 3);
        assert_eq!(out, [1, 5, 0, 3, 0, 0, 0, 0]);
    }

    #[test]
    fn stream_chunking_boundaries() {
        // Exactly one full chunk: no padding.
        let data = vec![0xaau8; MAX_STREAM_CHUNK];
        let mut out = Vec::new();
        push_stream(&mut out, rtype::STDIN, 1, &data);
        assert_eq!(out.len(), 8 + MAX_STREAM_CHUNK);
        assert_eq!(&out[..8], &[1, 5, 0, 1, 0xff, 0xf8, 0, 0]);

        // One more byte: a second record of 1 byte + 7 padding.
        let data = vec![0xaau8; MAX_STREAM_CHUNK + 1];
        out.clear();
        push_stream(&mut out, rtype::STDIN, 1, &data);
        assert_eq!(out.len(), 8 + MAX_STREAM_CHUNK + 8 + 1 + 7);
        let second = 8 + MAX_STREAM_CHUNK;
        assert_eq!(&out[second..second + 8], &[1, 5, 0, 1, 0, 1, 7, 0]);
        assert_eq!(out[second + 8], 0xaa);
        assert_eq!(&out[second + 9..], &[0; 7]);

        // 0xffff bytes: 65528 + 7 (padding 1).
        let data = vec![1u8; MAX_CONTENT_LEN];
        out.clear();
        push_stream(&mut out, rtype::STDOUT, 1, &data);
        assert_eq!(&out[second..second + 8], &[1, 6, 0, 1, 0, 7, 1, 0]);
        assert_eq!(out.len(), second + 8 + 7 + 1);
    }

    #[test]
    fn stream_header_values() {
        assert_eq!(
            stream_header(rtype::STDIN, 1, 0),
            ([1, 5, 0, 1, 0, 0, 0, 0], 0)
        );
        assert_eq!(
            stream_header(rtype::STDIN, 1, 1),
            ([1, 5, 0, 1, 0, 1, 7, 0], 7)
        );
        assert_eq!(
            stream_header(rtype::STDIN, 1, 8),
            ([1, 5, 0, 1, 0, 8, 0, 0], 0)
        );
        assert_eq!(
            stream_header(rtype::DATA, 0x100, 13),
            ([1, 8, 1, 0, 0, 13, 3, 0], 3)
        );
        assert_eq!(
            stream_header(rtype::STDIN, 1, MAX_STREAM_CHUNK),
            ([1, 5, 0, 1, 0xff, 0xf8, 0, 0], 0)
        );
        // Over-long values are clamped.
        assert_eq!(
            stream_header(rtype::STDIN, 1, 100_000),
            ([1, 5, 0, 1, 0xff, 0xf8, 0, 0], 0)
        );
    }

    #[test]
    fn padding_for_values() {
        let expect = [0, 7, 6, 5, 4, 3, 2, 1, 0, 7];
        for (len, pad) in expect.iter().enumerate() {
            assert_eq!(padding_for(len), *pad);
        }
        assert_eq!(padding_for(0xffff), 1);
    }

    // ---- response decoder ----

    /// Spec appendix B, example 1 (response side).
    fn spec_example_1_response() -> Vec<u8> {
        let mut out = Vec::new();
        push_stream(
            &mut out,
            rtype::STDOUT,
            1,
            b"Content-type: text/html\r\n\r\n<html>\n<head> ... ",
        );
        push_stream_end(&mut out, rtype::STDOUT, 1);
        push_end_request(&mut out, 1, 0, protocol_status::REQUEST_COMPLETE);
        out
    }

    #[test]
    fn spec_example_1_exact_bytes_and_decode() {
        let input = spec_example_1_response();
        let mut expect = b"\x01\x06\x00\x01\x00\x2d\x03\x00".to_vec();
        expect.extend_from_slice(b"Content-type: text/html\r\n\r\n<html>\n<head> ... \0\0\0");
        expect.extend_from_slice(b"\x01\x06\x00\x01\x00\x00\x00\x00");
        expect.extend_from_slice(b"\x01\x03\x00\x01\x00\x08\x00\x00\0\0\0\0\0\0\0\0");
        assert_eq!(input, expect);
        let (evs, err) = run_all_splits(&input, 1);
        assert_eq!(err, None);
        assert_eq!(
            evs,
            vec![
                Ev::Out(b"Content-type: text/html\r\n\r\n<html>\n<head> ... ".to_vec()),
                Ev::OutEnd,
                Ev::End(0, 0)
            ]
        );
    }

    /// Spec appendix B, example 3: stderr interleaved, app status 938.
    #[test]
    fn spec_example_3_interleaved_stderr() {
        let mut input = Vec::new();
        push_stream(
            &mut input,
            rtype::STDOUT,
            1,
            b"Content-type: text/html\r\n\r\n<ht",
        );
        push_stream(
            &mut input,
            rtype::STDERR,
            1,
            b"config error: missing SI_UID\n",
        );
        push_stream(&mut input, rtype::STDOUT, 1, b"ml>\n<head> ... ");
        push_stream_end(&mut input, rtype::STDOUT, 1);
        push_stream_end(&mut input, rtype::STDERR, 1);
        push_end_request(&mut input, 1, 938, protocol_status::REQUEST_COMPLETE);
        let (evs, err) = run_all_splits(&input, 1);
        assert_eq!(err, None);
        assert_eq!(
            evs,
            vec![
                Ev::Out(b"Content-type: text/html\r\n\r\n<ht".to_vec()),
                Ev::Err(b"config error: missing SI_UID\n".to_vec()),
                Ev::Out(b"ml>\n<head> ... ".to_vec()),
                Ev::OutEnd,
                Ev::End(938, 0)
            ]
        );
    }

    #[test]
    fn decode_event_by_event() {
        let input = spec_example_1_response();
        let mut d = Decoder::new(1);
        assert!(d.at_record_boundary());
        let (n, ev) = d.decode(&input).unwrap();
        assert_eq!(n, 8 + 45);
        assert_eq!(ev, Some(Event::Stdout(&input[8..53])));
        assert!(!d.at_record_boundary()); // padding pending
        let (n2, ev) = d.decode(&input[n..]).unwrap();
        assert_eq!(n2, 3 + 8);
        assert_eq!(ev, Some(Event::StdoutEnd));
        assert!(d.at_record_boundary());
        assert!(!d.is_ended());
        let (n3, ev) = d.decode(&input[n + n2..]).unwrap();
        assert_eq!(n3, 16);
        assert_eq!(
            ev,
            Some(Event::EndRequest {
                app_status: 0,
                protocol_status: 0
            })
        );
        assert!(d.is_ended());
        assert!(d.at_record_boundary());
        assert_eq!(d.decode(&[]).unwrap(), (0, None));
        assert_eq!(d.decode(b"x"), Err(ProtocolError::DataAfterEnd));
    }

    #[test]
    fn record_without_padding_ends_at_boundary() {
        let mut input = Vec::new();
        push_stream(&mut input, rtype::STDOUT, 1, b"12345678");
        let mut d = Decoder::new(1);
        let (n, ev) = d.decode(&input).unwrap();
        assert_eq!((n, ev), (16, Some(Event::Stdout(b"12345678"))));
        assert!(d.at_record_boundary());
    }

    #[test]
    fn partial_header_is_not_boundary() {
        let mut d = Decoder::new(1);
        assert_eq!(d.decode(&[1, 6, 0]).unwrap(), (3, None));
        assert!(!d.at_record_boundary());
        assert_eq!(d.decode(&[1, 0, 2, 0, 0]).unwrap(), (5, None));
        assert!(!d.at_record_boundary());
        assert_eq!(d.decode(b"ab").unwrap(), (2, Some(Event::Stdout(b"ab"))));
        assert!(d.at_record_boundary());
    }

    #[test]
    fn max_content_and_padding() {
        let mut input = Vec::new();
        push_header(&mut input, rtype::STDOUT, 1, 0xffff, 255);
        input.extend((0..0xffffu32).map(|i| (i % 251) as u8));
        input.extend(std::iter::repeat_n(0xeeu8, 255));
        push_end_request(&mut input, 1, 1, 0);
        let (evs, err) = run_whole(&input, 1);
        assert_eq!(err, None);
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0], Ev::Out(input[8..8 + 0xffff].to_vec()));
        assert_eq!(evs[1], Ev::End(1, 0));
        // A few awkward splits: inside content, at content end, inside padding.
        for cut in [
            1,
            8,
            9,
            8 + 0xffff,
            8 + 0xffff + 1,
            8 + 0xffff + 254,
            8 + 0xffff + 255,
        ] {
            assert_eq!(
                run(&mut Decoder::new(1), &input, &[cut]),
                (evs.clone(), None)
            );
        }
    }

    #[test]
    fn end_request_with_padding_split_everywhere() {
        let mut input = Vec::new();
        push_header(&mut input, rtype::END_REQUEST, 1, 8, 3);
        input.extend_from_slice(&[0, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0]);
        let (evs, err) = run_all_splits(&input, 1);
        assert_eq!((evs, err), (vec![Ev::End(256, 2)], None));
        // Event only after the last padding byte.
        let mut d = Decoder::new(1);
        assert_eq!(d.decode(&input[..input.len() - 1]).unwrap(), (18, None));
        assert!(!d.is_ended());
        let (n, ev) = d.decode(&input[18..]).unwrap();
        assert_eq!(
            (n, ev),
            (
                1,
                Some(Event::EndRequest {
                    app_status: 256,
                    protocol_status: 2
                })
            )
        );
    }

    #[test]
    fn empty_stdout_with_padding() {
        let mut input = Vec::new();
        push_header(&mut input, rtype::STDOUT, 1, 0, 4);
        input.extend_from_slice(&[0; 4]);
        let mut d = Decoder::new(1);
        assert_eq!(d.decode(&input[..8]).unwrap(), (8, None));
        assert!(!d.at_record_boundary());
        assert_eq!(d.decode(&input[8..]).unwrap(), (4, Some(Event::StdoutEnd)));
        assert!(d.at_record_boundary());
    }

    #[test]
    fn management_records_skipped() {
        let mut input = Vec::new();
        push_header(&mut input, rtype::GET_VALUES_RESULT, 0, 3, 5);
        input.extend_from_slice(b"abc\0\0\0\0\0");
        push_header(&mut input, rtype::UNKNOWN_TYPE, 0, 8, 0);
        input.extend_from_slice(&[200, 0, 0, 0, 0, 0, 0, 0]);
        push_stream(&mut input, rtype::STDOUT, 1, b"x");
        let (evs, err) = run_all_splits(&input, 1);
        assert_eq!((evs, err), (vec![Ev::Out(b"x".to_vec())], None));
    }

    #[test]
    fn empty_stderr_is_silent() {
        let mut input = Vec::new();
        push_stream_end(&mut input, rtype::STDERR, 1);
        let mut d = Decoder::new(1);
        assert_eq!(d.decode(&input).unwrap(), (8, None));
        assert!(d.at_record_boundary());
    }

    fn first_error(input: &[u8], id: u16) -> Option<ProtocolError> {
        run_all_splits(input, id).1
    }

    #[test]
    fn bad_version() {
        let e = first_error(&[2, 6, 0, 1, 0, 0, 0, 0], 1);
        assert_eq!(e, Some(ProtocolError::BadVersion(2)));
        assert_eq!(
            e.unwrap().to_string(),
            "invalid version: 2 != FCGI_VERSION(1)"
        );
        assert_eq!(
            first_error(&[0, 6, 0, 1, 0, 0, 0, 0], 1),
            Some(ProtocolError::BadVersion(0))
        );
    }

    #[test]
    fn bad_type() {
        assert_eq!(
            first_error(&[1, 0, 0, 1, 0, 0, 0, 0], 1),
            Some(ProtocolError::BadType(0))
        );
        assert_eq!(
            first_error(&[1, 12, 0, 1, 0, 0, 0, 0], 1),
            Some(ProtocolError::BadType(12))
        );
        let e = first_error(&[1, 200, 0, 1, 0, 0, 0, 0], 1).unwrap();
        assert_eq!(e, ProtocolError::BadType(200));
        assert_eq!(e.to_string(), "invalid type: 200 > FCGI_MAXTYPE(11)");
    }

    #[test]
    fn wrong_request_id() {
        let e = first_error(&[1, 6, 0, 7, 0, 1, 7, 0], 1).unwrap();
        assert_eq!(
            e,
            ProtocolError::WrongRequestId {
                expected: 1,
                got: 7
            }
        );
        assert_eq!(e.to_string(), "record for request id 7, expected 1");
        // Request id 0 with a non-management type is an error too.
        assert_eq!(
            first_error(&[1, 6, 0, 0, 0, 0, 0, 0], 1),
            Some(ProtocolError::WrongRequestId {
                expected: 1,
                got: 0
            })
        );
        // GET_VALUES_RESULT for another non-zero id.
        assert_eq!(
            first_error(&[1, 10, 0, 2, 0, 0, 0, 0], 1),
            Some(ProtocolError::WrongRequestId {
                expected: 1,
                got: 2
            })
        );
    }

    #[test]
    fn bad_end_request_len() {
        let mut input = Vec::new();
        push_header(&mut input, rtype::END_REQUEST, 1, 4, 4);
        input.extend_from_slice(&[0; 8]);
        let e = first_error(&input, 1).unwrap();
        assert_eq!(e, ProtocolError::BadEndRequestLen(4));
        assert_eq!(
            e.to_string(),
            "invalid FCGI_END_REQUEST size: 4 != sizeof(FCGI_EndRequestBody)(8)"
        );
        assert_eq!(
            first_error(&[1, 3, 0, 1, 0, 0, 0, 0], 1),
            Some(ProtocolError::BadEndRequestLen(0))
        );
    }

    #[test]
    fn unexpected_types() {
        for t in [
            rtype::BEGIN_REQUEST,
            rtype::ABORT_REQUEST,
            rtype::PARAMS,
            rtype::STDIN,
            rtype::DATA,
            rtype::GET_VALUES,
            rtype::GET_VALUES_RESULT,
            rtype::UNKNOWN_TYPE,
        ] {
            assert_eq!(
                first_error(&[1, t, 0, 1, 0, 0, 0, 0], 1),
                Some(ProtocolError::UnexpectedType(t))
            );
        }
        assert_eq!(
            ProtocolError::UnexpectedType(5).to_string(),
            "unexpected record type 5"
        );
    }

    #[test]
    fn data_after_end() {
        let mut input = spec_example_1_response();
        input.push(1);
        let (evs, err) = run_all_splits(&input, 1);
        assert_eq!(evs.last(), Some(&Ev::End(0, 0)));
        let e = err.unwrap();
        assert_eq!(e, ProtocolError::DataAfterEnd);
        assert_eq!(e.to_string(), "data after FCGI_END_REQUEST");
    }

    #[test]
    fn errors_are_sticky() {
        let mut d = Decoder::new(1);
        assert_eq!(
            d.decode(&[9, 6, 0, 1, 0, 0, 0, 0]),
            Err(ProtocolError::BadVersion(9))
        );
        let mut ok = Vec::new();
        push_stream(&mut ok, rtype::STDOUT, 1, b"x");
        assert_eq!(d.decode(&ok), Err(ProtocolError::BadVersion(9)));
        assert_eq!(d.decode(&[]), Err(ProtocolError::BadVersion(9)));
    }

    #[test]
    fn long_stream_roundtrip() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        let mut input = Vec::new();
        push_stream(&mut input, rtype::STDOUT, 0xffff, &data);
        push_stream_end(&mut input, rtype::STDOUT, 0xffff);
        push_end_request(&mut input, 0xffff, 0, 0);
        let (evs, err) = run_whole(&input, 0xffff);
        assert_eq!(err, None);
        assert_eq!(evs, vec![Ev::Out(data), Ev::OutEnd, Ev::End(0, 0)]);
    }

    // ---- request decoder ----

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Rq {
        Begin(u16, u16, bool),
        Params(Vec<u8>),
        ParamsEnd,
        Stdin(Vec<u8>),
        StdinEnd,
        Abort,
    }

    fn run_req(input: &[u8], cuts: &[usize]) -> (Vec<Rq>, Option<ProtocolError>) {
        let mut d = RequestDecoder::new();
        let mut evs: Vec<Rq> = Vec::new();
        let mut start = 0;
        let mut bounds = cuts.to_vec();
        bounds.push(input.len());
        for &end in &bounds {
            let mut chunk = &input[start..end];
            start = end;
            loop {
                let (n, ev) = match d.decode(chunk) {
                    Ok(x) => x,
                    Err(e) => return (evs, Some(e)),
                };
                assert!(n <= chunk.len());
                chunk = &chunk[n..];
                match ev {
                    None if n == 0 => {
                        assert!(chunk.is_empty());
                        break;
                    }
                    None => {}
                    Some(RequestEvent::Params(p)) => match evs.last_mut() {
                        Some(Rq::Params(v)) => v.extend_from_slice(p),
                        _ => evs.push(Rq::Params(p.to_vec())),
                    },
                    Some(RequestEvent::Stdin(p)) => match evs.last_mut() {
                        Some(Rq::Stdin(v)) => v.extend_from_slice(p),
                        _ => evs.push(Rq::Stdin(p.to_vec())),
                    },
                    Some(RequestEvent::Begin {
                        request_id,
                        role,
                        keep_conn,
                    }) => evs.push(Rq::Begin(request_id, role, keep_conn)),
                    Some(RequestEvent::ParamsEnd) => evs.push(Rq::ParamsEnd),
                    Some(RequestEvent::StdinEnd) => evs.push(Rq::StdinEnd),
                    Some(RequestEvent::Abort) => evs.push(Rq::Abort),
                }
            }
        }
        (evs, None)
    }

    fn run_req_all_splits(input: &[u8]) -> (Vec<Rq>, Option<ProtocolError>) {
        let whole = run_req(input, &[]);
        for cut in 0..=input.len() {
            assert_eq!(run_req(input, &[cut]), whole, "cut at {cut}");
        }
        let every: Vec<usize> = (0..input.len()).collect();
        assert_eq!(run_req(input, &every), whole);
        whole
    }

    /// Spec appendix B, example 2 (request side, PARAMS split mid-pair).
    #[test]
    fn spec_example_2_request() {
        let mut input = Vec::new();
        push_begin_request(&mut input, 1, ROLE_RESPONDER, false);
        push_stream(
            &mut input,
            rtype::PARAMS,
            1,
            b"\x0b\x02SERVER_PORT80\x0b\x0eSER",
        );
        push_stream(&mut input, rtype::PARAMS, 1, b"VER_ADDR199.170.183.42");
        push_stream_end(&mut input, rtype::PARAMS, 1);
        push_stream(&mut input, rtype::STDIN, 1, b"quantity=100&item=3047936");
        push_stream_end(&mut input, rtype::STDIN, 1);
        let (evs, err) = run_req_all_splits(&input);
        assert_eq!(err, None);
        assert_eq!(
            evs,
            vec![
                Rq::Begin(1, ROLE_RESPONDER, false),
                Rq::Params(b"\x0b\x02SERVER_PORT80\x0b\x0eSERVER_ADDR199.170.183.42".to_vec()),
                Rq::ParamsEnd,
                Rq::Stdin(b"quantity=100&item=3047936".to_vec()),
                Rq::StdinEnd
            ]
        );
    }

    #[test]
    fn request_keep_conn_sequence_and_abort() {
        let mut input = Vec::new();
        push_header(&mut input, rtype::GET_VALUES, 0, 0, 0);
        push_begin_request(&mut input, 5, ROLE_AUTHORIZER, true);
        push_header(&mut input, rtype::ABORT_REQUEST, 5, 0, 0);
        push_begin_request(&mut input, 6, ROLE_RESPONDER, false);
        push_stream_end(&mut input, rtype::PARAMS, 6);
        let (evs, err) = run_req_all_splits(&input);
        assert_eq!(err, None);
        assert_eq!(
            evs,
            vec![
                Rq::Begin(5, ROLE_AUTHORIZER, true),
                Rq::Abort,
                Rq::Begin(6, ROLE_RESPONDER, false),
                Rq::ParamsEnd
            ]
        );
    }

    #[test]
    fn request_errors() {
        // PARAMS before any BEGIN_REQUEST.
        assert_eq!(
            run_req(&[1, 4, 0, 1, 0, 0, 0, 0], &[]).1,
            Some(ProtocolError::WrongRequestId {
                expected: 0,
                got: 1
            })
        );
        // BEGIN_REQUEST with a 4-byte body.
        let e = run_req(&[1, 1, 0, 1, 0, 4, 4, 0], &[]).1.unwrap();
        assert_eq!(e, ProtocolError::BadBeginRequestLen(4));
        assert_eq!(
            e.to_string(),
            "invalid FCGI_BEGIN_REQUEST size: 4 != sizeof(FCGI_BeginRequestBody)(8)"
        );
        // STDOUT sent to an application.
        let mut input = Vec::new();
        push_begin_request(&mut input, 1, ROLE_RESPONDER, false);
        push_stream(&mut input, rtype::STDOUT, 1, b"x");
        let (evs, err) = run_req_all_splits(&input);
        assert_eq!(evs, vec![Rq::Begin(1, 1, false)]);
        assert_eq!(err, Some(ProtocolError::UnexpectedType(rtype::STDOUT)));
        // Management record other than GET_VALUES.
        assert_eq!(
            run_req(&[1, 5, 0, 0, 0, 0, 0, 0], &[]).1,
            Some(ProtocolError::UnexpectedType(rtype::STDIN))
        );
        // Stream record for another request.
        let mut input = Vec::new();
        push_begin_request(&mut input, 1, ROLE_RESPONDER, false);
        push_stream_end(&mut input, rtype::STDIN, 2);
        assert_eq!(
            run_req(&input, &[]).1,
            Some(ProtocolError::WrongRequestId {
                expected: 1,
                got: 2
            })
        );
    }

    #[test]
    fn request_boundary_tracking() {
        let mut input = Vec::new();
        push_begin_request(&mut input, 1, ROLE_RESPONDER, false);
        let mut d = RequestDecoder::new();
        assert!(d.at_record_boundary());
        assert_eq!(d.current_request_id(), None);
        assert_eq!(d.decode(&input[..10]).unwrap(), (10, None));
        assert!(!d.at_record_boundary());
        let (n, ev) = d.decode(&input[10..]).unwrap();
        assert_eq!(n, 6);
        assert_eq!(
            ev,
            Some(RequestEvent::Begin {
                request_id: 1,
                role: 1,
                keep_conn: false
            })
        );
        assert!(d.at_record_boundary());
        assert_eq!(d.current_request_id(), Some(1));
    }
}
