// meshload: the load generator and echo server of the mesh benchmark
// (Benchmarks/e2e/mesh_bench.sh). Plain blocking sockets and epoll, no dependency on the
// package, so every configuration (no mesh, our mesh, a TLS tunnel, a relay pair) is driven
// by the same code.
//
//   meshload serve PORT                      echo server on every address (epoll, one thread)
//   meshload rr HOST PORT RATE SECONDS OUT   one connection: 1 KiB request, 1 KiB echo, RATE
//                                            requests per second (0: back to back); every
//                                            latency (ns, send to last byte back) to OUT
//   meshload conn HOST PORT SECONDS THREADS  new connections: connect, 100 B each way, close;
//                                            THREADS loops in parallel
//   meshload hold HOST PORT N                N open connections, each checked with one byte
//                                            each way; prints "held N", holds until stdin ends
//
// Build: cc -O2 -pthread -o meshload meshload.c
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void raise_nofile(void) {
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        setrlimit(RLIMIT_NOFILE, &limit);
    }
}

static struct sockaddr_in address(const char *host, const char *port) {
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)atoi(port));
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "meshload: not an IPv4 address: %s\n", host);
        exit(2);
    }
    return sa;
}

/// A connected socket with TCP_NODELAY, or -1 (errno set).
static int dial(const struct sockaddr_in *sa) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

static int write_all(int fd, const char *buffer, size_t count) {
    while (count > 0) {
        ssize_t n = write(fd, buffer, count);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        buffer += n;
        count -= (size_t)n;
    }
    return 0;
}

/// Reads exactly `count` bytes; -1 on error or early EOF.
static int read_all(int fd, char *buffer, size_t count) {
    while (count > 0) {
        ssize_t n = read(fd, buffer, count);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (n == 0) errno = ECONNRESET;
            return -1;
        }
        buffer += n;
        count -= (size_t)n;
    }
    return 0;
}

// MARK: serve

struct pending {
    char *data;
    size_t length;
};

static int serve(const char *port) {
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listener < 0) die("socket");
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = address("0.0.0.0", port);
    if (bind(listener, (struct sockaddr *)&sa, sizeof sa) != 0) die("bind");
    if (listen(listener, 4096) != 0) die("listen");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = listener};
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
    size_t slots = 65536;
    struct pending *waiting = calloc(slots, sizeof *waiting);
    static char buffer[256 * 1024];
    printf("listening %s\n", port);
    fflush(stdout);
    for (;;) {
        struct epoll_event events[256];
        int n = epoll_wait(ep, events, 256, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == listener) {
                for (;;) {
                    int c = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0) break;
                    if ((size_t)c >= slots) { close(c); continue; }
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            struct pending *p = &waiting[fd];
            int closing = 0;
            if (p->length > 0) {  // writable again: finish the echo, then read again
                ssize_t w = write(fd, p->data, p->length);
                if (w < 0 && errno != EAGAIN) closing = 1;
                if (w > 0) {
                    memmove(p->data, p->data + w, p->length - (size_t)w);
                    p->length -= (size_t)w;
                }
                if (!closing && p->length == 0) {
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = fd};
                    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &cev);
                }
            } else {
                ssize_t r = read(fd, buffer, sizeof buffer);
                if (r == 0 || (r < 0 && errno != EAGAIN)) {
                    closing = 1;
                } else if (r > 0) {
                    ssize_t w = write(fd, buffer, (size_t)r);
                    if (w < 0 && errno != EAGAIN) closing = 1;
                    if (w < 0) w = 0;
                    if (!closing && w < r) {  // keep the rest, stop reading until it is out
                        p->data = realloc(p->data, (size_t)(r - w));
                        memcpy(p->data, buffer + w, (size_t)(r - w));
                        p->length = (size_t)(r - w);
                        struct epoll_event cev = {.events = EPOLLOUT, .data.fd = fd};
                        epoll_ctl(ep, EPOLL_CTL_MOD, fd, &cev);
                    }
                }
            }
            if (closing) {
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                close(fd);
                free(p->data);
                p->data = NULL;
                p->length = 0;
            }
        }
    }
    return 0;
}

// MARK: rr

