//! Safe, NULL-checked wrappers over the httpd/APR objects the module touches: requests,
//! tables, pools, brigades, and the error log. All raw pointer work lives here (and in
//! `ffi`); the rest of the module is written against these types.
use std::ffi::{CStr, c_char, c_int, c_void};
use std::marker::PhantomData;
use std::ptr::{self, NonNull, null, null_mut};
use std::time::Duration;

use crate::ffi;

pub mod log;

/// Borrowed bytes of a C string owned by an APR pool that outlives `'a`.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string valid for `'a`.
unsafe fn cbytes<'a>(p: *const c_char) -> Option<&'a [u8]> {
    if p.is_null() {
        None
    } else {
        // SAFETY: guaranteed by the caller.
        Some(unsafe { CStr::from_ptr(p) }.to_bytes())
    }
}

/// An APR pool.
#[derive(Clone, Copy)]
pub struct Pool<'a> {
    p: NonNull<ffi::apr_pool_t>,
    _l: PhantomData<&'a ()>,
}

impl<'a> Pool<'a> {
    /// # Safety
    /// `p` must be NULL or a live pool for `'a`.
    pub unsafe fn from_ptr(p: *mut ffi::apr_pool_t) -> Option<Self> {
        NonNull::new(p).map(|p| Pool { p, _l: PhantomData })
    }
    pub fn as_ptr(&self) -> *mut ffi::apr_pool_t {
        self.p.as_ptr()
    }
    /// Copies `b` into the pool as a NUL-terminated string. Interior NULs truncate the C view.
    pub fn strdup(&self, b: &[u8]) -> *mut c_char {
        // SAFETY: the pool is live; apr_pstrmemdup copies `len` bytes and appends a NUL.
        unsafe { ffi::apr_pstrmemdup(self.as_ptr(), b.as_ptr().cast(), b.len()) }
    }
    /// Moves `value` into the pool: it is dropped when the pool is cleared or destroyed.
    /// Returns a pointer valid for the pool's lifetime.
    pub fn adopt<T: 'static>(&self, value: T) -> *mut T {
        unsafe extern "C" fn drop_box<T>(data: *mut c_void) -> ffi::apr_status_t {
            crate::boundary!(0, {
                // SAFETY: `data` is the Box<T> leaked by `adopt`, dropped exactly once here.
                drop(unsafe { Box::from_raw(data.cast::<T>()) });
                0
            })
        }
        let raw = Box::into_raw(Box::new(value));
        // SAFETY: live pool; the cleanup receives `raw` exactly once when the pool dies.
        unsafe {
            ffi::apr_pool_cleanup_register(
                self.as_ptr(),
                raw.cast(),
                Some(drop_box::<T>),
                Some(ffi::apr_pool_cleanup_null),
            );
        }
        raw
    }
    /// Pool user data lookup by a static key.
    pub fn userdata(&self, key: &'static CStr) -> *mut c_void {
        let mut out: *mut c_void = null_mut();
        // SAFETY: live pool, valid key, `out` is a live out-pointer.
        unsafe { ffi::apr_pool_userdata_get(&mut out, key.as_ptr(), self.as_ptr()) };
        out
    }
    /// Stores user data without registering a cleanup (use `adopt` for ownership).
    pub fn set_userdata(&self, key: &'static CStr, data: *mut c_void) {
        // SAFETY: live pool; the key is static so `setn` may keep the pointer.
        unsafe { ffi::apr_pool_userdata_setn(data, key.as_ptr(), None, self.as_ptr()) };
    }
}

/// An APR table (headers, environment).
#[derive(Clone, Copy)]
pub struct Table<'a> {
    t: NonNull<ffi::apr_table_t>,
    _l: PhantomData<&'a ()>,
}

impl<'a> Table<'a> {
    /// # Safety
    /// `t` must be NULL or a live table for `'a`.
    pub unsafe fn from_ptr(t: *mut ffi::apr_table_t) -> Option<Self> {
        NonNull::new(t).map(|t| Table { t, _l: PhantomData })
    }
    /// Case-insensitive lookup.
    pub fn get(&self, name: &CStr) -> Option<&'a [u8]> {
        // SAFETY: live table, NUL-terminated key; the value lives in the table's pool.
        unsafe { cbytes(ffi::apr_table_get(self.t.as_ptr(), name.as_ptr())) }
    }
    /// A NUL-terminated copy of `b` in the table's own pool (NUL bytes in `b` are dropped).
    fn pool_copy(&self, b: &[u8]) -> *const c_char {
        // SAFETY: live table; apr_table_elts returns its array header, whose pool is the pool
        // the table was made in (and lives as long as the table).
        let pool = unsafe { (*ffi::apr_table_elts(self.t.as_ptr())).pool };
        let stripped;
        let b = if memchr::memchr(0, b).is_some() {
            stripped = b.iter().copied().filter(|&c| c != 0).collect::<Vec<u8>>();
            &stripped[..]
        } else {
            b
        };
        // SAFETY: live pool; apr_pstrmemdup copies `len` bytes and appends a NUL.
        unsafe { ffi::apr_pstrmemdup(pool, b.as_ptr().cast(), b.len()) }
    }
    /// Sets a value (both copied into the table's pool).
    pub fn set(&self, name: &[u8], value: &[u8]) {
        let (k, v) = (self.pool_copy(name), self.pool_copy(value));
        // SAFETY: live table; key and value live in the table's pool, as apr_table_setn needs.
        unsafe { ffi::apr_table_setn(self.t.as_ptr(), k, v) }
    }
    /// Adds a value (duplicates kept; both copied into the table's pool).
    pub fn add(&self, name: &[u8], value: &[u8]) {
        let (k, v) = (self.pool_copy(name), self.pool_copy(value));
        // SAFETY: live table; key and value live in the table's pool, as apr_table_addn needs.
        unsafe { ffi::apr_table_addn(self.t.as_ptr(), k, v) }
    }
    pub fn unset(&self, name: &CStr) {
        // SAFETY: live table, NUL-terminated key.
        unsafe { ffi::apr_table_unset(self.t.as_ptr(), name.as_ptr()) }
    }
    pub fn clear(&self) {
        // SAFETY: live table.
        unsafe { ffi::apr_table_clear(self.t.as_ptr()) }
    }
    /// Calls `f` for every entry in order (entries with a NULL key are skipped).
    pub fn for_each(&self, mut f: impl FnMut(&'a [u8], &'a [u8])) {
        self.for_each_entry(|k, v| f(k.to_bytes(), v));
    }
    /// As `for_each`, with the key as the C string it is.
    pub fn for_each_entry(&self, mut f: impl FnMut(&'a CStr, &'a [u8])) {
        // SAFETY: live table; apr_table_elts returns its array header whose `elts` holds
        // `nelts` apr_table_entry_t, each with pool-owned strings.
        unsafe {
            let arr = ffi::apr_table_elts(self.t.as_ptr());
            if arr.is_null() || (*arr).elts.is_null() {
                return;
            }
            let n = usize::try_from((*arr).nelts).unwrap_or(0);
            let ents = std::slice::from_raw_parts((*arr).elts.cast::<ffi::apr_table_entry_t>(), n);
            for e in ents {
                if !e.key.is_null() {
                    f(CStr::from_ptr(e.key), cbytes(e.val).unwrap_or(b""));
                }
            }
        }
    }
}

