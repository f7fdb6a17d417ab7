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

typedef struct {
    cwh_address_filter filter;
    void *filter_context;
    size_t max_bytes;
    cwh_result *result;
} cwh_transfer;

static curl_socket_t cwh_open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *address) {
    cwh_transfer *transfer = clientp;
    (void)purpose;
    if (transfer->filter && !transfer->filter(transfer->filter_context, &address->addr, address->addrlen)) {
        transfer->result->address_refused = 1;
        return CURL_SOCKET_BAD;
    }
    return socket(address->family, address->socktype, address->protocol);
}

static size_t cwh_write(char *data, size_t size, size_t count, void *userdata) {
    cwh_transfer *transfer = userdata;
    size_t bytes = size * count;
    size_t room = transfer->max_bytes - transfer->result->body_bytes;
    if (bytes > room) {
        transfer->result->body_bytes += room;
        transfer->result->body_truncated = 1;
        return 0; /* stops the transfer: the status is known, the rest of the body is not wanted */
    }
    transfer->result->body_bytes += bytes;
    (void)data;
    return bytes;
}

struct cwh_session {
    CURL *curl;
};

cwh_session *cwh_session_new(void) {
    cwh_global_init();
    cwh_session *session = calloc(1, sizeof(*session));
    if (!session) return NULL;
    session->curl = curl_easy_init();
    if (!session->curl) {
        free(session);
        return NULL;
    }
    return session;
}

void cwh_session_free(cwh_session *session) {
    if (!session) return;
    curl_easy_cleanup(session->curl);
    free(session);
}

int cwh_post(cwh_session *session, const char *url, const char *const *headers, size_t header_count, const void *body, size_t body_length,
             long timeout_ms, size_t max_response_bytes, cwh_address_filter filter, void *filter_context, cwh_result *result) {
    memset(result, 0, sizeof(*result));
    result->retry_after_seconds = -1;
    cwh_global_init();
    /* A session's handle is reset (every option back to its default) but keeps its connection cache: each
       POST sets all of its options again, its own address filter included. */
    CURL *curl = session ? session->curl : curl_easy_init();
    if (session) curl_easy_reset(curl);
    if (!curl) {
        snprintf(result->error, sizeof(result->error), "cannot create a libcurl handle");
        return -1;
    }
    cwh_transfer transfer = {filter, filter_context, max_response_bytes, result};
    struct curl_slist *list = NULL;
    for (size_t i = 0; i < header_count; i++) {
        struct curl_slist *next = curl_slist_append(list, headers[i]);
        if (!next) break;
        list = next;
    }
    /* libcurl adds "Expect: 100-continue" to larger POSTs: a round trip the consumer never asked for. */
    struct curl_slist *next = curl_slist_append(list, "Expect:");
    if (next) list = next;

    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl, CURLOPT_PROXY, "");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_length);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(curl, CURLOPT_OPENSOCKETFUNCTION, cwh_open_socket);
    curl_easy_setopt(curl, CURLOPT_OPENSOCKETDATA, &transfer);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, cwh_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &transfer);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "ci-callbackd-webhooks");
    if (!session) curl_easy_setopt(curl, CURLOPT_FORBID_REUSE, 1L);
#if LIBCURL_VERSION_NUM >= 0x075700
    /* CURLOPT_TIMEOUT_MS ends a transfer stuck resolving the name, but at cleanup libcurl (threaded resolver,
       as Debian builds it) then joins the getaddrinfo thread, which waits out the resolver's own timeout
       (5 s per try by default): an attempt to a name whose DNS server is silent took 10 s under a 2 s
       WEBHOOK_TIMEOUT. Quick exit detaches that thread instead; it frees its data when getaddrinfo returns. */
    curl_easy_setopt(curl, CURLOPT_QUICK_EXIT, 1L);
#endif

    CURLcode code = curl_easy_perform(curl);
    result->curl_code = (int)code;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &result->status);
    curl_off_t retry_after = 0;
    if (curl_easy_getinfo(curl, CURLINFO_RETRY_AFTER, &retry_after) == CURLE_OK && retry_after > 0) {
        result->retry_after_seconds = (long long)retry_after;
    }
    int answered = result->status > 0 && (code == CURLE_OK || (code == CURLE_WRITE_ERROR && result->body_truncated));
    if (!answered) {
        if (result->address_refused) {
            snprintf(result->error, sizeof(result->error), "destination address refused by the webhook address policy");
        } else {
            snprintf(result->error, sizeof(result->error), "%s", curl_easy_strerror(code));
        }
    }
    curl_slist_free_all(list);
    if (!session) curl_easy_cleanup(curl);
    return answered ? 0 : -1;
}