static int request_response(const char *host, const char *port, double rate, double seconds, const char *out) {
    struct sockaddr_in sa = address(host, port);
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);  // sleep until the scheduled instant, not 50 µs later
    int fd = dial(&sa);
    if (fd < 0) die("connect");
    char request[1024], response[1024];
    memset(request, 'x', sizeof request);
    // One warm-up exchange, not recorded (the tunnel is set up by it).
    if (write_all(fd, request, sizeof request) != 0 || read_all(fd, response, sizeof response) != 0) die("warm-up");
    size_t capacity = rate > 0 ? (size_t)(rate * seconds) + 16 : 1 << 20, count = 0, failures = 0;
    uint64_t *samples = malloc(capacity * sizeof *samples);
    uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9);
    uint64_t period = rate > 0 ? (uint64_t)(1e9 / rate) : 0;
    for (uint64_t i = 0;; i++) {
        if (period) {
            uint64_t at = start + i * period;
            if (at >= end) break;
            struct timespec ts = {.tv_sec = (time_t)(at / 1000000000ull), .tv_nsec = (long)(at % 1000000000ull)};
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
        } else if (now_ns() >= end) {
            break;
        }
        uint64_t t0 = now_ns();
        if (write_all(fd, request, sizeof request) != 0 || read_all(fd, response, sizeof response) != 0) {
            failures++;
            break;
        }
        uint64_t t1 = now_ns();
        if (count == capacity) {
            capacity *= 2;
            samples = realloc(samples, capacity * sizeof *samples);
        }
        samples[count++] = t1 - t0;
    }
    double elapsed = (double)(now_ns() - start) / 1e9;
    close(fd);
    FILE *file = fopen(out, "w");
    if (!file) die(out);
    for (size_t i = 0; i < count; i++) fprintf(file, "%llu\n", (unsigned long long)samples[i]);
    fclose(file);
    printf("requests %zu failures %zu seconds %.3f rate %.1f\n", count, failures, elapsed, (double)count / elapsed);
    return failures ? 1 : 0;
}

// MARK: conn

struct conn_job {
    struct sockaddr_in sa;
    uint64_t end;
    uint64_t done, failed;
    int first_errno;
};

static void *conn_loop(void *argument) {
    struct conn_job *job = argument;
    char payload[100], echo[100];
    memset(payload, 'c', sizeof payload);
    while (now_ns() < job->end) {
        int fd = dial(&job->sa);
        if (fd >= 0 && write_all(fd, payload, sizeof payload) == 0 && read_all(fd, echo, sizeof echo) == 0) {
            job->done++;
        } else {
            if (!job->first_errno) job->first_errno = errno;
            job->failed++;
        }
        if (fd >= 0) close(fd);
    }
    return NULL;
}

static int connections(const char *host, const char *port, double seconds, int threads) {
    if (threads < 1 || threads > 256) threads = 1;
    struct conn_job jobs[256];
    pthread_t ids[256];
    uint64_t start = now_ns();
    for (int i = 0; i < threads; i++) {
        jobs[i] = (struct conn_job){.sa = address(host, port), .end = start + (uint64_t)(seconds * 1e9)};
        pthread_create(&ids[i], NULL, conn_loop, &jobs[i]);
    }
    uint64_t done = 0, failed = 0;
    int first_errno = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(ids[i], NULL);
        done += jobs[i].done;
        failed += jobs[i].failed;
        if (!first_errno) first_errno = jobs[i].first_errno;
    }
    double elapsed = (double)(now_ns() - start) / 1e9;
    printf("connections %llu failures %llu seconds %.3f rate %.1f", (unsigned long long)done, (unsigned long long)failed,
           elapsed, (double)done / elapsed);
    if (failed) printf(" first_error %s", strerror(first_errno));
    printf("\n");
    return 0;
}

// MARK: hold

static int hold(const char *host, const char *port, int n) {
    struct sockaddr_in sa = address(host, port);
    int *fds = calloc((size_t)n, sizeof *fds);
    for (int i = 0; i < n; i++) {
        char byte = 'h';
        fds[i] = dial(&sa);
        if (fds[i] < 0 || write_all(fds[i], &byte, 1) != 0 || read_all(fds[i], &byte, 1) != 0) {
            fprintf(stderr, "meshload: connection %d of %d: %s\n", i + 1, n, strerror(errno));
            return 1;
        }
    }
    printf("held %d\n", n);
    fflush(stdout);
    char sink[64];
    while (read(0, sink, sizeof sink) > 0) {}
    for (int i = 0; i < n; i++) close(fds[i]);
    return 0;
}

int main(int argc, char **argv) {
    raise_nofile();
    if (argc == 3 && strcmp(argv[1], "serve") == 0) return serve(argv[2]);
    if (argc == 7 && strcmp(argv[1], "rr") == 0) return request_response(argv[2], argv[3], atof(argv[4]), atof(argv[5]), argv[6]);
    if (argc == 6 && strcmp(argv[1], "conn") == 0) return connections(argv[2], argv[3], atof(argv[4]), atoi(argv[5]));
    if (argc == 5 && strcmp(argv[1], "hold") == 0) return hold(argv[2], argv[3], atoi(argv[4]));
    fprintf(stderr,
            "usage: meshload serve PORT | rr HOST PORT RATE SECONDS OUT | conn HOST PORT SECONDS THREADS | hold HOST PORT N\n");
    return 2;
}