/// A CString from bytes, with interior NULs removed (they cannot be represented in C strings).
pub fn cstring_lossy(b: &[u8]) -> std::ffi::CString {
    match std::ffi::CString::new(b) {
        Ok(c) => c,
        Err(_) => {
            std::ffi::CString::new(b.iter().copied().filter(|&c| c != 0).collect::<Vec<u8>>())
                .unwrap_or_default()
        }
    }
}

/// A server_rec (main server or virtual host).
#[derive(Clone, Copy)]
pub struct Server<'a> {
    s: NonNull<ffi::server_rec>,
    _l: PhantomData<&'a ()>,
}

impl<'a> Server<'a> {
    /// # Safety
    /// `s` must be NULL or a live server_rec for `'a`.
    pub unsafe fn from_ptr(s: *mut ffi::server_rec) -> Option<Self> {
        NonNull::new(s).map(|s| Server { s, _l: PhantomData })
    }
    pub fn as_ptr(&self) -> *mut ffi::server_rec {
        self.s.as_ptr()
    }
    /// The per-server config vector entry of this module.
    pub fn module_config(&self) -> *mut c_void {
        // SAFETY: live server; ap_get_module_config indexes its config vector.
        unsafe {
            ffi::ap_get_module_config(
                (*self.s.as_ptr()).module_config,
                crate::module::module_ptr(),
            )
        }
    }
    /// httpd's `Timeout` for this server.
    pub fn timeout(&self) -> Duration {
        // SAFETY: live server.
        let t = unsafe { (*self.s.as_ptr()).timeout };
        Duration::from_micros(u64::try_from(t).unwrap_or(60_000_000).max(1_000_000))
    }
    pub fn hostname(&self) -> &'a [u8] {
        // SAFETY: live server; the name (if set) lives in pconf.
        unsafe { cbytes((*self.s.as_ptr()).server_hostname) }.unwrap_or(b"")
    }
}

/// A request being processed.
pub struct Request<'a> {
    r: NonNull<ffi::request_rec>,
    _l: PhantomData<&'a ()>,
}

