#ifndef CWEBHOOKHTTP_H
#define CWEBHOOKHTTP_H

#include <stddef.h>
#include <sys/socket.h>

/// Decides whether a resolved destination address may be connected to: nonzero allows it. Called by
/// libcurl right before each connect, with the address it is about to use, so what is checked is what is
/// connected to (a name that resolves differently on a second lookup cannot slip past).
typedef int (*cwh_address_filter)(void *context, const struct sockaddr *address, socklen_t length);

/// How a POST ended.
typedef struct {
    /// The HTTP status (0 when no response head arrived).
    long status;
    /// Seconds the `Retry-After` header asks for (seconds or an HTTP date), -1 without one.
    long long retry_after_seconds;
    /// Response body bytes read (at most the cap).
    size_t body_bytes;
    /// 1 when the response body was longer than the cap and reading stopped there.
    int body_truncated;
    /// 1 when the address filter refused every address of the destination.
    int address_refused;
    /// libcurl's result code (0 = the exchange completed).
    int curl_code;
    /// What went wrong, for the attempt's history (empty on success).
    char error[256];
} cwh_result;

/// Initialises libcurl once per process (before threads use it).
void cwh_global_init(void);

/// A libcurl handle kept across POSTs, so that its connections to a consumer stay open (keep-alive) and
/// later POSTs skip the TCP (and TLS) handshake. Used by one thread at a time.
typedef struct cwh_session cwh_session;

/// A new session, or NULL when libcurl cannot make a handle.
cwh_session *cwh_session_new(void);

/// Closes the session's connections and frees it.
void cwh_session_free(cwh_session *session);

/// POSTs `body` to `url` with the given header lines ("Name: value"), blocking the calling thread for at
/// most `timeout_ms`. Never follows redirects, ignores proxy environment variables, speaks only http and
/// https, reads at most `max_response_bytes` of the response body, and connects only to addresses
/// `filter` allows (checked on every new connection; a reused one was checked when it was opened).
/// With a `session`, reuses its open connection to the same destination; without, opens one for this
/// POST alone. Returns 0 when a response status was read, -1 otherwise (see `result`).
int cwh_post(cwh_session *session, const char *url, const char *const *headers, size_t header_count, const void *body, size_t body_length,
             long timeout_ms, size_t max_response_bytes, cwh_address_filter filter, void *filter_context, cwh_result *result);

#endif
