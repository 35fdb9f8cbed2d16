/*
 * hbone-peer: command line, TLS (mutual TLS 1.3 + SPIFFE identities), listeners,
 * signals and the event loop. See hbone_peer.h for the overall layout and
 * hbone_conn.c and hbone_tunnel.c for HTTP/2 and the byte pump.
 *
 *   hbone-peer server --listen HOST:PORT --cert CHAIN.pem --key KEY.pem --ca ROOT.pem
 *                     --trust-domain TD [--upstream HOST:PORT] [--quiet]
 *   hbone-peer client --listen HOST:PORT --connect HOST:PORT --authority IP:PORT
 *                     --cert CHAIN.pem --key KEY.pem --ca ROOT.pem
 *                     --expect-identity spiffe://TD/ns/NS/sa/SA [--quiet]
 */
#include "hbone_peer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

struct config g_cfg;
SSL_CTX *g_ssl_ctx;
int g_epfd = -1;

/* ================================================================================ */
/* logging, time, addresses                                                          */
/* ================================================================================ */

static uint64_t g_start_ms;

uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void log_msg(enum log_level level, const char *fmt, ...) {
    if (level == LOG_INFO && g_cfg.quiet) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    uint64_t t = now_ms() - g_start_ms;
    fprintf(stderr, "[hbone-peer %s %5llu.%03llu] %s%s\n", g_cfg.mode == MODE_SERVER ? "server" : "client",
            (unsigned long long)(t / 1000), (unsigned long long)(t % 1000), level == LOG_WARN ? "warning: " : "",
            line);
}

void format_addr(const struct sockaddr *sa, char *out, size_t outlen) {
    char host[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(out, outlen, "%s:%u", host, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(out, outlen, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else {
        snprintf(out, outlen, "?");
    }
}

/* Splits "host:port" or "[v6]:port" into its parts. The host may be empty. */
static bool split_hostport(const char *text, char *host, size_t hostlen, const char **port) {
    const char *colon;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':') return false;
        size_t n = (size_t)(close - text - 1);
        if (n == 0 || n >= hostlen) return false;
        memcpy(host, text + 1, n);
        host[n] = '\0';
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (!colon || memchr(text, ':', (size_t)(colon - text))) return false; /* bare IPv6 */
        size_t n = (size_t)(colon - text);
        if (n >= hostlen) return false;
        memcpy(host, text, n);
        host[n] = '\0';
    }
    *port = colon + 1;
    return true;
}

static bool parse_port(const char *p, bool allow_zero, uint16_t *out) {
    if (!*p || strlen(p) > 5) return false;
    unsigned v = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9') return false;
        v = v * 10 + (unsigned)(*p - '0');
    }
    if (v > 65535 || (v == 0 && !allow_zero)) return false;
    *out = (uint16_t)v;
    return true;
}

/* The :authority of an HBONE CONNECT must be a literal address: "a.b.c.d:port" or
 * "[v6]:port" (ztunnel never resolves names). Port 0 and zone ids are rejected. */
bool parse_ip_authority(const char *text, struct sockaddr_storage *ss, socklen_t *len) {
    char host[INET6_ADDRSTRLEN + 1];
    const char *port;
    uint16_t p;
    if (!split_hostport(text, host, sizeof host, &port) || !parse_port(port, false, &p)) return false;
    memset(ss, 0, sizeof *ss);
    if (text[0] == '[') {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1) return false;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(p);
        *len = sizeof *in6;
    } else {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        if (inet_pton(AF_INET, host, &in->sin_addr) != 1) return false;
        in->sin_family = AF_INET;
        in->sin_port = htons(p);
        *len = sizeof *in;
    }
    return true;
}

/* Command-line endpoints may use names (resolved once, at start-up). */
static bool resolve_endpoint(const char *text, bool passive, struct endpoint *ep) {
    char host[256];
    const char *port;
    uint16_t p;
    if (!split_hostport(text, host, sizeof host, &port) || !parse_port(port, passive, &p)) return false;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0)};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (rc != 0 || !res) {
        fprintf(stderr, "hbone-peer: cannot resolve %s: %s\n", text, gai_strerror(rc));
        return false;
    }
    memcpy(&ep->addr, res->ai_addr, res->ai_addrlen);
    ep->len = res->ai_addrlen;
    ep->text = text;
    freeaddrinfo(res);
    return true;
}

