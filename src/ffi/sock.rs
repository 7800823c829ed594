//! The raw socket calls of the backend connection, behind safe signatures: non-blocking
//! connect (unix and TCP, IPv4/IPv6), poll on one descriptor, and send/recv that never raise
//! SIGPIPE and never block. Every function takes a borrowed descriptor that the caller owns.
use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

pub use crate::config::Target;

fn cvt(rv: libc::c_int) -> io::Result<libc::c_int> {
    if rv < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rv)
    }
}

fn cvt_size(rv: libc::ssize_t) -> io::Result<usize> {
    if rv < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rv as usize)
    }
}

/// A new non-blocking, close-on-exec stream socket for `target`.
pub fn socket_for(target: &Target) -> io::Result<OwnedFd> {
    let family = match target {
        Target::Unix(_) => libc::AF_UNIX,
        Target::Inet(SocketAddr::V4(_)) => libc::AF_INET,
        Target::Inet(SocketAddr::V6(_)) => libc::AF_INET6,
    };
    // SAFETY: plain syscall with constant arguments; the returned descriptor is checked and
    // immediately owned by an OwnedFd.
    let fd = cvt(unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if matches!(target, Target::Inet(_)) {
        set_tcp_flag(fd.as_fd(), libc::TCP_NODELAY);
    }
    Ok(fd)
}

/// Starts (or completes) a connect. `Ok(())` when connected; an error otherwise, where
/// `EINPROGRESS` means "poll for writability then call `take_error`", and for unix sockets
/// `EAGAIN` means the listen backlog is full.
pub fn connect(fd: BorrowedFd<'_>, target: &Target) -> io::Result<()> {
    match target {
        Target::Unix(path) => {
            // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
            let mut sa: libc::sockaddr_un = unsafe { zeroed() };
            sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
            if path.len() >= sa.sun_path.len() || path.contains(&0) {
                return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
            }
            for (d, s) in sa.sun_path.iter_mut().zip(path.iter()) {
                *d = *s as libc::c_char;
            }
            let len = (size_of::<libc::sa_family_t>() + path.len() + 1) as libc::socklen_t;
            // SAFETY: `sa` is a fully initialised sockaddr_un and `len` does not exceed its size.
            cvt(unsafe {
                libc::connect(
                    fd.as_raw_fd(),
                    (&sa as *const libc::sockaddr_un).cast(),
                    len,
                )
            })
            .map(|_| ())
        }
        Target::Inet(SocketAddr::V4(a)) => {
            // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
            let mut sa: libc::sockaddr_in = unsafe { zeroed() };
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_port = a.port().to_be();
            sa.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            };
            // SAFETY: `sa` is initialised and the length is its exact size.
            cvt(unsafe {
                libc::connect(
                    fd.as_raw_fd(),
                    (&sa as *const libc::sockaddr_in).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            })
            .map(|_| ())
        }
        Target::Inet(SocketAddr::V6(a)) => {
            // SAFETY: sockaddr_in6 is plain old data; all-zero is a valid value.
            let mut sa: libc::sockaddr_in6 = unsafe { zeroed() };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_port = a.port().to_be();
            sa.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sa.sin6_flowinfo = a.flowinfo();
            sa.sin6_scope_id = a.scope_id();
            // SAFETY: `sa` is initialised and the length is its exact size.
            cvt(unsafe {
                libc::connect(
                    fd.as_raw_fd(),
                    (&sa as *const libc::sockaddr_in6).cast(),
                    size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            })
            .map(|_| ())
        }
    }
}

/// The pending error of a socket (SO_ERROR), as the result of an asynchronous connect.
pub fn take_error(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut err: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid descriptor; `err`/`len` are live and sized as declared.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    if err != 0 {
        Err(io::Error::from_raw_os_error(err))
    } else {
        Ok(())
    }
}

/// Readiness of one descriptor.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ready {
    pub readable: bool,
    pub writable: bool,
    /// Error or hang-up condition (the next read/write reports it).
    pub broken: bool,
}

/// Waits up to `timeout` (to the microsecond) for readability and/or writability.
/// Returns `Ok(None)` on timeout. EINTR is retried here with the same timeout.
pub fn poll(
    fd: BorrowedFd<'_>,
    read: bool,
    write: bool,
    timeout: std::time::Duration,
) -> io::Result<Option<Ready>> {
    let mut events = 0;
    if read {
        events |= libc::POLLIN;
    }
    if write {
        events |= libc::POLLOUT;
    }
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // ppoll: poll counts whole milliseconds, rounded up (a look due in 0.97 ms came after 1.08).
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    loop {
        // SAFETY: one valid pollfd, count 1; a live timespec; no signal mask.
        let rv = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
        if rv < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if rv == 0 {
            return Ok(None);
        }
        let r = pfd.revents;
        return Ok(Some(Ready {
            readable: r & (libc::POLLIN | libc::POLLHUP) != 0,
            writable: r & libc::POLLOUT != 0,
            broken: r & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0,
        }));
    }
}

/// Non-blocking receive. `Ok(0)` is end of stream; `WouldBlock` when nothing is there.
pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is a live, writable slice of the given length.
        let rv = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        match cvt_size(rv) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Non-blocking gathered send of up to 16 slices; never raises SIGPIPE.
pub fn sendv(fd: BorrowedFd<'_>, bufs: &[&[u8]]) -> io::Result<usize> {
    let mut iov: [libc::iovec; 16] = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; 16];
    let mut n = 0;
    for b in bufs.iter().filter(|b| !b.is_empty()).take(16) {
        iov[n] = libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        };
        n += 1;
    }
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = n;
    loop {
        // SAFETY: `msg` points at `n` iovecs describing live, readable slices.
        let rv = unsafe {
            libc::sendmsg(
                fd.as_raw_fd(),
                &msg,
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        match cvt_size(rv) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Half-closes nothing, just checks whether an idle pooled socket is still usable: true when
/// the peer has not closed it and has not sent anything unexpected.
pub fn idle_socket_alive(fd: BorrowedFd<'_>) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: one-byte live buffer.
    let rv = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_DONTWAIT | libc::MSG_PEEK,
        )
    };
    if rv < 0 {
        let e = io::Error::last_os_error();
        return e.kind() == io::ErrorKind::WouldBlock;
    }
    false // 0 = EOF, >0 = unsolicited data: either way not reusable
}

/// How many processes per server definition have their open connections tracked individually
/// (so a killed child's share can be reclaimed). Beyond that, connections are still counted in
/// the total, just not reclaimable.
pub const MAX_OWNERS: usize = 1024;

/// One process's share of the open connections.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Owner {
    /// The process id (0: free entry).
    pub pid: std::sync::atomic::AtomicU32,
    /// Connections this process has open.
    pub open: std::sync::atomic::AtomicU32,
    /// This process's share of `SharedCounters::waiting` (given back if it dies).
    pub waiting: std::sync::atomic::AtomicU32,
    /// This process's share of `SharedCounters::stalls` (given back if it dies).
    pub stalls: std::sync::atomic::AtomicU32,
    /// Idle (pooled) connections this process holds.
    pub idle: std::sync::atomic::AtomicU32,
    /// Idle connections other processes asked this one to close (each request that needs an
    /// application process while this one holds idle ones asks for one).
    pub release: std::sync::atomic::AtomicU32,
    /// Futex word of this process's reaper: bumped, with a wake, after `release` was raised.
    pub bell: std::sync::atomic::AtomicU32,
}

