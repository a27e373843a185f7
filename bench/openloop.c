/*
 * openloop: an open-loop HTTP/1.1 load generator for bench.loadgen (which compiles and runs it).
 *
 * Why C: an overloaded service must be offered more requests than it can
 * serve, on schedule, whatever it answers. On the two-core machines this
 * benchmark runs on, a Python (asyncio) generator on the other core sends
 * about 3,000 requests/s, the service's own capacity, so it could not offer
 * 1.5x or 3x of it. wrk is closed loop (each connection waits for its
 * answer), and no packaged open-loop tool (wrk2, vegeta) is available. This
 * one is a single epoll loop and sends tens of thousands of requests/s.
 *
 * Open loop: request i is due at start + i / rate. It is written to an idle
 * keep-alive connection, or waits (FIFO) for one while a new connection is
 * opened (at most --connections). Its latency is counted from when it was
 * *due*, so a generator or server that falls behind shows as latency, not as
 * a lower rate (no coordinated omission). Closed loop (--closed): every
 * connection resends as soon as it is answered, like wrk.
 *
 * Bounded: rate x duration requests at most, --connections connections, a
 * request unanswered after --timeout seconds (or still outstanding --drain
 * seconds after the last one was due) is counted as timed out. Loopback only.
 *
 * Answers are counted by status; latencies are kept per class: "ok" (2xx),
 * "shed" (503), "other". Socket errors (refused, reset, closed mid-answer,
 * an answer it cannot parse) are counted apart. Answers must carry
 * Content-Length (or end with the connection). One JSON object on stdout.
 *
 *   openloop --port 8000 --path /predict --bodies FILE --rate 9000 --duration 10
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNECTIONS 4096
#define LATE_SECONDS 0.010 /* a request sent this much after it was due counts as a late send */

enum { OK, SHED, OTHER, CLASSES };
static const char *class_names[CLASSES] = {"ok", "shed", "other"};
/* Why a connection failed, counted apart so that a failure can be told from another. */
enum { E_CONNECT, E_WRITE, E_UNASKED, E_UNFRAMED, E_READ, E_CLOSED, E_REUSED_CLOSED, ERROR_KINDS };
static const char *error_names[ERROR_KINDS] = {
    "connect",       /* socket() or connect() failed, or the connection was refused or reset before use */
    "write",         /* writing the request failed (reset, broken pipe) */
    "unasked",       /* bytes arrived on a connection with no request out, or not an HTTP answer */
    "unframed",      /* an answer without Content-Length or Connection: close (chunked: unsupported) */
    "read",          /* reading failed (reset) with a request out */
    "closed",        /* the server closed the connection with its first request out, or mid-answer */
    "reused_closed", /* the server closed a kept-alive connection as its next request went out (nothing read) */
};
static long error_kinds[ERROR_KINDS];

typedef struct {
    int fd;
    int state; /* 0 closed, 1 connecting, 2 idle, 3 busy */
    double due; /* when the outstanding request was due (latency origin) */
    double sent_at;
    const char *out; /* unsent part of the request */
    size_t out_left;
    char *in; /* received, not yet parsed */
    size_t in_len, in_cap;
    long answers; /* answers read on this connection so far */
} conn_t;

typedef struct {
    double *v;
    size_t n, cap;
} samples_t;

/* settings */
static struct sockaddr_in addr;
static char **requests; /* prebuilt request bytes, in rotation */
static size_t *request_len;
static size_t n_requests, next_request;
static double rate, duration = 10, drain = 5, timeout_s = 5;
static int max_conns = 1024, warm = -1, closed_loop;

/* state and counts */
static int epfd;
static conn_t conns[MAX_CONNECTIONS];
static int n_open; /* connecting, idle or busy */
static int idle[MAX_CONNECTIONS], n_idle;
static double *pending; /* due times of requests waiting for a connection (ring) */
static size_t pending_cap, pending_head, pending_len;
static long statuses[600], sent, socket_errors, timed_out, late_sends, unsent, idle_timeouts;
static samples_t lat[CLASSES];
static double last_answer, stop_at, next_expiry;
static long outstanding; /* sent, not yet answered, failed or expired */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *xrealloc(void *p, size_t n) {
    p = realloc(p, n);
    if (!p) {
        fputs("openloop: out of memory\n", stderr);
        exit(2);
    }
    return p;
}

static void add_sample(samples_t *s, double v) {
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4096;
        s->v = xrealloc(s->v, s->cap * sizeof(double));
    }
    s->v[s->n++] = v;
}