impl<'a> Request<'a> {
    /// # Safety
    /// `r` must be NULL or a live request_rec, used only by this thread, for `'a`.
    pub unsafe fn from_ptr(r: *mut ffi::request_rec) -> Option<Self> {
        NonNull::new(r).map(|r| Request { r, _l: PhantomData })
    }
    pub fn as_ptr(&self) -> *mut ffi::request_rec {
        self.r.as_ptr()
    }
    fn raw(&self) -> &ffi::request_rec {
        // SAFETY: live request (constructor contract).
        unsafe { self.r.as_ref() }
    }
    fn raw_mut(&mut self) -> &mut ffi::request_rec {
        // SAFETY: live request used by this thread only (constructor contract).
        unsafe { self.r.as_mut() }
    }
    pub fn pool(&self) -> Pool<'a> {
        // SAFETY: every request has a live pool for its lifetime.
        unsafe { Pool::from_ptr(self.raw().pool) }.expect("request without pool")
    }
    /// Writes response body bytes through the output filters (ap_rwrite; content, never a
    /// format string).
    pub fn write_body(&mut self, data: &[u8]) {
        let Ok(n) = c_int::try_from(data.len()) else {
            return;
        };
        // SAFETY: live request; `data` is valid for `n` bytes during the call.
        unsafe { ffi::ap_rwrite(data.as_ptr().cast(), n, self.r.as_ptr()) };
    }
    pub fn server(&self) -> Option<Server<'a>> {
        // SAFETY: r->server is live for the request.
        unsafe { Server::from_ptr(self.raw().server) }
    }
    pub fn filename(&self) -> Option<&'a [u8]> {
        // SAFETY: pool string or NULL.
        unsafe { cbytes(self.raw().filename) }
    }
    pub fn path_info(&self) -> Option<&'a [u8]> {
        // SAFETY: pool string or NULL.
        unsafe { cbytes(self.raw().path_info) }
    }
    /// Whether the directory walk found a file (of any type) at `r->filename`.
    pub fn file_exists(&self) -> bool {
        self.raw().finfo.filetype != ffi::apr_filetype_e_APR_NOFILE
    }
    pub fn handler(&self) -> Option<&'a [u8]> {
        // SAFETY: static or pool string, or NULL.
        unsafe { cbytes(self.raw().handler) }
    }
    pub fn set_handler(&mut self, h: &'static CStr) {
        self.raw_mut().handler = h.as_ptr();
    }
    /// A request the client sent itself for this URL: not a subrequest, not the target of an
    /// internal redirect (mod_actions, ErrorDocument, a Location from an application), and not
    /// rewritten by mod_rewrite.
    pub fn is_direct(&self) -> bool {
        let r = self.raw();
        r.main.is_null()
            && r.prev.is_null()
            && self
                .notes()
                .is_some_and(|n| n.get(c"mod_rewrite_rewritten").is_none())
    }
    /// The request whose directory configuration governs the script this response runs. When
    /// mod_actions passed a request for a script to the application (`Action`: the script's
    /// request is `r->prev`, and its URI became this request's path info), that is the
    /// script's request, as it is with mod_php or mod_cgi serving that script; otherwise it is
    /// this request (the application's URL requested directly, as with mod_cgi).
    fn script_request(&self) -> &ffi::request_rec {
        let r = self.raw();
        // SAFETY: r->prev is NULL or the live request this one was redirected from.
        if let Some(prev) = unsafe { r.prev.as_ref() } {
            // SAFETY: pool strings or NULL.
            let prev_uri = unsafe { cbytes(prev.uri) };
            if prev_uri.is_some() && self.path_info() == prev_uri {
                return prev;
            }
        }
        r
    }
    /// The trailing path that `AcceptPathInfo Off` refuses for this response, if any: the
    /// setting and the trailing path are those of the script's request (`script_request`).
    /// Through `Action ... virtual` there may be no script at all (`<Location /api> SetHandler
    /// app`, no file under /api): the trailing path is then only where a missing directory cut
    /// the URL, not a path after a script, and the request is served, as mod_cgi serves the
    /// action script.
    pub fn refused_path_info(&self) -> Option<&'a [u8]> {
        let r = self.script_request();
        if r.used_path_info != ffi::AP_REQ_REJECT_PATH_INFO
            || (!std::ptr::eq(r, self.raw()) && r.finfo.filetype != ffi::apr_filetype_e_APR_REG)
        {
            return None;
        }
        // SAFETY: pool string or NULL, live for the request (and its redirects).
        unsafe { cbytes::<'a>(r.path_info) }.filter(|p| !p.is_empty())
    }
    fn notes(&self) -> Option<Table<'a>> {
        // SAFETY: r->notes is a live table for the request (or NULL).
        unsafe { Table::from_ptr(self.raw().notes) }
    }
    /// A HEAD request: the body is not sent.
    pub fn header_only(&self) -> bool {
        self.raw().header_only != 0
    }
    fn table(&self, t: *mut ffi::apr_table_t) -> Table<'a> {
        // SAFETY: request tables are live for the request; httpd never leaves them NULL.
        unsafe { Table::from_ptr(t) }.expect("request table is NULL")
    }
    pub fn headers_in(&self) -> Table<'a> {
        self.table(self.raw().headers_in)
    }
    pub fn headers_out(&self) -> Table<'a> {
        self.table(self.raw().headers_out)
    }
    pub fn err_headers_out(&self) -> Table<'a> {
        self.table(self.raw().err_headers_out)
    }
    pub fn subprocess_env(&self) -> Table<'a> {
        self.table(self.raw().subprocess_env)
    }
    /// httpd's standard CGI environment (ap_add_common_vars + ap_add_cgi_vars) into subprocess_env.
    pub fn add_cgi_environment(&mut self) {
        // SAFETY: live request; these functions only read the request and fill subprocess_env
        // (ap_add_cgi_vars may run a lookup subrequest).
        unsafe {
            ffi::ap_add_common_vars(self.as_ptr());
            ffi::ap_add_cgi_vars(self.as_ptr());
        }
        // `CGIPassAuth On` where the script is (its <Directory> or .htaccess) passes the
        // credentials as it does for mod_php or mod_proxy_fcgi; httpd only looked at this
        // request's own configuration, the virtual path's under mod_actions.
        let script = self.script_request();
        let on = |r: &ffi::request_rec| {
            // SAFETY: a live request (this one or the one it was redirected from); the shim
            // only reads its directory configuration.
            let v = unsafe { ffi::fcgi_shim_cgi_pass_auth(ptr::from_ref(r).cast_mut()) };
            v == ffi::AP_CGI_PASS_AUTH_ON
        };
        if ptr::eq(script, self.raw()) {
            return;
        }
        let env = self.subprocess_env();
        if on(script) && !on(self.raw()) {
            let hin = self.headers_in();
            for (h, var) in [
                (c"Authorization", &b"HTTP_AUTHORIZATION"[..]),
                (c"Proxy-Authorization", b"HTTP_PROXY_AUTHORIZATION"),
            ] {
                if let Some(v) = hin.get(h) {
                    env.set(var, v);
                }
            }
        }
        // The script's environment (`SetEnv`/`SetEnvIf` in its <Directory> or .htaccess,
        // mod_rewrite's `E=`) under its own names, as mod_php and mod_proxy_fcgi pass it:
        // the redirect to the virtual path renamed it all `REDIRECT_…` (kept as well), and the
        // virtual path's directory sets none of it again. What this request set itself wins;
        // mod_actions' own HANDLER and older redirects' `REDIRECT_…` stay as they are.
        // SAFETY: the script's request is live; its subprocess_env is a table or NULL.
        if let Some(senv) = unsafe { Table::from_ptr(script.subprocess_env) } {
            senv.for_each_entry(|k, v| {
                let b = k.to_bytes();
                if b != b"HANDLER" && !b.starts_with(b"REDIRECT_") && env.get(k).is_none() {
                    env.set(b, v);
                }
            });
        }
    }
    /// The CGI environment an application in the AUTHORIZER role gets (as mod_fastcgi sends
    /// it): httpd's, without PATH_TRANSLATED (whose lookup subrequest is not even made), and
    /// with `compat` (the FastCGI specification's list) without CONTENT_LENGTH, SCRIPT_NAME
    /// and PATH_INFO either.
    pub fn add_authorizer_environment(&mut self, compat: bool) {
        let path_info = self.raw().path_info;
        // SAFETY: live request. path_info is hidden from ap_add_cgi_vars for the call only (so it
        // neither looks PATH_TRANSLATED up nor splits SCRIPT_NAME) and put back at once.
        unsafe {
            ffi::ap_add_common_vars(self.as_ptr());
            self.raw_mut().path_info = null_mut();
            ffi::ap_add_cgi_vars(self.as_ptr());
            self.raw_mut().path_info = path_info;
        }
        let env = self.subprocess_env();
        if compat {
            for v in [c"CONTENT_LENGTH", c"SCRIPT_NAME", c"PATH_INFO"] {
                env.unset(v);
            }
            return;
        }
        // SAFETY: pool strings or NULL.
        let (uri, pi) = unsafe { (self.raw().uri, cbytes(path_info)) };
        if let Some(pi) = pi.filter(|p| !p.is_empty())
            && !uri.is_null()
        {
            // SAFETY: both are live NUL-terminated strings; the result is an offset into `uri`.
            let end = unsafe { ffi::ap_find_path_info(uri, path_info) };
            // SAFETY: as above.
            let u = unsafe { cbytes(uri) }.unwrap_or(b"");
            env.set(
                b"SCRIPT_NAME",
                &u[..usize::try_from(end).unwrap_or(0).min(u.len())],
            );
            env.set(b"PATH_INFO", pi);
        }
    }
    pub fn status(&self) -> c_int {
        self.raw().status
    }
    /// Sends an interim (1xx) response with the headers `fill` puts in the table it is given;
    /// the request's own status, status line and headers_out are left as they were. httpd
    /// sends nothing to an HTTP/1.0 client, and a 100 only to a client that expects one.
    /// Nothing is sent for a subrequest (mod_include's `virtual`, ...): its output goes into a
    /// response that has begun, where an interim response would corrupt it.
    pub fn send_interim(
        &mut self,
        status: u16,
        status_line: Option<&[u8]>,
        fill: impl FnOnce(Table<'a>),
    ) {
        if !self.raw().main.is_null() {
            return;
        }
        let (old_status, old_line, old_out) = {
            let r = self.raw();
            (r.status, r.status_line, r.headers_out)
        };
        // SAFETY: a new table in the request pool, live as long as the request.
        let interim = unsafe { ffi::apr_table_make(self.pool().as_ptr(), 8) };
        if interim.is_null() {
            return;
        }
        self.raw_mut().headers_out = interim;
        fill(self.headers_out());
        self.set_status(status, status_line);
        // SAFETY: live request with a 1xx status; httpd writes the interim response to the
        // connection's output filters and clears the (interim) headers_out.
        unsafe { ffi::ap_send_interim_response(self.as_ptr(), 1) };
        let r = self.raw_mut();
        r.status = old_status;
        r.status_line = old_line;
        r.headers_out = old_out;
    }
    pub fn set_status(&mut self, status: u16, status_line: Option<&[u8]>) {
        let line = status_line
            .map(|l| self.pool().strdup(l) as *const c_char)
            .unwrap_or(null());
        let r = self.raw_mut();
        r.status = c_int::from(status);
        r.status_line = line;
    }
    pub fn set_content_type(&mut self, ct: &[u8]) {
        let p = self.pool().strdup(ct);
        // SAFETY: live request; `p` lives in the request pool as required.
        unsafe { ffi::ap_set_content_type(self.as_ptr(), p) }
    }
    /// httpd's method number (`M_GET`, `M_POST`, …).
    pub fn method_number(&self) -> c_int {
        self.raw().method_number
    }
    /// Turns the request into a GET without a body (before an internal redirect).
    pub fn make_get_without_body(&mut self) {
        let r = self.raw_mut();
        r.method = c"GET".as_ptr();
        r.method_number = ffi::M_GET;
        self.headers_in().unset(c"Content-Length");
        self.headers_in().unset(c"Transfer-Encoding");
    }
    pub fn internal_redirect(&mut self, uri: &[u8]) {
        let u = self.pool().strdup(uri);
        // SAFETY: live request; `u` lives in its pool.
        unsafe { ffi::ap_internal_redirect_handler(u, self.as_ptr()) }
    }
    /// Validates the body framing (Content-Length / Transfer-Encoding, LimitRequestBody) and
    /// prepares for reading. Err is an HTTP status.
    pub fn setup_body(&mut self) -> Result<BodyInfo, i32> {
        // SAFETY: live request.
        let rc = unsafe { ffi::ap_setup_client_block(self.as_ptr(), ffi::REQUEST_CHUNKED_DECHUNK) };
        if rc != ffi::OK {
            return Err(rc);
        }
        // SAFETY: live request, after ap_setup_client_block.
        let has_body = unsafe { ffi::ap_should_client_block(self.as_ptr()) } != 0;
        let r = self.raw();
        let chunked = r.read_chunked != 0;
        Ok(BodyInfo {
            has_body,
            chunked,
            // ap_setup_client_block set `remaining` to the Content-Length
            length: (!chunked).then(|| u64::try_from(r.remaining).unwrap_or(0)),
        })
    }
    /// Reads the next piece of the request body into `bb` (blocking, under httpd's Timeout).
    pub fn read_body(&mut self, bb: &mut Brigade<'a>, max: usize) -> Result<(), ffi::apr_status_t> {
        // SAFETY: live request and brigade; ap_get_brigade appends buckets to `bb`.
        let rv = unsafe {
            ffi::ap_get_brigade(
                self.raw().input_filters,
                bb.as_ptr(),
                ffi::ap_input_mode_t_AP_MODE_READBYTES,
                ffi::apr_read_type_e_APR_BLOCK_READ,
                max as ffi::apr_off_t,
            )
        };
        if rv == 0 { Ok(()) } else { Err(rv) }
    }
    /// Status for a body read error (413 for LimitRequestBody, 400 for bad chunking, …).
    pub fn body_error_status(rv: ffi::apr_status_t) -> i32 {
        // SAFETY: pure function.
        unsafe { ffi::ap_map_http_request_error(rv, ffi::HTTP_BAD_REQUEST) }
    }
    pub fn discard_body(&mut self) {
        // SAFETY: live request.
        unsafe { ffi::ap_discard_request_body(self.as_ptr()) };
    }
    /// Passes a brigade down the output filters.
    pub fn pass(&mut self, bb: &mut Brigade<'a>) -> Result<(), ffi::apr_status_t> {
        // SAFETY: live request and brigade.
        let rv = unsafe { ffi::ap_pass_brigade(self.raw().output_filters, bb.as_ptr()) };
        bb.cleanup();
        if rv == 0 { Ok(()) } else { Err(rv) }
    }
    /// Non-parsed headers: drop every filter up to the connection level so the application's
    /// bytes (status line included) reach the client unchanged.
    pub fn bypass_protocol_filters(&mut self) {
        let r = self.raw_mut();
        let mut cur = r.proto_output_filters;
        // SAFETY: the filter chain is a live linked list for the request.
        unsafe {
            while !cur.is_null() && (*(*cur).frec).ftype < ffi::ap_filter_type_AP_FTYPE_CONNECTION {
                cur = (*cur).next;
            }
        }
        r.output_filters = cur;
        r.proto_output_filters = cur;
        r.assbackwards = 1;
    }
    /// Whether the request came on a secondary connection (an HTTP/2 stream).
    pub fn on_secondary_connection(&self) -> bool {
        // SAFETY: the connection outlives the request.
        unsafe { self.raw().connection.as_ref() }.is_some_and(|c| !c.master.is_null())
    }
    pub fn connection_aborted(&self) -> bool {
        // SAFETY: the connection outlives the request.
        unsafe { self.raw().connection.as_ref() }.is_some_and(|c| c.aborted != 0)
    }
    /// Do not keep the client connection alive after this response.
    pub fn close_connection(&mut self) {
        // SAFETY: the connection outlives the request; only this thread uses it.
        if let Some(c) = unsafe { self.raw().connection.as_mut() } {
            c.keepalive = ffi::ap_conn_keepalive_e_AP_CONN_CLOSE;
        }
    }
    pub fn bucket_alloc(&self) -> *mut ffi::apr_bucket_alloc_t {
        // SAFETY: the connection outlives the request.
        unsafe { self.raw().connection.as_ref() }
            .map(|c| c.bucket_alloc)
            .unwrap_or(null_mut())
    }
    /// The user and password of Basic authentication (sets `r->user`). Err is the status
    /// httpd's `ap_get_basic_auth_pw` gives: 401 (with the challenge noted) when the request
    /// carries no credentials, DECLINED when the AuthType is not Basic, 500 without AuthName.
    pub fn basic_auth_password(&mut self) -> Result<&'a [u8], c_int> {
        let mut pw: *const c_char = null();
        // SAFETY: live request; on OK `pw` points to a string in the request pool.
        let rc = unsafe { ffi::ap_get_basic_auth_pw(self.as_ptr(), &mut pw) };
        if rc != ffi::OK {
            return Err(rc);
        }
        // SAFETY: pool string or NULL.
        Ok(unsafe { cbytes(pw) }.unwrap_or(b""))
    }
    /// Asks the AuthType's module to add its challenge (`WWW-Authenticate`) to a 401.
    pub fn note_auth_failure(&mut self) {
        // SAFETY: live request.
        unsafe { ffi::ap_note_auth_failure(self.as_ptr()) }
    }
    /// The authenticated user (`r->user`).
    pub fn user(&self) -> Option<&'a [u8]> {
        // SAFETY: pool string or NULL.
        unsafe { cbytes(self.raw().user) }
    }
    /// The request's URI path (`r->uri`).
    pub fn uri(&self) -> Option<&'a [u8]> {
        // SAFETY: pool string or NULL.
        unsafe { cbytes(self.raw().uri) }
    }
    /// A copy of the environment table, to be put back with `restore_subprocess_env`.
    pub fn save_subprocess_env(&self) -> SavedEnv {
        // SAFETY: live request; the copy is made in the request pool.
        SavedEnv(unsafe { ffi::apr_table_copy(self.raw().pool, self.raw().subprocess_env) })
    }
    pub fn restore_subprocess_env(&mut self, saved: SavedEnv) {
        if !saved.0.is_null() {
            self.raw_mut().subprocess_env = saved.0;
        }
    }
    /// This module's per-directory configuration vector entry.
    pub fn dir_config(&self) -> *mut c_void {
        // SAFETY: live request; ap_get_module_config indexes its per-dir config vector.
        unsafe { ffi::ap_get_module_config(self.raw().per_dir_config, crate::module::module_ptr()) }
    }
    /// This module's effective log level for the request.
    pub fn log_level(&self) -> i32 {
        // SAFETY: live request.
        unsafe { ffi::ap_get_request_module_loglevel(self.as_ptr(), crate::module::module_index()) }
    }
}