impl Owner {
    /// Asks this process to close one of its idle connections, and wakes its reaper to do it
    /// now (`release` first, so a reaper that reads the bell and then `release` sees it, and
    /// one that read the bell before sleeps on a stale value and returns at once).
    pub fn ask_release(&self) {
        self.release
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.ring();
    }

    /// Wakes this process's reaper for a pass now (a request somewhere waits for the
    /// application: the reaper closes the idle connections this process holds).
    pub fn ring(&self) {
        self.bell.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        futex_wake(&self.bell, 1);
    }
}

/// Entries in the instance-wide queue of requests waiting for a `-max-conns` slot.
pub const MAX_WAITERS: usize = 512;

/// One request waiting for a `-max-conns` slot.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Waiter {
    /// The waiting process (0: free entry).
    pub pid: std::sync::atomic::AtomicU32,
    /// When it started waiting ([`monotonic_ns`]; 0 while the entry is being claimed).
    pub since: std::sync::atomic::AtomicU64,
    /// Futex word: bumped to wake the waiter when a slot may be its.
    pub wake: std::sync::atomic::AtomicU32,
}

impl Waiter {
    /// Wakes the request waiting in this entry (bumps the futex word first, so a waiter about
    /// to sleep on the old value does not).
    pub fn wake(&self) {
        self.wake.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        futex_wake(&self.wake, 1);
    }
}

