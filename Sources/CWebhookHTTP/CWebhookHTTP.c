#include "CWebhookHTTP.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_once_t cwh_once = PTHREAD_ONCE_INIT;

static void cwh_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

void cwh_global_init(void) { pthread_once(&cwh_once, cwh_init_once); }

/// One POST: its easy handle, and what its callbacks need. Kept at one address while libcurl holds it
/// (the callbacks get a pointer to it), and reused for a later POST once ended.
typedef struct cwh_transfer {
    CURL *curl;
    struct curl_slist *headers;
    cwh_address_filter filter;
    void *filter_context;
    size_t max_bytes;
    uintptr_t tag;
    /// Whether the handle has the options every POST shares (set once: the handle keeps them from POST to POST).
    int configured;
    cwh_result result;
    /// The next one in the sender's list of unused transfers.
    struct cwh_transfer *next_unused;
} cwh_transfer;

struct cwh_sender {
    CURLM *multi;
    cwh_address_filter filter;
    void *filter_context;
    /// Ended transfers kept for reuse (their easy handles reset), at most `max_unused`: making a handle per
    /// POST would allocate and initialise one each time.
    cwh_transfer *unused;
    long unused_count;
    long max_unused;
};

static curl_socket_t cwh_open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *address) {
    cwh_transfer *transfer = clientp;
    (void)purpose;
    if (transfer->filter && !transfer->filter(transfer->filter_context, &address->addr, address->addrlen)) {
        transfer->result.address_refused = 1;
        return CURL_SOCKET_BAD;
    }
    return socket(address->family, address->socktype, address->protocol);
}

static size_t cwh_write(char *data, size_t size, size_t count, void *userdata) {
    cwh_transfer *transfer = userdata;
    size_t bytes = size * count;
    size_t room = transfer->max_bytes - transfer->result.body_bytes;
    if (bytes > room) {
        transfer->result.body_bytes += room;
        transfer->result.body_truncated = 1;
        return 0; /* stops the transfer: the status is known, the rest of the body is not wanted */
    }
    transfer->result.body_bytes += bytes;
    (void)data;
    return bytes;
}

cwh_sender *cwh_sender_new(long max_connections, cwh_address_filter filter, void *filter_context) {
    cwh_global_init();
    cwh_sender *sender = calloc(1, sizeof(*sender));
    if (!sender) return NULL;
    sender->multi = curl_multi_init();
    if (!sender->multi) {
        free(sender);
        return NULL;
    }
    if (max_connections < 1) max_connections = 1;
    sender->filter = filter;
    sender->filter_context = filter_context;
    sender->max_unused = max_connections;
    /* The caller keeps at most `max_connections` POSTs in flight, so these limits never hold a POST back
       (libcurl would start its timeout while it waited); they keep the cache of idle connections that
       size (by default it is four per handle added, and shrinks as handles are removed). */
    curl_multi_setopt(sender->multi, CURLMOPT_MAX_HOST_CONNECTIONS, max_connections);
    curl_multi_setopt(sender->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, max_connections);
    curl_multi_setopt(sender->multi, CURLMOPT_MAXCONNECTS, max_connections);
    return sender;
}

static void cwh_transfer_free(cwh_transfer *transfer) {
    curl_slist_free_all(transfer->headers);
    curl_easy_cleanup(transfer->curl);
    free(transfer);
}

void cwh_sender_free(cwh_sender *sender) {
    if (!sender) return;
    while (sender->unused) {
        cwh_transfer *transfer = sender->unused;
        sender->unused = transfer->next_unused;
        cwh_transfer_free(transfer);
    }
    curl_multi_cleanup(sender->multi);
    free(sender);
}

static void cwh_configure(CURL *curl, cwh_transfer *transfer);

static cwh_transfer *cwh_take_unused(cwh_sender *sender) {
    cwh_transfer *transfer = sender->unused;
    if (transfer) {
        sender->unused = transfer->next_unused;
        sender->unused_count--;
        /* Not reset: it keeps the options every POST shares, and each POST sets its own (URL, headers, body)
           again. Resetting it and setting them all each time was a share of a POST's CPU. */
        return transfer;
    }
    transfer = calloc(1, sizeof(*transfer));
    if (!transfer) return NULL;
    transfer->curl = curl_easy_init();
    if (!transfer->curl) {
        free(transfer);
        return NULL;
    }
    return transfer;
}

static void cwh_give_back(cwh_sender *sender, cwh_transfer *transfer) {
    curl_slist_free_all(transfer->headers);
    transfer->headers = NULL;
    if (sender->unused_count >= sender->max_unused) {
        cwh_transfer_free(transfer);
        return;
    }
    transfer->next_unused = sender->unused;
    sender->unused = transfer;
    sender->unused_count++;
}

static void cwh_fail(cwh_result *result, const char *message) {
    memset(result, 0, sizeof(*result));
    result->retry_after_seconds = -1;
    snprintf(result->error, sizeof(result->error), "%s", message);
}

