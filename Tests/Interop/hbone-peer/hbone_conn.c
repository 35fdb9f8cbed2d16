/*
 * hbone-peer: HTTP/2 over TLS connections and the tunnels they carry.
 *
 * HBONE rules implemented here (see also hbone_peer.c for TLS):
 *
 *  - A tunnel is one HTTP/2 stream opened by a classic CONNECT request: HEADERS with
 *    only `:method: CONNECT` and `:authority: <ip>:<port>` (no :scheme, no :path).
 *    The server connects to the target (or to --upstream) and answers `:status 200`
 *    without END_STREAM only once that TCP connection is up; 400 for a bad request,
 *    503 when the target cannot be reached. Then DATA frames carry the raw bytes.
 *  - Half-close: TCP EOF becomes END_STREAM (after all pending data); END_STREAM
 *    becomes shutdown(SHUT_WR) once every received byte is written. The other
 *    direction keeps flowing. RST_STREAM, or a TCP error (which we send as
 *    RST_STREAM(CANCEL)), ends both directions at once.
 *  - Flow control is end to end: automatic WINDOW_UPDATEs are off and received bytes
 *    are "consumed" (re-opening the peer's window) only once they have been written
 *    to the TCP socket. In the other direction, a TCP socket is read only when
 *    nghttp2 asks the stream's data provider for the next DATA frame, i.e. when the
 *    peer's windows are open and our TLS output has drained; otherwise the provider
 *    is deferred and the socket is left unread, so the kernel's TCP window pushes
 *    back on the sender. At most one frame (<= the peer's SETTINGS_MAX_FRAME_SIZE) is
 *    in flight inside nghttp2 per connection.
 *  - Few copies and syscalls on the hot path: TCP is read straight into nghttp2's
 *    frame buffer (frames up to the peer's max frame size), large frames are handed
 *    to SSL_write straight from that buffer, and the resulting TLS records are batched
 *    into one send(2) per 256 KiB. Received DATA is written to TCP straight from the
 *    TLS read buffer; only what the socket does not take at once is copied into the
 *    tunnel's buffer (bounded by the 4 MiB stream window).
 *
 * Object lifetime: anything that dies while callbacks may still reference it (a
 * tunnel in an nghttp2 callback, a connection with events pending in the current
 * epoll batch) is marked dead, unlinked and put on a graveyard list that is freed at
 * the end of the loop iteration.
 */
#include "hbone_peer.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <openssl/err.h>

/* nghttp2 >= 1.62 deprecates the ssize_t-based API that Debian 12's 1.52 offers. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

#define RBUF_SIZE (256 * 1024)       /* plaintext read from TLS per nghttp2_session_mem_recv */
#define OBUF_CAP (64 * 1024)         /* coalescing buffer for small outbound frames          */
#define SMALL_FRAME (16 * 1024 + 9)  /* frames up to this size are coalesced                */
#define NO_RST (-1)

static nghttp2_session_callbacks *g_callbacks;
static nghttp2_option *g_option;
static uint8_t *g_rbuf;

static struct conn *g_conns;     /* all live connections                   */
static struct tunnel *g_tunnels; /* all live tunnels                       */
static struct conn *g_dirty;     /* connections with HTTP/2 output pending */
static struct tunnel *g_aborts, *g_attach_head, *g_attach_tail;
static struct conn *g_dead_conns;
static struct tunnel *g_dead_tunnels;
static struct conn *g_client_conn; /* client: the connection new tunnels use */
static uint64_t g_conn_ids, g_tunnel_ids;

#define NV(n, v, vlen) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vlen), NGHTTP2_NV_FLAG_NONE}

static void tunnel_flush_down(struct tunnel *t);
static ssize_t hbone_data_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
                               nghttp2_data_source *src, void *ud);
static struct conn *conn_new(int fd, const struct sockaddr *peer, enum conn_state state);
static void tunnel_destroy(struct tunnel *t, int rst, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void conn_close(struct conn *c, bool warn, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void conn_destroy(struct conn *c);

/* ================================================================================ */
/* small helpers                                                                      */
/* ================================================================================ */

static int so_error(int fd) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
    return err;
}

/* Registered once, edge-triggered: readiness is latched in our own flags. */
static bool epoll_add(int fd, struct obj *o) {
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = o};
    return epoll_ctl(g_epfd, EPOLL_CTL_ADD, fd, &ev) == 0;
}

static void conn_mark_dirty(struct conn *c) {
    if (c && !c->dirty && c->state == CS_ACTIVE) {
        c->dirty = true;
        c->dirty_next = g_dirty;
        g_dirty = c;
    }
}

static bool buf_append(struct buf *b, const uint8_t *p, size_t n) {
    if (b->off + b->len + n > b->cap) {
        if (b->off) {
            memmove(b->data, b->data + b->off, b->len);
            b->off = 0;
        }
        if (b->len + n > b->cap) {
            size_t cap = b->cap ? b->cap * 2 : 64 * 1024;
            while (cap < b->len + n) cap *= 2;
            uint8_t *d = realloc(b->data, cap);
            if (!d) return false;
            b->data = d;
            b->cap = cap;
        }
    }
    memcpy(b->data + b->off + b->len, p, n);
    b->len += n;
    return true;
}

