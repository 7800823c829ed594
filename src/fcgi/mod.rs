#![forbid(unsafe_code)]
//! Pure-Rust FastCGI 1.0 protocol core: record framing, name/value pairs and
//! CGI response header scanning. No I/O, no FFI, no `unsafe`; every decoder
//! accepts untrusted bytes split at arbitrary boundaries without panicking.

pub mod headers;
pub mod params;
pub mod record;

pub use headers::{DEFAULT_MAX_HEADER_BLOCK, Feed, HeaderError, HeaderScanner, ResponseHead};
pub use params::{
    PairTooLarge, ParamsDecodeError, ParamsWriter, decode_pairs, encode_pair, pair_len,
};
pub use record::{Decoder, Event, ProtocolError, RequestDecoder, RequestEvent};