/* ================================================================================ */
/* TLS                                                                               */
/* ================================================================================ */
/*
 * HBONE's TLS profile (ztunnel): TLS 1.3 only; AES-GCM suites; X25519 or P-256; no
 * session resumption; ALPN "h2" is mandatory; no SNI from the client; both sides
 * present certificates and verify the other against the mesh root. Identity is the
 * SPIFFE ID in the leaf's only URI SAN: the server accepts any client of its trust
 * domain (authorization is a later, separate step), the client requires the exact
 * identity it expects for the destination workload.
 */

static const unsigned char ALPN_H2[] = {2, 'h', '2'};

/* Checks the leaf's SPIFFE identity; on success copies it to `id`. */
static bool spiffe_check(X509 *leaf, char *id, size_t idlen, char *why, size_t whylen) {
    int crit = -1;
    GENERAL_NAMES *names = X509_get_ext_d2i(leaf, NID_subject_alt_name, &crit, NULL);
    if (!names) {
        snprintf(why, whylen, "%s", crit == -2 ? "duplicate subjectAltName extensions" : "no subjectAltName");
        return false;
    }
    int uris = 0;
    const unsigned char *uri = NULL;
    int urilen = 0;
    for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
        if (gn->type != GEN_URI) continue;
        uris++;
        uri = ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
        urilen = ASN1_STRING_length(gn->d.uniformResourceIdentifier);
        if (urilen > 0 && (size_t)urilen < idlen) {
            memcpy(id, uri, (size_t)urilen);
            id[urilen] = '\0';
        }
    }
    GENERAL_NAMES_free(names); /* `id` holds a copy */
    if (uris != 1) {
        snprintf(why, whylen, "expected exactly one URI SAN, found %d", uris);
        return false;
    }
    if (urilen <= 0 || (size_t)urilen >= idlen || strlen(id) != (size_t)urilen) {
        snprintf(why, whylen, "URI SAN is empty, too long or contains NUL");
        return false;
    }
    /* spiffe://<trust-domain>/<path>; the scheme is case-insensitive, nothing else. */
    if (strncasecmp(id, "spiffe://", 9) != 0) {
        snprintf(why, whylen, "URI SAN %.200s is not a spiffe:// URI", id);
        return false;
    }
    const char *td = id + 9;
    const char *slash = strchr(td, '/');
    if (!slash || slash == td || slash[1] == '\0' || strpbrk(id, "?#")) {
        snprintf(why, whylen, "malformed SPIFFE ID %.200s", id);
        return false;
    }
    if (g_cfg.mode == MODE_SERVER) {
        size_t tdlen = (size_t)(slash - td);
        if (tdlen != strlen(g_cfg.trust_domain) || memcmp(td, g_cfg.trust_domain, tdlen) != 0) {
            snprintf(why, whylen, "peer %.200s is not in trust domain %s", id, g_cfg.trust_domain);
            return false;
        }
    } else if (strcmp(id, g_cfg.expect_identity) != 0) {
        snprintf(why, whylen, "server identity %.200s is not the expected %s", id, g_cfg.expect_identity);
        return false;
    }
    return true;
}

/* Chain verification against --ca is OpenSSL's; we add the SPIFFE check on the leaf
 * (depth 0) so that a wrong identity fails the handshake itself, with an alert. */