/* ================================================================================ */
/* tunnels                                                                            */
/* ================================================================================ */

static struct tunnel *tunnel_new(void) {
    struct tunnel *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->obj.kind = OBJ_TUNNEL;
    t->id = ++g_tunnel_ids;
    t->fd = -1;
    t->start_ms = now_ms();
    t->next = g_tunnels;
    if (g_tunnels) g_tunnels->prev = t;
    g_tunnels = t;
    return t;
}

static void tunnel_link_conn(struct tunnel *t, struct conn *c) {
    t->c = c;
    t->cprev = NULL;
    t->cnext = c->tunnels;
    if (c->tunnels) c->tunnels->cprev = t;
    c->tunnels = t;
}

static void tunnel_unlink_conn(struct tunnel *t) {
    struct conn *c = t->c;
    if (!c) return;
    if (t->cprev) t->cprev->cnext = t->cnext;
    else c->tunnels = t->cnext;
    if (t->cnext) t->cnext->cprev = t->cprev;
    t->cprev = t->cnext = NULL;
    t->c = NULL;
}

static void tunnel_log(struct tunnel *t, const char *result) {
    if (g_cfg.quiet) return;
    uint64_t ms = now_ms() - t->start_ms;
    if (g_cfg.mode == MODE_SERVER)
        INFO("tunnel %llu: from %s, stream %d CONNECT %s -> %s, status %d, client->upstream %llu B, upstream->client %llu B, "
             "%llu.%03llu s: %s",
             (unsigned long long)t->id, t->peer, t->stream_id, t->authority[0] ? t->authority : "-",
             t->target[0] ? t->target : "-", t->status, (unsigned long long)t->h2_to_tcp,
             (unsigned long long)t->tcp_to_h2, (unsigned long long)(ms / 1000), (unsigned long long)(ms % 1000),
             result);
    else
        INFO("tunnel %llu: local %s, stream %d CONNECT %s, status %d, sent %llu B, received %llu B, "
             "%llu.%03llu s: %s",
             (unsigned long long)t->id, t->peer, t->stream_id, g_cfg.authority, t->status,
             (unsigned long long)t->tcp_to_h2, (unsigned long long)t->h2_to_tcp, (unsigned long long)(ms / 1000),
             (unsigned long long)(ms % 1000), result);
}

/* Ends a tunnel now: closes the TCP socket and, if its stream is still open, detaches
 * it and (unless rst == NO_RST) resets it with `rst`. Bytes received but never
 * written are handed back to the connection window. */
static void tunnel_destroy(struct tunnel *t, int rst, const char *fmt, ...) {
    if (t->dead) return;
    t->dead = true;
    char result[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(result, sizeof result, fmt, ap);
    va_end(ap);
    struct conn *c = t->c;
    if (c && c->h2 && t->stream_id > 0) {
        if (!t->stream_closed) {
            nghttp2_session_set_stream_user_data(c->h2, t->stream_id, NULL);
            if (rst != NO_RST) nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, t->stream_id, (uint32_t)rst);
        }
        if (t->down.len) nghttp2_session_consume(c->h2, t->stream_id, t->down.len);
        conn_mark_dirty(c);
    }
    tunnel_unlink_conn(t);
    if (t->fd >= 0) close(t->fd); /* also removes it from epoll */
    t->fd = -1;
    tunnel_log(t, result);
    if (t->prev) t->prev->next = t->next;
    else g_tunnels = t->next;
    if (t->next) t->next->prev = t->prev;
    t->dead_next = g_dead_tunnels;
    g_dead_tunnels = t;
}

/* Both directions are complete (stream closed, every received byte written). */
static void tunnel_finish(struct tunnel *t, const char *result) {
    if (t->fd >= 0 && t->h2_end && !t->shut_wr) shutdown(t->fd, SHUT_WR);
    tunnel_destroy(t, NO_RST, "%s", result);
}

/* A TCP error seen inside an nghttp2 callback: reset the stream once we are out. */
static void tunnel_queue_abort(struct tunnel *t, int err) {
    if (t->abort_queued || t->dead) return;
    t->tcp_errno = err;
    t->abort_queued = true;
    t->work_next = g_aborts;
    g_aborts = t;
}

/* END_STREAM received: once the received bytes are written, half-close TCP. */
static void tunnel_h2_ended(struct tunnel *t) {
    t->h2_end = true;
    if (t->fd >= 0 && !t->connecting && t->down.len == 0 && !t->shut_wr) {
        shutdown(t->fd, SHUT_WR);
        t->shut_wr = true;
    }
}

/* Writes to the TCP side; returns bytes written (0: would block), -1 on error
 * (abort queued). */
static ssize_t tcp_write(struct tunnel *t, const uint8_t *p, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t w = send(t->fd, p + done, n - done, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            done += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            t->wr_ready = false;
            break;
        }
        tunnel_queue_abort(t, w < 0 ? errno : EIO);
        return -1;
    }
    return (ssize_t)done;
}