static void watch(conn_t *c, int op) {
    struct epoll_event ev = {.events = EPOLLIN | (c->out_left || c->state == 1 ? EPOLLOUT : 0)};
    ev.data.ptr = c;
    epoll_ctl(epfd, op, c->fd, &ev);
}

static void open_connection(void);

/* Close a connection; if requests are waiting, open another in its place (not after a failed connect). */
static void drop(conn_t *c) {
    int was_connected = c->state >= 2;
    close(c->fd); /* also removes it from the epoll set */
    if (c->state == 2)
        for (int i = 0; i < n_idle; i++)
            if (idle[i] == c - conns) {
                idle[i] = idle[--n_idle];
                break;
            }
    c->state = 0;
    c->in_len = c->out_left = 0;
    n_open--;
    if (was_connected && pending_len && n_open < max_conns) open_connection();
}

/* A connection failed (refused, reset, closed or garbled mid-answer): one error, its request lost. */
static void fail(conn_t *c, int kind) {
    socket_errors++;
    error_kinds[kind]++;
    if (c->state == 3) outstanding--;
    drop(c);
}

static void flush(conn_t *c) {
    while (c->out_left) {
        ssize_t n = write(c->fd, c->out, c->out_left);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            fail(c, E_WRITE);
            return;
        }
        c->out += n;
        c->out_left -= (size_t)n;
    }
    watch(c, EPOLL_CTL_MOD);
}

static void send_request(conn_t *c, double due, double t) {
    if (t - due > LATE_SECONDS) late_sends++;
    c->state = 3;
    c->due = due;
    c->sent_at = t;
    c->out = requests[next_request];
    c->out_left = request_len[next_request];
    next_request = (next_request + 1) % n_requests;
    sent++;
    outstanding++;
    flush(c);
}

static void open_connection(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        socket_errors++;
        error_kinds[E_CONNECT]++;
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int slot = 0;
    while (conns[slot].state) slot++; /* n_open < max_conns, so a free slot exists */
    conn_t *c = &conns[slot];
    c->fd = fd;
    c->state = 1;
    c->answers = 0;
    n_open++;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
        fail(c, E_CONNECT);
        return;
    }
    watch(c, EPOLL_CTL_ADD);
}

/* A connection is free: give it the oldest waiting request, a new one (closed loop), or park it. */
static void ready(conn_t *c, double t) {
    c->state = 2;
    if (closed_loop) {
        if (t < stop_at) {
            send_request(c, t, t);
            return;
        }
    } else if (pending_len) {
        double due = pending[pending_head];
        pending_head = (pending_head + 1) % pending_cap;
        pending_len--;
        send_request(c, due, t);
        return;
    }
    idle[n_idle++] = (int)(c - conns);
}

/* Request due now: onto an idle connection, else in line (and a new connection if allowed). */
static void offer(double due, double t) {
    if (n_idle) {
        send_request(&conns[idle[--n_idle]], due, t);
        return;
    }
    pending[(pending_head + pending_len) % pending_cap] = due;
    pending_len++;
    if (n_open < max_conns) open_connection();
}

/* Case-insensitive search for a header line's name within the head (which ends "\r\n\r\n"). */
static const char *header(const char *head, size_t len, const char *name) {
    size_t n = strlen(name);
    for (size_t i = 0; i + n < len; i++)
        if ((i == 0 || head[i - 1] == '\n') && strncasecmp(head + i, name, n) == 0) return head + i + n;
    return NULL;
}

/* Parse every complete answer in the buffer; returns -1 if the connection was dropped. */
static int parse(conn_t *c, int eof) {
    for (;;) {
        char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
        if (!end) return 0;
        size_t head_len = (size_t)(end - c->in) + 4;
        if (c->state == 2 && head_len >= 12 && strncmp(c->in, "HTTP/1.", 7) == 0 && atoi(c->in + 9) == 408) {
            /* The server timed out a connection with no request on it (RFC 9112 9.5: it may say so with a
               408 before closing): the connection is gone, no request was lost. */
            idle_timeouts++;
            drop(c);
            return -1;
        }
        if (c->state != 3 || head_len < 12 || strncmp(c->in, "HTTP/1.", 7) != 0) {
            fail(c, E_UNASKED); /* an answer nobody asked for, or not HTTP */
            return -1;
        }
        int status = atoi(c->in + 9);
        const char *cl = header(c->in, head_len, "content-length:");
        int close_after = header(c->in, head_len, "connection: close") != NULL;
        size_t body;
        if (cl) body = strtoul(cl, NULL, 10);
        else if (close_after && eof) body = c->in_len - head_len; /* delimited by the end of the connection */
        else if (close_after) return 0;
        else {
            fail(c, E_UNFRAMED); /* chunked or unframed: not supported */
            return -1;
        }
        if (c->in_len < head_len + body) return 0;
        double t = now();
        if (status < 100 || status > 599) status = 599;
        statuses[status]++;
        outstanding--;
        add_sample(&lat[status / 100 == 2 ? OK : status == 503 ? SHED : OTHER], t - c->due);
        last_answer = t;
        c->answers++;
        memmove(c->in, c->in + head_len + body, c->in_len - head_len - body);
        c->in_len -= head_len + body;
        if (close_after) {
            drop(c);
            return -1;
        }
        ready(c, t);
    }
}