static int verify_cb(int ok, X509_STORE_CTX *xs) {
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct conn *c = ssl ? SSL_get_app_data(ssl) : NULL;
    int depth = X509_STORE_CTX_get_error_depth(xs);
    if (!ok) {
        if (c && !c->fail_reason[0])
            snprintf(c->fail_reason, sizeof c->fail_reason, "peer certificate rejected at depth %d: %s", depth,
                     X509_verify_cert_error_string(X509_STORE_CTX_get_error(xs)));
        return 0;
    }
    if (depth != 0 || !c) return 1;
    char why[256];
    if (!spiffe_check(X509_STORE_CTX_get_current_cert(xs), c->identity, sizeof c->identity, why, sizeof why)) {
        c->identity[0] = '\0';
        snprintf(c->fail_reason, sizeof c->fail_reason, "%s", why);
        X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    return 1;
}

/* Server: a TLS 1.3 ClientHello without ALPN is refused outright (no_application_protocol).
 * Older clients (no supported_versions) are left to OpenSSL's version check. */
static int client_hello_cb(SSL *ssl, int *alert, void *arg) {
    (void)arg;
    const unsigned char *ext;
    size_t extlen;
    if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_supported_versions, &ext, &extlen)) return SSL_CLIENT_HELLO_SUCCESS;
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &ext, &extlen))
        return SSL_CLIENT_HELLO_SUCCESS;
    struct conn *c = SSL_get_app_data(ssl);
    if (c) snprintf(c->fail_reason, sizeof c->fail_reason, "client offered no ALPN (h2 is required)");
    *alert = SSL_AD_NO_APPLICATION_PROTOCOL;
    return SSL_CLIENT_HELLO_ERROR;
}

/* Server: select "h2" or fail the handshake. */
static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                          unsigned int inlen, void *arg) {
    (void)arg;
    for (unsigned i = 0; i < inlen;) {
        unsigned n = in[i];
        if (i + 1 + n > inlen) break;
        if (n == 2 && memcmp(in + i + 1, "h2", 2) == 0) {
            *out = in + i + 1;
            *outlen = 2;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    struct conn *c = SSL_get_app_data(ssl);
    if (c) snprintf(c->fail_reason, sizeof c->fail_reason, "client did not offer ALPN h2");
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* Our BIO: reads come straight from the socket; writes (whole TLS records) are
 * appended to c->cout, which hbone_conn.c sends in large chunks. "Retry" when cout
 * is full, so SSL_write reports SSL_ERROR_WANT_WRITE and is repeated after a send. */
static BIO_METHOD *g_bio_method;

static int bio_write(BIO *b, const char *data, int len) {
    struct conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (c->cout_off && c->cout_off + c->cout_len + (size_t)len > COUT_CAP) {
        memmove(c->cout, c->cout + c->cout_off, c->cout_len);
        c->cout_off = 0;
    }
    size_t room = COUT_CAP - c->cout_off - c->cout_len;
    if (room == 0) {
        BIO_set_retry_write(b);
        return -1;
    }
    size_t n = (size_t)len < room ? (size_t)len : room;
    memcpy(c->cout + c->cout_off + c->cout_len, data, n);
    c->cout_len += n;
    return (int)n;
}

static int bio_read(BIO *b, char *out, int len) {
    struct conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n;
    do n = read(c->fd, out, (size_t)len);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) BIO_set_retry_read(b);
    return (int)n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
    (void)b, (void)num, (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b) {
    BIO_set_init(b, 1);
    return 1;
}

static void die_tls(const char *what) {
    fprintf(stderr, "hbone-peer: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static SSL_CTX *tls_context(void) {
    bool server = g_cfg.mode == MODE_SERVER;
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!ctx) die_tls("SSL_CTX_new failed");
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) || !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION))
        die_tls("cannot restrict to TLS 1.3");
    /* ztunnel's two suites in rustls' order by default; --ciphersuites narrows or reorders
     * them (the tunnel benchmark runs every configuration on the suite ours negotiates). */
    if (!SSL_CTX_set_ciphersuites(ctx, g_cfg.ciphersuites ? g_cfg.ciphersuites
                                                          : "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256"))
        die_tls("cannot set TLS 1.3 cipher suites");
    if (!SSL_CTX_set1_groups_list(ctx, "X25519:P-256")) die_tls("cannot set key exchange groups");
    /* No resumption: no tickets (TLS 1.3 sends none with num_tickets 0), no cache. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    /* Non-blocking writes: partial writes allowed, retries may come from another address. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* Read ahead: pull several records per read(2). (Larger buffers measured slower:
     * OpenSSL 3.0 moves the unread tail per record.) */
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_default_read_buffer_len(ctx, 64 * 1024);

    if (SSL_CTX_use_certificate_chain_file(ctx, g_cfg.cert) != 1) die_tls("cannot load --cert chain");
    if (SSL_CTX_use_PrivateKey_file(ctx, g_cfg.key, SSL_FILETYPE_PEM) != 1) die_tls("cannot load --key");
    if (SSL_CTX_check_private_key(ctx) != 1) die_tls("--key does not match --cert");
    if (SSL_CTX_load_verify_locations(ctx, g_cfg.ca, NULL) != 1) die_tls("cannot load --ca");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), verify_cb);
    SSL_CTX_set_verify_depth(ctx, 8);
    if (server) {
        SSL_CTX_set_client_hello_cb(ctx, client_hello_cb, NULL);
        SSL_CTX_set_alpn_select_cb(ctx, alpn_select_cb, NULL);
    } else if (SSL_CTX_set_alpn_protos(ctx, ALPN_H2, sizeof ALPN_H2) != 0) {
        die_tls("cannot set ALPN");
    }
    g_bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "hbone-socket");
    if (!g_bio_method || !BIO_meth_set_write(g_bio_method, bio_write) || !BIO_meth_set_read(g_bio_method, bio_read) ||
        !BIO_meth_set_ctrl(g_bio_method, bio_ctrl) || !BIO_meth_set_create(g_bio_method, bio_create))
        die_tls("cannot create the socket BIO");
    return ctx;
}