/* Writes buffered h2 -> TCP bytes; consumes them so the peer may send more. */
static void tunnel_flush_down(struct tunnel *t) {
    while (t->down.len && t->wr_ready && !t->abort_queued) {
        ssize_t w = tcp_write(t, t->down.data + t->down.off, t->down.len);
        if (w <= 0) break;
        t->down.off += (size_t)w;
        t->down.len -= (size_t)w;
        t->h2_to_tcp += (uint64_t)w;
        if (t->c) {
            nghttp2_session_consume(t->c->h2, t->stream_id, (size_t)w);
            conn_mark_dirty(t->c);
        }
    }
    if (t->down.len || t->abort_queued) return;
    t->down.off = 0;
    if (t->h2_end && !t->shut_wr) {
        shutdown(t->fd, SHUT_WR);
        t->shut_wr = true;
    }
    if (t->stream_closed) tunnel_finish(t, "done");
}

/* The stream is gone (normally, by RST_STREAM, or with its connection). */
static void tunnel_stream_closed(struct tunnel *t, uint32_t err, const char *how) {
    t->stream_closed = true;
    if (!t->established) {
        if (g_cfg.mode == MODE_CLIENT && err == NGHTTP2_REFUSED_STREAM && t->attempts < MAX_ATTEMPTS && t->c) {
            /* Refused before any byte was read (GOAWAY race): try again elsewhere. */
            tunnel_unlink_conn(t);
            t->stream_id = 0;
            t->stream_closed = false;
            t->rd_deferred = false;
            t->work_next = NULL;
            if (g_attach_tail) g_attach_tail->work_next = t;
            else g_attach_head = t;
            g_attach_tail = t;
            return;
        }
        tunnel_destroy(t, NO_RST, "%s before the tunnel was established (%s)", how, nghttp2_http2_strerror(err));
    } else if (t->h2_end) {
        /* Everything was received: deliver what is buffered, then close. */
        if (t->down.len == 0) tunnel_finish(t, err ? "done (then: stream reset or connection lost)" : "done");
    } else {
        tunnel_destroy(t, NO_RST, "%s (%s)", how, nghttp2_http2_strerror(err));
    }
}

/* ================================================================================ */
/* server side of a tunnel                                                            */
/* ================================================================================ */

/* Answer with an error status and END_STREAM; the tunnel ends here. We do not reset
 * the stream: the client may still be sending, which we accept and discard. */
static void server_reject(struct tunnel *t, int status, const char *reason) {
    char code[8];
    int n = snprintf(code, sizeof code, "%d", status);
    nghttp2_nv nv[] = {NV(":status", code, (size_t)n)};
    t->status = status;
    if (t->c) nghttp2_submit_response(t->c->h2, t->stream_id, nv, 1, NULL);
    tunnel_destroy(t, NO_RST, "%s", reason);
}

static void server_connected(struct tunnel *t) {
    t->connecting = false;
    t->established = true;
    t->wr_ready = true;
    t->status = 200;
    nghttp2_nv nv[] = {NV(":status", "200", 3)};
    nghttp2_data_provider prd = {.source = {.ptr = NULL}, .read_callback = hbone_data_read};
    if (nghttp2_submit_response(t->c->h2, t->stream_id, nv, 1, &prd) != 0) {
        tunnel_destroy(t, NGHTTP2_INTERNAL_ERROR, "cannot submit the response");
        return;
    }
    conn_mark_dirty(t->c);
    if (t->down.len) tunnel_flush_down(t); /* early data from the client */
    else if (t->h2_end) tunnel_h2_ended(t);
}

static void server_finish_connect(struct tunnel *t) {
    int err = so_error(t->fd);
    if (err) {
        char why[160];
        snprintf(why, sizeof why, "connection failed: %s", strerror(err));
        server_reject(t, 503, why);
        return;
    }
    server_connected(t);
}

static void server_handle_request(struct tunnel *t) {
    if (strcmp(t->method, "CONNECT") != 0) {
        char why[64];
        snprintf(why, sizeof why, "expected method CONNECT, got %s", t->method[0] ? t->method : "nothing");
        server_reject(t, 400, why);
        return;
    }
    struct sockaddr_storage ss;
    socklen_t sl;
    if (!parse_ip_authority(t->authority, &ss, &sl)) {
        server_reject(t, 400, "no valid authority pseudo header");
        return;
    }
    const struct sockaddr *dst = (const struct sockaddr *)&ss;
    if (g_cfg.has_upstream) {
        dst = (const struct sockaddr *)&g_cfg.upstream.addr;
        sl = g_cfg.upstream.len;
    }
    format_addr(dst, t->target, sizeof t->target);
    int fd = socket(dst->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        char why[128];
        snprintf(why, sizeof why, "connection failed: socket: %s", strerror(errno));
        server_reject(t, 503, why);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    t->fd = fd;
    if (!epoll_add(fd, &t->obj)) {
        server_reject(t, 503, "connection failed: epoll");
        return;
    }
    if (connect(fd, dst, sl) == 0) {
        server_connected(t);
    } else if (errno == EINPROGRESS) {
        t->connecting = true;
        t->deadline_ms = now_ms() + UPSTREAM_TIMEOUT_MS;
    } else {
        char why[160];
        snprintf(why, sizeof why, "connection failed: %s", strerror(errno));
        server_reject(t, 503, why);
    }
}

/* ================================================================================ */
/* client side of a tunnel                                                            */
/* ================================================================================ */

static struct conn *client_open_conn(void) {
    int fd = socket(g_cfg.connect.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        WARN("socket: %s", strerror(errno));
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (const struct sockaddr *)&g_cfg.connect.addr, g_cfg.connect.len) != 0 && errno != EINPROGRESS) {
        WARN("connect to %s: %s", g_cfg.connect.text, strerror(errno));
        close(fd);
        return NULL;
    }
    /* Either way the first EPOLLOUT edge moves it on to the TLS handshake. */
    return conn_new(fd, (const struct sockaddr *)&g_cfg.connect.addr, CS_TCP_CONNECTING);
}

