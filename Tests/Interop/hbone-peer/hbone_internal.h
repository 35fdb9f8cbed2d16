/*
 * hbone-peer: what the connection half (hbone_conn.c) and the tunnel half
 * (hbone_tunnel.c) share — buffer sizes, the connection and tunnel lists, and the
 * functions each half calls in the other. Not part of hbone_peer.h, which is what
 * hbone_peer.c (command line, TLS, event loop) sees.
 */
#ifndef HBONE_INTERNAL_H
#define HBONE_INTERNAL_H

#include "hbone_peer.h"

/* nghttp2 >= 1.62 deprecates the ssize_t-based API that Debian 12's 1.52 offers. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

#define RBUF_SIZE (256 * 1024)       /* plaintext read from TLS per nghttp2_session_mem_recv */
#define OBUF_CAP (64 * 1024)         /* coalescing buffer for small outbound frames          */
#define SMALL_FRAME (16 * 1024 + 9)  /* frames up to this size are coalesced                */
#define NO_RST (-1)

#define NV(n, v, vlen) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vlen), NGHTTP2_NV_FLAG_NONE}

extern nghttp2_session_callbacks *g_callbacks;
extern nghttp2_option *g_option;
extern uint8_t *g_rbuf;

extern struct conn *g_conns;     /* all live connections                   */
extern struct tunnel *g_tunnels; /* all live tunnels                       */
extern struct conn *g_dirty;     /* connections with HTTP/2 output pending */
extern struct tunnel *g_aborts, *g_attach_head, *g_attach_tail;
extern struct conn *g_dead_conns;
extern struct tunnel *g_dead_tunnels;
extern struct conn *g_client_conn; /* client: the connection new tunnels use */
extern uint64_t g_conn_ids, g_tunnel_ids;

/* hbone_conn.c */
int so_error(int fd);
bool epoll_add(int fd, struct obj *o);
void conn_mark_dirty(struct conn *c);
bool buf_append(struct buf *b, const uint8_t *p, size_t n);
struct conn *conn_new(int fd, const struct sockaddr *peer, enum conn_state state);

/* hbone_tunnel.c */
void tunnel_flush_down(struct tunnel *t);
ssize_t hbone_data_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
                        nghttp2_data_source *src, void *ud);
void tunnel_destroy(struct tunnel *t, int rst, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void tunnel_unlink_conn(struct tunnel *t);
void tunnel_stream_closed(struct tunnel *t, uint32_t err, const char *how);
void server_reject(struct tunnel *t, int status, const char *reason);
void server_finish_connect(struct tunnel *t);
void client_attach(struct tunnel *t);

#endif
