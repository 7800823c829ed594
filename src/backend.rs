//! Connections to a FastCGI application and the per-child connection pool.
//!
//! Pool design (see README, "Connection pool"): each child process keeps, per server
//! definition, a LIFO list of idle connections that ended cleanly with FCGI_KEEP_CONN. A
//! php-fpm worker stays bound to a kept connection, so idle connections are a loan of an
//! application process. Counters in shared memory track, for the whole instance, how many
//! connections are open and how many requests are waiting for the application; whenever
//! someone waits, idle connections are closed (by the request that would have pooled its
//! connection, and by each child's reaper thread every 20 ms even if that child gets no
//! traffic), so nobody queues in php-fpm's backlog behind idle connections. `-max-conns` caps
//! the open connections instance-wide, so requests wait in Apache (bounded by the connect
//! timeout) rather than in the backlog.
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{ServerDef, Target};
use crate::ffi::sock::{self, Ready, SharedCounters};

/// A fresh connection whose request has had no answer for this long counts as waiting (unless
/// the kernel says an application process took it).
const STALL_AFTER: Duration = Duration::from_millis(20);
/// Without -max-conns, a fresh connection whose request has had no answer for this long is
/// looked at: if it still waits in the application's backlog, another process is asked to
/// give up an application process it holds (`Runtime::ask_release`).
const ASK_AFTER: Duration = Duration::from_millis(1);
/// ASK_AFTER with -max-conns. A cap at `pm.max_children` leaves a free application process
/// for every connection opened under it, unless the application has not started that many
/// yet (php-fpm `ondemand`, `dynamic`: it starts them over seconds). The free process may
/// still need a few milliseconds to get the CPU when it is loaded, and asking other processes
/// to close connections then only makes them reconnect, opening more fresh connections that
/// wait the same way: with the 1 ms of the uncapped pool, hello.php at 32 clients on one CPU
/// (`pm = static` 50, -max-conns 50) opened a connection for 24-62% of its requests instead of
/// 0.1%. A wait this long means the application is short of processes.
const ASK_AFTER_CAPPED: Duration = Duration::from_millis(20);
/// STALL_AFTER with -max-conns (see ASK_AFTER_CAPPED).
const STALL_AFTER_CAPPED: Duration = Duration::from_millis(100);
/// A fresh connection still in the backlog this long after its request asked for an
/// application process asks for another one.
pub const ASK_AGAIN: Duration = Duration::from_millis(4);
/// A request still unanswered this long after it was sent is looked at (then at twice that,
/// and so on, until the kernel says so): has the application read it? A failure after that
/// is never replayed, whatever the method: the script may have acted on the request (a
/// php-fpm worker killed by `request_terminate_timeout` or a crash resets the connection,
/// as one stopped before reading it does). It is also the receive timeout of a pooled
/// connection (see `Conn::recv_share_wait`), so that answers quicker than this cost no poll.
pub const LOOK_AFTER: Duration = Duration::from_millis(50);
/// A queued request looks at the slots at least this often even if nobody wakes it.
const WAIT_RECHECK: Duration = Duration::from_millis(20);
/// A connection freed while requests queue for `-max-conns` slots goes to the request that has
/// waited longest; but a request of the same process that arrived at most this much later may
/// take it as it is, instead of the connection being closed here and opened again in the
/// other process (a connection setup on both sides). The oldest request then waits at most for
/// the few that arrived within this slack after it.
const HANDOVER_SLACK_NS: u64 = 5_000_000;
/// A request that queued at `since` is within HANDOVER_SLACK_NS of the oldest, queued at `oldest`.
fn in_slack(since: u64, oldest: u64) -> bool {
    since.saturating_sub(oldest) <= HANDOVER_SLACK_NS
}
/// How long after it was pooled an idle connection whose application process has not come
/// back to it counts as finishing its request rather than running a script on (`take_idle`).
const BUSY_GRACE: Duration = Duration::from_millis(5);

/// See `Runtime::take_idle`: how young a pooled connection is reused without asking whether
/// its application process is back, while other requests are in flight.
const UNCHECKED_AGE: Duration = Duration::from_millis(1);

/// How long a request waits for the process of a connection pooled less than BUSY_GRACE ago
/// to come back to it before it opens a new connection instead (`take_idle`).
const CATCH_UP_WAIT: Duration = Duration::from_millis(2);

/// Waits (at most CATCH_UP_WAIT, in short sleeps that leave the CPU to the application) until
/// the application process of `c` has read everything sent on it.
fn catches_up(c: &mut Conn) -> bool {
    let until = Instant::now() + CATCH_UP_WAIT;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_micros(20));
        if c.app_busy() != Some(true) {
            return true;
        }
    }
    false
}

/// See `Runtime::unread_seen`.
const TRUST_UNREAD_UNTIL: u32 = 64;

/// Most pooled connections one request looks at (each look is a system call or two).
const MAX_IDLE_LOOKS: usize = 4;

/// How often each child's reaper looks at its idle connections.
pub const REAP_EVERY: Duration = Duration::from_millis(20);

/// Per-definition runtime state of one child process.
#[derive(Debug)]
pub struct Runtime {
    /// `-keep-conn` (or `-max-conns`); turned off after the configuration is read where the
    /// MPM forks a process per connection (`Runtime::forked_per_connection`).
    keep_conn: AtomicBool,
    max_conns: u32,
    /// `-idle-timeout`: the receive timeout of pooled connections.
    idle_timeout: Duration,
    /// `-connect-retry`: how long after the application began refusing connections requests
    /// keep trying (Duration::ZERO: never).
    connect_retry: Duration,
    /// When (sock::monotonic_ns) this child first saw the application refuse connections in
    /// the current outage; 0 while it accepts them.
    down_since: AtomicU64,
    pool_idle: Duration,
    idle: Mutex<Vec<(Conn, Instant)>>,
    shared: AtomicPtr<SharedCounters>,
    /// This process's own counters, made only if the shared ones were never attached (the
    /// shared mapping failed): ~25 KB each, which hosting configurations with hundreds of
    /// definitions should not pay for in every process.
    local: std::sync::OnceLock<Box<SharedCounters>>,
    /// Requests of this process waiting for a connection slot (they take pooled ones first).
    local_waiting: AtomicU32,
    /// This process's entry in the shared owner table (usize::MAX: none claimed / table full).
    owner: AtomicUsize,
    /// The child is stopping (graceful restart/stop): pool nothing more.
    stopping: AtomicBool,
    /// Each client connection is served by a process of its own that ends with it (mpm-itk)
    /// without running the child pool's cleanups: the owner entry is given back whenever the
    /// process holds no connection, not at child exit.
    transient_owner: AtomicBool,
    /// When a waiter last looked for the shares of dead children.
    last_reclaim: Mutex<Option<Instant>>,
    /// An idle connection was seen whose application had read everything sent on it: the
    /// application reads between requests, so unread bytes mean a busy process.
    all_read_seen: AtomicBool,
    /// The other definitions with the same application address (several virtual paths, one
    /// php-fpm pool). Set once the configuration is read (`link_siblings`).
    siblings: std::sync::OnceLock<Siblings>,
    /// The reaper sleeps on this definition's owner bell (it had idle connections when the
    /// reaper last went to sleep). See `wake_reaper`.
    bell_watched: AtomicBool,
    /// Idle connections seen with unread bytes. Past TRUST_UNREAD_UNTIL of them without one
    /// ever read (an application that reads only when the next request comes, if there is
    /// such a one), unread bytes are no longer held against a connection.
    unread_seen: AtomicU32,
    /// The reaper's looks at the application's listen backlog (`outsiders_waiting`).
    backlog_look: Mutex<BacklogLook>,
}

/// This process's question about the application's listen backlog (None until made, or
/// after it found no listener), and when it may try to make one again.
#[derive(Debug, Default)]
struct BacklogLook {
    question: Option<crate::diag::ListenQuestion>,
    retry_at: Option<Instant>,
}

/// How often a reaper holding idle connections looks at the application's listen backlog
/// for clients it does not know of (`Runtime::outsiders_waiting`), and how long it leaves an
/// application alone whose listener the kernel cannot show (another host, or none found).
const BACKLOG_LOOK_EVERY: Duration = Duration::from_millis(100);
const BACKLOG_UNKNOWN_RETRY: Duration = Duration::from_secs(1);