void client_warmup(void) {
    if (!g_client_conn) g_client_conn = client_open_conn();
}

/* Opens the tunnel's CONNECT stream on the shared connection (a fresh one if the
 * current one is gone or draining after GOAWAY). The data provider stays deferred
 * until the 200 arrives, so nothing is read from the local socket before that. */
static void client_attach(struct tunnel *t) {
    struct conn *c = g_client_conn;
    if (!c || c->state >= CS_LINGER || c->goaway_recv) c = g_client_conn = client_open_conn();
    if (!c) {
        tunnel_destroy(t, NO_RST, "no HBONE connection to %s", g_cfg.connect.text);
        return;
    }
    nghttp2_nv nva[] = {NV(":method", "CONNECT", 7), NV(":authority", g_cfg.authority, strlen(g_cfg.authority))};
    nghttp2_data_provider prd = {.source = {.ptr = NULL}, .read_callback = hbone_data_read};
    t->attempts++;
    int32_t sid = nghttp2_submit_request(c->h2, NULL, nva, 2, &prd, t);
    if (sid < 0) {
        if (sid == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE && t->attempts < MAX_ATTEMPTS) {
            /* Stream ids exhausted: retire this connection gracefully, use a new one. */
            nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->h2),
                                  NGHTTP2_NO_ERROR, NULL, 0);
            c->goaway_recv = true;
            conn_mark_dirty(c);
            g_client_conn = NULL;
            client_attach(t);
            return;
        }
        tunnel_destroy(t, NO_RST, "cannot submit CONNECT: %s", nghttp2_strerror(sid));
        return;
    }
    t->stream_id = sid;
    tunnel_link_conn(t, c);
    conn_mark_dirty(c);
}

void tunnel_accepted(int fd, const struct sockaddr *sa) {
    struct tunnel *t = tunnel_new();
    if (!t) {
        close(fd);
        return;
    }
    t->fd = fd;
    t->wr_ready = true;
    format_addr(sa, t->peer, sizeof t->peer);
    if (!epoll_add(fd, &t->obj)) {
        tunnel_destroy(t, NO_RST, "epoll: %s", strerror(errno));
        return;
    }
    client_attach(t);
}

/* Response HEADERS on a client tunnel: 200 opens the tunnel, 1xx is skipped, anything
 * else closes the local connection. */
static void client_handle_response(struct tunnel *t, nghttp2_session *s) {
    if (t->status >= 100 && t->status < 200) return;
    if (t->status != 200) {
        tunnel_destroy(t, NGHTTP2_CANCEL, "server answered %d", t->status);
        return;
    }
    t->established = true;
    if (t->rd_deferred) {
        t->rd_deferred = false;
        nghttp2_session_resume_data(s, t->stream_id);
    }
}

/* ================================================================================ */
/* nghttp2 callbacks                                                                  */
/* ================================================================================ */

/* The data provider of every tunnel stream: reads the TCP socket straight into the
 * DATA frame being built. Deferred (socket left unread) until the tunnel is
 * established and the socket is readable. */
