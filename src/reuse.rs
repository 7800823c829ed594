//! Per-thread reuse of the buffers a request needs (the FastCGI request it sends, the
//! response header block, the list of body pieces), so that a request on a warm thread makes
//! no heap allocation of its own.
//!
//! A buffer is taken from its thread's slot when a request starts and goes back when it is
//! dropped. A nested request on the same thread (an internal redirect run from inside the
//! handler) finds the slot empty and allocates its own; whatever comes back beyond `KEPT`
//! buffers, or is larger than `KEEP_MAX` bytes, is freed, so a thread keeps at most a few small
//! buffers between requests.
use std::cell::RefCell;
use std::mem;
use std::ops::{Deref, DerefMut};
use std::thread::LocalKey;

/// Largest buffer kept for the next request (bytes of capacity).
const KEEP_MAX: usize = 32 * 1024;
/// Buffers kept per slot and thread.
const KEPT: usize = 4;

/// A thread's spare buffers of one element type.
pub type Slot<T> = LocalKey<RefCell<Vec<Vec<T>>>>;

thread_local! {
    /// Spare byte buffers (request records, header blocks, variable names).
    pub static BYTES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A `Vec` that returns to its thread's slot when dropped.
pub struct Reused<T: 'static> {
    v: Vec<T>,
    slot: &'static Slot<T>,
}

impl<T: 'static> Reused<T> {
    /// An empty buffer with room for at least `min` elements, reused if the slot has one.
    pub fn take(slot: &'static Slot<T>, min: usize) -> Self {
        let mut v = slot
            .try_with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.pop()))
            .ok()
            .flatten()
            .unwrap_or_default();
        v.clear();
        v.reserve(min);
        Reused { v, slot }
    }

    /// The vector itself (it no longer returns to the slot by itself).
    pub fn into_inner(mut self) -> Vec<T> {
        mem::take(&mut self.v)
    }

    /// Wraps `v` so that it goes to `slot` when dropped.
    pub fn adopt(slot: &'static Slot<T>, v: Vec<T>) -> Self {
        Reused { v, slot }
    }
}

impl<T: 'static> Drop for Reused<T> {
    fn drop(&mut self) {
        let cap = self.v.capacity();
        if cap == 0 || cap.saturating_mul(mem::size_of::<T>().max(1)) > KEEP_MAX {
            return;
        }
        let mut v = mem::take(&mut self.v);
        v.clear();
        // During thread exit the slot may be gone: the buffer is then simply freed.
        let _ = self.slot.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut()
                && s.len() < KEPT
            {
                s.push(v);
            }
        });
    }
}

impl<T: 'static> Deref for Reused<T> {
    type Target = Vec<T>;
    fn deref(&self) -> &Vec<T> {
        &self.v
    }
}

impl<T: 'static> DerefMut for Reused<T> {
    fn deref_mut(&mut self) -> &mut Vec<T> {
        &mut self.v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_buffer_is_taken_again() {
        let mut a = Reused::take(&BYTES, 100);
        a.extend_from_slice(b"hello");
        let ptr = a.as_ptr();
        drop(a);
        let b = Reused::take(&BYTES, 10);
        assert!(b.is_empty(), "comes back cleared");
        assert_eq!(b.as_ptr(), ptr, "same allocation");
        // Nested: the slot is empty now, so this one is new.
        let c = Reused::take(&BYTES, 10);
        assert_ne!(c.as_ptr(), ptr);
    }

    #[test]
    fn large_buffers_and_extra_ones_are_freed() {
        BYTES.with(|s| s.borrow_mut().clear());
        drop(Reused::take(&BYTES, KEEP_MAX + 1));
        assert_eq!(BYTES.with(|s| s.borrow().len()), 0);
        let many: Vec<_> = (0..KEPT + 3).map(|_| Reused::take(&BYTES, 8)).collect();
        drop(many);
        assert_eq!(BYTES.with(|s| s.borrow().len()), KEPT);
    }

    #[test]
    fn into_inner_keeps_and_adopt_returns() {
        BYTES.with(|s| s.borrow_mut().clear());
        let v = Reused::take(&BYTES, 32).into_inner();
        assert!(v.capacity() >= 32);
        assert_eq!(
            BYTES.with(|s| s.borrow().len()),
            0,
            "into_inner gives nothing back"
        );
        let ptr = v.as_ptr();
        drop(Reused::adopt(&BYTES, v));
        assert_eq!(Reused::take(&BYTES, 1).as_ptr(), ptr);
    }
}