/* A new TLS object for connection `c`. The client sends no SNI. */
SSL *tls_new(struct conn *c) {
    SSL *ssl = SSL_new(g_ssl_ctx);
    if (!ssl) return NULL;
    SSL_set_app_data(ssl, c);
    BIO *bio = BIO_new(g_bio_method);
    if (!bio) {
        SSL_free(ssl);
        return NULL;
    }
    BIO_set_data(bio, c);
    SSL_set_bio(ssl, bio, bio); /* one reference, owned by ssl */
    if (g_cfg.mode == MODE_SERVER)
        SSL_set_accept_state(ssl);
    else
        SSL_set_connect_state(ssl);
    return ssl;
}

/* After SSL_do_handshake succeeded: belt-and-braces checks of what the callbacks did. */
bool tls_after_handshake(struct conn *c) {
    const unsigned char *alpn = NULL;
    unsigned alpnlen = 0;
    SSL_get0_alpn_selected(c->ssl, &alpn, &alpnlen);
    if (alpnlen != 2 || memcmp(alpn, "h2", 2) != 0) {
        snprintf(c->fail_reason, sizeof c->fail_reason, "ALPN h2 was not negotiated");
        return false;
    }
    if (SSL_version(c->ssl) != TLS1_3_VERSION) {
        snprintf(c->fail_reason, sizeof c->fail_reason, "not TLS 1.3");
        return false;
    }
    if (!SSL_get0_peer_certificate(c->ssl) || SSL_get_verify_result(c->ssl) != X509_V_OK || !c->identity[0]) {
        snprintf(c->fail_reason, sizeof c->fail_reason, "peer identity not verified");
        return false;
    }
    return true;
}

/* A readable reason for a failed SSL_* call. Clears OpenSSL's error queue. */
void tls_error_reason(struct conn *c, int ssl_error, int ret, char *out, size_t outlen) {
    unsigned long e = ERR_peek_error();
    if (c->fail_reason[0]) {
        snprintf(out, outlen, "%s", c->fail_reason);
    } else if (e) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        snprintf(out, outlen, "%s", buf);
    } else if (ssl_error == SSL_ERROR_SYSCALL) {
        snprintf(out, outlen, "%s", ret == 0 || errno == 0 ? "connection closed by peer" : strerror(errno));
    } else if (ssl_error == SSL_ERROR_ZERO_RETURN) {
        snprintf(out, outlen, "peer sent close_notify");
    } else {
        snprintf(out, outlen, "SSL error %d", ssl_error);
    }
    ERR_clear_error();
}

/* ================================================================================ */
/* listeners, signals, event loop                                                     */
/* ================================================================================ */

struct listener {
    struct obj obj;
    int fd;
    bool paused;
    uint64_t resume_ms;
};
static struct listener g_listener = {.obj = {OBJ_LISTENER}, .fd = -1};
static struct obj g_signal_obj = {OBJ_SIGNAL};