/// Sleeps while `word` still holds `expected`, at most `timeout` (a futex shared between
/// processes: the word may live in MAP_SHARED memory). Returns early on a wake-up, a changed
/// value or a signal; the caller re-checks its condition either way.
pub fn futex_wait(
    word: &std::sync::atomic::AtomicU32,
    expected: u32,
    timeout: std::time::Duration,
) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT reads the aligned u32 behind a live reference and the timespec we own.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
}

/// Wakes up to `n` processes/threads sleeping in [`futex_wait`] on `word`.
pub fn futex_wake(word: &std::sync::atomic::AtomicU32, n: i32) {
    // SAFETY: FUTEX_WAKE only uses the address of the live, aligned u32.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
}

/// Sleeps until one of `words` no longer holds its expected value or is woken, at most
/// `timeout` (futex_waitv, Linux 5.16 and later; the words may be in MAP_SHARED memory, and
/// at most 128 are watched). Err(ENOSYS) on older kernels: the caller then waits on one word.
pub fn futex_wait_any(
    words: &[(&std::sync::atomic::AtomicU32, u32)],
    timeout: std::time::Duration,
) -> io::Result<()> {
    /// `struct futex_waitv` of <linux/futex.h>.
    #[repr(C)]
    struct FutexWaitv {
        val: u64,
        uaddr: u64,
        flags: u32,
        reserved: u32,
    }
    /// FUTEX2_SIZE_U32 (shared, not FUTEX2_PRIVATE: other processes wake these words).
    const FUTEX2_SIZE_U32: u32 = 0x02;
    let v: Vec<FutexWaitv> = words
        .iter()
        .take(128)
        .map(|(w, expected)| FutexWaitv {
            val: u64::from(*expected),
            uaddr: w.as_ptr() as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        })
        .collect();
    // futex_waitv takes an absolute CLOCK_MONOTONIC deadline.
    let end = monotonic_ns().saturating_add(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX));
    let ts = libc::timespec {
        tv_sec: (end / 1_000_000_000).min(i64::MAX as u64) as libc::time_t,
        tv_nsec: (end % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: the array and the timespec are ours and live across the call; every uaddr is an
    // aligned u32 behind a live reference.
    let rv = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            v.as_ptr(),
            v.len() as libc::c_uint,
            0 as libc::c_uint,
            &ts as *const libc::timespec,
            libc::CLOCK_MONOTONIC,
        )
    };
    if rv < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOSYS) {
            return Err(e);
        }
    }
    Ok(())
}

