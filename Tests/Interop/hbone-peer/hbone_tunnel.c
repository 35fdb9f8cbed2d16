/*
 * hbone-peer: the tunnels — one TCP socket paired with one CONNECT stream — and the
 * nghttp2 callbacks that drive them. The connections are in hbone_conn.c.
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
 */
#include "hbone_internal.h"

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

void tunnel_unlink_conn(struct tunnel *t) {
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
void tunnel_destroy(struct tunnel *t, int rst, const char *fmt, ...) {
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
void tunnel_flush_down(struct tunnel *t) {
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
void tunnel_stream_closed(struct tunnel *t, uint32_t err, const char *how) {
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
void server_reject(struct tunnel *t, int status, const char *reason) {
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

void server_finish_connect(struct tunnel *t) {
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
void client_attach(struct tunnel *t) {
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
ssize_t hbone_data_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
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