static void on_event(conn_t *c, unsigned events) {
    if (c->state == 1) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || (events & (EPOLLERR | EPOLLHUP))) {
            fail(c, E_CONNECT);
            return;
        }
        ready(c, now());
        if (c->state == 2) watch(c, EPOLL_CTL_MOD); /* stop asking for EPOLLOUT */
        return;
    }
    if (events & EPOLLOUT && c->out_left) flush(c);
    if (!c->state || !(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
    for (;;) {
        if (c->in_cap - c->in_len < 4096) {
            c->in_cap = c->in_cap ? c->in_cap * 2 : 16384;
            c->in = xrealloc(c->in, c->in_cap);
        }
        ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
        if (n > 0) {
            c->in_len += (size_t)n;
            if (parse(c, 0) < 0) return;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        /* end of connection (or an error): a whole answer may end with it */
        if (n == 0 && c->in_len && parse(c, 1) < 0) return;
        if (c->state == 3 || c->in_len)
            fail(c, n < 0 ? E_READ : c->state == 3 && !c->in_len && c->answers ? E_REUSED_CLOSED : E_CLOSED);
        else drop(c); /* an idle keep-alive connection the server closed */
        return;
    }
}

/* Requests outstanding longer than --timeout: counted, their connections closed (checked every 50 ms). */
static void expire(double t) {
    if (t < next_expiry) return;
    next_expiry = t + 0.05;
    for (int i = 0; i < MAX_CONNECTIONS; i++)
        if (conns[i].state == 3 && t - conns[i].sent_at > timeout_s) {
            timed_out++;
            outstanding--;
            drop(&conns[i]);
        }
}

static void poll_once(double until) {
    struct epoll_event events[256];
    double wait = until - now();
    int ms = wait <= 0 ? 0 : (int)(wait * 1000) + 1;
    int n = epoll_wait(epfd, events, 256, ms);
    for (int i = 0; i < n; i++) {
        conn_t *c = events[i].data.ptr;
        if (c->state) on_event(c, events[i].events);
    }
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void print_result(double elapsed) {
    printf("{\"mode\": \"%s\", \"target_rate\": %.3f, \"duration_s\": %.6f, \"sent\": %ld, \"statuses\": {",
           closed_loop ? "closed" : "open", closed_loop ? 0.0 : rate, elapsed, sent);
    const char *sep = "";
    for (int s = 0; s < 600; s++)
        if (statuses[s]) {
            printf("%s\"%d\": %ld", sep, s, statuses[s]);
            sep = ", ";
        }
    printf("}, \"socket_errors\": %ld, \"socket_error_kinds\": {", socket_errors);
    sep = "";
    for (int k = 0; k < ERROR_KINDS; k++)
        if (error_kinds[k]) {
            printf("%s\"%s\": %ld", sep, error_names[k], error_kinds[k]);
            sep = ", ";
        }
    printf("}, \"timed_out\": %ld, \"unsent\": %ld, \"late_sends\": %ld, \"idle_timeouts\": %ld, \"latency_ms\": {",
           timed_out, unsent, late_sends, idle_timeouts);
    sep = "";
    for (int k = 0; k < CLASSES; k++) {
        samples_t *s = &lat[k];
        if (!s->n) continue;
        qsort(s->v, s->n, sizeof(double), cmp);
#define AT(q) (s->v[(size_t)((q) * s->n) < s->n ? (size_t)((q) * s->n) : s->n - 1] * 1000)
        printf("%s\"%s\": {\"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, \"max\": %.3f, \"n\": %zu}", sep,
               class_names[k], AT(0.50), AT(0.90), AT(0.99), s->v[s->n - 1] * 1000, s->n);
        sep = ", ";
    }
    printf("}}\n");
}

static char extra_headers[4096]; /* --header lines, each ending "\r\n" */

static void load_bodies(const char *path, const char *host, int port, const char *target) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(2);
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
        if (!n) continue;
        char head[8192];
        int h = snprintf(head, sizeof head,
                         "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                         "%sContent-Length: %zd\r\n\r\n", target, host, port, extra_headers, n);
        requests = xrealloc(requests, (n_requests + 1) * sizeof *requests);
        request_len = xrealloc(request_len, (n_requests + 1) * sizeof *request_len);
        requests[n_requests] = xrealloc(NULL, (size_t)h + (size_t)n);
        memcpy(requests[n_requests], head, (size_t)h);
        memcpy(requests[n_requests] + h, line, (size_t)n);
        request_len[n_requests++] = (size_t)h + (size_t)n;
    }
    free(line);
    fclose(f);
    if (!n_requests) {
        fputs("openloop: no bodies\n", stderr);
        exit(2);
    }
}

static void usage(void) {
    fputs("usage: openloop --port N [--host 127.0.0.1] [--path /] --bodies FILE (--rate R | --closed)\n"
          "                [--duration S] [--connections N] [--warm N] [--timeout S] [--drain S]\n"
          "                [--header 'Name: value']...\n", stderr);
    exit(2);
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *path = "/", *bodies = NULL;
    int port = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--closed")) { closed_loop = 1; continue; }
        if (!v) usage();
        i++;
        if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--path")) path = v;
        else if (!strcmp(a, "--bodies")) bodies = v;
        else if (!strcmp(a, "--rate")) rate = atof(v);
        else if (!strcmp(a, "--duration")) duration = atof(v);
        else if (!strcmp(a, "--connections")) max_conns = atoi(v);
        else if (!strcmp(a, "--warm")) warm = atoi(v);
        else if (!strcmp(a, "--timeout")) timeout_s = atof(v);
        else if (!strcmp(a, "--drain")) drain = atof(v);
        else if (!strcmp(a, "--header") && strlen(extra_headers) + strlen(v) + 3 < sizeof extra_headers) {
            strcat(extra_headers, v);
            strcat(extra_headers, "\r\n");
        }
        else usage();
    }
    if (!bodies || port <= 0 || port > 65535 || duration <= 0 || (!closed_loop && rate <= 0)) usage();
    if (max_conns < 1 || max_conns > MAX_CONNECTIONS) {
        fprintf(stderr, "openloop: --connections must be 1..%d\n", MAX_CONNECTIONS);
        return 2;
    }
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1 || (ntohl(addr.sin_addr.s_addr) >> 24) != 127) {
        fputs("openloop: loopback (127.0.0.0/8) targets only\n", stderr);
        return 2;
    }
    load_bodies(bodies, host, port, path);
    long total = closed_loop ? 0 : (long)(rate * duration);
    pending_cap = closed_loop ? 1 : (size_t)total + 1;
    pending = xrealloc(NULL, pending_cap * sizeof(double));
    epfd = epoll_create1(EPOLL_CLOEXEC);

    /* Connections opened mid-run (SYN queue, retransmits) would be measured too: open some first. */
    if (warm < 0) warm = max_conns < 256 ? max_conns : 256;
    if (closed_loop) warm = max_conns;
    for (int i = 0; i < warm && i < max_conns; i++) open_connection();
    double warm_until = now() + 5;
    while (n_idle < n_open && now() < warm_until) poll_once(now() + 0.01);

    double start = now(), t;
    last_answer = start;
    if (closed_loop) {
        stop_at = start + duration;
        while (n_idle) ready(&conns[idle[--n_idle]], start);
        while ((t = now()) < stop_at) {
            poll_once(stop_at);
            expire(t);
        }
    } else {
        long issued = 0;
        while (issued < total) {
            t = now();
            while (issued < total && start + issued / rate <= t) offer(start + issued++ / rate, t);
            expire(t);
            poll_once(issued < total ? start + issued / rate : t);
        }
    }
    double last_due = now();
    while ((outstanding || pending_len) && (t = now()) < last_due + drain) {
        poll_once(t + 0.01);
        expire(t);
    }
    /* still unanswered: timed out; never sent (no connection came free): unsent */
    timed_out += outstanding;
    unsent = (long)pending_len;
    double elapsed = last_answer - start > duration ? last_answer - start : duration;
    print_result(elapsed);
    return 0;
}