static void listener_set(bool enabled) {
    struct epoll_event ev = {.events = enabled ? EPOLLIN : 0, .data.ptr = &g_listener};
    epoll_ctl(g_epfd, EPOLL_CTL_MOD, g_listener.fd, &ev);
    g_listener.paused = !enabled;
}

static void on_accept(void) {
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(g_listener.fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
            /* Out of descriptors or memory: stop accepting for a moment (the listener is
             * level-triggered and would spin otherwise). */
            WARN("accept: %s (pausing the listener for 100 ms)", strerror(errno));
            listener_set(false);
            g_listener.resume_ms = now_ms() + 100;
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (g_cfg.mode == MODE_SERVER)
            conn_accepted(fd, (struct sockaddr *)&ss);
        else
            tunnel_accepted(fd, (struct sockaddr *)&ss);
    }
}

static int open_listener(void) {
    const struct endpoint *ep = &g_cfg.listen;
    int fd = socket(ep->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)&ep->addr, ep->len) != 0 || listen(fd, 1024) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static void usage(void) {
    fprintf(stderr,
            "usage:\n"
            "  hbone-peer server --listen HOST:PORT --cert CHAIN.pem --key KEY.pem --ca ROOT.pem\n"
            "                    --trust-domain TD [--upstream HOST:PORT] [--ciphersuites LIST] [--quiet]\n"
            "  hbone-peer client --listen HOST:PORT --connect HOST:PORT --authority IP:PORT\n"
            "                    --cert CHAIN.pem --key KEY.pem --ca ROOT.pem\n"
            "                    --expect-identity spiffe://TD/ns/NS/sa/SA [--ciphersuites LIST] [--quiet]\n"
            "  LIST: TLS 1.3 suites in OpenSSL's syntax, AES-GCM only; default\n"
            "  TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256 (ztunnel's)\n");
    exit(2);
}

/* True if `list` names only HBONE's suites (ztunnel never offers ChaCha20). */
static bool hbone_suites(const char *list) {
    char copy[256];
    if (!list[0] || strlen(list) >= sizeof copy) return false;
    strcpy(copy, list);
    for (char *save = NULL, *name = strtok_r(copy, ":", &save); name; name = strtok_r(NULL, ":", &save))
        if (strcmp(name, "TLS_AES_256_GCM_SHA384") != 0 && strcmp(name, "TLS_AES_128_GCM_SHA256") != 0) return false;
    return true;
}

static void parse_args(int argc, char **argv) {
    if (argc < 2) usage();
    if (strcmp(argv[1], "server") == 0)
        g_cfg.mode = MODE_SERVER;
    else if (strcmp(argv[1], "client") == 0)
        g_cfg.mode = MODE_CLIENT;
    else
        usage();
    const char *listen_s = NULL, *connect_s = NULL, *upstream_s = NULL;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--quiet") == 0) {
            g_cfg.quiet = true;
            continue;
        }
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (strcmp(a, "--listen") == 0) listen_s = v;
        else if (strcmp(a, "--connect") == 0) connect_s = v;
        else if (strcmp(a, "--upstream") == 0) upstream_s = v;
        else if (strcmp(a, "--authority") == 0) g_cfg.authority = v;
        else if (strcmp(a, "--cert") == 0) g_cfg.cert = v;
        else if (strcmp(a, "--key") == 0) g_cfg.key = v;
        else if (strcmp(a, "--ca") == 0) g_cfg.ca = v;
        else if (strcmp(a, "--trust-domain") == 0) g_cfg.trust_domain = v;
        else if (strcmp(a, "--expect-identity") == 0) g_cfg.expect_identity = v;
        else if (strcmp(a, "--ciphersuites") == 0) g_cfg.ciphersuites = v;
        else {
            fprintf(stderr, "hbone-peer: unknown option %s\n", a);
            usage();
        }
    }
    if (!listen_s || !g_cfg.cert || !g_cfg.key || !g_cfg.ca) usage();
    if (g_cfg.ciphersuites && !hbone_suites(g_cfg.ciphersuites)) {
        fprintf(stderr, "hbone-peer: --ciphersuites takes TLS_AES_256_GCM_SHA384 and/or TLS_AES_128_GCM_SHA256\n");
        usage();
    }
    if (!resolve_endpoint(listen_s, true, &g_cfg.listen)) usage();
    if (g_cfg.mode == MODE_SERVER) {
        if (!g_cfg.trust_domain || !g_cfg.trust_domain[0]) usage();
        if (upstream_s) {
            if (!resolve_endpoint(upstream_s, false, &g_cfg.upstream)) usage();
            g_cfg.has_upstream = true;
        }
    } else {
        if (!connect_s || !g_cfg.authority || !g_cfg.expect_identity) usage();
        if (!resolve_endpoint(connect_s, false, &g_cfg.connect)) usage();
        if (strlen(g_cfg.authority) >= 256) usage();
    }
}