/// A saved environment table of a request (in its pool).
pub struct SavedEnv(*mut ffi::apr_table_t);

/// What `setup_body` learned about the request body.
#[derive(Debug, Clone, Copy)]
pub struct BodyInfo {
    pub has_body: bool,
    pub chunked: bool,
    /// The body's length, where the request gives one (Content-Length).
    pub length: Option<u64>,
}

/// A bucket brigade in the request pool.
pub struct Brigade<'a> {
    bb: NonNull<ffi::apr_bucket_brigade>,
    alloc: *mut ffi::apr_bucket_alloc_t,
    _l: PhantomData<&'a ()>,
}

impl<'a> Brigade<'a> {
    pub fn new(r: &Request<'a>) -> Self {
        let alloc = r.bucket_alloc();
        // SAFETY: live pool and bucket allocator of the request's connection.
        let bb = unsafe { ffi::apr_brigade_create(r.pool().as_ptr(), alloc) };
        Brigade {
            bb: NonNull::new(bb).expect("apr_brigade_create"),
            alloc,
            _l: PhantomData,
        }
    }
    pub fn as_ptr(&self) -> *mut ffi::apr_bucket_brigade {
        self.bb.as_ptr()
    }
    /// Appends a copy of `data` (heap buckets; small writes are coalesced). Copied in pieces
    /// of at most APR_BUCKET_BUFF_SIZE, so every copy lands in the allocator's one common
    /// block size (a larger write would take a block of its own size, and the connection's
    /// allocator would keep blocks of every size it ever saw).
    pub fn write(&mut self, data: &[u8]) {
        for piece in data.chunks(ffi::APR_BUCKET_BUFF_SIZE as usize) {
            // SAFETY: live brigade; with no flush callback apr_brigade_write copies into heap
            // buckets.
            unsafe {
                ffi::apr_brigade_write(
                    self.as_ptr(),
                    None,
                    null_mut(),
                    piece.as_ptr().cast(),
                    piece.len(),
                )
            };
        }
    }
    pub(crate) fn push(&mut self, e: *mut ffi::apr_bucket) {
        if !e.is_null() {
            // SAFETY: `e` is a fresh bucket from this brigade's allocator.
            unsafe { ffi::fcgi_shim_brigade_insert_tail(self.as_ptr(), e) }
        }
    }
    pub fn push_flush(&mut self) {
        // SAFETY: live allocator.
        let e = unsafe { ffi::apr_bucket_flush_create(self.alloc) };
        self.push(e);
    }
    pub fn push_eos(&mut self) {
        // SAFETY: live allocator.
        let e = unsafe { ffi::apr_bucket_eos_create(self.alloc) };
        self.push(e);
    }
    /// An error bucket: tells httpd's HTTP filters the response is broken (no final chunk,
    /// connection closed) when `status` is 502 or 504.
    pub fn push_error(&mut self, status: i32, pool: Pool<'a>) {
        // SAFETY: live pool and allocator.
        let e = unsafe { ffi::ap_bucket_error_create(status, null(), pool.as_ptr(), self.alloc) };
        self.push(e);
    }
    pub fn is_empty(&self) -> bool {
        // SAFETY: live brigade.
        unsafe { ffi::fcgi_shim_brigade_empty(self.as_ptr()) != 0 }
    }
    pub fn cleanup(&mut self) {
        // SAFETY: live brigade.
        unsafe { ffi::apr_brigade_cleanup(self.as_ptr().cast()) };
    }
    /// Visits the data of every bucket (reading morphing buckets as needed), then empties the
    /// brigade. Returns whether an EOS bucket was seen.
    pub fn drain(&mut self, f: impl FnMut(&[u8])) -> Result<bool, ffi::apr_status_t> {
        let res = self.visit(f);
        self.cleanup();
        res
    }

