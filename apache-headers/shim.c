/* Tiny C shims for httpd/APR macros that bindgen cannot turn into functions.
 * Each is a one-line wrapper; all logic lives in Rust. Not exported from the
 * module (static library linked into the cdylib, symbols hidden by rustc). */
#include "httpd.h"
#include "http_protocol.h"
#include "http_core.h"
#include "util_filter.h"
#include "apr_buckets.h"

apr_bucket *fcgi_shim_brigade_first(apr_bucket_brigade *bb) { return APR_BRIGADE_FIRST(bb); }
apr_bucket *fcgi_shim_brigade_sentinel(apr_bucket_brigade *bb) { return APR_BRIGADE_SENTINEL(bb); }
int fcgi_shim_brigade_empty(apr_bucket_brigade *bb) { return APR_BRIGADE_EMPTY(bb); }
apr_bucket *fcgi_shim_bucket_next(apr_bucket *e) { return APR_BUCKET_NEXT(e); }
int fcgi_shim_bucket_is_eos(apr_bucket *e) { return APR_BUCKET_IS_EOS(e); }
int fcgi_shim_bucket_is_metadata(apr_bucket *e) { return APR_BUCKET_IS_METADATA(e); }
apr_size_t fcgi_shim_bucket_length(apr_bucket *e) { return e->length; }
apr_status_t fcgi_shim_bucket_read(apr_bucket *e, const char **str, apr_size_t *len,
                                   apr_read_type_e block)
{
    return apr_bucket_read(e, str, len, block);
}
void fcgi_shim_bucket_delete(apr_bucket *e) { apr_bucket_delete(e); }
void fcgi_shim_brigade_insert_tail(apr_bucket_brigade *bb, apr_bucket *e) { APR_BRIGADE_INSERT_TAIL(bb, e); }
void *fcgi_shim_pcalloc(apr_pool_t *p, apr_size_t n) { return apr_pcalloc(p, n); }
/* Zero-copy response data: shared copies of a heap bucket that owns a read block (created
 * with apr_bucket_heap_create and the module's free function), narrowed to one range each. */
apr_bucket *fcgi_shim_bucket_share(apr_bucket *owner, apr_size_t start, apr_size_t len)
{
    apr_bucket *c = NULL;
    if (apr_bucket_copy(owner, &c) != APR_SUCCESS || c == NULL) return NULL;
    c->start = owner->start + (apr_off_t)start;
    c->length = len;
    return c;
}
void fcgi_shim_bucket_destroy(apr_bucket *e) { apr_bucket_destroy(e); }
void fcgi_shim_brigade_concat(apr_bucket_brigade *a, apr_bucket_brigade *b) { APR_BRIGADE_CONCAT(a, b); }
apr_status_t fcgi_shim_bucket_setaside(apr_bucket *e, apr_pool_t *p) { return apr_bucket_setaside(e, p); }
/* CGIPassAuth of a request's directory configuration: a bit-field of core_dir_config, read
 * here so that its layout is the compiler's business. AP_CGI_PASS_AUTH_UNSET without one. */
int fcgi_shim_cgi_pass_auth(request_rec *r)
{
    core_dir_config *c = r && r->per_dir_config ? ap_get_core_module_config(r->per_dir_config) : NULL;
    return c ? (int)c->cgi_pass_auth : AP_CGI_PASS_AUTH_UNSET;
}
