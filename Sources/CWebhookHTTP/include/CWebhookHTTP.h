#ifndef CWEBHOOKHTTP_H
#define CWEBHOOKHTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/// Decides whether a resolved destination address may be connected to: nonzero allows it. Called by
/// libcurl right before each connect, with the address it is about to use, so what is checked is what is
/// connected to (a name that resolves differently on a second lookup cannot slip past).
typedef int (*cwh_address_filter)(void *context, const struct sockaddr *address, socklen_t length);

/// How a POST ended.
typedef struct {
    /// 1 when a response status was read (a body cut at the cap included), 0 otherwise (see `error`).
    int answered;
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
    /// Microseconds from the POST's start to its end (libcurl's total time).
    long long total_time_us;
    /// What went wrong, for the attempt's history (empty when answered).
    char error[256];
} cwh_result;

/// Initialises libcurl once per process (before threads use it).
void cwh_global_init(void);

/// A libcurl multi handle driving many POSTs at once from one thread. Its connection cache is shared by
/// every POST, so connections to a consumer stay open (keep-alive) across POSTs and later ones skip the
/// TCP (and TLS) handshake. Every function but `cwh_sender_wakeup` must be called from one thread at a time.
typedef struct cwh_sender cwh_sender;

/// A new sender, or NULL when libcurl cannot make one. `max_connections` bounds the connections it keeps
/// open, to one host and in all. `filter` (with `filter_context`) is asked before every new connection.
cwh_sender *cwh_sender_new(long max_connections, cwh_address_filter filter, void *filter_context);

/// Closes the sender's connections and frees it. Only once every POST started has been taken back with
/// `cwh_sender_take_ended`: a POST still running would be left with its handle never freed.
void cwh_sender_free(cwh_sender *sender);

/// Starts a POST of `body` to `url` with `header_count` header lines ("Name: value"), each ended by a NUL,
/// laid one after another in the `header_bytes` bytes at `headers`. The body is copied. `timeout_ms` bounds
/// the POST from now, connection included. Never follows redirects, ignores proxy environment variables,
/// speaks only http and https, reads at most `max_response_bytes` of the response body. `tag` comes back
/// with the POST's result from `cwh_sender_take_ended`. Returns 0, or -1 when the POST cannot be started
/// (`result`, then, says why; it is not reported again).
int cwh_sender_start(cwh_sender *sender, const char *url, const char *headers, size_t header_bytes, const void *body, size_t body_length,
                     long timeout_ms, size_t max_response_bytes, uintptr_t tag, cwh_result *result);

/// Moves every started POST on as far as it goes without waiting. Returns 0, or -1 when libcurl fails.
int cwh_sender_perform(cwh_sender *sender);

/// Takes a POST that has ended since the last `cwh_sender_perform`: 1 with its tag and result, 0 when
/// no more have ended.
int cwh_sender_take_ended(cwh_sender *sender, uintptr_t *tag, cwh_result *result);

/// Waits at most `timeout_ms` (less when a POST's own timer comes due first) for a POST's socket to be
/// ready, or for `cwh_sender_wakeup`.
int cwh_sender_wait(cwh_sender *sender, int timeout_ms);

/// Ends the sender's current or next `cwh_sender_wait` at once. The one function any thread may call,
/// at any time until `cwh_sender_free`; it does not block.
int cwh_sender_wakeup(cwh_sender *sender);

#endif