/// CLOCK_MONOTONIC in nanoseconds: comparable between the processes of one machine.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Counters shared by every child process of one Apache instance, one set per
/// FastCgiExternalServer definition (in anonymous shared memory created before the children
/// are forked).
#[repr(C)]
#[derive(Debug)]
pub struct SharedCounters {
    /// Connections open to the server from all children (in use or pooled).
    pub open: std::sync::atomic::AtomicU32,
    /// Requests somewhere in the instance that are waiting for the server to take them (a
    /// connection slot under -max-conns, or a fresh connection not yet answered). While
    /// non-zero, nobody keeps idle connections: they would hold application processes.
    pub waiting: std::sync::atomic::AtomicU32,
    /// Of `waiting`, the requests whose fresh connection is still in the application's
    /// backlog after `Runtime::stall_after()`: connections then go back to the application
    /// instead of to requests queued for a `-max-conns` slot.
    pub stalls: std::sync::atomic::AtomicU32,
    /// Used in the counters of the first of several definitions that reach the same
    /// application (the group's leader, `backend::link_siblings`): the `stalls` of all of them
    /// together, so that each can tell in one load whether a sibling's request is stalled.
    pub app_stalls: std::sync::atomic::AtomicU32,
    /// Leader's counters as above: a futex word the reapers holding idle connections of any
    /// definition of the group sleep on, rung (all woken) when one of their requests stalls.
    pub app_bell: std::sync::atomic::AtomicU32,
    /// Used in the counters of the group's leader (or of a definition alone): when a reaper
    /// last looked at the application's listen backlog for clients this Apache does not know
    /// of (monotonic ns; `Runtime::outsiders_waiting`), so that one process looks for all.
    pub backlog_at: std::sync::atomic::AtomicU64,
    /// Connections that waited in that backlog at the last look.
    pub backlog_seen: std::sync::atomic::AtomicU32,
    /// Idle connections still to be given up for them (reapers holding some take from it).
    pub outside_release: std::sync::atomic::AtomicU32,
    /// Per-process shares of `open`.
    pub owners: [Owner; MAX_OWNERS],
    /// One past the highest entry of `owners` ever claimed (scans stop there).
    pub owners_hi: std::sync::atomic::AtomicU32,
    /// Registered entries in `queue`.
    pub queued: std::sync::atomic::AtomicU32,
    /// One past the highest entry of `queue` ever claimed (scans stop there: entries are
    /// claimed lowest first, so a queue of 32 requests is read as 32 entries, not 512).
    pub queue_hi: std::sync::atomic::AtomicU32,
    /// Requests waiting for a `-max-conns` slot: slots go to the longest-waiting first.
    pub queue: [Waiter; MAX_WAITERS],
    /// Totals since the configuration was (re)loaded, for mod_status.
    pub stats: Stats,
}

/// Instance-wide totals of one server definition (shown by mod_status).
#[repr(C)]
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests handed to the application (a replay is not counted again).
    pub requests: std::sync::atomic::AtomicU64,
    /// Connections opened.
    pub connects: std::sync::atomic::AtomicU64,
    /// Requests that went over a pooled connection.
    pub reuses: std::sync::atomic::AtomicU64,
    /// Requests replayed on a fresh connection (the first one was closed before any answer).
    pub replays: std::sync::atomic::AtomicU64,
    /// Requests that had to wait for a `-max-conns` slot.
    pub queued: std::sync::atomic::AtomicU64,
    /// Requests that failed on the application's side: 502/503/504, or a response cut short.
    pub failures: std::sync::atomic::AtomicU64,
    /// Requests whose client went away before the response was complete.
    pub client_aborts: std::sync::atomic::AtomicU64,
    /// Requests that asked another process to close an idle connection (they needed the
    /// application process it held).
    pub releases: std::sync::atomic::AtomicU64,
    /// Idle connections found with their application process not back yet (still finishing
    /// the last request, or a script running on after `fastcgi_finish_request()`).
    pub busy_passed: std::sync::atomic::AtomicU64,
    /// Requests whose new connection was still in the application's listen backlog 1 ms after
    /// it was sent (no application process free: one was asked for).
    pub backlogged: std::sync::atomic::AtomicU64,
    /// Requests still in the backlog after 20 ms (or unknown to the kernel): pooling stopped
    /// in every child until they were served.
    pub stalled: std::sync::atomic::AtomicU64,
    /// Idle connections given up for clients this Apache does not know of, seen waiting in the
    /// application's listen backlog (`Runtime::outsiders_waiting`).
    pub outsider_releases: std::sync::atomic::AtomicU64,
}