static ssize_t hbone_data_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
                               nghttp2_data_source *src, void *ud) {
    (void)src;
    (void)ud;
    struct tunnel *t = nghttp2_session_get_stream_user_data(s, sid);
    if (!t || t->dead || t->fd < 0 || t->abort_queued) return NGHTTP2_ERR_DEFERRED;
    if (!t->established || !t->rd_ready) {
        t->rd_deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    for (;;) {
        ssize_t n = read(t->fd, buf, len);
        if (n > 0) {
            t->tcp_to_h2 += (uint64_t)n;
            return n;
        }
        if (n == 0) { /* TCP FIN: END_STREAM after everything before it */
            t->tcp_eof = true;
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            return 0;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            t->rd_ready = false;
            t->rd_deferred = true;
            return NGHTTP2_ERR_DEFERRED;
        }
        tunnel_queue_abort(t, errno); /* e.g. ECONNRESET: RST_STREAM(CANCEL) */
        return NGHTTP2_ERR_DEFERRED;
    }
}

/* Frames as large as the peer allows; nghttp2 clamps this to both flow-control windows. */
static ssize_t read_length_cb(nghttp2_session *s, uint8_t type, int32_t sid, int32_t conn_window,
                              int32_t stream_window, uint32_t max_frame, void *ud) {
    (void)s, (void)type, (void)sid, (void)conn_window, (void)stream_window, (void)ud;
    return (ssize_t)max_frame;
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
    struct conn *c = ud;
    if (g_cfg.mode != MODE_SERVER || f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct tunnel *t = tunnel_new();
    if (!t) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
    t->stream_id = f->hd.stream_id;
    snprintf(t->peer, sizeof t->peer, "%s", c->peer);
    tunnel_link_conn(t, c);
    nghttp2_session_set_stream_user_data(s, t->stream_id, t);
    return 0;
}

static void copy_field(char *dst, size_t cap, const uint8_t *v, size_t n) {
    if (n >= cap) n = 0; /* too long to be valid: treat as absent */
    memcpy(dst, v, n);
    dst[n] = '\0';
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *ud) {
    (void)flags, (void)ud;
    if (f->hd.type != NGHTTP2_HEADERS) return 0;
    struct tunnel *t = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (!t || t->dead) return 0;
    if (g_cfg.mode == MODE_SERVER) {
        if (namelen == 7 && memcmp(name, ":method", 7) == 0)
            copy_field(t->method, sizeof t->method, value, valuelen);
        else if (namelen == 10 && memcmp(name, ":authority", 10) == 0)
            copy_field(t->authority, sizeof t->authority, value, valuelen);
    } else if (namelen == 7 && memcmp(name, ":status", 7) == 0 && valuelen == 3) {
        t->status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
    struct conn *c = ud;
    if (f->hd.type == NGHTTP2_GOAWAY) {
        /* No new streams on this connection; the existing ones finish. */
        c->goaway_recv = true;
        if (g_client_conn == c) g_client_conn = NULL;
        INFO("conn %llu: GOAWAY received (last stream %d, %s)", (unsigned long long)c->id,
             f->goaway.last_stream_id, nghttp2_http2_strerror(f->goaway.error_code));
        return 0;
    }
    if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) return 0;
    struct tunnel *t = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (!t || t->dead) return 0;
    bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (f->hd.type == NGHTTP2_HEADERS) {
        if (g_cfg.mode == MODE_SERVER && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
            t->h2_end = end;
            server_handle_request(t);
            return 0;
        }
        if (g_cfg.mode == MODE_CLIENT && !t->established) client_handle_response(t, s);
    }
    if (end && !t->dead) tunnel_h2_ended(t);
    return 0;
}

/* DATA payload: straight to TCP when possible, else buffered. Consumed (window
 * re-opened) only for what reached the socket. */
static int on_data_chunk_recv(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len,
                              void *ud) {
    (void)flags, (void)ud;
    struct tunnel *t = nghttp2_session_get_stream_user_data(s, sid);
    if (!t || t->dead || t->fd < 0 || t->shut_wr || t->abort_queued) {
        nghttp2_session_consume(s, sid, len); /* nobody to deliver to: discard */
        return 0;
    }
    size_t done = 0;
    if (t->down.len == 0 && t->wr_ready && !t->connecting) {
        ssize_t w = tcp_write(t, data, len);
        if (w < 0) {
            nghttp2_session_consume(s, sid, len);
            return 0;
        }
        done = (size_t)w;
        if (done) {
            t->h2_to_tcp += done;
            nghttp2_session_consume(s, sid, done);
        }
    }
    if (done < len && !buf_append(&t->down, data + done, len - done)) {
        nghttp2_session_consume(s, sid, len - done);
        tunnel_queue_abort(t, ENOMEM);
    }
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t err, void *ud) {
    (void)ud;
    struct tunnel *t = nghttp2_session_get_stream_user_data(s, sid);
    if (!t || t->dead) return 0;
    tunnel_stream_closed(t, err, err == NGHTTP2_NO_ERROR ? "stream closed" : "stream reset");
    return 0;
}

/* A queued CONNECT that nghttp2 could not send (e.g. GOAWAY arrived first). If the
 * stream was never opened there is no on_stream_close, so handle it here. */
static int on_frame_not_send(nghttp2_session *s, const nghttp2_frame *f, int lib_error, void *ud) {
    struct conn *c = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    if (nghttp2_session_find_stream(s, f->hd.stream_id)) return 0; /* on_stream_close follows */
    for (struct tunnel *t = c->tunnels; t; t = t->cnext) {
        if (t->stream_id == f->hd.stream_id && !t->dead) {
            INFO("tunnel %llu: CONNECT not sent: %s", (unsigned long long)t->id, nghttp2_strerror(lib_error));
            tunnel_stream_closed(t, NGHTTP2_REFUSED_STREAM, "CONNECT not sent");
            break;
        }
    }
    return 0;
}

static int on_error(nghttp2_session *s, int code, const char *msg, size_t len, void *ud) {
    (void)s, (void)code;
    struct conn *c = ud;
    INFO("conn %llu (%s): HTTP/2: %.*s", (unsigned long long)c->id, c->peer, (int)len, msg);
    return 0;
}

bool h2_init(void) {
    g_rbuf = malloc(RBUF_SIZE);
    if (!g_rbuf || nghttp2_session_callbacks_new(&g_callbacks) != 0 || nghttp2_option_new(&g_option) != 0)
        return false;
    nghttp2_session_callbacks_set_on_begin_headers_callback(g_callbacks, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(g_callbacks, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(g_callbacks, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(g_callbacks, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(g_callbacks, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(g_callbacks, on_frame_not_send);
    nghttp2_session_callbacks_set_data_source_read_length_callback(g_callbacks, read_length_cb);
    nghttp2_session_callbacks_set_error_callback2(g_callbacks, on_error);
    /* We send WINDOW_UPDATEs ourselves, for bytes written to TCP (back-pressure). */
    nghttp2_option_set_no_auto_window_update(g_option, 1);
    /* Do not keep closed streams around for the RFC 7540 priority tree. */
    nghttp2_option_set_no_closed_streams(g_option, 1);
    return true;
}

void h2_shutdown(void) {
    nghttp2_session_callbacks_del(g_callbacks);
    nghttp2_option_del(g_option);
    free(g_rbuf);
}

/* ================================================================================ */
/* connections                                                                        */
/* ================================================================================ */

static struct conn *conn_new(int fd, const struct sockaddr *peer, enum conn_state state) {
    struct conn *c = calloc(1, sizeof *c);
    if (!c) goto fail;
    c->obj.kind = OBJ_CONN;
    c->id = ++g_conn_ids;
    c->fd = fd;
    c->state = state;
    c->deadline_ms = now_ms() + HANDSHAKE_TIMEOUT_MS;
    c->out_ready = true; /* until a send(2) says otherwise */
    format_addr(peer, c->peer, sizeof c->peer);
    c->obuf = malloc(OBUF_CAP);
    c->cout = malloc(COUT_CAP);
    c->ssl = c->obuf && c->cout ? tls_new(c) : NULL;
    if (!c->ssl) goto fail;
    int rv = g_cfg.mode == MODE_SERVER ? nghttp2_session_server_new2(&c->h2, g_callbacks, c, g_option)
                                       : nghttp2_session_client_new2(&c->h2, g_callbacks, c, g_option);
    if (rv != 0) goto fail;
    nghttp2_settings_entry iv[3] = {
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_INITIAL_WINDOW},
        {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, H2_MAX_FRAME},
        g_cfg.mode == MODE_SERVER ? (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2_MAX_STREAMS}
                                  : (nghttp2_settings_entry){NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 3) != 0 ||
        nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW) != 0)
        goto fail;
    if (!epoll_add(fd, &c->obj)) goto fail;
    c->next = g_conns;
    if (g_conns) g_conns->prev = c;
    g_conns = c;
    return c;
fail:
    WARN("cannot set up a connection: out of resources");
    if (c) {
        if (c->h2) nghttp2_session_del(c->h2);
        if (c->ssl) SSL_free(c->ssl);
        free(c->obuf);
        free(c->cout);
        free(c);
    }
    close(fd);
    return NULL;
}

void conn_accepted(int fd, const struct sockaddr *sa) {
    conn_new(fd, sa, CS_HANDSHAKE); /* the ClientHello's EPOLLIN edge starts the handshake */
}

/* Sends batched TLS records. 1 = all sent, 0 = socket full (EPOLLOUT resumes us),
 * -1 = error (errno set). */
static int conn_send_cipher(struct conn *c) {
    while (c->cout_len) {
        if (!c->out_ready) return 0;
        ssize_t n = send(c->fd, c->cout + c->cout_off, c->cout_len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c->cout_off += (size_t)n;
            c->cout_len -= (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->out_ready = false;
            return 0;
        } else {
            if (n == 0) errno = EPIPE;
            return -1;
        }
    }
    c->cout_off = 0;
    return 1;
}

/* Closes a connection and everything riding on it. Tunnels that already received
 * END_STREAM still deliver their buffered bytes; all others are closed. */
static void conn_close(struct conn *c, bool warn, const char *fmt, ...) {
    if (c->state >= CS_LINGER) return;
    char why[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    log_msg(warn ? LOG_WARN : LOG_INFO, "conn %llu (%s%s%s): closed: %s", (unsigned long long)c->id, c->peer,
            c->identity[0] ? ", " : "", c->identity, why);
    bool was_active = c->state == CS_ACTIVE;
    bool linger = c->state != CS_TCP_CONNECTING && !c->peer_eof;
    c->state = CS_DEAD;
    if (g_client_conn == c) g_client_conn = NULL;
    struct tunnel *t;
    while ((t = c->tunnels)) {
        tunnel_unlink_conn(t);
        tunnel_stream_closed(t, NGHTTP2_CANCEL, "HTTP/2 connection lost");
        /* (one that already received END_STREAM lives on until its bytes are written) */
    }
    if (was_active && !warn) {
        ERR_clear_error();
        SSL_shutdown(c->ssl); /* close_notify */
    }
    ERR_clear_error();
    c->out_ready = true;
    conn_send_cipher(c); /* best effort: close_notify or the TLS alert explaining a failure */
    nghttp2_session_del(c->h2);
    c->h2 = NULL;
    SSL_free(c->ssl);
    c->ssl = NULL;
    free(c->obuf);
    c->obuf = NULL;
    free(c->cout);
    c->cout = NULL;
    if (linger && shutdown(c->fd, SHUT_WR) == 0) {
        c->state = CS_LINGER;
        c->deadline_ms = now_ms() + LINGER_MS;
        return;
    }
    conn_destroy(c);
}

/* The end of a connection's life: close the socket, free it after this iteration. */
static void conn_destroy(struct conn *c) {
    c->state = CS_DEAD;
    close(c->fd);
    c->fd = -1;
    if (c->prev) c->prev->next = c->next;
    else g_conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->dead_next = g_dead_conns;
    g_dead_conns = c;
}

static bool conn_handshake(struct conn *c) {
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_NONE || e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        if (conn_send_cipher(c) < 0) {
            conn_close(c, true, "TLS handshake: send failed: %s", strerror(errno));
            return false;
        }
    }
    if (r == 1) {
        if (!tls_after_handshake(c)) {
            conn_close(c, true, "TLS: %s", c->fail_reason);
            return false;
        }
        c->state = CS_ACTIVE;
        c->deadline_ms = 0;
        c->in_ready = c->out_ready = true; /* data may already be waiting behind Finished */
        INFO("conn %llu (%s): TLS 1.3 %s established, peer %s", (unsigned long long)c->id, c->peer,
             SSL_get_cipher_name(c->ssl), c->identity);
        return true;
    }
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return false;
    char why[300];
    tls_error_reason(c, e, r, why, sizeof why);
    conn_close(c, true, "TLS handshake failed: %s", why);
    return false;
}

/* Decrypts everything available and feeds it to nghttp2 in large chunks. */
static void conn_do_read(struct conn *c) {
    if (!c->in_ready && !c->read_wants_write) return;
    c->read_wants_write = false;
    for (;;) {
        size_t fill = 0;
        int e = SSL_ERROR_NONE, r = 0;
        while (fill < RBUF_SIZE) {
            ERR_clear_error();
            r = SSL_read(c->ssl, g_rbuf + fill, (int)(RBUF_SIZE - fill));
            if (r > 0) {
                fill += (size_t)r;
                continue;
            }
            e = SSL_get_error(c->ssl, r);
            break;
        }
        if (fill) {
            ssize_t rv = nghttp2_session_mem_recv(c->h2, g_rbuf, fill);
            if (rv < 0) {
                conn_close(c, true, "HTTP/2 error: %s", nghttp2_strerror((int)rv));
                return;
            }
        }
        switch (e) {
        case SSL_ERROR_NONE: continue; /* buffer was full: read on */
        case SSL_ERROR_WANT_READ: c->in_ready = false; return;
        case SSL_ERROR_WANT_WRITE: c->read_wants_write = true; c->out_ready = false; return;
        case SSL_ERROR_ZERO_RETURN:
            c->peer_eof = true;
            conn_close(c, false, "peer closed the TLS session");
            return;
        default: {
            bool eof = e == SSL_ERROR_SYSCALL ? (r == 0 || errno == 0)
                                              : ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
            char why[300];
            tls_error_reason(c, e, r, why, sizeof why);
            c->peer_eof = true; /* or a socket error: nothing more to read either way */
            if (eof) conn_close(c, false, "peer closed the connection");
            else conn_close(c, true, "TLS read failed: %s", why);
            return;
        }
        }
    }
}

/* Encrypts into cout. 1 = took *written bytes, 0 = cout full or TLS wants to read
 * first, -1 = connection closed. */
static int conn_write(struct conn *c, const uint8_t *p, size_t n, size_t *written) {
    ERR_clear_error();
    c->write_wants_read = false;
    int w = SSL_write(c->ssl, p, n > (1u << 30) ? (1 << 30) : (int)n);
    if (w > 0) {
        *written = (size_t)w;
        return 1;
    }
    int e = SSL_get_error(c->ssl, w);
    if (e == SSL_ERROR_WANT_WRITE) return 0; /* cout is full: send it first */
    if (e == SSL_ERROR_WANT_READ) {
        c->write_wants_read = true;
        return 0;
    }
    char why[300];
    tls_error_reason(c, e, w, why, sizeof why);
    conn_close(c, e != SSL_ERROR_SYSCALL, "TLS write failed: %s", why);
    return -1;
}

/* Pulls nghttp2's output: small frames are copied into obuf, a large one is left
 * in place (pend). Returns false if there is nothing to send or the connection died. */
static bool conn_gather(struct conn *c) {
    c->obuf_off = 0;
    for (;;) {
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(c->h2, &p);
        if (n < 0) {
            conn_close(c, true, "HTTP/2 error: %s", nghttp2_strerror((int)n));
            return false;
        }
        if (n == 0) break;
        if ((size_t)n <= SMALL_FRAME && c->obuf_len + (size_t)n <= OBUF_CAP) {
            memcpy(c->obuf + c->obuf_len, p, (size_t)n);
            c->obuf_len += (size_t)n;
            continue;
        }
        c->pend = p; /* valid until the next nghttp2_session_mem_send() */
        c->pend_len = (size_t)n;
        break;
    }
    return c->obuf_len || c->pend_len;
}

/* Encrypts obuf then pend into cout. 1 = all encrypted, 0 = cout full, -1 = closed. */
static int conn_encrypt(struct conn *c) {
    size_t w;
    int rc;
    while (c->obuf_len) {
        if ((rc = conn_write(c, c->obuf + c->obuf_off, c->obuf_len, &w)) <= 0) return rc;
        c->obuf_off += w;
        c->obuf_len -= w;
    }
    while (c->pend_len) {
        if ((rc = conn_write(c, c->pend, c->pend_len, &w)) <= 0) return rc;
        c->pend += w;
        c->pend_len -= w;
    }
    return 1;
}

/* Moves nghttp2's output through TLS to the socket until all is sent or the socket
 * is full. Plaintext is only pulled from nghttp2 (and thereby from the tunnels' TCP
 * sockets) while there is room for its ciphertext. */
static void conn_flush(struct conn *c) {
    for (;;) {
        if (c->obuf_len == 0 && c->pend_len == 0 && (c->state != CS_ACTIVE || !conn_gather(c))) break;
        int rc = conn_encrypt(c);
        if (rc < 0) return;
        if (rc == 0) {
            int s = conn_send_cipher(c);
            if (s < 0) {
                conn_close(c, false, "send failed: %s", strerror(errno));
                return;
            }
            if (s == 0 || c->write_wants_read) return; /* resumed by EPOLLOUT / EPOLLIN */
        }
    }
    if (c->state != CS_ACTIVE) return;
    int s = conn_send_cipher(c);
    if (s < 0) {
        conn_close(c, false, "send failed: %s", strerror(errno));
        return;
    }
    if (s == 1 && !nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2))
        conn_close(c, false, "HTTP/2 session finished");
}

/* Lingering: discard input until the peer's FIN (or an error), then close. */
static void conn_linger_read(struct conn *c) {
    char sink[16384];
    for (;;) {
        ssize_t n = read(c->fd, sink, sizeof sink);
        if (n > 0) continue;
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        conn_destroy(c);
        return;
    }
}

void conn_on_event(struct conn *c, uint32_t events) {
    if (c->state == CS_DEAD) return;
    if (c->state == CS_LINGER) {
        conn_linger_read(c);
        return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) c->in_ready = true;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) c->out_ready = true;
    if (c->state == CS_TCP_CONNECTING) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        int err = so_error(c->fd);
        if (err) {
            conn_close(c, true, "connect failed: %s", strerror(err));
            return;
        }
        c->state = CS_HANDSHAKE;
    }
    if (c->state == CS_HANDSHAKE && !conn_handshake(c)) return;
    conn_do_read(c);
    conn_mark_dirty(c);
}

void tunnel_on_event(struct tunnel *t, uint32_t events) {
    if (t->dead || t->fd < 0) return;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) t->rd_ready = true;
    if (t->connecting) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) server_finish_connect(t);
        return;
    }
    if (events & EPOLLERR) {
        int err = so_error(t->fd);
        tunnel_destroy(t, NGHTTP2_CANCEL, "TCP error: %s", strerror(err ? err : EIO));
        return;
    }
    if (t->rd_ready && t->rd_deferred && t->established && t->c && !t->stream_closed && !t->tcp_eof) {
        t->rd_deferred = false;
        nghttp2_session_resume_data(t->c->h2, t->stream_id);
        conn_mark_dirty(t->c);
    }
    if (events & (EPOLLOUT | EPOLLHUP)) {
        t->wr_ready = true;
        if (t->down.len) tunnel_flush_down(t);
    }
}