const NO_OWNER: usize = usize::MAX;

/// The runtimes of the definitions that reach the same application as one: their idle
/// connections hold the same application's processes, so a request waiting in the backlog asks
/// them too (`Runtime::ask_release`).
#[derive(Debug)]
struct Siblings {
    others: Vec<std::sync::Weak<Runtime>>,
    /// The group's first definition (possibly this one): its counters hold `app_stalls` and
    /// `app_bell` for the whole group.
    leader: std::sync::Weak<Runtime>,
    /// One of them pools connections: new connections are looked at even by a definition
    /// that does not pool itself (`Runtime::guards_stalls`).
    pool: bool,
}

/// Links the runtimes of definitions with the same address list as siblings (see `Siblings`);
/// called once, after the configuration is read, before children fork.
pub fn link_siblings<'a>(defs: impl Iterator<Item = (&'a [Target], &'a Arc<Runtime>)>) {
    let mut by_app: std::collections::HashMap<Vec<String>, Vec<&Arc<Runtime>>> =
        std::collections::HashMap::new();
    for (targets, rt) in defs {
        let key = targets.iter().map(target_text).collect();
        by_app.entry(key).or_default().push(rt);
    }
    for group in by_app.values().filter(|g| g.len() > 1) {
        for rt in group {
            let others = group.iter().filter(|o| !Arc::ptr_eq(o, rt));
            let _ = rt.siblings.set(Siblings {
                leader: Arc::downgrade(group[0]),
                pool: others.clone().any(|o| o.keep_conn()),
                others: others.map(|o| Arc::downgrade(o)).collect(),
            });
        }
    }
}

/// A request's place in the shared queue for `-max-conns` slots.
#[derive(Debug, Clone, Copy)]
struct Ticket {
    index: usize,
    since: u64,
}

impl Runtime {
    pub fn new(def: &ServerDef) -> Arc<Self> {
        Arc::new(Runtime {
            keep_conn: AtomicBool::new(def.keep_conn),
            max_conns: def.max_conns,
            idle_timeout: Duration::from_secs(u64::from(def.idle_timeout.max(1))),
            connect_retry: Duration::from_secs(u64::from(def.connect_retry)),
            down_since: AtomicU64::new(0),
            pool_idle: Duration::from_secs(u64::from(def.pool_idle_timeout)),
            idle: Mutex::new(Vec::new()),
            shared: AtomicPtr::new(std::ptr::null_mut()),
            local: std::sync::OnceLock::new(),
            local_waiting: AtomicU32::new(0),
            owner: AtomicUsize::new(NO_OWNER),
            stopping: AtomicBool::new(false),
            transient_owner: AtomicBool::new(false),
            last_reclaim: Mutex::new(None),
            all_read_seen: AtomicBool::new(false),
            unread_seen: AtomicU32::new(0),
            bell_watched: AtomicBool::new(false),
            siblings: std::sync::OnceLock::new(),
            backlog_look: Mutex::new(BacklogLook::default()),
        })
    }

    /// Attaches the instance-wide counters (called before the children are forked). `c` must
    /// stay mapped for as long as this runtime can be used (see `SharedCounterMap`).
    pub fn attach(&self, c: *mut SharedCounters) {
        self.shared.store(c, Ordering::Release);
    }

    /// The counters of this definition's group leader (see `Siblings::leader`), which hold the
    /// group's `app_stalls` and `app_bell`; None without siblings. O(1) whatever the size of
    /// the group (one php-fpm pool behind hundreds of per-vhost definitions): it is asked on
    /// every `checkin`.
    fn app_counters(&self) -> Option<&SharedCounters> {
        let leader = self.siblings.get()?.leader.upgrade()?;
        let p = leader.shared.load(Ordering::Acquire);
        // (only the instance-wide mapping, which outlives every runtime: see counters_ref)
        (!p.is_null()).then(|| counters_ref(p))
    }

    /// Whether a request of another definition that reaches the same application is stalled
    /// (its fresh connection silent past its `stall_after`, in the application's backlog or,
    /// for an application on another host, not known to be out of it): the application
    /// process an idle connection of this definition holds may be the one it waits for, so
    /// nothing is pooled here either until it is served. The group's stalls less this
    /// definition's own (which `waiting` already counts).
    fn sibling_stalled(&self) -> bool {
        self.app_counters().is_some_and(|a| {
            a.app_stalls.load(Ordering::Acquire) > self.counters().stalls.load(Ordering::Acquire)
        })
    }

    /// Someone else waits for this application: a request of another process queued for a
    /// `-max-conns` slot or stalled on a fresh connection, or a stalled request of a sibling
    /// definition in any process. An idle connection must then go back to the application.
    fn others_wait(&self) -> bool {
        self.counters().waiting.load(Ordering::Acquire) > self.local_waiting.load(Ordering::Acquire)
            || self.sibling_stalled()
    }

    /// `others_wait`, not counting what children that were killed while a request of theirs
    /// waited left in the counts: those shares are given back first (at most every 50 ms).
    /// Otherwise a child killed then (OOM killer, a crash in another module) would keep every
    /// process from pooling until the next restart.
    fn others_wait_alive(&self) -> bool {
        self.others_wait() && {
            self.reclaim_dead();
            self.others_wait()
        }
    }

    /// Adds `n` (1, or u32::MAX to take one away) to the group's count of stalled requests.
    fn add_app_stalls(&self, n: u32) {
        if let Some(a) = self.app_counters() {
            a.app_stalls.fetch_add(n, Ordering::AcqRel);
        }
    }

    /// Wakes the reaper of every process that holds idle connections of this definition or of
    /// its siblings, so that they are closed now rather than at the reapers' next pass
    /// (REAP_EVERY): a request was just marked stalled (`set_waiting`). A group's reapers
    /// all sleep on its `app_bell`; a definition alone rings the owners holding idle ones.
    fn wake_idle_holders(&self) {
        if let Some(a) = self.app_counters() {
            a.app_bell.fetch_add(1, Ordering::AcqRel);
            sock::futex_wake(&a.app_bell, i32::MAX);
            return;
        }
        let cnt = self.counters();
        for o in cnt.claimed_owners() {
            if o.pid.load(Ordering::Acquire) != 0 && o.idle.load(Ordering::Acquire) > 0 {
                o.ring();
            }
        }
    }

