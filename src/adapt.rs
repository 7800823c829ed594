//! The adaptive connection limit (`-max-conns n -adapt on`, README "Adaptive limit"): how
//! many of the `-max-conns` slots requests may use at once, found from how long requests hold
//! their connection.
//!
//! A request holds its slot from checkout to the end of its response. While the application
//! keeps up, the mean holding time of a window stays near the lowest seen (the base). Once
//! more requests run than the application's CPUs serve, they share the CPUs and the mean
//! grows with the number running, while throughput does not: then running fewer at once
//! loses nothing, and the others wait in Apache, in arrival order, instead of slowing every
//! request and keeping more PHP processes switching on the CPUs. Requests that wait without
//! using the CPU (a database, a sleep) take as long with many running as with few, so for them
//! the limit climbs to `-max-conns`.
//!
//! Pure and unit-tested; the shared state and the sampling are in `backend`.

/// A window closes after this long and at least MIN_SAMPLES completions.
#[cfg_attr(test, allow(dead_code))]
pub const WINDOW_NS: u64 = 50_000_000;
#[cfg_attr(test, allow(dead_code))]
pub const MIN_SAMPLES: u32 = 32;
/// If no request finished for this long while others wait for a slot, the limit grows by one
/// (slots held by long requests — uploads, long polls — must not stall the quick ones).
#[cfg_attr(test, allow(dead_code))]
pub const STALL_NS: u64 = 20_000_000;
/// Windows between two tries of a limit that was found to be one too many.
pub const PROBE_EVERY: u32 = 8;

/// The limit before anything is learnt. It starts at one so that the base is learnt while
/// requests do not share the application's CPUs; it grows within a second where the
/// application keeps up (and by `STALL_NS` where its requests are long).
pub const INITIAL: u32 = 1;

/// What the adaptive limit has learnt (kept in shared memory; only the request that closes a
/// window changes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// Slots requests may use, 1..=max.
    pub limit: u32,
    /// Lowest mean holding time seen, in ns (0: unknown).
    pub base: u64,
    /// The lowest limit at which the application was last seen saturated (0: none known).
    pub ceiling: u32,
    /// Windows since the limit last went up to the ceiling.
    pub calm: u32,
}

impl State {
    pub const fn new() -> Self {
        State {
            limit: INITIAL,
            base: 0,
            ceiling: 0,
            calm: 0,
        }
    }

    /// The state after a window run at `self.limit` whose requests held their slot `mean` ns
    /// on average (0 or u64::MAX: no sample, nothing changes).
    ///
    /// - mean at most 1.25 × base: the application keeps up; a quarter more slots (at least
    ///   one, up to `max`) — but a limit at or above the last one found saturated is tried
    ///   again only every PROBE_EVERY windows;
    /// - at least 1.75 × base: saturated; a quarter fewer (at least one, never below 1), and
    ///   the limit it ran at becomes the ceiling;
    /// - in between: unchanged.
    ///
    /// The base is the lowest window mean seen, except that a window run with one slot sets it:
    /// a lone request shares nothing with the others, so its time is the base even if the
    /// application became slower since (a slower database after a deploy) — the limit then
    /// grows again instead of being held down by a stale base.
    pub fn next(self, max: u32, mean: u64) -> State {
        let max = max.max(1);
        let mut s = self;
        s.limit = s.limit.clamp(1, max);
        if mean == 0 || mean == u64::MAX {
            return s;
        }
        if s.base == 0 || mean <= s.base || s.limit == 1 {
            s.base = mean;
        }
        let (m, b) = (u128::from(mean), u128::from(s.base));
        if 4 * m <= 5 * b {
            if s.ceiling != 0 && s.limit >= s.ceiling {
                // the last limit found saturated keeps up now: no known ceiling any more
                s.ceiling = 0;
            }
            let up = s.limit.saturating_add((s.limit / 4).max(1)).min(max);
            if s.ceiling != 0 && up >= s.ceiling {
                s.calm = s.calm.saturating_add(1);
                if s.calm >= PROBE_EVERY {
                    s.calm = 0;
                    s.limit = s.ceiling.min(max);
                }
            } else {
                s.limit = up;
            }
        } else if 4 * m >= 7 * b {
            s.ceiling = s.limit;
            s.calm = 0;
            s.limit = s.limit.saturating_sub((s.limit / 4).max(1)).max(1);
        }
        s
    }
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

#[cfg(test)]
mod tests {
    use super::{PROBE_EVERY, State};