/* ================================================================================ */
/* deferred work, timers, teardown                                                    */
/* ================================================================================ */

void run_pending(void) {
    for (;;) {
        if (g_aborts) {
            struct tunnel *t = g_aborts;
            g_aborts = t->work_next;
            t->abort_queued = false;
            if (!t->dead) tunnel_destroy(t, NGHTTP2_CANCEL, "TCP error: %s", strerror(t->tcp_errno));
            continue;
        }
        if (g_attach_head) {
            struct tunnel *t = g_attach_head;
            g_attach_head = t->work_next;
            if (!g_attach_head) g_attach_tail = NULL;
            if (!t->dead) client_attach(t);
            continue;
        }
        if (g_dirty) {
            struct conn *c = g_dirty;
            g_dirty = c->dirty_next;
            c->dirty = false;
            if (c->state == CS_ACTIVE) conn_flush(c);
            continue;
        }
        break;
    }
}

void check_timers(uint64_t now) {
    struct conn *cn;
    for (struct conn *c = g_conns; c; c = cn) {
        cn = c->next;
        if (c->state == CS_LINGER && now >= c->deadline_ms) conn_destroy(c);
        else if (c->state != CS_ACTIVE && c->deadline_ms && now >= c->deadline_ms)
            conn_close(c, true, "TCP connect / TLS handshake timed out");
    }
    struct tunnel *tn;
    for (struct tunnel *t = g_tunnels; t; t = tn) {
        tn = t->next;
        if (t->connecting && now >= t->deadline_ms) server_reject(t, 503, "connection failed: timed out");
    }
}

void free_graveyard(void) {
    while (g_dead_conns) {
        struct conn *c = g_dead_conns;
        g_dead_conns = c->dead_next;
        free(c->obuf);
        free(c->cout);
        free(c);
    }
    while (g_dead_tunnels) {
        struct tunnel *t = g_dead_tunnels;
        g_dead_tunnels = t->dead_next;
        free(t->down.data);
        free(t);
    }
}

void close_everything(void) {
    g_dirty = NULL;
    while (g_conns) {
        conn_close(g_conns, false, "shutting down");
        if (g_conns && g_conns->state == CS_LINGER) conn_destroy(g_conns);
    }
    g_aborts = g_attach_head = g_attach_tail = NULL;
    while (g_tunnels) tunnel_destroy(g_tunnels, NO_RST, "shutting down");
    g_dirty = NULL;
    free_graveyard();
}