int cwh_sender_start(cwh_sender *sender, const char *url, const char *headers, size_t header_bytes, const void *body, size_t body_length,
                     long timeout_ms, size_t max_response_bytes, uintptr_t tag, cwh_result *result) {
    cwh_transfer *transfer = cwh_take_unused(sender);
    if (!transfer) {
        cwh_fail(result, "cannot create a libcurl handle");
        return -1;
    }
    memset(&transfer->result, 0, sizeof(transfer->result));
    transfer->result.retry_after_seconds = -1;
    transfer->filter = sender->filter;
    transfer->filter_context = sender->filter_context;
    transfer->max_bytes = max_response_bytes;
    transfer->tag = tag;

    struct curl_slist *list = NULL;
    for (size_t offset = 0; offset < header_bytes;) {
        const char *line = headers + offset;
        size_t length = strnlen(line, header_bytes - offset);
        if (length == header_bytes - offset) break; /* not ended by a NUL: not a line */
        offset += length + 1;
        if (length == 0) continue;
        struct curl_slist *next = curl_slist_append(list, line);
        if (!next) break;
        list = next;
    }
    /* libcurl adds "Expect: 100-continue" to larger POSTs: a round trip the consumer never asked for. */
    struct curl_slist *next = curl_slist_append(list, "Expect:");
    if (next) list = next;
    transfer->headers = list;

    CURL *curl = transfer->curl;
    if (!transfer->configured) {
        cwh_configure(curl, transfer);
        transfer->configured = 1;
    }
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    /* Copied: the caller's buffer is gone before the POST ends. An empty body is a static "": with no
       POSTFIELDS at all, libcurl would read the body from its read callback (stdin by default). */
    if (body_length > 0) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_length);
        curl_easy_setopt(curl, CURLOPT_COPYPOSTFIELDS, body);
    } else {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "");
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);

    CURLMcode added = curl_multi_add_handle(sender->multi, curl);
    if (added != CURLM_OK) {
        cwh_fail(result, curl_multi_strerror(added));
        cwh_give_back(sender, transfer);
        return -1;
    }
    return 0;
}

static void cwh_configure(CURL *curl, cwh_transfer *transfer) {
    curl_easy_setopt(curl, CURLOPT_PRIVATE, (char *)transfer);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl, CURLOPT_PROXY, "");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_OPENSOCKETFUNCTION, cwh_open_socket);
    curl_easy_setopt(curl, CURLOPT_OPENSOCKETDATA, transfer);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, cwh_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, transfer);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "ci-callbackd-webhooks");
#if LIBCURL_VERSION_NUM >= 0x075700
    /* CURLOPT_TIMEOUT_MS ends a transfer stuck resolving the name, but libcurl (threaded resolver, as
       Debian builds it) then joins the getaddrinfo thread, which waits out the resolver's own timeout
       (5 s per try by default): an attempt to a name whose DNS server is silent took 10 s under a 2 s
       WEBHOOK_TIMEOUT, and here that join would also stall every other POST of the sender. Quick exit
       detaches that thread instead; it frees its data when getaddrinfo returns. */
    curl_easy_setopt(curl, CURLOPT_QUICK_EXIT, 1L);
#endif
}

int cwh_sender_perform(cwh_sender *sender) {
    int running = 0;
    return curl_multi_perform(sender->multi, &running) == CURLM_OK ? 0 : -1;
}

int cwh_sender_take_ended(cwh_sender *sender, uintptr_t *tag, cwh_result *result) {
    int left = 0;
    CURLMsg *message;
    while ((message = curl_multi_info_read(sender->multi, &left))) {
        if (message->msg != CURLMSG_DONE) continue;
        CURL *curl = message->easy_handle;
        CURLcode code = message->data.result; /* read before the handle is removed: that frees the message */
        cwh_transfer *transfer = NULL;
        curl_easy_getinfo(curl, CURLINFO_PRIVATE, (char **)&transfer);
        curl_multi_remove_handle(sender->multi, curl);
        if (!transfer) continue;

        cwh_result *ended = &transfer->result;
        ended->curl_code = (int)code;
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &ended->status);
        curl_off_t retry_after = 0;
        if (curl_easy_getinfo(curl, CURLINFO_RETRY_AFTER, &retry_after) == CURLE_OK && retry_after > 0) {
            ended->retry_after_seconds = (long long)retry_after;
        }
        curl_off_t total_time = 0;
        if (curl_easy_getinfo(curl, CURLINFO_TOTAL_TIME_T, &total_time) == CURLE_OK) ended->total_time_us = (long long)total_time;
        ended->answered = ended->status > 0 && (code == CURLE_OK || (code == CURLE_WRITE_ERROR && ended->body_truncated));
        if (!ended->answered) {
            if (ended->address_refused) {
                snprintf(ended->error, sizeof(ended->error), "destination address refused by the webhook address policy");
            } else {
                snprintf(ended->error, sizeof(ended->error), "%s", curl_easy_strerror(code));
            }
        }
        *tag = transfer->tag;
        *result = *ended;
        cwh_give_back(sender, transfer);
        return 1;
    }
    return 0;
}

int cwh_sender_wait(cwh_sender *sender, int timeout_ms) {
    return curl_multi_poll(sender->multi, NULL, 0, timeout_ms, NULL) == CURLM_OK ? 0 : -1;
}

int cwh_sender_wakeup(cwh_sender *sender) { return curl_multi_wakeup(sender->multi) == CURLM_OK ? 0 : -1; }
