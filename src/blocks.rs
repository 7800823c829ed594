//! The 32 KiB blocks answers are read into, shared by a child process's threads.
//!
//! A block is taken only when data is ready to be read into it and comes back here as soon as
//! httpd has written (or dropped) the buckets that share it, so a child holds about as many
//! blocks as it has answers between a read and the write to the client at that moment, not one
//! per request in flight (most requests in flight are waiting for the application). Freed blocks
//! are kept for reuse up to [`KEEP`]; beyond that they go back to the allocator.
use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::ptr::NonNull;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Size of a block.
pub const BLOCK: usize = 32 * 1024;
/// Free blocks kept per process.
const KEEP: usize = 16;

struct Free(Vec<NonNull<u8>>);
// SAFETY: the pointers are blocks of our own allocation that nobody else refers to while they
// are in the list; moving them between threads is fine.
unsafe impl Send for Free {}

static FREE: Mutex<Free> = Mutex::new(Free(Vec::new()));
/// Set when the child's pool goes ([`close`]): blocks given back from then on are freed.
static CLOSED: AtomicBool = AtomicBool::new(false);

fn layout() -> Layout {
    // (plain malloc alignment: a block is only ever a byte buffer)
    Layout::from_size_align(BLOCK, 16).unwrap_or_else(|_| Layout::new::<[u8; BLOCK]>())
}

fn free_list() -> std::sync::MutexGuard<'static, Free> {
    // A panic while holding the lock cannot leave the Vec inconsistent (push/pop only).
    FREE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A block of [`BLOCK`] bytes (uninitialised), ours until given back.
pub fn take() -> NonNull<u8> {
    if let Some(p) = free_list().0.pop() {
        return p;
    }
    let l = layout();
    // SAFETY: non-zero size.
    let p = unsafe { alloc(l) };
    NonNull::new(p).unwrap_or_else(|| handle_alloc_error(l))
}

/// Gives back a block from [`take`]; nothing may refer to it any more.
///
/// # Safety
/// `p` came from [`take`] and is given back once.
pub unsafe fn give(p: NonNull<u8>) {
    if !CLOSED.load(Ordering::Acquire) {
        let mut f = free_list();
        if f.0.len() < KEEP {
            if f.0.capacity() == 0 {
                f.0.reserve_exact(KEEP);
            }
            f.0.push(p);
            return;
        }
    }
    // SAFETY: allocated by `take` with this layout; the caller gives up every reference.
    unsafe { dealloc(p.as_ptr(), layout()) }
}

/// Frees the kept blocks and keeps no more (the child's pool is being destroyed: nothing
/// of the module's may outlive it, and the module may be unloaded next).
pub fn close() {
    CLOSED.store(true, Ordering::Release);
    let kept = std::mem::take(&mut free_list().0);
    for p in kept {
        // SAFETY: blocks in the list are ours alone, allocated by `take` with this layout.
        unsafe { dealloc(p.as_ptr(), layout()) }
    }
}

/// Free blocks currently kept (tests).
#[cfg(test)]
pub fn kept() -> usize {
    free_list().0.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_reused_and_the_list_is_bounded() {
        let a = take();
        // SAFETY: from take, given back once.
        unsafe { give(a) };
        let b = take();
        assert_eq!(a, b, "a given-back block is taken again");
        let many: Vec<_> = (0..KEEP + 4).map(|_| take()).collect();
        for p in many {
            // SAFETY: from take, given back once each.
            unsafe { give(p) };
        }
        assert!(kept() <= KEEP);
        // SAFETY: from take.
        unsafe { give(b) };
        assert!(kept() <= KEEP);
        assert!(kept() > 0);
        // (one test: CLOSED is process-wide)
        let c = take();
        close();
        assert_eq!(kept(), 0, "close frees the kept blocks");
        // SAFETY: from take, given back once.
        unsafe { give(c) };
        assert_eq!(kept(), 0, "after close, given-back blocks are freed");
    }
}