int main(int argc, char **argv) {
    g_start_ms = now_ms();
    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);

    g_ssl_ctx = tls_context();
    if (!h2_init()) {
        fprintf(stderr, "hbone-peer: nghttp2 initialisation failed\n");
        return 1;
    }

    g_epfd = epoll_create1(EPOLL_CLOEXEC);
    if (g_epfd < 0) {
        perror("hbone-peer: epoll_create1");
        return 1;
    }
    /* SIGTERM/SIGINT arrive as readable events on a signalfd: no async handlers. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    struct epoll_event sev = {.events = EPOLLIN, .data.ptr = &g_signal_obj};
    if (sfd < 0 || epoll_ctl(g_epfd, EPOLL_CTL_ADD, sfd, &sev) != 0) {
        perror("hbone-peer: signalfd");
        return 1;
    }

    g_listener.fd = open_listener();
    if (g_listener.fd < 0) {
        fprintf(stderr, "hbone-peer: cannot listen on %s: %s\n", g_cfg.listen.text, strerror(errno));
        return 1;
    }
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &g_listener};
    epoll_ctl(g_epfd, EPOLL_CTL_ADD, g_listener.fd, &lev);
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    getsockname(g_listener.fd, (struct sockaddr *)&bound, &blen);
    unsigned port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                                : ntohs(((struct sockaddr_in *)&bound)->sin_port);
    printf("listening %u\n", port);
    fflush(stdout);
    if (g_cfg.mode == MODE_SERVER)
        INFO("HBONE server on %s (trust domain %s, upstream %s)", g_cfg.listen.text, g_cfg.trust_domain,
             g_cfg.has_upstream ? g_cfg.upstream.text : ":authority");
    else
        INFO("HBONE client on %s -> %s (%s), CONNECT %s", g_cfg.listen.text, g_cfg.connect.text,
             g_cfg.expect_identity, g_cfg.authority);

    if (g_cfg.mode == MODE_CLIENT) client_warmup(); /* open the shared connection now */

    struct epoll_event events[256];
    uint64_t next_timer = now_ms() + 1000;
    bool running = true;
    while (running) {
        uint64_t now = now_ms();
        int timeout = next_timer > now ? (int)(next_timer - now) : 0;
        if (g_listener.paused) {
            int t = g_listener.resume_ms > now ? (int)(g_listener.resume_ms - now) : 0;
            if (t < timeout) timeout = t;
        }
        int n = epoll_wait(g_epfd, events, 256, timeout);
        if (n < 0 && errno != EINTR) {
            perror("hbone-peer: epoll_wait");
            break;
        }
        for (int i = 0; i < n; i++) {
            struct obj *o = events[i].data.ptr;
            switch (o->kind) {
            case OBJ_LISTENER: on_accept(); break;
            case OBJ_SIGNAL: running = false; break;
            case OBJ_CONN: conn_on_event((struct conn *)o, events[i].events); break;
            case OBJ_TUNNEL: tunnel_on_event((struct tunnel *)o, events[i].events); break;
            }
        }
        run_pending(); /* aborts, client attaches, HTTP/2 output */
        now = now_ms();
        if (g_listener.paused && now >= g_listener.resume_ms) listener_set(true);
        if (now >= next_timer) {
            check_timers(now);
            run_pending();
            next_timer = now + 1000;
        }
        free_graveyard();
    }

    INFO("signal received, shutting down");
    close_everything();
    close(g_listener.fd);
    close(sfd);
    close(g_epfd);
    h2_shutdown();
    SSL_CTX_free(g_ssl_ctx);
    BIO_meth_free(g_bio_method);
    return 0;
}
