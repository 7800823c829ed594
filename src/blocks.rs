//! The 32 KiB blocks answers are read into, shared by a child process's threads.
//!
//! A block is taken only when data is ready to be read into it and comes back here as soon as
//! httpd has written (or dropped) the buckets that share it, so a child holds about as many
//! blocks as it has answers between a read and the write to the client at that moment, not one
//! per request in flight (most requests in flight are waiting for the application).
//!
//! Blocks live in chunks mapped with `mmap`, not in the C heap. With malloc, each worker
//! thread's first block made glibc give that thread an arena of its own (up to 8 per CPU), and
//! every arena then kept up to its trim threshold (128 KiB) of freed memory for good: over unix
//! sockets, where reads fill whole blocks, that was 1–1.5 MiB more RSS per child than
//! mod_proxy_fcgi, whose buckets come from httpd's allocators.
//!
//! Given-back blocks stay "warm" (pages in memory, taken again last in, first out). Every
//! [`TRIM_EVERY`], [`trim`] returns to the kernel (`MADV_DONTNEED`) the warm blocks that no
//! request needed during the whole interval — the low-water mark of the warm list — keeping
//! [`KEEP_IDLE`]; such "cold" blocks cost no memory and are taken again (page faults) only when
//! no warm one is left. Under steady load the warm list follows the real need, and a child that
//! took no block for [`IDLE_AFTER`] keeps only [`KEEP_IDLE`] at its reaper's next pass.
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Size of a block.
pub const BLOCK: usize = 32 * 1024;
/// Blocks per mapping.
const PER_CHUNK: usize = 8;
/// Warm blocks kept by a child with no load.
const KEEP_IDLE: usize = 4;
/// Warm blocks at most; beyond that a given-back block is released at once.
const MAX_WARM: usize = 256;
/// How often unused warm blocks are released (see [`trim`]).
pub const TRIM_EVERY: Duration = Duration::from_secs(1);
/// A child that took no block for this long is idle: it keeps only [`KEEP_IDLE`] warm blocks.
const IDLE_AFTER: Duration = Duration::from_millis(100);

struct State {
    /// Blocks with their pages in memory, free.
    warm: Vec<NonNull<u8>>,
    /// Free blocks whose pages went back to the kernel.
    cold: Vec<NonNull<u8>>,
    /// Start of every mapping (PER_CHUNK blocks each).
    chunks: Vec<NonNull<u8>>,
    /// The fewest warm blocks there were since the last trim.
    low: usize,
    last_trim: Option<Instant>,
    /// A block was taken since [`trim`] last looked, and when it last saw that.
    busy: bool,
    last_busy: Option<Instant>,
    /// The child's pool is gone ([`close`]): no warm blocks are kept any more, and once every
    /// block is back the mappings go.
    closed: bool,
}

// SAFETY: the pointers are blocks of our own mappings that nobody else refers to while they are
// in the lists; moving them between threads is fine.
unsafe impl Send for State {}

static STATE: Mutex<State> = Mutex::new(State {
    warm: Vec::new(),
    cold: Vec::new(),
    chunks: Vec::new(),
    low: 0,
    last_trim: None,
    busy: false,
    last_busy: None,
    closed: false,
});

fn state() -> MutexGuard<'static, State> {
    // A panic while holding the lock cannot leave the lists inconsistent (push/pop only).
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Gives a block's pages back to the kernel; the block stays mapped and reads as zeros.
fn release(p: NonNull<u8>) {
    // SAFETY: `p` starts a BLOCK-long, page-aligned range of one of our private anonymous
    // mappings, and nothing refers to its contents any more. A failure leaves the pages in
    // memory, which is harmless.
    unsafe {
        libc::madvise(p.as_ptr().cast(), BLOCK, libc::MADV_DONTNEED);
    }
}

