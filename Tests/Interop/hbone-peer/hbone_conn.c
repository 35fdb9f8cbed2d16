/*
 * hbone-peer: the HTTP/2-over-TLS connections — TLS handshake, reading records into
 * nghttp2, batching outbound records — plus event dispatch, deferred work, timers and
 * teardown. The tunnels a connection carries are in hbone_tunnel.c.
 *
 * Few copies and syscalls on the hot path: TCP is read straight into nghttp2's frame
 * buffer (frames up to the peer's max frame size), large frames are handed to
 * SSL_write straight from that buffer, and the resulting TLS records are batched into
 * one send(2) per 256 KiB. Received DATA is written to TCP straight from the TLS read
 * buffer; only what the socket does not take at once is copied into the tunnel's
 * buffer (bounded by the 4 MiB stream window).
 *
 * Object lifetime: anything that dies while callbacks may still reference it (a
 * tunnel in an nghttp2 callback, a connection with events pending in the current
 * epoll batch) is marked dead, unlinked and put on a graveyard list that is freed at
 * the end of the loop iteration.
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

nghttp2_session_callbacks *g_callbacks;
nghttp2_option *g_option;
uint8_t *g_rbuf;

struct conn *g_conns;
struct tunnel *g_tunnels;
struct conn *g_dirty;
struct tunnel *g_aborts, *g_attach_head, *g_attach_tail;
struct conn *g_dead_conns;
struct tunnel *g_dead_tunnels;
struct conn *g_client_conn;
uint64_t g_conn_ids, g_tunnel_ids;

static void conn_close(struct conn *c, bool warn, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void conn_destroy(struct conn *c);

/* ================================================================================ */
/* small helpers                                                                      */
/* ================================================================================ */

int so_error(int fd) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
    return err;
}

/* Registered once, edge-triggered: readiness is latched in our own flags. */
bool epoll_add(int fd, struct obj *o) {
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = o};
    return epoll_ctl(g_epfd, EPOLL_CTL_ADD, fd, &ev) == 0;
}

void conn_mark_dirty(struct conn *c) {
    if (c && !c->dirty && c->state == CS_ACTIVE) {
        c->dirty = true;
        c->dirty_next = g_dirty;
        g_dirty = c;
    }
}

bool buf_append(struct buf *b, const uint8_t *p, size_t n) {
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
/* connections                                                                        */
/* ================================================================================ */

struct conn *conn_new(int fd, const struct sockaddr *peer, enum conn_state state) {
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