    /// Moves every bucket of `other` to the end of this brigade.
    pub fn append(&mut self, other: &mut Brigade<'a>) {
        // SAFETY: two live brigades (distinct: `other` is borrowed apart from `self`).
        unsafe { ffi::fcgi_shim_brigade_concat(self.as_ptr(), other.as_ptr()) };
    }

    /// Makes every bucket independent of the filter that made it, so that the brigade can be
    /// kept across further reads (mod_ssl's transient buckets point into a buffer its next
    /// read reuses: they become heap buckets; the core's heap buckets stay as they are). A
    /// bucket type without a setaside of its own is read first, which turns it into one.
    pub fn setaside(&mut self, pool: &Pool<'a>) -> Result<(), ffi::apr_status_t> {
        // SAFETY: walking a live brigade; setaside and read only change the bucket they are
        // given (a read may split it: the walk goes on from the same bucket, then its next).
        unsafe {
            let sentinel = ffi::fcgi_shim_brigade_sentinel(self.as_ptr());
            let mut e = ffi::fcgi_shim_brigade_first(self.as_ptr());
            while e != sentinel {
                let mut rv = ffi::fcgi_shim_bucket_setaside(e, pool.as_ptr());
                if rv == ffi::APR_ENOTIMPL as ffi::apr_status_t {
                    read_bucket(e, true)?;
                    rv = ffi::fcgi_shim_bucket_setaside(e, pool.as_ptr());
                }
                if rv != 0 {
                    return Err(rv);
                }
                e = ffi::fcgi_shim_bucket_next(e);
            }
        }
        Ok(())
    }