/// Maps a chunk: its first block for the caller, the others into `cold`.
fn map_chunk(s: &mut State) -> Option<NonNull<u8>> {
    // SAFETY: a fresh private anonymous mapping, no address hint, no file.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            BLOCK * PER_CHUNK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    let base = NonNull::new(p.cast::<u8>())?;
    if s.chunks.capacity() == 0 {
        // (reserved once, so that the lists do not grow in whichever worker thread comes by:
        // a thread's first malloc is what gives it an arena)
        s.chunks.reserve(64);
        s.warm.reserve_exact(MAX_WARM);
        s.cold.reserve(64 * PER_CHUNK);
    }
    s.chunks.push(base);
    for i in 1..PER_CHUNK {
        // SAFETY: within the mapping just made.
        s.cold.push(unsafe { base.add(i * BLOCK) });
    }
    Some(base)
}

/// A block of [`BLOCK`] bytes (uninitialised), ours until given back; None if no memory could be
/// mapped.
pub fn take() -> Option<NonNull<u8>> {
    let mut s = state();
    s.busy = true;
    if let Some(p) = s.warm.pop() {
        s.low = s.low.min(s.warm.len());
        return Some(p);
    }
    s.low = 0;
    if let Some(p) = s.cold.pop() {
        return Some(p);
    }
    map_chunk(&mut s)
}

/// Gives back a block from [`take`]; nothing may refer to it any more.
///
/// # Safety
/// `p` came from [`take`] and is given back once.
pub unsafe fn give(p: NonNull<u8>) {
    let mut s = state();
    if !s.closed && s.warm.len() < MAX_WARM {
        s.warm.push(p);
        return;
    }
    drop(s);
    release(p);
    let mut s = state();
    s.cold.push(p);
    if s.closed {
        unmap_if_all_back(&mut s);
    }
}

/// Releases the warm blocks no request needed since the last release (at most one per
/// [`TRIM_EVERY`]), or, once the child took no block for [`IDLE_AFTER`], every warm block; either
/// way keeping [`KEEP_IDLE`]. Called by the child's reaper thread (every pass).
pub fn trim() {
    let surplus = {
        let mut s = state();
        let now = Instant::now();
        if std::mem::take(&mut s.busy) {
            s.last_busy = Some(now);
        }
        let idle = s
            .last_busy
            .is_some_and(|t| now.duration_since(t) >= IDLE_AFTER);
        let n = if idle {
            s.warm.len().saturating_sub(KEEP_IDLE)
        } else {
            if s.last_trim
                .is_some_and(|t| now.duration_since(t) < TRIM_EVERY)
            {
                return;
            }
            s.last_trim = Some(now);
            s.low.min(s.warm.len()).saturating_sub(KEEP_IDLE)
        };
        s.low = s.warm.len() - n;
        n
    };
    // One at a time, without holding the lock over the system call (and without a list of
    // our own: this thread allocates nothing).
    // (`take` keeps the low-water mark up to date meanwhile)
    for _ in 0..surplus {
        // the least recently used first
        let Some(p) = ({
            let mut s = state();
            (!s.warm.is_empty()).then(|| s.warm.remove(0))
        }) else {
            break;
        };
        release(p);
        state().cold.push(p);
    }
}

/// Unmaps every chunk if no block is out.
fn unmap_if_all_back(s: &mut State) {
    if s.warm.len() + s.cold.len() != s.chunks.len() * PER_CHUNK {
        return;
    }
    for c in s.chunks.drain(..) {
        // SAFETY: our mapping of this size; every block of it is back in the lists, which are
        // cleared below, so nothing refers to it any more.
        unsafe {
            libc::munmap(c.as_ptr().cast(), BLOCK * PER_CHUNK);
        }
    }
    // (the lists' own memory too: the module may be unloaded next, and nothing would point
    // to it any more)
    s.warm = Vec::new();
    s.cold = Vec::new();
    s.chunks = Vec::new();
    s.low = 0;
}

/// Gives the kept blocks' memory back and keeps no more (the child's pool is being destroyed:
/// nothing of the module's may outlive it, and the module may be unloaded next). The mappings go
/// once every block is back.
pub fn close() {
    let mut s = state();
    s.closed = true;
    let warm = std::mem::take(&mut s.warm);
    for p in &warm {
        release(*p);
    }
    s.cold.extend(warm);
    unmap_if_all_back(&mut s);
}

