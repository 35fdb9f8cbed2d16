/*
 * hbone-peer: an independent HBONE endpoint (HTTP/2 CONNECT over mutual TLS 1.3, as
 * Istio's ztunnel speaks on port 15008), written in C on OpenSSL 3 and nghttp2.
 *
 * It is the interop and performance reference for swift-hbone. Single-threaded: one
 * edge-triggered epoll loop drives non-blocking sockets. The code is split in three:
 *
 *   hbone_peer.c    command line, TLS contexts and SPIFFE peer checks, listeners,
 *                   signals, timers and the event loop;
 *   hbone_conn.c    the HTTP/2-over-TLS connections, event dispatch, deferred work;
 *   hbone_tunnel.c  the tunnels: the byte pump between a TCP socket and a CONNECT
 *                   stream, and the nghttp2 callbacks.
 *
 * hbone_conn.c and hbone_tunnel.c share hbone_internal.h.
 */
#ifndef HBONE_PEER_H
#define HBONE_PEER_H

#define _GNU_SOURCE
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>

/* ---- protocol constants -------------------------------------------------------- */

#define H2_INITIAL_WINDOW (4u << 20)   /* SETTINGS_INITIAL_WINDOW_SIZE: per stream   */
#define H2_MAX_FRAME (1u << 20)        /* SETTINGS_MAX_FRAME_SIZE we accept          */
#define H2_CONN_WINDOW (16 << 20)      /* connection-level receive window            */
#define H2_MAX_STREAMS 200u            /* SETTINGS_MAX_CONCURRENT_STREAMS (server)   */
#define HANDSHAKE_TIMEOUT_MS 10000     /* TCP connect + TLS handshake                */
#define UPSTREAM_TIMEOUT_MS 10000      /* server: connect to the tunnel's target     */
#define MAX_ATTEMPTS 3                 /* client: re-submits of a refused CONNECT    */
#define COUT_CAP (256 * 1024)          /* ciphertext batched per send(2)             */
#define LINGER_MS 2000                 /* wait for the peer's FIN after our last word */

/* ---- configuration --------------------------------------------------------------- */

enum mode { MODE_SERVER, MODE_CLIENT };

struct endpoint {
    struct sockaddr_storage addr;
    socklen_t len;
    const char *text; /* as given on the command line */
};

struct config {
    enum mode mode;
    struct endpoint listen;
    struct endpoint connect;  /* client: the HBONE server                      */
    struct endpoint upstream; /* server: fixed target instead of :authority    */
    bool has_upstream;
    const char *authority;       /* client: :authority of every CONNECT        */
    const char *cert, *key, *ca;
    const char *trust_domain;    /* server: required trust domain of clients   */
    const char *expect_identity; /* client: required SPIFFE ID of the server   */
    const char *ciphersuites;    /* TLS 1.3 suites, NULL: ztunnel's two         */
    bool quiet;
};

extern struct config g_cfg;
extern SSL_CTX *g_ssl_ctx;
extern int g_epfd;

/* ---- logging ----------------------------------------------------------------------- */

enum log_level { LOG_INFO, LOG_WARN };
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define INFO(...) log_msg(LOG_INFO, __VA_ARGS__)
#define WARN(...) log_msg(LOG_WARN, __VA_ARGS__)

uint64_t now_ms(void);
void format_addr(const struct sockaddr *sa, char *out, size_t outlen);
bool parse_ip_authority(const char *text, struct sockaddr_storage *ss, socklen_t *len);

/* ---- event-loop objects ------------------------------------------------------------ */

/* Every structure registered with epoll starts with this tag (epoll_data.ptr). */
enum obj_kind { OBJ_LISTENER = 1, OBJ_SIGNAL, OBJ_CONN, OBJ_TUNNEL };
struct obj {
    enum obj_kind kind;
};

/* CS_LINGER: TLS and HTTP/2 are gone; our side is shut down and we read and discard
 * until the peer closes (max LINGER_MS), so that a final alert or GOAWAY is not
 * destroyed by a TCP RST that close() with unread input would cause. */
enum conn_state { CS_TCP_CONNECTING, CS_HANDSHAKE, CS_ACTIVE, CS_LINGER, CS_DEAD };

struct tunnel;