    /// Reads every data bucket into memory (morphing buckets as needed) without removing
    /// anything. Returns the data bytes, the number of non-empty data buckets, and whether an
    /// EOS bucket is there.
    pub fn load(&mut self) -> Result<(usize, usize, bool), ffi::apr_status_t> {
        let (mut bytes, mut count) = (0usize, 0usize);
        let eos = self.visit(|d| {
            bytes += d.len();
            count += 1;
        })?;
        Ok((bytes, count, eos))
    }

    /// Calls `f` with the data of every non-empty data bucket, in order (reading morphing
    /// buckets, which may split them), removing nothing. Returns whether an EOS bucket is there.
    fn visit(&mut self, mut f: impl FnMut(&[u8])) -> Result<bool, ffi::apr_status_t> {
        let mut eos = false;
        // SAFETY: walking a live brigade with the APR ring macros (through the shim); a read
        // may split `e`, and the walk continues with whatever follows it then. Each slice is
        // used before the walk goes on.
        unsafe {
            let sentinel = ffi::fcgi_shim_brigade_sentinel(self.as_ptr());
            let mut e = ffi::fcgi_shim_brigade_first(self.as_ptr());
            while e != sentinel {
                if ffi::fcgi_shim_bucket_is_eos(e) != 0 {
                    eos = true;
                } else if let Some(d) = read_bucket(e, true)?
                    && !d.is_empty()
                {
                    f(d);
                }
                e = ffi::fcgi_shim_bucket_next(e);
            }
        }
        Ok(eos)
    }

    /// Calls `f` with the data of the data buckets, in order, all at once (after [`load`],
    /// reading them is immediate). None (and `f` is not called) when there are more than
    /// `N` non-empty data buckets or one cannot be read at once.
    ///
    /// [`load`]: Brigade::load
    pub fn with_data<const N: usize, R>(&self, f: impl FnOnce(&[&[u8]]) -> R) -> Option<R> {
        let mut parts: [&[u8]; N] = [&[]; N];
        let mut n_parts = 0;
        // SAFETY: walking a live brigade; each data bucket's bytes stay valid and unchanged
        // while the brigade is borrowed (nothing can remove or split its buckets meanwhile:
        // `self` is borrowed for the whole call and a nonblocking read of a loaded bucket
        // does not morph it).
        unsafe {
            let sentinel = ffi::fcgi_shim_brigade_sentinel(self.as_ptr());
            let mut e = ffi::fcgi_shim_brigade_first(self.as_ptr());
            while e != sentinel {
                match read_bucket(e, false) {
                    Err(_) => return None,
                    Ok(Some(d)) if !d.is_empty() => {
                        if n_parts == N {
                            return None;
                        }
                        parts[n_parts] = d;
                        n_parts += 1;
                    }
                    Ok(_) => {}
                }
                e = ffi::fcgi_shim_bucket_next(e);
            }
        }
        Some(f(&parts[..n_parts]))
    }
}