impl SharedCounters {
    /// The entries of `owners` ever claimed (scans stop at `owners_hi`).
    pub fn claimed_owners(&self) -> &[Owner] {
        let hi = (self.owners_hi.load(std::sync::atomic::Ordering::Acquire) as usize)
            .min(self.owners.len());
        &self.owners[..hi]
    }

    /// The entries of `queue` ever claimed (scans stop at `queue_hi`).
    pub fn claimed_waiters(&self) -> &[Waiter] {
        let hi = (self.queue_hi.load(std::sync::atomic::Ordering::Acquire) as usize)
            .min(self.queue.len());
        &self.queue[..hi]
    }
}

impl Default for SharedCounters {
    fn default() -> Self {
        SharedCounters {
            open: Default::default(),
            waiting: Default::default(),
            stalls: Default::default(),
            app_stalls: Default::default(),
            app_bell: Default::default(),
            backlog_at: Default::default(),
            backlog_seen: Default::default(),
            outside_release: Default::default(),
            owners: std::array::from_fn(|_| Owner::default()),
            owners_hi: Default::default(),
            queued: Default::default(),
            queue_hi: Default::default(),
            queue: std::array::from_fn(|_| Waiter::default()),
            stats: Stats::default(),
        }
    }
}

/// True unless the process is known to be gone (kill(pid, 0) says ESRCH).
pub fn process_alive(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if p <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence; no signal is delivered.
    let rv = unsafe { libc::kill(p, 0) };
    rv == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Anonymous shared memory holding `n` counter sets, created before the children are forked
/// (each child keeps its own mapping of it for its whole life). Dropping it unmaps it in this
/// process only; hand out references only to code that is gone before the drop.
pub struct SharedCounterMap {
    ptr: std::ptr::NonNull<SharedCounters>,
    n: usize,
}

// SAFETY: the mapping is only accessed through atomics.
unsafe impl Send for SharedCounterMap {}
// SAFETY: as above.
unsafe impl Sync for SharedCounterMap {}

impl SharedCounterMap {
    pub fn new(n: usize) -> Option<Self> {
        let len = n.max(1).checked_mul(size_of::<SharedCounters>())?;
        // SAFETY: anonymous shared mapping; no file, no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        Some(SharedCounterMap {
            ptr: std::ptr::NonNull::new(p.cast())?,
            n,
        })
    }

    /// Raw pointer to counter set `i` (valid while this map lives in this process, and for the
    /// whole life of a child forked after it was created).
    pub fn get(&self, i: usize) -> Option<*mut SharedCounters> {
        // SAFETY: in-bounds offset inside the mapping.
        (i < self.n).then(|| unsafe { self.ptr.as_ptr().add(i) })
    }
}

impl Drop for SharedCounterMap {
    fn drop(&mut self) {
        let len = self.n.max(1) * size_of::<SharedCounters>();
        // SAFETY: unmapping exactly the region mmap returned; callers guarantee no references
        // into it remain in this process.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), len) };
    }
}