    fn st(limit: u32, base: u64) -> State {
        State {
            limit,
            base,
            ..State::new()
        }
    }

    #[test]
    fn the_first_window_sets_the_base_and_grows() {
        let s = State::new().next(50, 1_000);
        assert_eq!((s.limit, s.base), (2, 1_000));
    }

    #[test]
    fn grows_quickly_while_requests_take_the_base_time() {
        let mut s = State::new();
        let mut windows = 0;
        while s.limit < 50 {
            s = s.next(50, 1_000);
            windows += 1;
        }
        assert_eq!(s.base, 1_000);
        // within a second of 50 ms windows
        assert!(windows <= 20, "{windows}");
        // never beyond -max-conns
        assert_eq!(s.next(50, 1_000).limit, 50);
    }

    #[test]
    fn shrinks_when_requests_take_twice_the_base() {
        let s = st(40, 1_000).next(50, 2_000);
        assert_eq!((s.limit, s.base, s.ceiling), (30, 1_000, 40));
        assert_eq!(st(3, 1_000).next(50, 5_000).limit, 2);
        // one slot cannot be saturated by the others: its time becomes the base
        let s = st(1, 1_000).next(50, 5_000);
        assert_eq!((s.limit, s.base), (2, 5_000));
    }

    #[test]
    fn holds_in_between() {
        assert_eq!(st(8, 1_000).next(50, 1_700), st(8, 1_000));
    }

    #[test]
    fn a_saturated_limit_is_tried_again_only_now_and_then() {
        // saturated at 2: back to 1, which keeps up
        let mut s = st(2, 1_000).next(50, 2_400);
        assert_eq!((s.limit, s.ceiling), (1, 2));
        let mut at_two = 0;
        for _ in 0..(4 * PROBE_EVERY) {
            s = s.next(50, if s.limit == 1 { 1_000 } else { 2_400 });
            at_two += u32::from(s.limit == 2);
        }
        assert!((1..=5).contains(&at_two), "{at_two}");
        // once the ceiling keeps up (the load changed), growth is free again
        s = st(2, 1_000);
        s.ceiling = 2;
        s = s.next(50, 1_000);
        assert_eq!((s.limit, s.ceiling), (3, 0));
    }

    #[test]
    fn cpu_bound_load_stays_near_the_cpu_count() {
        for cpus in [1u64, 2, 4] {
            // The mean holding time is the base while the limit is within the CPU count, and
            // proportionally longer beyond it.
            let mut s = State::new();
            let mut seen = Vec::new();
            for _ in 0..400 {
                let mean = 1_000 * (u64::from(s.limit).max(cpus)) / cpus;
                s = s.next(50, mean);
                seen.push(s.limit);
            }
            let top = u32::try_from(2 * cpus).unwrap();
            assert!(seen[20..].iter().all(|&l| l <= top), "{cpus}: {seen:?}");
            // never below the CPU count for long (a probe of the ceiling costs one window)
            let below = seen[20..].iter().filter(|&&l| u64::from(l) < cpus).count();
            assert!(below * 10 < seen.len() - 20, "{cpus}: {seen:?}");
            assert!(s.base <= 1_100, "{}", s.base);
        }
    }

    #[test]
    fn requests_that_do_not_use_the_cpu_get_every_slot() {
        // Requests that wait (database, sleep) take as long however many run.
        let mut s = State::new();
        for _ in 0..100 {
            s = s.next(50, 5_000_000);
        }
        assert_eq!(s.limit, 50);
    }

    #[test]
    fn a_lasting_slowdown_is_learnt_and_the_limit_recovers() {
        // The scripts become 10x slower without using more CPU (a slower database).
        let mut s = st(50, 1_000);
        let mut seen = Vec::new();
        for _ in 0..200 {
            s = s.next(50, 10_000);
            seen.push(s.limit);
        }
        assert_eq!((s.limit, s.base), (50, 10_000), "{seen:?}");
        // it went down to one slot (and learnt the new base there) and back up
        assert!(seen.contains(&1));
    }

    #[test]
    fn empty_windows_change_nothing() {
        assert_eq!(st(7, 900).next(50, u64::MAX), st(7, 900));
        assert_eq!(st(7, 900).next(50, 0), st(7, 900));
        assert_eq!(st(0, 0).next(0, 0).limit, 1);
    }
}