    fn siblings(&self) -> Vec<Arc<Runtime>> {
        self.siblings
            .get()
            .map(|s| {
                s.others
                    .iter()
                    .filter_map(std::sync::Weak::upgrade)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn counters(&self) -> &SharedCounters {
        let p = self.shared.load(Ordering::Acquire);
        match p.is_null() {
            true => self.local.get_or_init(Box::default),
            false => counters_ref(p),
        }
    }

    pub fn keep_conn(&self) -> bool {
        self.keep_conn.load(Ordering::Relaxed)
    }

    /// For an MPM that forks a process per client connection (mpm-itk), called before the
    /// children are forked: one connection per request, and the owner entry given back as
    /// soon as the process holds no connection (see `transient_owner`).
    pub fn forked_per_connection(&self) {
        self.keep_conn.store(false, Ordering::Relaxed);
        self.transient_owner.store(true, Ordering::Relaxed);
    }

    /// The most recently pooled connection that is still usable and whose application process
    /// is back waiting for a request (`Conn::app_busy`). The lock is held only to pop: the
    /// checks (system calls) and the close of a dead connection run outside it, so the threads
    /// of a busy child do not queue behind each other's system calls.
    ///
    /// While other requests are in flight (any process), a connection pooled less than
    /// UNCHECKED_AGE ago is taken without asking: on a loaded CPU its process has usually not
    /// finished the request it just answered (the wake-up its answer caused preempted it), yet
    /// it reads the next request as soon as it runs, without sleeping first; passing such
    /// connections over for ones whose process sleeps cost 5-11% of the requests per second
    /// (hello.php on one CPU, paired runs).
    ///
    /// A connection whose process is still busy is passed over (put back at the old end of the
    /// list). If none of those looked at is free and the most recently pooled busy one was
    /// pooled less than BUSY_GRACE ago, its process is most likely finishing its request: it
    /// is taken as it is if `no_slot` (no new connection may be opened: waiting is inevitable)
    /// or if other requests are in flight, else (a sequential client, back before the process)
    /// waited for, at most CATCH_UP_WAIT. A process busy for longer, or beyond that wait, is
    /// taken to run a script that went on after `fastcgi_finish_request()` (WordPress's cron,
    /// Laravel's jobs after the response): its connection is not used; a new one is opened,
    /// or, if `no_slot`, the oldest such connection is closed to free its slot (its process
    /// goes back to php-fpm's listen queue once the script ends).
    fn take_idle(&self, no_slot: bool) -> Option<Conn> {
        let mut busy: Vec<(Conn, Instant)> = Vec::new();
        let mut looked = 0;
        let mut found = None;
        // (asked once, when first needed; popped connections are counted as held)
        let mut in_flight: Option<bool> = None;
        while looked < MAX_IDLE_LOOKS {
            let Some((mut c, since)) = self.with_idle(|idle| idle.pop()) else {
                break;
            };
            let age = since.elapsed();
            if age >= self.pool_idle || !c.is_reusable() {
                continue; // closed here
            }
            looked += 1;
            if age < UNCHECKED_AGE
                && *in_flight.get_or_insert_with(|| self.others_in_flight(busy.len() + 1))
            {
                found = Some(c);
                break;
            }
            match c.app_busy() {
                Some(true)
                    if self.all_read_seen.load(Ordering::Relaxed)
                        || self.unread_seen.fetch_add(1, Ordering::Relaxed)
                            < TRUST_UNREAD_UNTIL =>
                {
                    self.stats().busy_passed.fetch_add(1, Ordering::Relaxed);
                    busy.push((c, since));
                    continue;
                }
                Some(false) => self.all_read_seen.store(true, Ordering::Relaxed),
                _ => {}
            }
            found = Some(c);
            break;
        }
        if found.is_none() && !busy.is_empty() {
            let young = busy[0].1.elapsed() < BUSY_GRACE;
            if young
                && (no_slot
                    || in_flight.unwrap_or_else(|| self.others_in_flight(busy.len()))
                    || catches_up(&mut busy[0].0))
            {
                found = Some(busy.remove(0).0);
            } else if no_slot {
                drop(busy.pop()); // the oldest looked at: its slot is freed
            }
        }
        if !busy.is_empty() {
            self.with_idle(|idle| {
                idle.splice(0..0, busy.into_iter().rev());
            });
        }
        found.map(|mut c| {
            c.reused = true;
            c
        })
    }

    /// Whether other requests (of any process) are using connections to this application
    /// now: connections open beyond those idle and the `held` ones this request took from its
    /// idle list to look at. (Owner entries mirror their process's idle count: no lock.)
    fn others_in_flight(&self, held: usize) -> bool {
        if self.owner_claimed().is_none_or(|o| {
            o.open.load(Ordering::Acquire) as usize > o.idle.load(Ordering::Acquire) as usize + held
        }) {
            return true;
        }
        self.in_use() > held
    }

    /// Connections to this application open and not idle, in every process (owner entries
    /// mirror their process's idle count; a process without an entry counts as all in use).
    fn in_use(&self) -> usize {
        let cnt = self.counters();
        let idle: usize = cnt
            .claimed_owners()
            .iter()
            .map(|o| o.idle.load(Ordering::Acquire) as usize)
            .sum();
        (cnt.open.load(Ordering::Acquire) as usize).saturating_sub(idle)
    }

    /// A connection for one request: a pooled one if `pooled` allows and one is alive, else a
    /// new one (waiting for a slot under -max-conns, at most `timeout`).
    pub fn checkout(
        self: &Arc<Self>,
        targets: &[Target],
        timeout: Duration,
        pooled: bool,
    ) -> Result<Conn, ConnectError> {
        let cnt = self.counters();
        if pooled
            && self.keep_conn()
            && let Some(c) = self
                .take_idle(self.max_conns > 0 && cnt.open.load(Ordering::Acquire) >= self.max_conns)
        {
            return Ok(c);
        }
        let deadline = Instant::now() + timeout;
        if self.max_conns > 0 {
            // Only a waiter that may take a pooled connection counts as a local taker; one that
            // may not (a replay) must make this process give its idle connections up instead.
            let local_taker = pooled && self.keep_conn();
            let mut waiting = false;
            // Our place in the instance-wide queue (None: not queued, or the queue was full).
            let mut ticket: Option<Ticket> = None;
            let started = Instant::now();
            let mut backoff = Duration::from_micros(100);
            loop {
                // Read our wake-up word before looking at the slots: a release after the look
                // changes it, so the futex wait below cannot miss that release.
                let seen = ticket.map(|t| cnt.queue[t.index].wake.load(Ordering::Acquire));
                let cur = cnt.open.load(Ordering::Acquire);
                // Slots go to the requests that have waited longest: take one only if fewer
                // queued requests are ahead of us than there are free slots.
                let ahead = if waiting && ticket.is_none() {
                    0
                } else {
                    self.queued_ahead(ticket)
                };
                if cur < self.max_conns && ahead < (self.max_conns - cur) as usize {
                    if cnt
                        .open
                        .compare_exchange(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        break;
                    }
                    continue;
                }
                if !waiting {
                    waiting = true;
                    cnt.stats.queued.fetch_add(1, Ordering::Relaxed);
                    self.add_waiting(1);
                    // A slot held by an idle connection in another process is freed now, not
                    // at that process's next reaper pass.
                    self.ask_release(false);
                    if local_taker {
                        self.local_waiting.fetch_add(1, Ordering::AcqRel);
                    }
                    ticket = self.enqueue();
                    continue;
                }
                if let Some(c) = self.take_idle(true) {
                    if local_taker
                        && (ahead == 0 || ticket.is_some_and(|t| self.within_slack(t.since)))
                    {
                        self.end_wait(waiting, local_taker, ticket);
                        return Ok(c);
                    }
                    // Free our own idle connection's slot for this request (or for the
                    // requests that have waited longer).
                    drop(c);
                    continue;
                }
                if started.elapsed() >= Duration::from_millis(50) {
                    self.reclaim_dead();
                }
                let now = Instant::now();
                if now >= deadline {
                    self.end_wait(waiting, local_taker, ticket);
                    return Err(ConnectError {
                        error: io::Error::from_raw_os_error(libc::EAGAIN),
                        timed_out: true,
                        target: format!("all {} connections (-max-conns) busy", self.max_conns),
                        refused_for: None,
                    });
                }
                match (ticket, seen) {
                    // Sleep until a release wakes us (slot_released) or, at the latest,
                    // WAIT_RECHECK passes (dead children's slots are found by looking).
                    (Some(t), Some(v)) => sock::futex_wait(
                        &cnt.queue[t.index].wake,
                        v,
                        WAIT_RECHECK.min(deadline - now),
                    ),
                    // not queued (queue full): poll as before
                    _ => {
                        std::thread::sleep(backoff.min(deadline - now));
                        backoff = (backoff * 2).min(Duration::from_millis(1));
                    }
                }
            }
            self.end_wait(waiting, local_taker, ticket);
        } else {
            cnt.open.fetch_add(1, Ordering::AcqRel);
        }
        // The slot is this process's from now on, also while it connects (seconds, while the
        // application restarts): a child killed meanwhile gives it back (`reclaim_dead`).
        self.owner_add(1);
        match self.connect_or_wait(targets, deadline) {
            Ok(mut c) => {
                // A connection meant for the pool serves many requests: two system calls now
                // save a poll on every one of them (see `recv_share_wait`).
                if self.keep_conn()
                    && sock::set_blocking_recv(c.fd(), LOOK_AFTER.min(self.idle_timeout)).is_ok()
                {
                    c.blocking = true;
                }
                c.rt = Some(Arc::clone(self));
                Ok(c)
            }
            Err(e) => {
                self.owner_add(u32::MAX);
                cnt.open.fetch_sub(1, Ordering::AcqRel);
                self.slot_released();
                Err(e)
            }
        }
    }

    /// Connects; while the application refuses connections (nothing listens: it is
    /// restarting), keeps trying until `-connect-retry` after the refusals began, within
    /// `deadline`. Once an outage has lasted that long, requests fail at once until a connect
    /// succeeds again, so a stopped application costs no waiting beyond its first seconds.
    fn connect_or_wait(&self, targets: &[Target], deadline: Instant) -> Result<Conn, ConnectError> {
        let mut backoff = Duration::from_millis(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match Conn::connect(targets, left) {
                Ok(c) => {
                    if self.down_since.load(Ordering::Relaxed) != 0 {
                        self.down_since.store(0, Ordering::Relaxed);
                    }
                    return Ok(c);
                }
                Err(mut e) if e.is_refusal() && !self.connect_retry.is_zero() => {
                    let now = sock::monotonic_ns();
                    let since = match self.down_since.compare_exchange(
                        0,
                        now,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => now,
                        Err(earlier) => earlier,
                    };
                    let down_for = Duration::from_nanos(now.saturating_sub(since));
                    let retry_left = self.connect_retry.saturating_sub(down_for);
                    let wait = retry_left.min(deadline.saturating_duration_since(Instant::now()));
                    if wait.is_zero() {
                        e.refused_for = Some(down_for);
                        return Err(e);
                    }
                    std::thread::sleep(backoff.min(wait));
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn end_wait(&self, waiting: bool, local_taker: bool, ticket: Option<Ticket>) {
        if let Some(t) = ticket {
            self.dequeue(t);
        }
        if waiting {
            self.add_waiting(u32::MAX);
            if local_taker {
                self.local_waiting.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Adds `n` (u32::MAX for -1) to the instance-wide waiting count and this process's share.
    fn add_waiting(&self, n: u32) {
        let cnt = self.counters();
        cnt.waiting.fetch_add(n, Ordering::AcqRel);
        if let Some(o) = self.owner_entry() {
            o.waiting.fetch_add(n, Ordering::AcqRel);
        }
    }

    /// Registers this request in the queue for a slot.
    fn enqueue(&self) -> Option<Ticket> {
        let cnt = self.counters();
        let me = std::process::id();
        let index = cnt.queue.iter().position(|w| {
            w.pid
                .compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        })?;
        // Before anything else: a scan that misses the entry misses a request that has not
        // looked at the slots yet (it does, after this).
        cnt.queue_hi.fetch_max(
            u32::try_from(index + 1).unwrap_or(u32::MAX),
            Ordering::AcqRel,
        );
        let since = sock::monotonic_ns().max(1);
        cnt.queue[index].since.store(since, Ordering::Release);
        cnt.queued.fetch_add(1, Ordering::AcqRel);
        Some(Ticket { index, since })
    }

    fn dequeue(&self, t: Ticket) {
        let cnt = self.counters();
        if let Some(w) = cnt.queue.get(t.index) {
            w.since.store(0, Ordering::Release);
            w.pid.store(0, Ordering::Release);
            cnt.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// A connection slot was given back: wake the queued requests it may belong to (the
    /// oldest ones, as many as slots are free).
    fn slot_released(&self) {
        let cnt = self.counters();
        if self.max_conns == 0 || cnt.queued.load(Ordering::Acquire) == 0 {
            return;
        }
        let free = self
            .max_conns
            .saturating_sub(cnt.open.load(Ordering::Acquire))
            .max(1) as usize;
        // (an entry still being claimed, since 0, is left out: that request looks at the
        // slots itself once queued, and counting it as the oldest would take a wake-up from
        // one that sleeps)
        let mut q: Vec<(u64, usize)> = cnt
            .claimed_waiters()
            .iter()
            .enumerate()
            .filter(|(_, w)| w.pid.load(Ordering::Acquire) != 0)
            .map(|(i, w)| (w.since.load(Ordering::Acquire), i))
            .filter(|&(since, _)| since != 0)
            .collect();
        let n = free.min(q.len());
        if n == 0 {
            return;
        }
        q.select_nth_unstable(n - 1);
        for &(_, i) in &q[..n] {
            cnt.queue[i].wake();
        }
    }

    /// A connection went into this process's pool while requests of this process wait: wake
    /// the oldest of them (it takes the connection, or closes it for an older request).
    fn wake_local_waiter(&self) {
        if let Some((_, i, _)) = self.oldest_queued(Some(std::process::id())) {
            self.counters().queue[i].wake();
        }
    }

    /// Queued requests that have waited longer than `ticket` (all queued ones for None).
    fn queued_ahead(&self, ticket: Option<Ticket>) -> usize {
        let cnt = self.counters();
        if cnt.queued.load(Ordering::Acquire) == 0 {
            return 0;
        }
        cnt.claimed_waiters()
            .iter()
            .enumerate()
            .filter(|(i, w)| {
                if w.pid.load(Ordering::Acquire) == 0 {
                    return false;
                }
                let Some(t) = ticket else { return true };
                if *i == t.index {
                    return false;
                }
                // an entry still being claimed (since 0) counts as ahead: harmless, brief
                (w.since.load(Ordering::Acquire), *i) < (t.since, t.index)
            })
            .count()
    }

    /// This process's entry in the owner table, claimed on first use (None: table full).
    fn owner_entry(&self) -> Option<&sock::Owner> {
        let cnt = self.counters();
        let mut i = self.owner.load(Ordering::Acquire);
        if i == NO_OWNER {
            let me = std::process::id();
            i = cnt
                .owners
                .iter()
                .position(|o| {
                    o.pid
                        .compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                })
                .unwrap_or(NO_OWNER - 1);
            if i < cnt.owners.len() {
                cnt.owners_hi
                    .fetch_max(u32::try_from(i + 1).unwrap_or(u32::MAX), Ordering::AcqRel);
            }
            self.owner.store(i, Ordering::Release);
        }
        cnt.owners.get(i)
    }

    /// This process's entry in the owner table if it claimed one (never claims).
    fn owner_claimed(&self) -> Option<&sock::Owner> {
        self.counters()
            .owners
            .get(self.owner.load(Ordering::Acquire))
    }

    /// Runs `f` on this process's idle list under its lock and publishes the list's length in
    /// the owner table (what `ask_release` looks for).
    fn with_idle<R>(&self, f: impl FnOnce(&mut Vec<(Conn, Instant)>) -> R) -> R {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let r = f(&mut idle);
        let n = u32::try_from(idle.len()).unwrap_or(u32::MAX);
        // (claimed when the connection was opened, before it could be pooled)
        if let Some(o) = self.owner_claimed()
            && o.idle.load(Ordering::Relaxed) != n
        {
            o.idle.store(n, Ordering::Release);
        }
        r
    }

    /// This request needs an application process that may be held by a connection of
    /// another process (it waits for a -max-conns slot, or its fresh connection still waits in
    /// the application's backlog): asks the process with the most idle connections not yet
    /// asked for to close one now (see `Owner::ask_release`). With `busy_too` (no -max-conns,
    /// the backlog case), when no idle connection is left to ask for, the process with the
    /// most open connections not yet asked for closes one when its request ends instead of
    /// pooling it: the application process it frees takes the oldest connection in the
    /// backlog.
    pub fn ask_release(&self, busy_too: bool) {
        let me = std::process::id();
        // (with busy_too, the backlog case, the definitions that reach the same application
        // are asked as well, this process's entries in their tables included: their idle
        // connections hold the application's processes just the same)
        let siblings = if busy_too {
            self.siblings()
        } else {
            Vec::new()
        };
        type Best<'a> = (u32, Option<&'a sock::Owner>);
        let (mut idle_best, mut busy_best): (Best<'_>, Best<'_>) = ((0, None), (0, None));
        let tables = std::iter::once((self.counters(), true))
            .chain(siblings.iter().map(|s| (s.counters(), false)));
        for (cnt, own) in tables {
            for o in cnt.claimed_owners() {
                let pid = o.pid.load(Ordering::Acquire);
                if pid == 0 || (own && pid == me) {
                    continue;
                }
                let asked = o.release.load(Ordering::Acquire);
                let idle = o.idle.load(Ordering::Acquire).saturating_sub(asked);
                if idle > idle_best.0 {
                    idle_best = (idle, Some(o));
                }
                let open = o.open.load(Ordering::Acquire).saturating_sub(asked);
                if busy_too && open > busy_best.0 {
                    busy_best = (open, Some(o));
                }
            }
        }
        let target = idle_best.1.or(busy_best.1);
        if let Some(o) = target {
            self.counters()
                .stats
                .releases
                .fetch_add(1, Ordering::Relaxed);
            o.ask_release();
        }
    }

    /// Takes the release requests addressed to this process (0 without an owner entry).
    fn take_release_requests(&self) -> u32 {
        self.owner_claimed()
            .map_or(0, |o| match o.release.load(Ordering::Acquire) {
                0 => 0,
                _ => o.release.swap(0, Ordering::AcqRel),
            })
    }

    /// Consumes one release request addressed to this process, if there is one.
    fn take_one_release_request(&self) -> bool {
        self.owner_claimed().is_some_and(|o| {
            o.release
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
        })
    }

    /// Adds `n` (may wrap for -1) to this process's share in the owner table.
    fn owner_add(&self, n: u32) {
        if let Some(o) = self.owner_entry() {
            o.open.fetch_add(n, Ordering::AcqRel);
        }
    }

    /// Gives back the open-connection shares of children that died without closing their
    /// connections (killed): their sockets are gone, so are their slots.
    fn reclaim_dead(&self) {
        {
            let mut last = self.last_reclaim.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < Duration::from_millis(50)) {
                return;
            }
            *last = Some(Instant::now());
        }
        let cnt = self.counters();
        let me = std::process::id();
        for o in &cnt.owners {
            let pid = o.pid.load(Ordering::Acquire);
            if pid == 0 || pid == me || sock::process_alive(pid) {
                continue;
            }
            if o.pid
                .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.give_back_shares(o);
            }
        }
        for w in cnt.claimed_waiters() {
            let pid = w.pid.load(Ordering::Acquire);
            if pid == 0 || pid == me || sock::process_alive(pid) {
                continue;
            }
            if w.pid
                .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                w.since.store(0, Ordering::Release);
                cnt.queued.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Releases this process's owner entry if it holds nothing: no open connection, no
    /// waiting or stalled request (a process of mpm-itk between requests: one thread).
    fn release_owner_if_unused(&self) {
        if let Some(o) = self.owner_claimed()
            && o.open.load(Ordering::Acquire) == 0
            && o.waiting.load(Ordering::Acquire) == 0
            && o.stalls.load(Ordering::Acquire) == 0
        {
            self.release_owner();
        }
    }

    /// Releases this process's owner entry (child exit, after every connection was closed).
    fn release_owner(&self) {
        let i = self.owner.swap(NO_OWNER, Ordering::AcqRel);
        if let Some(o) = self.counters().owners.get(i) {
            self.give_back_shares(o);
            o.pid.store(0, Ordering::Release);
        }
    }

    /// Takes an owner entry's shares (open connections, waiting and stalled requests) out of
    /// the instance-wide totals and clears its idle count and release requests: the process
    /// is gone or leaving.
    fn give_back_shares(&self, o: &sock::Owner) {
        let cnt = self.counters();
        let n = o.open.swap(0, Ordering::AcqRel);
        if n > 0 {
            cnt.open.fetch_sub(n, Ordering::AcqRel);
            self.slot_released();
        }
        let w = o.waiting.swap(0, Ordering::AcqRel);
        if w > 0 {
            cnt.waiting.fetch_sub(w, Ordering::AcqRel);
        }
        let s = o.stalls.swap(0, Ordering::AcqRel);
        if s > 0 {
            cnt.stalls.fetch_sub(s, Ordering::AcqRel);
            if let Some(a) = self.app_counters() {
                a.app_stalls.fetch_sub(s, Ordering::AcqRel);
            }
        }
        o.idle.store(0, Ordering::Release);
        o.release.store(0, Ordering::Release);
    }

    /// The child is stopping: close idle connections and pool nothing more, so the old
    /// generation never holds application processes the new one needs.
    pub fn stop_pooling(&self) {
        self.stopping.store(true, Ordering::Release);
        self.close_all();
    }

    /// Returns a connection whose request ended cleanly. It is pooled unless pooling is off or
    /// another request (in any child) is waiting for the application — then it is closed, so
    /// the application process it holds can take that request. Waiters in this same process
    /// take pooled connections directly, so for them it is kept.
    pub fn checkin(&self, mut c: Conn) {
        if !self.keep_conn() {
            // (the request did not ask to keep the connection: the application closes it)
            return;
        }
        // From here on the connection is closed by this side: see `Conn::drop`.
        c.reset_on_close = c.tcp;
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        let cnt = self.counters();
        // While a request waits in the application's backlog, the application process of
        // this connection must go back to accepting (closed below), even before requests
        // queued for a slot: they would get a process the application does not have.
        if cnt.queued.load(Ordering::Acquire) > 0
            && cnt.stalls.load(Ordering::Acquire) == 0
            && !self.sibling_stalled()
            && let Some((_, _, oldest)) = self.oldest_queued(None)
        {
            // Requests wait for a -max-conns slot: the connection is for the one that has
            // waited longest. If that one, or one that queued at most HANDOVER_SLACK_NS after
            // it, is in this process, it takes the connection as it is; otherwise the
            // connection is closed (dropped here) and the freed slot wakes the oldest.
            if let Some((_, j, since)) = self.oldest_queued(Some(std::process::id()))
                && in_slack(since, oldest)
            {
                self.with_idle(|idle| idle.push((c, Instant::now())));
                // (the reaper is not woken for it: the waiter takes it at once, and a reaper
                // pass now would close it, as others are waiting, before the waiter could)
                cnt.queue[j].wake();
            }
            return;
        }
        if self.others_wait_alive() || self.take_one_release_request() {
            // (another process asked for an application process: this one is it)
            return;
        }
        self.with_idle(|idle| idle.push((c, Instant::now())));
        self.wake_reaper();
        if self.local_waiting.load(Ordering::Acquire) > 0 {
            self.wake_local_waiter();
        }
    }

    /// A request that queued at `since` is within HANDOVER_SLACK_NS of the one that has waited
    /// longest (so it may take a connection of its own process).
    fn within_slack(&self, since: u64) -> bool {
        self.oldest_queued(None)
            .is_some_and(|(_, _, oldest)| in_slack(since, oldest))
    }

    /// The queued request (of process `pid`, or of any) that has waited longest:
    /// (pid, queue index, when it queued).
    fn oldest_queued(&self, pid: Option<u32>) -> Option<(u32, usize, u64)> {
        self.counters()
            .claimed_waiters()
            .iter()
            .enumerate()
            .filter_map(|(i, w)| {
                let p = w.pid.load(Ordering::Acquire);
                (p != 0 && pid.is_none_or(|want| want == p))
                    .then(|| (w.since.load(Ordering::Acquire), i, p))
                    // (still being claimed: not the oldest, see slot_released)
                    .filter(|&(since, _, _)| since != 0)
            })
            .min()
            .map(|(since, i, p)| (p, i, since))
    }

    /// Closes idle connections that expired, that the application closed, or that hold an
    /// application process while a request elsewhere waits. Run by each child's reaper.
    pub fn reap(&self) {
        // Nothing pooled here: nothing to expire (and the shared page of a definition this
        // child never used stays untouched). Release requests that came meanwhile stay for
        // `checkin`: the connection that was idle when they came is in use by a request of
        // this process, and the application process it holds goes to the asker when that
        // request ends.
        if self.idle_count() == 0 {
            return;
        }
        let mut asked = self.take_release_requests() as usize;
        let others_wait = self.others_wait_alive();
        let for_outsiders = self.outsiders_waiting(self.idle_count());
        let mut outsiders = for_outsiders;
        let closing: Vec<(Conn, Instant)> = self.with_idle(|idle| {
            // the least recently used first (the list is LIFO: index 0 is the oldest)
            idle.extract_if(.., |(c, since)| {
                // (a connection the application closed holds none of its processes: closing
                // it gives nobody anything)
                let dead = !c.is_reusable();
                let close = dead
                    || others_wait
                    || asked > 0
                    || outsiders > 0
                    || since.elapsed() >= self.pool_idle;
                let gives = usize::from(close && !dead);
                asked = asked.saturating_sub(gives);
                outsiders = outsiders.saturating_sub(gives);
                close
            })
            .collect()
        });
        let given = for_outsiders - outsiders;
        if given > 0 {
            self.stats()
                .outsider_releases
                .fetch_add(given as u64, Ordering::Relaxed);
        }
        // taken for outsiders but not given (a request took the connection meanwhile): back
        // to the instance's count, for a process that still holds some
        if outsiders > 0 {
            self.look_counters().outside_release.fetch_add(
                u32::try_from(outsiders).unwrap_or(u32::MAX),
                Ordering::AcqRel,
            );
        }
        // more asked than were idle here: the rest for `checkin`
        if asked > 0
            && let Some(o) = self.owner_claimed()
        {
            o.release.fetch_add(asked as u32, Ordering::AcqRel);
        }
        // Closed here, after the lock is released.
        drop(closing);
    }

    /// How many idle connections to give up for clients this Apache does not know of: a
    /// second web server, cron jobs talking FastCGI, another instance in front of the same
    /// php-fpm pool. Their connections wait in the application's listen backlog while every
    /// application process is held by an idle pooled connection, and this module's own looks
    /// (`ask_after`, release requests) only see its own requests; without this they waited for
    /// `-pool-idle-timeout`. Every BACKLOG_LOOK_EVERY one reaper of the instance holding idle
    /// connections of the application asks the kernel how many connections wait to be
    /// accepted (one look for all processes and for every definition that reaches the
    /// application: its group's counters), and as many idle connections as waited at this look
    /// and the one before (a connection of a busy server passes through the backlog in well
    /// under that) are given up by the reapers that hold some, each taking its part. Where the
    /// kernel cannot show the listener (an application on another host), nothing is done.
    /// Returns this process's part, at most `idle_here`.
    fn outsiders_waiting(&self, idle_here: usize) -> usize {
        let c = self.look_counters();
        let now = sock::monotonic_ns();
        let at = c.backlog_at.load(Ordering::Acquire);
        let every = u64::try_from(BACKLOG_LOOK_EVERY.as_nanos()).unwrap_or(u64::MAX);
        if now.saturating_sub(at) >= every
            && c.backlog_at
                .compare_exchange(at, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            match self.look_at_backlog() {
                Some(n) => {
                    let before = c.backlog_seen.swap(n, Ordering::AcqRel);
                    // (a look from long ago says nothing of what waits now)
                    let before = if now.saturating_sub(at) <= 2 * every {
                        before
                    } else {
                        0
                    };
                    c.outside_release.store(n.min(before), Ordering::Release);
                }
                None => {
                    // This process cannot tell (no question yet, or its listener is gone or
                    // cannot be seen): the last look's figures stay, and the look is left to
                    // another process (or to this one at its next question).
                    let _ =
                        c.backlog_at
                            .compare_exchange(now, at, Ordering::AcqRel, Ordering::Acquire);
                }
            }
        }
        // this process's part of what is to be given up
        let mut left = c.outside_release.load(Ordering::Acquire);
        loop {
            let take = left.min(u32::try_from(idle_here).unwrap_or(u32::MAX));
            if take == 0 {
                return 0;
            }
            match c.outside_release.compare_exchange(
                left,
                left - take,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return take as usize,
                Err(now_left) => left = now_left,
            }
        }
    }

    /// Where the backlog look is kept: one look per application for the whole instance, in the
    /// counters of its group's leader (or of this definition alone).
    fn look_counters(&self) -> &SharedCounters {
        self.app_counters().unwrap_or_else(|| self.counters())
    }

    /// Connections waiting in the application's listen backlog, asked with this process's
    /// question (made from one of its idle connections); None where the kernel cannot tell.
    fn look_at_backlog(&self) -> Option<u32> {
        let mut look = self.backlog_look.lock().unwrap_or_else(|e| e.into_inner());
        if look.question.is_none() {
            if look.retry_at.is_some_and(|t| Instant::now() < t) {
                return None;
            }
            // (from the newest idle connection that can tell: an older one's application
            // process may have exited meanwhile, pm.max_requests)
            look.question = self.with_idle(|idle| {
                idle.iter()
                    .rev()
                    .take(4)
                    .find_map(|(c, _)| crate::diag::ListenQuestion::new(c.fd(), c.tcp))
            });
        }
        let n = look.question.as_ref().and_then(|q| q.backlog());
        if n.is_none() {
            // (the listener changed, or cannot be seen: not before BACKLOG_UNKNOWN_RETRY)
            *look = BacklogLook {
                question: None,
                retry_at: Some(Instant::now() + BACKLOG_UNKNOWN_RETRY),
            };
        }
        n
    }

    /// Closes every idle connection (child exit, graceful restart).
    pub fn close_all(&self) {
        let closing = self.with_idle(std::mem::take);
        drop(closing);
    }

    /// Whether a fresh connection's silence is looked into (ASK_AFTER, STALL_AFTER): whenever
    /// connections are pooled. Also with -max-conns: a cap at `pm.max_children` does not mean
    /// the application has that many processes — php-fpm's `pm = ondemand` and `dynamic` start
    /// them as connections wait (ondemand at most one per second), so a new connection can
    /// wait in the backlog while every running process is held by a pooled one. The kernel
    /// tells that apart from a slow script (`request_untouched`).
    pub fn guards_stalls(&self) -> bool {
        self.keep_conn() || self.siblings.get().is_some_and(|s| s.pool)
    }

    /// When a fresh connection still silent is first looked at: ASK_AFTER, or with -max-conns
    /// ASK_AFTER_CAPPED unless this request is the only one in flight to the application (in
    /// any process). ASK_AFTER_CAPPED's wait is for a free process that has to get a CPU
    /// loaded by other requests; a request alone (a sequential client whose requests land on
    /// different children) has none to wait behind, so its silence after ASK_AFTER means a
    /// process held idle by another child — where the application has fewer processes than
    /// -max-conns (a single-process FastCGI application, a php-fpm pool smaller than the
    /// cap) it waited ASK_AFTER_CAPPED for every such request.
    pub fn ask_after(&self) -> Duration {
        if self.max_conns > 0 && self.in_use() > 1 {
            ASK_AFTER_CAPPED
        } else {
            ASK_AFTER
        }
    }

    /// When a fresh connection still silent and not taken counts as stalled (STALL_AFTER,
    /// STALL_AFTER_CAPPED).
    pub fn stall_after(&self) -> Duration {
        if self.max_conns > 0 {
            STALL_AFTER_CAPPED
        } else {
            STALL_AFTER
        }
    }

    /// Marks or unmarks a request waiting on a fresh connection (see STALL_AFTER). While it
    /// is marked, no process pools connections of this definition or of its siblings
    /// (`others_wait`), and marking it wakes the reapers of the processes that hold idle ones.
    pub fn set_waiting(&self, on: bool) {
        let n = if on { 1 } else { u32::MAX };
        self.add_waiting(n);
        // (the group's count goes up after this definition's and down before it, so that a
        // sibling's `sibling_stalled` never sees this definition's own stall as another's)
        if !on {
            self.add_app_stalls(n);
        }
        self.counters().stalls.fetch_add(n, Ordering::AcqRel);
        if let Some(o) = self.owner_entry() {
            o.stalls.fetch_add(n, Ordering::AcqRel);
        }
        if on {
            self.add_app_stalls(n);
            self.wake_idle_holders();
        }
    }

    /// Called after a connection was pooled: wakes a resting reaper, or one that sleeps
    /// without this definition's owner bell among its words (it had no idle connection here
    /// when the reaper went to sleep, while other definitions had), so that another process's
    /// release request for this connection wakes it; otherwise that request waited for the
    /// reaper's next pass (REAP_EVERY): a sequential client under `-max-conns` with an
    /// application smaller than the cap waited 16-20 ms per request in a child that also
    /// kept connections to another definition. Two loads otherwise.
    fn wake_reaper(&self) {
        // SeqCst pairs with the reaper's store before its last look at the idle lists: either
        // it sees this connection, or this sees it resting.
        if REAPER_RESTING.load(Ordering::SeqCst) && REAPER_RESTING.swap(false, Ordering::SeqCst) {
            ring_reaper();
            return;
        }
        // The reaper clears the flag before it looks at the idle lists and sets it after it
        // took this definition's bell: a flag seen set means the bell is watched in the
        // reaper's current sleep, or its next look sees this connection.
        if !self.bell_watched.load(Ordering::SeqCst) && self.owner_claimed().is_some() {
            ring_reaper();
        }
    }

    /// Instance-wide totals (mod_status).
    pub fn stats(&self) -> &sock::Stats {
        &self.counters().stats
    }

    /// What mod_status shows of this server definition.
    pub fn snapshot(&self) -> crate::status::Snapshot {
        let cnt = self.counters();
        let st = &cnt.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut by_process: Vec<(u32, u32)> = cnt
            .owners
            .iter()
            .filter_map(|o| {
                let pid = o.pid.load(Ordering::Acquire);
                let open = o.open.load(Ordering::Acquire);
                (pid != 0 && open > 0).then_some((pid, open))
            })
            .collect();
        by_process.sort_unstable();
        crate::status::Snapshot {
            instance_wide: !self.shared.load(Ordering::Acquire).is_null(),
            keep_conn: self.keep_conn(),
            max_conns: self.max_conns,
            open: cnt.open.load(Ordering::Acquire),
            waiting: cnt.waiting.load(Ordering::Acquire),
            queued_now: cnt.queued.load(Ordering::Acquire),
            idle_here: self.idle_count(),
            by_process,
            requests: get(&st.requests),
            connects: get(&st.connects),
            reuses: get(&st.reuses),
            replays: get(&st.replays),
            queued: get(&st.queued),
            failures: get(&st.failures),
            client_aborts: get(&st.client_aborts),
            releases: get(&st.releases),
            busy_passed: get(&st.busy_passed),
            backlogged: get(&st.backlogged),
            stalled: get(&st.stalled),
            outsider_releases: get(&st.outsider_releases),
        }
    }

    /// Instance-wide open connections (for tests and status).
    pub fn open_count(&self) -> u32 {
        self.counters().open.load(Ordering::Acquire)
    }

    /// Idle connections in this child.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }
}

fn counters_ref<'a>(p: *mut SharedCounters) -> &'a SharedCounters {
    // SAFETY: `attach` stores pointers into a SharedCounterMap that outlives every use of the
    // runtime: in children it is never unmapped; in the parent it is unmapped by a pconf cleanup
    // that runs before the runtimes are dropped, and the parent never handles requests.
    unsafe { &*p }
}

/// An open connection to the application.
#[derive(Debug)]
pub struct Conn {
    /// Always Some until drop (taken there to close the socket before releasing its slot).
    fd: Option<OwnedFd>,
    /// Came from the pool (the application may have closed it meanwhile).
    pub reused: bool,
    /// In blocking mode with LOOK_AFTER as receive timeout (see `recv_share_wait`).
    blocking: bool,
    /// A TCP connection (not a unix socket): see `ack_promptly`.
    tcp: bool,
    /// The kernel could not tell what the application has read (an application on another
    /// host): `app_busy` no longer asks.
    app_hidden: bool,
    /// TCP: `app_busy`'s question to the kernel, prepared at its first use.
    tcp_question: Option<crate::diag::TcpQuestion>,
    /// The runtime whose open-connection count this connection holds.
    rt: Option<Arc<Runtime>>,
    /// Close by a reset (`sock::set_linger_reset`): a TCP connection the application keeps
    /// open (FCGI_KEEP_CONN), from the first time a request on it ended cleanly (`checkin`):
    /// whether it is closed idle or while a later request on it fails, this side closes first.
    reset_on_close: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // A FIN close from this side would hold a local port 60 s in TIME_WAIT, which Linux
        // reuses towards loopback only: a pool moving connections between processes ran out
        // of ports against an application on another host (503s). See `reset_on_close`.
        if self.reset_on_close
            && let Some(fd) = &self.fd
        {
            sock::set_linger_reset(fd.as_fd());
        }
        // Close first, then give the slot back: the count never undercounts open sockets.
        drop(self.fd.take());
        if let Some(rt) = self.rt.take() {
            rt.owner_add(u32::MAX);
            rt.counters().open.fetch_sub(1, Ordering::AcqRel);
            rt.slot_released();
            if rt.transient_owner.load(Ordering::Relaxed) {
                rt.release_owner_if_unused();
            }
        }
    }
}

/// Why a connect failed.
#[derive(Debug)]
pub struct ConnectError {
    pub error: io::Error,
    pub timed_out: bool,
    /// The address tried last, for the log line.
    pub target: String,
    /// The application had been refusing connections this long when the request gave up
    /// (`-connect-retry` used up); None when it was not waited for.
    pub refused_for: Option<Duration>,
}

impl ConnectError {
    /// Nothing listens at the address (connection refused, or the socket file is missing):
    /// what an application looks like while it restarts.
    pub fn is_refusal(&self) -> bool {
        !self.timed_out
            && matches!(
                self.error.raw_os_error(),
                Some(libc::ECONNREFUSED) | Some(libc::ENOENT)
            )
    }
}

pub fn target_text(t: &Target) -> String {
    match t {
        Target::Unix(p) => format!("unix:{}", String::from_utf8_lossy(p)),
        Target::Inet(a) => a.to_string(),
    }
}

impl Conn {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match &self.fd {
            Some(fd) => fd.as_fd(),
            // Unreachable: `fd` is only taken in drop.
            None => unreachable!("connection used after close"),
        }
    }

    /// Connects to the first target that accepts, waiting at most `timeout` overall. A unix
    /// socket whose listen backlog is full is retried until the deadline (never forever).
    pub fn connect(targets: &[Target], timeout: Duration) -> Result<Conn, ConnectError> {
        let deadline = Instant::now() + timeout;
        let mut last = ConnectError {
            error: io::Error::from_raw_os_error(libc::EINVAL),
            timed_out: false,
            target: String::new(),
            refused_for: None,
        };
        for t in targets {
            match Self::connect_one(t, deadline) {
                Ok(fd) => {
                    return Ok(Conn {
                        fd: Some(fd),
                        reused: false,
                        blocking: false,
                        tcp: matches!(t, Target::Inet(_)),
                        app_hidden: false,
                        tcp_question: None,
                        rt: None,
                        reset_on_close: false,
                    });
                }
                Err((error, timed_out)) => {
                    last = ConnectError {
                        error,
                        timed_out,
                        target: target_text(t),
                        refused_for: None,
                    };
                    if timed_out {
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    fn connect_one(t: &Target, deadline: Instant) -> Result<OwnedFd, (io::Error, bool)> {
        let mut backoff = Duration::from_millis(1);
        loop {
            let fd = sock::socket_for(t).map_err(|e| (e, false))?;
            match sock::connect(fd.as_fd(), t) {
                Ok(()) => return Ok(fd),
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match sock::poll(fd.as_fd(), false, true, left).map_err(|e| (e, false))? {
                        None => return Err((io::Error::from_raw_os_error(libc::ETIMEDOUT), true)),
                        Some(_) => {
                            sock::take_error(fd.as_fd()).map_err(|e| (e, false))?;
                            return Ok(fd);
                        }
                    }
                }
                Err(e)
                    if e.raw_os_error() == Some(libc::EAGAIN) && matches!(t, Target::Unix(_)) =>
                {
                    // Listen backlog full: wait a little and try again, within the deadline.
                    let now = Instant::now();
                    if now >= deadline {
                        return Err((e, true));
                    }
                    std::thread::sleep(backoff.min(deadline - now));
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err((e, false)),
            }
        }
    }

    /// Waits for readability (always) and writability (if `write`), up to `timeout`.
    pub fn wait(&self, write: bool, timeout: Duration) -> io::Result<Option<Ready>> {
        sock::poll(self.fd(), true, write, timeout)
    }

    /// Non-blocking receive (`WouldBlock` when nothing is available, `Ok(0)` at EOF).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        sock::recv(self.fd(), buf)
    }

    /// Non-blocking receive appended to `buf`'s spare capacity (see `sock::recv_into`).
    pub fn recv_into(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        sock::recv_into(self.fd(), buf)
    }

    /// Non-blocking read into a [`ShareBuf`]; Ok(0) is end of stream.
    pub fn recv_share(&self, buf: &mut crate::httpd::ShareBuf<'_>) -> io::Result<usize> {
        buf.fill(|spare| sock::recv_uninit(self.fd(), spare))
    }

    /// True when `recv_share_wait` may be used.
    pub fn can_wait_in_recv(&self) -> bool {
        self.blocking
    }

    /// Read into a [`ShareBuf`] that waits for data (at most LOOK_AFTER, then
    /// `WouldBlock`): replaces a poll + read when there is nothing to send and nothing else to
    /// watch. Only for connections where `can_wait_in_recv` is true.
    /// When `buf` has no buffer at hand (it gave its block back, see `ShareBuf::park`), the
    /// wait is a peek, and a block is taken only once data is there.
    pub fn recv_share_wait(&self, buf: &mut crate::httpd::ShareBuf<'_>) -> io::Result<usize> {
        debug_assert!(self.blocking);
        if !buf.has_buffer() && sock::peek_wait(self.fd())? == 0 {
            return Ok(0);
        }
        buf.fill(|spare| sock::recv_uninit_wait(self.fd(), spare))
    }

    /// Makes the kernel acknowledge what the application sends from now on at once rather than
    /// delay the acknowledgement (TCP only; a no-op on unix sockets). A kept connection carries
    /// request, answer, request, ..., so Linux treats it as interactive ("pingpong") and delays
    /// its ACKs, hoping to piggyback them on our next request; but php-fpm sends a large answer
    /// in several writes without TCP_NODELAY, and Nagle then holds its last small segment until
    /// our ACK of the previous one arrives: a delayed-ACK timeout (40 ms) in the middle of the
    /// response. The kernel re-enters that mode whenever we send, so this is called once per
    /// request after our last send, when the answer did not come in one read.
    pub fn ack_promptly(&self) {
        if self.tcp {
            sock::set_quickack(self.fd());
        }
    }

    /// Non-blocking gathered send.
    pub fn sendv(&self, bufs: &[&[u8]]) -> io::Result<usize> {
        sock::sendv(self.fd(), bufs)
    }

    /// Whether the application has not begun to read the request of `sent` bytes on this
    /// connection: Some(true) while it waits in the listen backlog (not accepted) or none of it
    /// was read, Some(false) once a process took it, None when the kernel cannot tell (an
    /// application on another host, sock_diag unavailable). A few system calls (sock_diag),
    /// for requests that have been silent a while.
    pub fn request_untouched(&mut self, sent: u64) -> Option<bool> {
        let end = if self.tcp {
            self.tcp_question()?.ask()?
        } else {
            crate::diag::unix_app_end(self.fd())?
        };
        Some(crate::diag::untouched(end, sent))
    }

    /// The sock_diag question about the application's end of this TCP connection, prepared
    /// once (None: the kernel cannot tell).
    fn tcp_question(&mut self) -> Option<crate::diag::TcpQuestion> {
        if self.tcp_question.is_none() {
            self.tcp_question = crate::diag::TcpQuestion::new(self.fd());
        }
        self.tcp_question
    }

    /// True when an idle connection is still open and clean (for pooling).
    pub fn is_reusable(&self) -> bool {
        sock::idle_socket_alive(self.fd())
    }

    /// Whether the application process of this idle connection has not yet read everything
    /// sent on it: still busy with the last request — finishing it, or running a script that
    /// went on after `fastcgi_finish_request()` — so that a request sent now would wait for
    /// it. php-fpm reads a request's body only up to CONTENT_LENGTH (which the module always
    /// sends), so the empty STDIN record that ends the body stays unread until the process
    /// comes back to the connection for the next request and skips it. (An application that
    /// reads everything at once looks free at once: no worse than not asking.) None when the
    /// kernel cannot tell (not asked again for this connection).
    pub fn app_busy(&mut self) -> Option<bool> {
        if self.app_hidden {
            return None;
        }
        let busy = if self.tcp {
            self.tcp_question()
                .and_then(|q| q.ask())
                .map(|(_, unread)| unread > 0)
        } else {
            crate::diag::unix_unread_by_peer(self.fd())
        };
        self.app_hidden = busy.is_none();
        busy
    }
}

/// Set by the reaper before it sleeps long (no connection pooled in this process): the next
/// connection pooled wakes it, so the pool's rules (expiry, giving connections up while others
/// wait) apply within REAP_EVERY again. Idle children with many server definitions then cost
/// nothing between the block trims (once a second).
static REAPER_RESTING: AtomicBool = AtomicBool::new(false);

/// The futex word this process's reaper sleeps on, besides the bells of its owner entries
/// (other processes ring those: `Owner::ask_release`). Bumped to wake it.
static REAPER_BELL: AtomicU32 = AtomicU32::new(0);

fn ring_reaper() {
    REAPER_BELL.fetch_add(1, Ordering::AcqRel);
    sock::futex_wake(&REAPER_BELL, 1);
}

/// The reaper of one child process: a thread that runs `Runtime::reap` every REAP_EVERY while
/// this process has pooled connections, and gives back the read blocks no request needed
/// (`crate::blocks::trim`; with nothing pooled, that is all it does, once per
/// `blocks::TRIM_EVERY`, until a connection is pooled). Dropping it stops and joins the thread
/// and closes every idle connection.
pub struct Reaper {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    runtimes: Vec<Arc<Runtime>>,
}

impl Reaper {
    /// `superseded` tells whether this child belongs to an old generation (a graceful restart
    /// happened): its idle connections are then closed and nothing more is pooled, even if the
    /// MPM (prefork) only tells the child once its current request is done.
    pub fn start(
        runtimes: Vec<Arc<Runtime>>,
        superseded: impl Fn() -> bool + Send + 'static,
    ) -> io::Result<Reaper> {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, rts) = (Arc::clone(&stop), runtimes.clone());
        let thread = std::thread::Builder::new()
            .name("fastcgi-reaper".into())
            .spawn(move || {
                let mut old = false;
                let mut waitv = true;
                while !s.load(Ordering::Acquire) {
                    // Read before the looks below: a wake-up after them changes it, so the
                    // wait cannot miss that wake-up.
                    let bell = REAPER_BELL.load(Ordering::Acquire);
                    // Nothing pooled here: nothing to expire or give up until a connection is
                    // pooled (which wakes us); only the read blocks need a look, once a second.
                    REAPER_RESTING.store(true, Ordering::SeqCst);
                    for rt in &rts {
                        rt.bell_watched.store(false, Ordering::SeqCst);
                    }
                    let pooled: Vec<&Arc<Runtime>> =
                        rts.iter().filter(|rt| rt.idle_count() > 0).collect();
                    let resting = pooled.is_empty();
                    if !resting {
                        REAPER_RESTING.store(false, Ordering::SeqCst);
                    }
                    // Asleep on futex words rather than for a fixed time, so that `drop`, a
                    // pooled connection and another process asking for one of our idle
                    // connections (its bell) wake it: a stopping child (graceful restart) exits
                    // at once, and an application process held idle here is given up within
                    // a wake-up, not a pass. An early wake-up only makes one extra, harmless
                    // pass.
                    let timeout = if resting {
                        crate::blocks::TRIM_EVERY
                    } else {
                        REAP_EVERY
                    };
                    let mut words = vec![(&REAPER_BELL, bell)];
                    let mut asked = false;
                    for rt in pooled {
                        // (a group's bell once, whichever of its definitions pools here)
                        if let Some(a) = rt.app_counters()
                            && words.len() < 128
                            && !words.iter().any(|(w, _)| std::ptr::eq(*w, &a.app_bell))
                        {
                            words.push((&a.app_bell, a.app_bell.load(Ordering::Acquire)));
                        }
                        if let Some(o) = rt.owner_claimed() {
                            // (futex_wait_any watches 128 words: past that, not watched)
                            if words.len() < 128 {
                                words.push((&o.bell, o.bell.load(Ordering::Acquire)));
                                rt.bell_watched.store(true, Ordering::SeqCst);
                            }
                            asked |= o.release.load(Ordering::Acquire) > 0;
                        }
                    }
                    if !asked {
                        if waitv && sock::futex_wait_any(&words, timeout).is_err() {
                            // (before Linux 5.16: other processes' requests wait for a pass)
                            waitv = false;
                        }
                        if !waitv {
                            sock::futex_wait(&REAPER_BELL, bell, timeout);
                        }
                    }
                    REAPER_RESTING.store(false, Ordering::SeqCst);
                    if s.load(Ordering::Acquire) {
                        break;
                    }
                    if !old && superseded() {
                        old = true;
                        for rt in &rts {
                            rt.stop_pooling();
                        }
                    }
                    for rt in &rts {
                        rt.reap();
                    }
                    crate::blocks::trim();
                }
            })?;
        Ok(Reaper {
            stop,
            thread: Some(thread),
            runtimes,
        })
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            ring_reaper();
            let _ = t.join();
        }
        for rt in &self.runtimes {
            rt.close_all();
            rt.release_owner();
        }
    }
}