/// The data of bucket `e` (None for a metadata bucket); `block`: wait for a morphing bucket's
/// data (a file, a pipe) rather than fail.
///
/// # Safety
/// `e` is a live bucket; the slice is valid until the bucket is changed or destroyed, which
/// the caller must not let happen while it uses it.
unsafe fn read_bucket<'b>(
    e: *mut ffi::apr_bucket,
    block: bool,
) -> Result<Option<&'b [u8]>, ffi::apr_status_t> {
    // SAFETY: `e` is live (caller); apr_bucket_read sets `p`/`n` to the bucket's bytes.
    unsafe {
        if ffi::fcgi_shim_bucket_is_metadata(e) != 0 {
            return Ok(None);
        }
        let mut p: *const c_char = null();
        let mut n: ffi::apr_size_t = 0;
        let mode = if block {
            ffi::apr_read_type_e_APR_BLOCK_READ
        } else {
            ffi::apr_read_type_e_APR_NONBLOCK_READ
        };
        let rv = ffi::fcgi_shim_bucket_read(e, &mut p, &mut n, mode);
        if rv != 0 {
            return Err(rv);
        }
        if p.is_null() || n == 0 {
            return Ok(Some(&[]));
        }
        Ok(Some(std::slice::from_raw_parts(p.cast::<u8>(), n)))
    }
}

/// The buffer answers are read into, in 32 KiB blocks shared by the child's threads
/// (`crate::blocks`). A block is taken only for a read that has data waiting and is given up
/// again once its data was handed over or copied ([`ShareBuf::park`]), so a request waiting
/// for the application holds none. Ranges of a read can be appended to a brigade as buckets
/// that share the block instead of copying it ([`ShareBuf::hand_over`]); the block then comes
/// back with the last of those buckets.
///
/// The first read of an answer goes into a small buffer of its own instead
/// ([`FIRST_READ`] bytes, copied like any small read): most answers end in it, and a first
/// read needs no block taken after a separate wait for data.
///
/// `repr(C)` with the buffer last: otherwise LLVM merges the zeroed fields around the
/// uninitialised buffer into one memset of all 4 KiB, for every request.
#[repr(C)]
pub struct ShareBuf<'a> {
    block: Option<NonNull<u8>>,
    len: usize,
    alloc: *mut ffi::apr_bucket_alloc_t,
    _l: PhantomData<&'a ()>,
    /// Whether the first read's buffer was used, and whether the last read is in it.
    first_used: bool,
    in_first: bool,
    /// The first read's buffer.
    first: std::mem::MaybeUninit<[u8; FIRST_READ]>,
}

/// Size of the buffer of an answer's first read (see [`ShareBuf`]).
pub const FIRST_READ: usize = 4096;

/// Free function of the heap buckets sharing a block: APR calls it once, when the last bucket
/// referring to the block is destroyed (from whichever thread of the child).
unsafe extern "C" fn free_shared_block(data: *mut c_void) {
    crate::boundary!((), {
        if let Some(p) = NonNull::new(data.cast::<u8>()) {
            // SAFETY: APR passes back the block given to apr_bucket_heap_create, once, when
            // no bucket refers to it any more.
            unsafe { crate::blocks::give(p) }
        }
    })
}

impl<'a> ShareBuf<'a> {
    /// A buffer whose buckets go to `bb`'s allocator (None if the allocator is missing).
    /// It holds no block yet.
    pub fn new(bb: &Brigade<'a>) -> Option<Self> {
        if bb.alloc.is_null() {
            return None;
        }
        Some(ShareBuf {
            block: None,
            len: 0,
            first: std::mem::MaybeUninit::uninit(),
            first_used: false,
            in_first: false,
            alloc: bb.alloc,
            _l: PhantomData,
        })
    }

    /// Replaces the contents with what `read` puts into the (uninitialised) buffer: the first
    /// read's own, then a block, taken first if none is held; `read` returns how many leading
    /// bytes it initialised.
    pub fn fill(
        &mut self,
        read: impl FnOnce(&mut [std::mem::MaybeUninit<u8>]) -> std::io::Result<usize>,
    ) -> std::io::Result<usize> {
        self.len = 0;
        if !self.first_used {
            self.first_used = true;
            self.in_first = true;
            // SAFETY: the array is FIRST_READ bytes owned by self, viewed as possibly
            // uninitialised bytes.
            let spare = unsafe {
                std::slice::from_raw_parts_mut(
                    self.first.as_mut_ptr().cast::<std::mem::MaybeUninit<u8>>(),
                    FIRST_READ,
                )
            };
            let n = read(spare)?;
            self.len = n.min(FIRST_READ);
            return Ok(self.len);
        }
        self.in_first = false;
        let block = match self.block {
            Some(b) => b,
            None => {
                let b = crate::blocks::take().ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::OutOfMemory,
                        "no memory for a read buffer (mmap failed)",
                    )
                })?;
                self.block = Some(b);
                b
            }
        };
        // SAFETY: the block is BLOCK bytes owned by this ShareBuf alone (a handed-over block
        // was given up at once), viewed as possibly uninitialised bytes.
        let spare = unsafe {
            std::slice::from_raw_parts_mut(
                block.as_ptr().cast::<std::mem::MaybeUninit<u8>>(),
                crate::blocks::BLOCK,
            )
        };
        let n = read(spare)?;
        self.len = n.min(crate::blocks::BLOCK);
        Ok(self.len)
    }

    /// Whether `fill` has a buffer at hand (the first read's, or a block held); else wait for
    /// data before `fill`, which then takes a block.
    pub fn has_buffer(&self) -> bool {
        !self.first_used || self.block.is_some()
    }

    /// Gives the block back (its data was copied, or nothing was read): the wait for the next
    /// data then holds none.
    pub fn park(&mut self) {
        if let Some(b) = self.block.take() {
            // SAFETY: taken from crate::blocks by this buffer; nothing refers to it.
            unsafe { crate::blocks::give(b) }
        }
        self.len = 0;
        self.in_first = false;
    }

    /// The bytes of the last read.
    pub fn filled(&self) -> &[u8] {
        if self.in_first {
            // SAFETY: the first `len` (<= FIRST_READ) bytes were initialised by the last fill().
            return unsafe { std::slice::from_raw_parts(self.first.as_ptr().cast(), self.len) };
        }
        match self.block {
            // SAFETY: the first `len` bytes were initialised by the last fill().
            Some(b) => unsafe { std::slice::from_raw_parts(b.as_ptr(), self.len) },
            None => &[],
        }
    }

    /// Appends the ranges `(offset, len)` of the last read to `bb` as buckets sharing the
    /// block, which this buffer gives up (the next read takes another). Ranges outside the last
    /// read are skipped.
    pub fn hand_over(
        &mut self,
        bb: &mut Brigade<'a>,
        ranges: impl IntoIterator<Item = (usize, usize)>,
    ) {
        if self.in_first {
            // (the first read's buffer is ours; its data can only be copied)
            for (off, n) in ranges {
                if let Some(d) = off
                    .checked_add(n)
                    .and_then(|end| self.filled().get(off..end))
                {
                    bb.write(d);
                }
            }
            self.park();
            return;
        }
        let Some(old) = self.block.take() else {
            return;
        };
        let len = std::mem::replace(&mut self.len, 0);
        // SAFETY: `old` is ours alone (from crate::blocks): the heap bucket takes ownership and
        // APR gives it back through free_shared_block when its last shared copy is destroyed
        // (with no copy, by the destroy below). Every copy is narrowed to a range checked to
        // lie within the `len` initialised bytes. The block is never written again by us;
        // apr_brigade_write may append into the bytes after the last range when only one
        // bucket refers to the block, which lie within the block and serve nothing else.
        unsafe {
            let owner = ffi::apr_bucket_heap_create(
                old.as_ptr().cast(),
                len as ffi::apr_size_t,
                Some(free_shared_block),
                self.alloc,
            );
            if owner.is_null() {
                crate::blocks::give(old);
                return;
            }
            for (off, n) in ranges {
                if n == 0 || off.checked_add(n).is_none_or(|end| end > len) {
                    continue;
                }
                let c = ffi::fcgi_shim_bucket_share(
                    owner,
                    off as ffi::apr_size_t,
                    n as ffi::apr_size_t,
                );
                if c.is_null() {
                    // (cannot happen for heap buckets) fall back to a copy of the range
                    bb.write(std::slice::from_raw_parts(old.as_ptr().add(off), n));
                } else {
                    bb.push(c);
                }
            }
            ffi::fcgi_shim_bucket_destroy(owner);
        }
    }
}

