//! Response decoder: arbitrary bytes, fed whole and split at boundaries derived
//! from the input, must give the same output and the same end/error result.
//!
//! Input layout: byte 0 = split seed, byte 1 = request id selector, rest = records.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unused_imports)]
#[path = "../../src/fcgi/mod.rs"]
mod fcgi;

use fcgi::record::{Decoder, Event, ProtocolError};

/// Everything observable from one decoding run.
#[derive(Debug, PartialEq, Eq, Default)]
struct Outcome {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Event kinds in order, with Stdout/Stderr runs merged.
    kinds: Vec<u8>,
    end: Option<(u32, u8)>,
    error: Option<ProtocolError>,
    ended: bool,
    boundary: bool,
}

/// Chunk lengths from a seed: a small xorshift generator.
fn chunk_lens(seed: u8, total: usize) -> Vec<usize> {
    let mut state = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    let max = match seed & 3 {
        0 => 1,
        1 => 7,
        2 => 64,
        _ => 4096,
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

fn run(id: u16, input: &[u8], lens: &[usize]) -> Outcome {
    let mut d = Decoder::new(id);
    let mut o = Outcome::default();
    let mut start = 0;
    'chunks: for &len in lens {
        let mut chunk = &input[start..start + len];
        start += len;
        loop {
            match d.decode(chunk) {
                Err(e) => {
                    o.error = Some(e);
                    break 'chunks;
                }
                Ok((n, ev)) => {
                    assert!(n <= chunk.len(), "consumed more than given");
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
                            o.stdout.extend_from_slice(p);
                            if o.kinds.last() != Some(&b'o') {
                                o.kinds.push(b'o');
                            }
                        }
                        Some(Event::Stderr(p)) => {
                            assert!(!p.is_empty());
                            o.stderr.extend_from_slice(p);
                            if o.kinds.last() != Some(&b'e') {
                                o.kinds.push(b'e');
                            }
                        }
                        Some(Event::StdoutEnd) => o.kinds.push(b'O'),
                        Some(Event::EndRequest {
                            app_status,
                            protocol_status,
                        }) => {
                            assert!(o.end.is_none(), "two END_REQUEST events");
                            assert!(d.is_ended());
                            o.end = Some((app_status, protocol_status));
                            o.kinds.push(b'E');
                        }
                    }
                }
            }
        }
    }
    o.ended = d.is_ended();
    o.boundary = d.at_record_boundary();
    if o.ended {
        assert!(o.end.is_some());
    }
    o
}

fuzz_target!(|data: &[u8]| {
    let [seed, idsel, input @ ..] = data else {
        return;
    };
    let id = match idsel & 3 {
        0 => 0,
        1 | 2 => 1,
        _ => u16::from(*idsel) << 8 | 1,
    };
    let whole = run(id, input, &[input.len()]);
    let split = run(id, input, &chunk_lens(*seed, input.len()));
    assert_eq!(whole, split);
    let bytes: Vec<usize> = vec![1; input.len()];
    if input.len() <= 4096 {
        assert_eq!(whole, run(id, input, &bytes));
    }
});