/* One TLS + HTTP/2 connection. */
struct conn {
    struct obj obj;
    uint64_t id;
    int fd;
    enum conn_state state;
    SSL *ssl;
    nghttp2_session *h2;

    /* Edge-triggered readiness, latched until a call reports EAGAIN (WANT_*). */
    bool in_ready, out_ready;
    bool read_wants_write, write_wants_read; /* TLS post-handshake messages */

    bool goaway_recv; /* peer sent GOAWAY: open no new streams here            */
    bool peer_eof;    /* the peer closed its side of the TCP connection         */
    bool dirty;       /* queued on the flush list                              */
    struct conn *dirty_next;

    /* Outbound plaintext: small frames coalesced into obuf; a large frame is
     * encrypted straight from nghttp2's buffer (valid until the next
     * nghttp2_session_mem_send). Outbound ciphertext: TLS records collect in cout
     * (our BIO) and leave in large send(2) calls instead of one per 16 KiB record. */
    uint8_t *obuf;
    size_t obuf_len, obuf_off;
    const uint8_t *pend;
    size_t pend_len;
    uint8_t *cout;
    size_t cout_off, cout_len;

    struct tunnel *tunnels; /* streams of this connection */
    uint64_t deadline_ms;   /* handshake deadline, 0 = none */
    char peer[64];          /* remote ip:port */
    char identity[256];     /* verified peer SPIFFE ID */
    char fail_reason[256];  /* why verification failed (set by TLS callbacks) */
    struct conn *prev, *next, *dead_next;
};

/* A byte buffer with a read offset (pending writes to the TCP side). */
struct buf {
    uint8_t *data;
    size_t off, len, cap;
};

/* One tunnel: a TCP socket paired with one CONNECT stream. */
struct tunnel {
    struct obj obj;
    uint64_t id;
    int fd;
    struct conn *c; /* NULL once the connection is gone */
    int32_t stream_id;
    int status;   /* :status sent (server) or received (client) */
    int attempts; /* client: CONNECTs submitted for this tunnel */

    bool connecting;     /* server: upstream connect() in progress                 */
    bool established;    /* 200 sent/received: bytes may flow                       */
    bool rd_ready;       /* TCP readable (edge latched)                             */
    bool wr_ready;       /* TCP writable (edge latched)                             */
    bool rd_deferred;    /* our data provider returned NGHTTP2_ERR_DEFERRED         */
    bool tcp_eof;        /* read() returned 0: END_STREAM sent / queued            */
    bool h2_end;         /* END_STREAM received                                     */
    bool shut_wr;        /* shutdown(SHUT_WR) done                                  */
    bool stream_closed;  /* nghttp2 closed the stream (or the connection is gone)  */
    bool abort_queued;   /* on the abort list                                       */
    bool dead;
    int tcp_errno;

    struct buf down; /* h2 -> TCP bytes not yet written (and not yet consumed) */
    uint64_t h2_to_tcp, tcp_to_h2;
    uint64_t start_ms, deadline_ms;

    char method[16];
    char authority[96];
    char target[64];
    char peer[64];

    struct tunnel *cprev, *cnext; /* in c->tunnels */
    struct tunnel *prev, *next;   /* all tunnels   */
    struct tunnel *work_next;     /* abort / attach lists */
    struct tunnel *dead_next;
};

/* ---- hbone_tunnel.c ------------------------------------------------------------------ */

bool h2_init(void);
void h2_shutdown(void);
void tunnel_accepted(int fd, const struct sockaddr *sa); /* client */
void client_warmup(void);

/* ---- hbone_conn.c -------------------------------------------------------------------- */

void conn_accepted(int fd, const struct sockaddr *sa);   /* server */
void conn_on_event(struct conn *c, uint32_t events);
void tunnel_on_event(struct tunnel *t, uint32_t events);
void run_pending(void);
void check_timers(uint64_t now);
void free_graveyard(void);
void close_everything(void);

/* ---- hbone_peer.c (TLS helpers used by hbone_conn.c) ---------------------------------- */

SSL *tls_new(struct conn *c);
bool tls_after_handshake(struct conn *c);
void tls_error_reason(struct conn *c, int ssl_error, int ret, char *out, size_t outlen);

#endif