/// (warm, cold, mapped) blocks (tests).
#[cfg(test)]
fn counts() -> (usize, usize, usize) {
    let s = state();
    (s.warm.len(), s.cold.len(), s.chunks.len() * PER_CHUNK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_reused_trimmed_and_unmapped() {
        // (one test: the state is process-wide)
        let a = take().unwrap();
        // SAFETY: from take; the whole block is ours.
        unsafe { a.as_ptr().write_bytes(0xab, BLOCK) };
        // SAFETY: from take, given back once.
        unsafe { give(a) };
        let b = take().unwrap();
        assert_eq!(a, b, "a given-back block is taken again (warm first)");
        // SAFETY: still ours; the pages were kept.
        assert_eq!(unsafe { *b.as_ptr().add(BLOCK - 1) }, 0xab);

        // 20 in use at once, then all back: 21 warm.
        let many: Vec<_> = (0..20).map(|_| take().unwrap()).collect();
        for p in many {
            // SAFETY: from take; the whole block is ours.
            unsafe { p.as_ptr().write_bytes(0xcd, BLOCK) };
            // SAFETY: from take, given back once each.
            unsafe { give(p) };
        }
        let (warm, _, mapped) = counts();
        assert_eq!(warm, 20);
        assert_eq!(mapped % PER_CHUNK, 0);
        assert!(mapped >= 21);

        // The first trim releases what was never needed since the last one (nothing was ever
        // trimmed: the low-water mark is 0 after the cold takes), the next one everything
        // unused during its interval down to KEEP_IDLE.
        trim();
        assert_eq!(
            counts().0,
            20,
            "blocks in use during the interval stay warm"
        );
        state().last_trim = Some(Instant::now() - TRIM_EVERY);
        // 3 taken and given back: the low-water mark is 17
        let three: Vec<_> = (0..3).map(|_| take().unwrap()).collect();
        for p in three {
            // SAFETY: from take, given back once each.
            unsafe { give(p) };
        }
        trim();
        assert_eq!(counts().0, 20 - (17 - KEEP_IDLE));
        trim();
        assert_eq!(
            counts().0,
            20 - (17 - KEEP_IDLE),
            "at most one trim per interval"
        );
        state().last_trim = Some(Instant::now() - TRIM_EVERY);
        trim();
        assert_eq!(
            counts().0,
            KEEP_IDLE,
            "an idle interval leaves KEEP_IDLE warm"
        );

        // A burst, then quiet: all but KEEP_IDLE go back once no block was taken for IDLE_AFTER,
        // without waiting for the next interval.
        let burst: Vec<_> = (0..10).map(|_| take().unwrap()).collect();
        for p in burst {
            // SAFETY: from take, given back once each.
            unsafe { give(p) };
        }
        assert_eq!(counts().0, 10);
        trim();
        assert_eq!(counts().0, 10, "just busy: kept");
        state().last_busy = Some(Instant::now() - IDLE_AFTER);
        trim();
        assert_eq!(counts().0, KEEP_IDLE, "quiet for IDLE_AFTER: released");

        // A released (cold) block reads as zeros when taken again.
        let all: Vec<_> = (0..KEEP_IDLE + 1).map(|_| take().unwrap()).collect();
        let c = *all.last().unwrap();
        // SAFETY: from take; mapped and readable.
        let last = unsafe { *c.as_ptr().add(BLOCK - 1) };
        assert_eq!(last, 0, "pages were released");

        // close: kept memory released; mapped until the last block is back, then unmapped.
        close();
        let (warm, _, mapped) = counts();
        assert_eq!(warm, 0);
        assert!(mapped > 0, "blocks still out keep the mappings");
        for p in all {
            // SAFETY: from take, given back once each.
            unsafe { give(p) };
        }
        assert!(counts().2 > 0, "one block still out");
        // SAFETY: from take, given back once.
        unsafe { give(b) };
        assert_eq!(counts(), (0, 0, 0), "all back after close: unmapped");
    }
}