impl Drop for ShareBuf<'_> {
    fn drop(&mut self) {
        self.park();
    }
}

/// `cmd_parms` of a directive being parsed.
pub struct Cmd<'a> {
    c: NonNull<ffi::cmd_parms>,
    _l: PhantomData<&'a ()>,
}

impl<'a> Cmd<'a> {
    /// # Safety
    /// `c` must be NULL or the live cmd_parms of the current directive.
    pub unsafe fn from_ptr(c: *mut ffi::cmd_parms) -> Option<Self> {
        NonNull::new(c).map(|c| Cmd { c, _l: PhantomData })
    }
    fn raw(&self) -> &ffi::cmd_parms {
        // SAFETY: constructor contract.
        unsafe { self.c.as_ref() }
    }
    pub fn pool(&self) -> Pool<'a> {
        // SAFETY: cmd->pool is pconf, live during configuration.
        unsafe { Pool::from_ptr(self.raw().pool) }.expect("cmd without pool")
    }
    pub fn temp_pool(&self) -> Pool<'a> {
        // SAFETY: cmd->temp_pool is live during configuration.
        unsafe { Pool::from_ptr(self.raw().temp_pool) }.expect("cmd without temp pool")
    }
    pub fn server(&self) -> Option<Server<'a>> {
        // SAFETY: cmd->server is live during configuration.
        unsafe { Server::from_ptr(self.raw().server) }
    }
    /// Error unless the directive is used at server/vhost level (not in <Directory> etc.).
    pub fn check_global_or_vhost(&self) -> Option<*const c_char> {
        // SAFETY: live cmd; ap_check_cmd_context only reads it.
        let e =
            unsafe { ffi::ap_check_cmd_context(self.c.as_ptr(), ffi::NOT_IN_DIR_CONTEXT as u32) };
        (!e.is_null()).then_some(e)
    }
    /// Error unless at main-server level.
    pub fn check_global_only(&self) -> Option<*const c_char> {
        // SAFETY: live cmd; ap_check_cmd_context only reads it.
        let e = unsafe { ffi::ap_check_cmd_context(self.c.as_ptr(), ffi::GLOBAL_ONLY as u32) };
        (!e.is_null()).then_some(e)
    }
    #[cold]
    pub fn server_root_relative(&self, p: &[u8]) -> Vec<u8> {
        let c = cstring_lossy(p);
        // SAFETY: live pool; returns a pool string or NULL for an invalid path.
        unsafe {
            cbytes(ffi::ap_server_root_relative(
                self.temp_pool().as_ptr(),
                c.as_ptr(),
            ))
        }
        .map(<[u8]>::to_vec)
        .unwrap_or_else(|| p.to_vec())
    }
    #[cold]
    pub fn runtime_dir_relative(&self, p: &[u8]) -> Vec<u8> {
        let c = cstring_lossy(p);
        // SAFETY: live pool; returns a pool string or NULL.
        unsafe {
            cbytes(ffi::ap_runtime_dir_relative(
                self.temp_pool().as_ptr(),
                c.as_ptr(),
            ))
        }
        .map(<[u8]>::to_vec)
        .unwrap_or_else(|| p.to_vec())
    }
    /// The name of the directive being parsed.
    #[cold]
    pub fn directive_name(&self) -> String {
        // SAFETY: cmd->cmd is the command_rec being run (or NULL); names are static strings.
        unsafe { self.raw().cmd.as_ref().and_then(|c| cbytes(c.name)) }
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_else(|| "directive".into())
    }
    /// Copies an error message into the config pool for returning to httpd.
    pub fn error(&self, msg: &str) -> *const c_char {
        self.pool().strdup(msg.as_bytes())
    }
}

/// The main server's root directory, for resolving relative paths.
pub fn server_root() -> Vec<u8> {
    // SAFETY: ap_server_root is a global set before any configuration is read.
    unsafe { cbytes(ffi::ap_server_root) }
        .map(<[u8]>::to_vec)
        .unwrap_or_else(|| b"/".to_vec())
}

/// Whether a module of that name (its source file name, as `<IfModule>` takes it) is loaded.
pub fn module_loaded(name: &std::ffi::CStr) -> bool {
    // SAFETY: a NUL-terminated name; httpd only reads it and walks its module list.
    !unsafe { ffi::ap_find_linked_module(name.as_ptr()) }.is_null()
}