/// Non-blocking receive into the spare capacity of `buf` (nothing is zeroed first, so only the
/// pages actually received into are touched). Appends what was read; `Ok(0)` is end of stream.
pub fn recv_into(fd: BorrowedFd<'_>, buf: &mut Vec<u8>) -> io::Result<usize> {
    let n = recv_uninit(fd, buf.spare_capacity_mut())?;
    // SAFETY: recv_uninit initialised exactly `n` bytes at the start of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Non-blocking recv into possibly uninitialised memory; on Ok(n) the first `n` bytes of
/// `spare` are initialised.
pub fn recv_uninit(
    fd: BorrowedFd<'_>,
    spare: &mut [std::mem::MaybeUninit<u8>],
) -> io::Result<usize> {
    recv_uninit_flags(fd, spare, libc::MSG_DONTWAIT)
}

/// recv(2) into possibly uninitialised memory with `flags`, retried on EINTR.
fn recv_uninit_flags(
    fd: BorrowedFd<'_>,
    spare: &mut [std::mem::MaybeUninit<u8>],
    flags: libc::c_int,
) -> io::Result<usize> {
    if spare.is_empty() {
        return Ok(0);
    }
    loop {
        // SAFETY: `spare` is writable memory of `spare.len()` bytes borrowed mutably.
        let rv = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                flags,
            )
        };
        match cvt_size(rv) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Sets TCP_QUICKACK (acknowledge received data at once; the kernel clears it again by itself
/// when the connection looks interactive). Failures are ignored: it is only an optimisation.
pub fn set_quickack(fd: BorrowedFd<'_>) {
    set_tcp_flag(fd, libc::TCP_QUICKACK);
}

/// Makes the coming `close` of a TCP socket reset the connection (SO_LINGER with a zero
/// timeout) instead of the FIN handshake that leaves it in TIME_WAIT on this side for 60 s.
/// Only for a connection with nothing left to send or to read. Failures are ignored: the
/// close is then an ordinary one.
pub fn set_linger_reset(fd: BorrowedFd<'_>) {
    let lg = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = set_opt(fd, libc::SOL_SOCKET, libc::SO_LINGER, &lg);
}

/// Turns on an IPPROTO_TCP boolean option; failures are ignored (both uses are optimisations).
fn set_tcp_flag(fd: BorrowedFd<'_>, opt: libc::c_int) {
    let _ = set_opt(fd, libc::IPPROTO_TCP, opt, &(1 as libc::c_int));
}

/// setsockopt(2) with `value` (a plain C option value: int, linger, timeval).
fn set_opt<T>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: valid descriptor, pointer to a live value of the declared size.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Puts a connected socket in blocking mode with a receive timeout: a receive without
/// MSG_DONTWAIT then waits for data by itself (no poll first), at most `timeout`, after which
/// it fails with `WouldBlock`. Every other operation keeps passing MSG_DONTWAIT.
pub fn set_blocking_recv(fd: BorrowedFd<'_>, timeout: std::time::Duration) -> io::Result<()> {
    // SAFETY: valid descriptor; F_GETFL/F_SETFL take and return plain flags.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) })?;
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
    };
    set_opt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
}

/// Waits (a socket set up by `set_blocking_recv`: at most its receive timeout, then
/// `WouldBlock`) until data or the end of stream is there, without reading it: Ok(0) at end of
/// stream, else Ok(1).
pub fn peek_wait(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut b = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    recv_uninit_flags(fd, &mut b, libc::MSG_PEEK)
}

/// Receive that waits for data on a socket set up by `set_blocking_recv` (`WouldBlock` once its
/// timeout passed without data); on Ok(n) the first `n` bytes of `spare` are initialised.
pub fn recv_uninit_wait(
    fd: BorrowedFd<'_>,
    spare: &mut [std::mem::MaybeUninit<u8>],
) -> io::Result<usize> {
    recv_uninit_flags(fd, spare, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// How `Conn::drop` closes a connection that went through the pool: the other end (the
    /// application, waiting for its next request) reads a reset, not the end of the stream
    /// (which a close with the FIN handshake, leaving TIME_WAIT on this side, would give it).
    #[test]
    fn linger_reset_close() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut a, _) = l.accept().unwrap();
        set_linger_reset(c.as_fd());
        drop(c);
        let mut b = [0u8; 8];
        let e = a.read(&mut b).expect_err("the other end must read a reset");
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    }
}
