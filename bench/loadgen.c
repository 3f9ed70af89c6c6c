/*
 * loadgen: a single-threaded epoll load client for netkit's benchmarks.
 *
 *   gcc -O2 -o bench/.build/loadgen bench/loadgen.c -lssl -lcrypto -lz
 *
 * Modes (all verify every echoed byte against what was sent):
 *   rr         N connections; each sends a SIZE-byte message and waits for the
 *              whole SIZE-byte echo before sending the next. Reports round
 *              trips/s and latency percentiles.
 *   stream     N connections; each writes SIZE-byte chunks continuously while
 *              reading the echo back, with at most --inflight bytes sent but
 *              not yet echoed per connection (so the server's backpressure is
 *              exercised, not the kernel's buffers). Reports MB/s echoed
 *              (1 MB = 10^6 bytes).
 *   handshake  TLS only: N slots, each repeatedly connects, does a full TLS
 *              handshake (no session resumption), sends 1 byte, reads it back
 *              and closes. Reports handshakes/s.
 *   ws-rr      WebSocket (RFC 6455, written out here; wss with --tls): N
 *              connections each upgrade, then send a SIZE-byte message (text,
 *              or binary with --binary; masked as a client must) and wait for
 *              its echo before the next. Reports round trips/s and latency.
 *   ws-fanout  WebSocket broadcast: N subscriber connections and 1 publisher.
 *              The publisher sends messages carrying a sequence number and its
 *              send time (CLOCK_MONOTONIC ns), keeping at most --window
 *              messages outstanding (published but not yet received by every
 *              subscriber), so the server is kept busy without an unbounded
 *              queue. Reports deliveries/s (messages x subscribers), delivery
 *              latency percentiles, messages lost or out of order, and
 *              subscribers the server closed. The server is expected to send
 *              every message to every client, the publisher included (its own
 *              copies are read and dropped).
 *
 * --deflate (ws modes): every connection offers permessage-deflate (RFC 7692)
 * as browsers do ("permessage-deflate; client_max_window_bits"); where the
 * server agrees, its compressed messages (RSV1) are inflated with zlib, one
 * stream per connection (context takeover as agreed), and checked like plain
 * ones. With server_no_context_takeover a broadcast arrives as the same bytes
 * on every connection: an arrival identical to the expected message's already
 * inflated and checked bytes is taken as that message without inflating it
 * again. The load client sends uncompressed. --json makes the fan-out
 * payload's filler a JSON-like record list that differs per message (as a
 * feed does) instead of a fixed pattern. Reported: "wire_bytes" (frame
 * headers and payloads the subscribers received while measuring) and
 * "wire_bytes_per_delivery", "deflate_conns" (connections that agreed).
 *
 * Byte i of a connection's stream is ((i * 31) + 7) & 255, so a stale,
 * duplicated or reordered echo is a mismatch and checking costs one memcmp.
 * WebSocket payloads use the same bytes (binary) or printable ASCII derived
 * from them (text).
 *
 * Output: one JSON line on stdout. Errors go to stderr; the exit code is
 * non-zero on a usage error (2), on a failure to connect or on any mismatch
 * or connection lost during the run (1; the JSON line is still printed when
 * the run got that far).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

enum mode { M_RR, M_STREAM, M_HANDSHAKE, M_WS_RR, M_WS_FANOUT };
enum cstate { C_IDLE, C_CONNECTING, C_TLS_HS, C_WS_HS, C_READY, C_CLOSED, C_DEAD };
#define IS_WS (opt_mode == M_WS_RR || opt_mode == M_WS_FANOUT)

#define RBUF_SIZE (256 * 1024)
#define HIST_US 100000 /* 1 µs buckets up to 100 ms, */
#define HIST_MS 9900    /* then 1 ms buckets up to 10 s, */
#define HIST_N (HIST_US + HIST_MS + 1) /* then one overflow bucket */

typedef struct conn {
  int fd;
  SSL *ssl;
  int state;
  uint32_t gen;      /* bumped on every (re)connect; stale epoll events are ignored */
  uint64_t wr_off;    /* bytes accepted by write()/SSL_write() */
  uint64_t rd_off;    /* bytes read back */
  uint64_t chunk_end; /* end offset of the chunk being written */
  uint64_t t_start;   /* ns: when the current message / connection started */
  /* WebSocket */
  unsigned char *out; /* bytes queued for the socket: the upgrade request, frames */
  size_t out_off, out_len, out_cap;
  unsigned char *in; /* received bytes not yet parsed (a partial head or frame) */
  size_t in_len, in_cap;
  uint64_t expect;    /* ws-fanout: the next sequence number this connection should get */
  int joined;         /* ws-fanout: has received a message */
  int publisher;      /* ws-fanout: the publishing connection */
  char ws_key[32];    /* Sec-WebSocket-Key sent */
  int deflate;        /* --deflate: the server agreed to permessage-deflate */
  int snct;           /* ... with server_no_context_takeover */
  z_stream *zin;      /* its inflater, made on the first compressed message */
  int rerun;          /* queued to be driven again next turn (its budget ran out) */
} conn_t;

/* ---- options ---- */
static int opt_mode = M_RR;
static const char *opt_host = "127.0.0.1";
static int opt_port = 0;
static int opt_conns = -1;
static long opt_size = -1;
static double opt_duration = 5.0;
static double opt_warmup = 1.0;
static long opt_inflight = 4L * 1024 * 1024;
static int opt_tls = 0;
static const char *opt_sni = "localhost";
static const char *opt_ca = NULL;
static const char *opt_tls_version = "auto";
static int opt_server_pid = 0;
static int opt_quickack = 0;
static int opt_procs = 1;
static int opt_binary = 0;
static long opt_window = 32;
static const char *opt_path = "/";
static int opt_deflate = 0;
static int opt_json = 0;

/* ---- state ---- */
static conn_t *conns;
static int nconns; /* this process's share of --conns */
static int conn_base; /* index of this process's first connection, for messages */
static int epfd;
static SSL_CTX *ssl_ctx;
static unsigned char *pat;   /* pat[i] = (i*31+7)&255, long enough for any offset%256 + len */
static unsigned char *tpat;  /* printable ASCII from pat, for text messages */
static unsigned char *rbuf;
static struct sockaddr_storage peer;
static socklen_t peer_len;
static int measuring = 0;
static int stopping = 0;
/* Connections whose turn ended with work left (edge-triggered epoll will not report them
 * again): driven again after the next epoll_wait, which then does not block. */
static uint32_t *reruns;
static int nreruns = 0;
/* Bytes one connection may move per turn: without a bound, a fast server keeps one
 * connection's read/write loop going forever and starves the others and the clock. */
#define DRIVE_BUDGET (1u << 20)

static uint64_t m_ops = 0, m_bytes = 0, mismatches = 0, errors = 0, connect_errors = 0;
static uint64_t lat_count = 0, lat_sum_ns = 0, lat_max_ns = 0;
static uint32_t *hist;
static char first_error[512] = "";
static char tls_version_seen[32] = "";
static char tls_cipher_seen[64] = "";
/* WebSocket */
static uint64_t closes = 0, fo_lost = 0, fo_ooo = 0, fo_msgs = 0;
static uint64_t m_wire = 0; /* bytes of data frames subscribers received while measuring */
static int ws_deflated = 0; /* connections that agreed to permessage-deflate */
static int first_close_code = 0;
static char first_close_reason[128] = "";

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_self_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

/* utime+stime of another process (all its threads), seconds; -1 if unreadable. */
static double cpu_of_pid(int pid) {
  char path[64], buf[2048];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  if (!p) return -1;
  p += 2; /* field 3 (state) starts here */
  unsigned long long utime = 0, stime = 0;
  for (int field = 3; field <= 15 && *p; field++) {
    char *end;
    unsigned long long v = strtoull(p, &end, 10);
    if (field == 14) utime = v;
    if (field == 15) stime = v;
    p = strchr(p, ' ');
    if (!p) break;
    p++;
  }
  return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU seconds the whole machine spent busy (all CPUs, steal included); -1 if unreadable. */
static double cpu_box_busy_s(void) {
  FILE *f = fopen("/proc/stat", "r");
  if (!f) return -1;
  unsigned long long v[8] = {0};
  int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                 &v[4], &v[5], &v[6], &v[7]);
  fclose(f);
  if (n < 4) return -1;
  /* user nice system [idle iowait] irq softirq steal */
  return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("loadgen: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(1);
}

static void note_error(const char *fmt, ...) {
  if (first_error[0]) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(first_error, sizeof first_error, fmt, ap);
  va_end(ap);
}

static void ssl_error_text(char *out, size_t len) {
  unsigned long e = ERR_get_error();
  if (e) ERR_error_string_n(e, out, len);
  else snprintf(out, len, "%s", errno ? strerror(errno) : "unexpected EOF");
  ERR_clear_error();
}

static void usage(void) {
  fprintf(stderr,
          "usage: loadgen --mode rr|stream|handshake|ws-rr|ws-fanout --port N [options]\n"
          "  --host H          server address (default 127.0.0.1)\n"
          "  --conns N         connections (rr/ws-rr 50, stream 4, handshake 16);\n"
          "                    ws-fanout: subscribers (default 100), plus one publisher\n"
          "  --size BYTES      message / chunk size (rr/ws-rr 64, stream 65536, ws-fanout 32;\n"
          "                    ws-fanout needs at least 32 for text, 16 for binary)\n"
          "  --duration S      measured seconds (default 5)\n"
          "  --warmup S        seconds run before measuring (default 1)\n"
          "  --inflight BYTES  stream: max unechoed bytes per connection (default 4 MiB)\n"
          "  --tls             use TLS (handshake mode implies it)\n"
          "  --sni NAME        TLS server name (default localhost)\n"
          "  --ca FILE         verify the server against this CA (default: no verification)\n"
          "  --tls-version V   auto|1.2|1.3 (default auto)\n"
          "  --server-pid PID  also report that process's CPU time over the measured window\n"
          "  --procs N         run N processes (connections split among them; default 1)\n"
          "  --quickack        handshake: set TCP_QUICKACK once the byte is sent, so a server\n"
          "                    without TCP_NODELAY is not held up by delayed ACKs (40 ms)\n"
          "  --binary          ws modes: binary messages (default: text)\n"
          "  --window N        ws-fanout: most messages outstanding (default 32)\n"
          "  --path P          ws modes: the request path (default /)\n"
          "  --deflate         ws modes: offer permessage-deflate, inflate what comes compressed\n"
          "  --json            ws-fanout: a JSON-like filler that differs per message\n"
          "ws modes speak wss with --tls; ws-fanout runs in one process (--procs ignored).\n");
  exit(2);
}

static double parse_num(const char *s, const char *name) {
  char *end;
  double v = strtod(s, &end);
  if (!*s || *end || v < 0 || !isfinite(v)) {
    fprintf(stderr, "loadgen: %s must be a non-negative number, got \"%s\"\n", name, s);
    exit(2);
  }
  return v;
}

static void parse_args(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV                                                        \
  if (!v) {                                                          \
    fprintf(stderr, "loadgen: %s needs a value\n", a);               \
    exit(2);                                                         \
  }                                                                  \
  i++;
    if (!strcmp(a, "--mode")) {
      NEEDV;
      if (!strcmp(v, "rr")) opt_mode = M_RR;
      else if (!strcmp(v, "stream")) opt_mode = M_STREAM;
      else if (!strcmp(v, "handshake")) opt_mode = M_HANDSHAKE;
      else if (!strcmp(v, "ws-rr")) opt_mode = M_WS_RR;
      else if (!strcmp(v, "ws-fanout")) opt_mode = M_WS_FANOUT;
      else {
        fprintf(stderr,
                "loadgen: --mode must be rr, stream, handshake, ws-rr or ws-fanout, got \"%s\"\n",
                v);
        exit(2);
      }
    } else if (!strcmp(a, "--host")) {
      NEEDV;
      opt_host = v;
    } else if (!strcmp(a, "--port")) {
      NEEDV;
      opt_port = (int)parse_num(v, a);
    } else if (!strcmp(a, "--conns")) {
      NEEDV;
      opt_conns = (int)parse_num(v, a);
    } else if (!strcmp(a, "--size")) {
      NEEDV;
      opt_size = (long)parse_num(v, a);
    } else if (!strcmp(a, "--duration")) {
      NEEDV;
      opt_duration = parse_num(v, a);
    } else if (!strcmp(a, "--warmup")) {
      NEEDV;
      opt_warmup = parse_num(v, a);
    } else if (!strcmp(a, "--inflight")) {
      NEEDV;
      opt_inflight = (long)parse_num(v, a);
    } else if (!strcmp(a, "--tls")) {
      opt_tls = 1;
    } else if (!strcmp(a, "--sni")) {
      NEEDV;
      opt_sni = v;
    } else if (!strcmp(a, "--ca")) {
      NEEDV;
      opt_ca = v;
    } else if (!strcmp(a, "--tls-version")) {
      NEEDV;
      if (strcmp(v, "auto") && strcmp(v, "1.2") && strcmp(v, "1.3")) {
        fprintf(stderr, "loadgen: --tls-version must be auto, 1.2 or 1.3\n");
        exit(2);
      }
      opt_tls_version = v;
    } else if (!strcmp(a, "--server-pid")) {
      NEEDV;
      opt_server_pid = (int)parse_num(v, a);
    } else if (!strcmp(a, "--procs")) {
      NEEDV;
      opt_procs = (int)parse_num(v, a);
    } else if (!strcmp(a, "--quickack")) {
      opt_quickack = 1;
    } else if (!strcmp(a, "--binary")) {
      opt_binary = 1;
    } else if (!strcmp(a, "--window")) {
      NEEDV;
      opt_window = (long)parse_num(v, a);
    } else if (!strcmp(a, "--path")) {
      NEEDV;
      if (v[0] != '/' || strpbrk(v, " \r\n")) {
        fprintf(stderr, "loadgen: --path must start with / and hold no spaces\n");
        exit(2);
      }
      opt_path = v;
    } else if (!strcmp(a, "--deflate")) {
      opt_deflate = 1;
    } else if (!strcmp(a, "--json")) {
      opt_json = 1;
    } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage();
    } else {
      fprintf(stderr, "loadgen: unknown flag %s\n", a);
      usage();
    }
  }
  if (opt_port <= 0 || opt_port > 65535) {
    fprintf(stderr, "loadgen: --port is required (1-65535)\n");
    exit(2);
  }
  if (opt_mode == M_HANDSHAKE) opt_tls = 1;
  if (opt_conns < 0)
    opt_conns = opt_mode == M_RR || opt_mode == M_WS_RR ? 50
                : opt_mode == M_STREAM                  ? 4
                : opt_mode == M_WS_FANOUT               ? 100
                                                        : 16;
  if (opt_size < 0)
    opt_size = opt_mode == M_STREAM                           ? 65536
               : opt_mode == M_RR || opt_mode == M_WS_RR      ? 64
               : opt_mode == M_WS_FANOUT                      ? 32
                                                              : 1;
  if (opt_mode == M_HANDSHAKE) opt_size = 1;
  if (opt_conns < 1 || opt_size < 1 || opt_duration <= 0) {
    fprintf(stderr, "loadgen: --conns, --size and --duration must be positive\n");
    exit(2);
  }
  if (opt_mode == M_STREAM && opt_inflight < opt_size) opt_inflight = opt_size;
  if (opt_mode == M_WS_FANOUT) {
    if (opt_size < (opt_binary ? 16 : 32)) {
      fprintf(stderr, "loadgen: ws-fanout messages carry a sequence number and a timestamp: "
                      "--size must be at least %d\n", opt_binary ? 16 : 32);
      exit(2);
    }
    if (opt_window < 1) {
      fprintf(stderr, "loadgen: --window must be at least 1\n");
      exit(2);
    }
    opt_procs = 1; /* the window needs every subscriber's count in one place */
  }
  if (IS_WS && opt_size > 16 * 1024 * 1024) {
    fprintf(stderr, "loadgen: ws modes take messages up to 16 MiB\n");
    exit(2);
  }
  if (opt_procs < 1) opt_procs = 1;
  if (opt_procs > opt_conns) opt_procs = opt_conns;
}

/* ---- connection lifecycle ---- */

static void ep_add(conn_t *c) {
  struct epoll_event ev;
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.u64 = (uint64_t)(c - conns) | ((uint64_t)c->gen << 32);
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
}

static void want_rerun(conn_t *c) {
  if (c->rerun) return;
  c->rerun = 1;
  reruns[nreruns++] = (uint32_t)(c - conns);
}

static void ws_gone(conn_t *c);

static void conn_close(conn_t *c, int state) {
  if (IS_WS && c->state == C_READY) ws_gone(c);
  if (c->zin) {
    inflateEnd(c->zin);
    free(c->zin);
    c->zin = NULL;
  }
  if (c->ssl) {
    if (c->state == C_READY && state == C_CLOSED) SSL_shutdown(c->ssl); /* close_notify, no wait */
    SSL_free(c->ssl);
    c->ssl = NULL;
  }
  if (c->fd >= 0) close(c->fd); /* also leaves the epoll set */
  c->fd = -1;
  c->state = state;
}

static void conn_fail(conn_t *c, const char *what) {
  if (c->state == C_CONNECTING) connect_errors++;
  else if (!stopping) errors++;
  note_error("connection %d: %s", (int)(c - conns) + conn_base, what);
  conn_close(c, C_DEAD);
}

static void conn_open(conn_t *c) {
  c->gen++;
  c->wr_off = c->rd_off = c->chunk_end = 0;
  c->ssl = NULL;
  c->fd = socket(peer.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) die("socket: %s", strerror(errno));
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->t_start = now_ns();
  c->state = C_CONNECTING;
  if (connect(c->fd, (struct sockaddr *)&peer, peer_len) < 0 && errno != EINPROGRESS) {
    char msg[128];
    snprintf(msg, sizeof msg, "connect: %s", strerror(errno));
    conn_fail(c, msg);
    return;
  }
  ep_add(c);
}

static int is_ip_literal(const char *s) {
  unsigned char tmp[16];
  return inet_pton(AF_INET, s, tmp) == 1 || inet_pton(AF_INET6, s, tmp) == 1;
}

static void start_tls(conn_t *c) {
  c->ssl = SSL_new(ssl_ctx);
  if (!c->ssl) die("SSL_new failed");
  SSL_set_fd(c->ssl, c->fd);
  if (!is_ip_literal(opt_sni)) SSL_set_tlsext_host_name(c->ssl, opt_sni);
  if (opt_ca) {
    if (is_ip_literal(opt_sni)) X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), opt_sni);
    else SSL_set1_host(c->ssl, opt_sni);
  }
  c->state = C_TLS_HS;
}

/* ---- data path ---- */

static int has_write(conn_t *c) {
  if (c->wr_off < c->chunk_end) return 1; /* finish the chunk in progress */
  if (stopping) return 0;
  if (opt_mode == M_STREAM) {
    if (c->wr_off - c->rd_off + (uint64_t)opt_size > (uint64_t)opt_inflight) return 0;
  } else if (c->rd_off != c->wr_off || (opt_mode == M_HANDSHAKE && c->wr_off > 0)) {
    return 0;
  }
  c->chunk_end = c->wr_off + (uint64_t)opt_size;
  if (opt_mode == M_RR) c->t_start = now_ns();
  return 1;
}

static void record_latency(uint64_t ns) {
  uint64_t us = ns / 1000;
  hist[us < HIST_US                        ? us
       : us < HIST_US + (uint64_t)HIST_MS * 1000 ? HIST_US + (us - HIST_US) / 1000
                                                 : HIST_N - 1]++;
  lat_count++;
  lat_sum_ns += ns;
  if (ns > lat_max_ns) lat_max_ns = ns;
}

/* Checks and counts n echoed bytes now in rbuf. Returns 0, or -1 to drop the connection. */
static int on_echo(conn_t *c, size_t n) {
  if ((uint64_t)n > c->wr_off - c->rd_off) {
    mismatches++;
    note_error("connection %d: server sent %zu bytes more than it was sent", (int)(c - conns) + conn_base,
               (size_t)((uint64_t)n - (c->wr_off - c->rd_off)));
    return -1;
  }
  if (memcmp(rbuf, pat + (c->rd_off & 255), n) != 0) {
    mismatches++;
    note_error("connection %d: echoed bytes differ from those sent near offset %llu",
               (int)(c - conns) + conn_base, (unsigned long long)c->rd_off);
  }
  c->rd_off += n;
  if (measuring) m_bytes += n;
  if (opt_mode == M_RR && c->rd_off == c->chunk_end && c->rd_off == c->wr_off) {
    if (measuring) {
      m_ops++;
      record_latency(now_ns() - c->t_start);
    }
  }
  return 0;
}

/* Plain TCP, edge-triggered: write until EAGAIN or nothing to write, read until the
 * socket is drained (a short read means the receive queue was empty). */
static void drive_tcp(conn_t *c, int readable) {
  uint64_t start = c->wr_off + c->rd_off;
  for (;;) {
    if (c->wr_off + c->rd_off - start >= DRIVE_BUDGET) {
      want_rerun(c);
      return;
    }
    while (has_write(c)) {
      size_t len = (size_t)(c->chunk_end - c->wr_off);
      ssize_t n = send(c->fd, pat + (c->wr_off & 255), len, MSG_NOSIGNAL);
      if (n > 0) {
        c->wr_off += (uint64_t)n;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      char msg[128];
      snprintf(msg, sizeof msg, "write: %s", strerror(errno));
      conn_fail(c, msg);
      return;
    }
    if (!readable) return;
    readable = 0;
    for (;;) {
      ssize_t n = recv(c->fd, rbuf, RBUF_SIZE, 0);
      if (n > 0) {
        if (on_echo(c, (size_t)n) < 0) {
          conn_fail(c, "protocol error");
          return;
        }
        if (n < RBUF_SIZE) break;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n == 0) conn_fail(c, "server closed the connection");
      else {
        char msg[128];
        snprintf(msg, sizeof msg, "read: %s", strerror(errno));
        conn_fail(c, msg);
      }
      return;
    }
    if (!has_write(c)) return;
  }
}

static void handshake_done(conn_t *c);

/* TLS: loop SSL_write / SSL_read until both want the socket. */
static void drive_tls(conn_t *c) {
  char msg[300];
  if (c->state == C_TLS_HS) {
    ERR_clear_error();
    int r = SSL_connect(c->ssl);
    if (r != 1) {
      int e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
      char text[256];
      long vr = SSL_get_verify_result(c->ssl);
      ssl_error_text(text, sizeof text);
      if (vr != X509_V_OK)
        snprintf(msg, sizeof msg, "TLS handshake: %s (%s)", text, X509_verify_cert_error_string(vr));
      else snprintf(msg, sizeof msg, "TLS handshake: %s", text);
      conn_fail(c, msg);
      return;
    }
    c->state = C_READY;
    if (!tls_version_seen[0]) {
      snprintf(tls_version_seen, sizeof tls_version_seen, "%s", SSL_get_version(c->ssl));
      snprintf(tls_cipher_seen, sizeof tls_cipher_seen, "%s", SSL_get_cipher_name(c->ssl));
    }
  }
  int progress = 1;
  uint64_t start = c->wr_off + c->rd_off;
  while (progress) {
    progress = 0;
    if (c->wr_off + c->rd_off - start >= DRIVE_BUDGET) {
      want_rerun(c);
      return;
    }
    while (has_write(c)) {
      ERR_clear_error();
      int len = (int)(c->chunk_end - c->wr_off);
      int r = SSL_write(c->ssl, pat + (c->wr_off & 255), len);
      if (r > 0) {
        c->wr_off += (uint64_t)r;
        progress = 1;
        if (opt_mode == M_HANDSHAKE && opt_quickack) {
          /* ACK the session tickets at once: the server's echo is not stuck behind Nagle */
          int one = 1;
          setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
        }
        continue;
      }
      int e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
      char text[256];
      ssl_error_text(text, sizeof text);
      snprintf(msg, sizeof msg, "TLS write: %s", text);
      conn_fail(c, msg);
      return;
    }
    for (;;) {
      ERR_clear_error();
      int r = SSL_read(c->ssl, rbuf, RBUF_SIZE);
      if (r > 0) {
        if (on_echo(c, (size_t)r) < 0) {
          conn_fail(c, "protocol error");
          return;
        }
        progress = 1;
        if (opt_mode == M_HANDSHAKE && c->rd_off == 1) {
          handshake_done(c);
          return;
        }
        continue;
      }
      int e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
      if (e == SSL_ERROR_ZERO_RETURN) conn_fail(c, "server closed the connection (close_notify)");
      else {
        char text[256];
        ssl_error_text(text, sizeof text);
        snprintf(msg, sizeof msg, "TLS read: %s", text);
        conn_fail(c, msg);
      }
      return;
    }
  }
}

static void handshake_done(conn_t *c) {
  if (measuring) {
    m_ops++;
    record_latency(now_ns() - c->t_start);
  }
  conn_close(c, C_CLOSED);
  if (!stopping) conn_open(c);
}

/* ---- WebSocket: ws-rr and ws-fanout ---- */

#define WS_MAX_FRAME (64ull * 1024 * 1024) /* largest frame accepted from a server */
#define WS_HEAD_LIMIT 16384                 /* largest upgrade response head */
#define WS_MAX_HANDSHAKING 128              /* connections opening at once */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

static int ws_ready_ever = 0; /* connections that completed the upgrade */
static int ws_open_now = 0;   /* connections open now */

/* ws-fanout: the window over outstanding messages */
static uint64_t fo_next_seq = 0;       /* the next sequence number to publish */
static uint64_t fo_done_seq = 0;       /* every message below it reached every open subscriber */
static uint32_t *fo_count;             /* per outstanding message: subscribers that have it */
static uint64_t fo_ring_mask;
static int fo_live = 0;                /* subscribers open */
static int fo_running = 0;             /* joined: every subscriber gets every message from now on */
static uint64_t fo_probe = UINT64_MAX; /* while joining: the last probe published */
static int fo_probe_got = 0;           /* subscribers that have it */
static conn_t *fo_pub = NULL;
static unsigned char *fo_buf; /* one payload */
/* --json: the payloads of the outstanding messages, by seq & fo_ring_mask (tag: seq + 1) */
static unsigned char *fo_ring;
static uint64_t *fo_ring_tag;
/* --deflate with server_no_context_takeover: each outstanding message's compressed bytes as
 * first inflated and checked (tag: seq + 1), so the other subscribers' copies are compared,
 * not inflated again */
static unsigned char *fo_zc;
static size_t *fo_zc_len;
static uint64_t *fo_zc_tag;
static size_t fo_zc_cap;
/* --deflate: one inflated message */
static unsigned char *zbuf;
static size_t zbuf_cap;

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

/* xorshift64*: mask keys (RFC 6455 wants them unpredictable to intermediaries; a
 * load client on loopback only needs them to vary) */
static uint32_t rng32(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 32);
}

static void out_reserve(conn_t *c, size_t more) {
  if (c->out_off == c->out_len) c->out_off = c->out_len = 0;
  if (c->out_len + more <= c->out_cap) return;
  if (c->out_off > 0) {
    memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
    c->out_len -= c->out_off;
    c->out_off = 0;
    if (c->out_len + more <= c->out_cap) return;
  }
  size_t cap = c->out_cap ? c->out_cap : 256;
  while (cap < c->out_len + more) cap *= 2;
  c->out = realloc(c->out, cap);
  if (!c->out) die("out of memory");
  c->out_cap = cap;
}

static void in_reserve(conn_t *c, size_t total) {
  if (total <= c->in_cap) return;
  size_t cap = c->in_cap ? c->in_cap : 4096;
  while (cap < total) cap *= 2;
  c->in = realloc(c->in, cap);
  if (!c->in) die("out of memory");
  c->in_cap = cap;
}

/* Queues one masked client frame (FIN set). */
static void ws_queue_frame(conn_t *c, int opcode, const unsigned char *payload, size_t len) {
  out_reserve(c, len + 14);
  unsigned char *f = c->out + c->out_len;
  size_t h = 0;
  f[h++] = (unsigned char)(0x80 | opcode);
  if (len < 126) {
    f[h++] = (unsigned char)(0x80 | len);
  } else if (len < 65536) {
    f[h++] = 0x80 | 126;
    f[h++] = (unsigned char)(len >> 8);
    f[h++] = (unsigned char)(len & 255);
  } else {
    f[h++] = 0x80 | 127;
    for (int i = 7; i >= 0; i--) f[h++] = (unsigned char)(((uint64_t)len >> (8 * i)) & 255);
  }
  uint32_t key = rng32();
  unsigned char m[4];
  memcpy(m, &key, 4);
  memcpy(f + h, m, 4);
  h += 4;
  unsigned char *d = f + h;
  for (size_t i = 0; i < len; i++) d[i] = payload[i] ^ m[i & 3];
  c->out_len += h + len;
}

/* Writes what is queued. 0: all written, or the socket is full (EPOLLOUT comes back);
 * -1: the connection failed and is gone. */
static int ws_flush(conn_t *c) {
  char msg[300];
  while (c->out_off < c->out_len) {
    size_t len = c->out_len - c->out_off;
    if (c->ssl) {
      ERR_clear_error();
      int r = SSL_write(c->ssl, c->out + c->out_off, len > (1u << 30) ? (1 << 30) : (int)len);
      if (r > 0) {
        c->out_off += (size_t)r;
        continue;
      }
      int e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
      char text[256];
      ssl_error_text(text, sizeof text);
      snprintf(msg, sizeof msg, "TLS write: %s", text);
      conn_fail(c, msg);
      return -1;
    }
    ssize_t n = send(c->fd, c->out + c->out_off, len, MSG_NOSIGNAL);
    if (n > 0) {
      c->out_off += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    snprintf(msg, sizeof msg, "write: %s", n < 0 ? strerror(errno) : "wrote nothing");
    conn_fail(c, msg);
    return -1;
  }
  c->out_off = c->out_len = 0;
  return 0;
}

/* Connected (and TLS done): queue the HTTP upgrade request. */
static void ws_start(conn_t *c) {
  unsigned char raw[16];
  if (RAND_bytes(raw, sizeof raw) != 1) die("RAND_bytes failed");
  EVP_EncodeBlock((unsigned char *)c->ws_key, raw, sizeof raw);
  int v6 = strchr(opt_host, ':') != NULL;
  char req[2048];
  int n = snprintf(req, sizeof req,
                   "GET %s HTTP/1.1\r\nHost: %s%s%s:%d\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                   "Sec-WebSocket-Version: 13\r\n%s\r\n",
                   opt_path, v6 ? "[" : "", opt_host, v6 ? "]" : "", opt_port, c->ws_key,
                   opt_deflate ? "Sec-WebSocket-Extensions: permessage-deflate; "
                                 "client_max_window_bits\r\n"
                               : "");
  if (n < 0 || (size_t)n >= sizeof req) die("--path or --host is too long");
  out_reserve(c, (size_t)n);
  memcpy(c->out + c->out_len, req, (size_t)n);
  c->out_len += (size_t)n;
  c->state = C_WS_HS;
}

/* Checks the answer to the upgrade: `head` is it up to the blank line, NUL-terminated. */
static int ws_check_101(conn_t *c, char *head) {
  char msg[300];
  if (strncmp(head, "HTTP/1.1 101", 12) != 0) {
    head[strcspn(head, "\r\n")] = 0;
    snprintf(msg, sizeof msg, "upgrade refused: \"%.200s\"", head);
    conn_fail(c, msg);
    return -1;
  }
  char both[sizeof c->ws_key + sizeof WS_GUID];
  snprintf(both, sizeof both, "%s%s", c->ws_key, WS_GUID);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  char want[64];
  if (EVP_Digest(both, strlen(both), md, &mdlen, EVP_sha1(), NULL) != 1) die("SHA-1 failed");
  EVP_EncodeBlock((unsigned char *)want, md, (int)mdlen);
  const char *name = "\r\nsec-websocket-accept:";
  char *p = strcasestr(head, name);
  if (!p) {
    conn_fail(c, "the 101 response has no Sec-WebSocket-Accept");
    return -1;
  }
  p += strlen(name);
  while (*p == ' ' || *p == '\t') p++;
  size_t wl = strlen(want);
  if (strncmp(p, want, wl) != 0 || (p[wl] != '\r' && p[wl] != ' ' && p[wl] != '\t')) {
    conn_fail(c, "wrong Sec-WebSocket-Accept in the 101 response");
    return -1;
  }
  const char *ext_name = "\r\nsec-websocket-extensions:";
  char *e = strcasestr(head, ext_name);
  if (e) {
    e += strlen(ext_name);
    char *eol = strstr(e, "\r\n");
    if (eol) *eol = 0;
    if (!opt_deflate || !strcasestr(e, "permessage-deflate")) {
      conn_fail(c, "the 101 response names an extension that was not offered");
      return -1;
    }
    c->deflate = 1;
    c->snct = strcasestr(e, "server_no_context_takeover") != NULL;
    ws_deflated++;
  }
  return 0;
}

/* ---- ws-rr ---- */

static void ws_rr_send(conn_t *c) {
  c->t_start = now_ns();
  ws_queue_frame(c, opt_binary ? 2 : 1, (opt_binary ? pat : tpat) + (c->wr_off & 255),
                 (size_t)opt_size);
  c->wr_off += (uint64_t)opt_size;
}

static void ws_rr_message(conn_t *c, int op, const unsigned char *p, size_t len, uint64_t t) {
  int id = (int)(c - conns) + conn_base;
  if (c->rd_off == c->wr_off) {
    mismatches++;
    note_error("connection %d: a message that was not asked for (%zu bytes)", id, len);
    return;
  }
  int bad = op != (opt_binary ? 2 : 1) || len != (size_t)opt_size ||
            memcmp(p, (opt_binary ? pat : tpat) + (c->rd_off & 255), len) != 0;
  if (bad) {
    mismatches++;
    note_error("connection %d: the echo differs from the message sent (%s, %zu bytes)", id,
               op == 1 ? "text" : "binary", len);
  }
  c->rd_off += (uint64_t)opt_size;
  if (measuring && !bad) {
    m_ops++;
    m_bytes += len;
    record_latency(t > c->t_start ? t - c->t_start : 0);
  }
  if (!stopping) ws_rr_send(c);
}

/* ---- ws-fanout ---- */

static const char HEX[] = "0123456789abcdef";

/* --json: n bytes of a JSON-like record list, different for every seq (deterministic):
 * trades with ids, symbols, prices, quantities and sides, as a market-data feed sends. */
static void json_fill(unsigned char *p, size_t n, uint64_t seq) {
  static const char *const SYM[] = {"AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "META", "TSLA", "NFLX"};
  uint64_t r = (seq + 1) * 0x9E3779B97F4A7C15ull;
  size_t off = 0;
  char rec[192];
  int len = snprintf(rec, sizeof rec, ",\"type\":\"trades\",\"venue\":\"XNAS\",\"items\":[");
  while (off < n) {
    size_t take = (size_t)len < n - off ? (size_t)len : n - off;
    memcpy(p + off, rec, take);
    off += take;
    r ^= r >> 12;
    r ^= r << 25;
    r ^= r >> 27;
    uint64_t x = r * 0x2545F4914F6CDD1Dull;
    unsigned px = (unsigned)(x % 50000u) + 1000u;
    len = snprintf(rec, sizeof rec,
                   "{\"id\":%u,\"sym\":\"%s\",\"px\":%u.%02u,\"qty\":%u,\"side\":\"%s\","
                   "\"ts\":%llu},",
                   (unsigned)((x >> 20) % 10000000u), SYM[(x >> 8) & 7], px / 100, px % 100,
                   (unsigned)(((x >> 40) % 50u + 1) * 100), (x >> 3) & 1 ? "buy" : "sell",
                   (unsigned long long)(1700000000000ull + seq * 7 + ((x >> 50) & 1023)));
  }
}

/* The header's size: the sequence number and timestamp, in hex or binary. */
#define FO_HEAD (opt_binary ? 16 : 32)

static void fo_encode(unsigned char *p, uint64_t seq, uint64_t ts) {
  size_t n = (size_t)opt_size;
  if (opt_binary) {
    for (int i = 0; i < 8; i++) {
      p[i] = (unsigned char)(seq >> (8 * i));
      p[8 + i] = (unsigned char)(ts >> (8 * i));
    }
    if (!opt_json) memcpy(p + 16, pat + 16, n - 16);
  } else {
    for (int i = 0; i < 16; i++) {
      p[i] = (unsigned char)HEX[(seq >> (60 - 4 * i)) & 15];
      p[16 + i] = (unsigned char)HEX[(ts >> (60 - 4 * i)) & 15];
    }
    if (!opt_json) memcpy(p + 32, tpat + 32, n - 32);
  }
  if (opt_json) json_fill(p + FO_HEAD, n - FO_HEAD, seq);
}

/* --json: the filler message seq must carry (from the ring, else made again). */
static const unsigned char *fo_expected(uint64_t seq) {
  static unsigned char *scratch = NULL;
  uint64_t slot = seq & fo_ring_mask;
  if (fo_ring_tag[slot] == seq + 1) return fo_ring + slot * (size_t)opt_size;
  if (!scratch && !(scratch = malloc((size_t)opt_size))) die("out of memory");
  json_fill(scratch + FO_HEAD, (size_t)opt_size - FO_HEAD, seq);
  return scratch;
}

static int hexval(unsigned char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  return -1;
}

static int fo_decode(const unsigned char *p, size_t len, uint64_t *seq, uint64_t *ts) {
  if (len != (size_t)opt_size) return -1;
  uint64_t s = 0, t = 0;
  if (opt_binary) {
    for (int i = 7; i >= 0; i--) {
      s = (s << 8) | p[i];
      t = (t << 8) | p[8 + i];
    }
    if (!opt_json && memcmp(p + 16, pat + 16, len - 16) != 0) return -1;
  } else {
    for (int i = 0; i < 16; i++) {
      int a = hexval(p[i]), b = hexval(p[16 + i]);
      if (a < 0 || b < 0) return -1;
      s = (s << 4) | (uint64_t)a;
      t = (t << 4) | (uint64_t)b;
    }
    if (!opt_json && memcmp(p + 32, tpat + 32, len - 32) != 0) return -1;
  }
  if (opt_json && memcmp(p + FO_HEAD, fo_expected(s) + FO_HEAD, len - FO_HEAD) != 0) return -1;
  *seq = s;
  *ts = t;
  return 0;
}

static void fo_publish(uint64_t seq) {
  unsigned char *p = fo_buf;
  if (opt_json) {
    uint64_t slot = seq & fo_ring_mask;
    p = fo_ring + slot * (size_t)opt_size;
    fo_ring_tag[slot] = seq + 1;
  }
  fo_encode(p, seq, now_ns());
  ws_queue_frame(fo_pub, opt_binary ? 2 : 1, p, (size_t)opt_size);
  if (measuring) fo_msgs++;
}

/* Moves the window past every message each open subscriber has. */
static void fo_advance(void) {
  while (fo_done_seq < fo_next_seq && (int)fo_count[fo_done_seq & fo_ring_mask] >= fo_live) {
    fo_count[fo_done_seq & fo_ring_mask] = 0;
    fo_done_seq++;
  }
}

static void fo_start_running(void) {
  fo_running = 1;
  fo_next_seq = fo_done_seq = fo_probe + 1;
  memset(fo_count, 0, (fo_ring_mask + 1) * sizeof *fo_count);
}

/* Publishes while the window has room. */
static void fo_pump(void) {
  if (!fo_running || stopping || !fo_pub || fo_pub->state != C_READY) return;
  int queued = 0;
  while (fo_next_seq - fo_done_seq < (uint64_t)opt_window) {
    fo_publish(fo_next_seq++);
    queued = 1;
  }
  if (queued) ws_flush(fo_pub);
}

static void fo_message(conn_t *c, int op, const unsigned char *p, size_t len, uint64_t t) {
  int id = (int)(c - conns);
  uint64_t seq, ts;
  if (op != (opt_binary ? 2 : 1) || fo_decode(p, len, &seq, &ts) < 0) {
    mismatches++;
    note_error("connection %d: a message that is not one published (%s, %zu bytes)", id,
               op == 1 ? "text" : "binary", len);
    return;
  }
  if (!c->joined) { /* its first message: it takes part from here on */
    c->joined = 1;
    c->expect = seq;
  }
  if (seq != c->expect) {
    if (seq > c->expect) {
      note_error("%s %d: messages %llu to %llu never arrived", c->publisher ? "publisher" : "subscriber",
                 id, (unsigned long long)c->expect, (unsigned long long)seq - 1);
      if (!c->publisher) fo_lost += seq - c->expect;
    } else {
      note_error("%s %d: message %llu arrived after %llu", c->publisher ? "publisher" : "subscriber", id,
                 (unsigned long long)seq, (unsigned long long)c->expect - 1);
      if (!c->publisher) fo_ooo++;
      return;
    }
  }
  c->expect = seq + 1;
  if (c->publisher) return; /* its own copy */
  if (!fo_running) {
    if (seq == fo_probe && ++fo_probe_got >= fo_live) fo_start_running();
    return;
  }
  if (measuring) {
    m_ops++;
    m_bytes += len;
    record_latency(t > ts ? t - ts : 0);
  }
  if (seq >= fo_done_seq && seq < fo_next_seq &&
      (int)++fo_count[seq & fo_ring_mask] >= fo_live && seq == fo_done_seq)
    fo_advance();
}

/* ---- both ---- */

/* The upgrade is done. */
static void ws_on_open(conn_t *c) {
  ws_ready_ever++;
  ws_open_now++;
  if (opt_mode == M_WS_RR) {
    if (!stopping) ws_rr_send(c);
  } else if (c->publisher) {
    fo_pub = c;
  } else {
    fo_live++;
  }
}

/* An open connection closes (called from conn_close). */
static void ws_gone(conn_t *c) {
  ws_open_now--;
  if (opt_mode != M_WS_FANOUT) return;
  if (c->publisher) {
    fo_pub = NULL;
    return;
  }
  fo_live--;
  if (fo_running) fo_advance();
  else if (fo_live > 0 && fo_probe_got >= fo_live) fo_start_running();
}

/* The server sent a close frame: answer it and close. */
static void ws_on_close(conn_t *c, const unsigned char *p, size_t len) {
  int code = len >= 2 ? (p[0] << 8) | p[1] : 1005;
  if (!stopping) {
    closes++;
    if (!first_close_code) {
      first_close_code = code;
      size_t rl = len > 2 ? len - 2 : 0;
      if (rl >= sizeof first_close_reason) rl = sizeof first_close_reason - 1;
      for (size_t i = 0; i < rl; i++) {
        unsigned char ch = p[2 + i];
        first_close_reason[i] = ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\' ? (char)ch : '?';
      }
      first_close_reason[rl] = 0;
    }
    /* a closed echo connection or publisher ends that connection's part in the run */
    if (opt_mode == M_WS_RR || c->publisher) {
      errors++;
      note_error("connection %d: the server closed it (%d %s)", (int)(c - conns) + conn_base, code,
                 first_close_reason);
    }
  }
  unsigned char reply[2] = {(unsigned char)(code >> 8), (unsigned char)(code & 255)};
  if (code != 1005 && code != 1006) ws_queue_frame(c, 8, reply, 2);
  else ws_queue_frame(c, 8, NULL, 0);
  ws_flush(c);
  if (c->fd >= 0) conn_close(c, C_CLOSED);
}

static void ws_protocol_error(conn_t *c, const char *what) {
  mismatches++;
  char msg[200];
  snprintf(msg, sizeof msg, "protocol error from the server: %s", what);
  conn_fail(c, msg);
}

static const unsigned char TRAILER[4] = {0x00, 0x00, 0xff, 0xff};

/* Inflates one compressed message (RFC 7692 7.2.2: the payload, then 00 00 ff ff) into zbuf;
 * NULL once the connection has failed. */
static const unsigned char *ws_inflate(conn_t *c, const unsigned char *p, size_t len,
                                       size_t *out_len) {
  if (!c->zin) {
    c->zin = calloc(1, sizeof *c->zin);
    if (!c->zin || inflateInit2(c->zin, -15) != Z_OK) die("inflateInit2 failed");
  }
  z_stream *z = c->zin;
  z->next_out = zbuf;
  z->avail_out = (uInt)zbuf_cap;
  int r = Z_OK;
  for (int part = 0; part < 2 && r == Z_OK; part++) {
    z->next_in = (Bytef *)(part == 0 ? p : TRAILER);
    z->avail_in = (uInt)(part == 0 ? len : sizeof TRAILER);
    r = inflate(z, Z_SYNC_FLUSH);
    if (r == Z_BUF_ERROR && z->avail_out > 0) r = Z_OK; /* no progress possible: input used up */
    if (r == Z_OK && z->avail_out == 0) {
      ws_protocol_error(c, "a compressed message inflates past the message size");
      return NULL;
    }
  }
  if (r != Z_OK && r != Z_STREAM_END) {
    ws_protocol_error(c, "a compressed message is not a valid deflate stream");
    return NULL;
  }
  if (r == Z_STREAM_END || c->snct) inflateReset(z);
  *out_len = zbuf_cap - z->avail_out;
  return zbuf;
}

/* A compressed message's bytes: for a broadcast under server_no_context_takeover, compared
 * with those already inflated for the message this connection expects next; else inflated. */
static const unsigned char *ws_inflated(conn_t *c, const unsigned char *p, size_t len,
                                        size_t *out_len) {
  int cache = opt_mode == M_WS_FANOUT && c->snct && opt_json;
  if (cache && c->joined) {
    uint64_t slot = c->expect & fo_ring_mask;
    if (fo_zc_tag[slot] == c->expect + 1 && fo_ring_tag[slot] == c->expect + 1 &&
        fo_zc_len[slot] == len && memcmp(fo_zc + slot * fo_zc_cap, p, len) == 0) {
      *out_len = (size_t)opt_size;
      return fo_ring + slot * (size_t)opt_size; /* the message as published */
    }
  }
  const unsigned char *out = ws_inflate(c, p, len, out_len);
  uint64_t seq, ts;
  if (out && cache && len <= fo_zc_cap && fo_decode(out, *out_len, &seq, &ts) == 0) {
    uint64_t slot = seq & fo_ring_mask;
    if (fo_ring_tag[slot] == seq + 1 && memcmp(out, fo_ring + slot * (size_t)opt_size,
                                               (size_t)opt_size) == 0) {
      memcpy(fo_zc + slot * fo_zc_cap, p, len);
      fo_zc_len[slot] = len;
      fo_zc_tag[slot] = seq + 1;
    }
  }
  return out;
}

/* Handles the complete frames in buf[0..len); returns the bytes used, or -1 once the
 * connection is gone. */
static long ws_frames(conn_t *c, const unsigned char *buf, size_t len) {
  size_t off = 0;
  uint64_t t = 0;
  while (c->state == C_READY) {
    size_t avail = len - off;
    if (avail < 2) break;
    const unsigned char *f = buf + off;
    int fin = f[0] & 0x80, op = f[0] & 0x0f;
    uint64_t plen = f[1] & 0x7f;
    size_t h = 2;
    if (f[1] & 0x80) {
      ws_protocol_error(c, "a masked frame");
      return -1;
    }
    int rsv1 = (f[0] & 0x40) != 0;
    if ((f[0] & 0x70) && ((f[0] & 0x70) != 0x40 || !c->deflate || (op != 1 && op != 2))) {
      ws_protocol_error(c, c->deflate ? "RSV bits where permessage-deflate allows none"
                                      : "RSV bits set, but no extension was agreed");
      return -1;
    }
    if (plen == 126) {
      if (avail < 4) break;
      plen = ((uint64_t)f[2] << 8) | f[3];
      h = 4;
    } else if (plen == 127) {
      if (avail < 10) break;
      plen = 0;
      for (int i = 2; i < 10; i++) plen = (plen << 8) | f[i];
      h = 10;
    }
    if (plen > WS_MAX_FRAME) {
      ws_protocol_error(c, "a frame over 64 MiB");
      return -1;
    }
    if (avail < h + plen) break;
    const unsigned char *p = f + h;
    off += h + (size_t)plen;
    if (op >= 8) {
      if (!fin || plen > 125) {
        ws_protocol_error(c, "a fragmented or oversized control frame");
        return -1;
      }
      if (op == 9) ws_queue_frame(c, 10, p, (size_t)plen);
      else if (op == 8) {
        ws_on_close(c, p, (size_t)plen);
        return -1;
      } else if (op != 10) {
        ws_protocol_error(c, "an unknown opcode");
        return -1;
      }
      continue;
    }
    if ((op != 1 && op != 2) || !fin) {
      ws_protocol_error(c, "a fragmented message (the load client expects whole ones)");
      return -1;
    }
    if (!t) t = now_ns();
    if (measuring && !c->publisher) m_wire += h + (size_t)plen;
    size_t mlen = (size_t)plen;
    if (rsv1) {
      p = ws_inflated(c, p, mlen, &mlen);
      if (!p) return -1;
    }
    if (opt_mode == M_WS_RR) ws_rr_message(c, op, p, mlen, t);
    else fo_message(c, op, p, mlen, t);
  }
  return (long)off;
}

/* n bytes arrived: the upgrade response, then frames. -1 once the connection is gone. */
static int ws_input(conn_t *c, const unsigned char *data, size_t n) {
  const unsigned char *buf = data;
  size_t len = n;
  if (c->in_len > 0 || c->state == C_WS_HS) {
    if (c->in_len + n > WS_MAX_FRAME + 14) {
      ws_protocol_error(c, "a frame over 64 MiB");
      return -1;
    }
    in_reserve(c, c->in_len + n);
    memcpy(c->in + c->in_len, data, n);
    c->in_len += n;
    buf = c->in;
    len = c->in_len;
  }
  size_t off = 0;
  if (c->state == C_WS_HS) {
    const unsigned char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end || end - buf + 4 > WS_HEAD_LIMIT) {
      if (len <= WS_HEAD_LIMIT) return 0;
      conn_fail(c, "no end of the upgrade response within 16 KiB");
      return -1;
    }
    size_t hl = (size_t)(end - buf) + 4;
    char head[WS_HEAD_LIMIT + 1];
    memcpy(head, buf, hl);
    head[hl] = 0;
    if (ws_check_101(c, head) < 0) return -1;
    off = hl;
    c->state = C_READY;
    ws_on_open(c);
  }
  long used = ws_frames(c, buf + off, len - off);
  if (used < 0) return -1;
  off += (size_t)used;
  size_t rest = len - off;
  if (buf == c->in) {
    if (rest && off) memmove(c->in, c->in + off, rest);
    c->in_len = rest;
  } else if (rest) {
    in_reserve(c, rest);
    memcpy(c->in, buf + off, rest);
    c->in_len = rest;
  }
  return 0;
}

static void drive_ws(conn_t *c) {
  char msg[300];
  if (c->state == C_TLS_HS) {
    ERR_clear_error();
    int r = SSL_connect(c->ssl);
    if (r != 1) {
      int e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
      char text[256];
      long vr = SSL_get_verify_result(c->ssl);
      ssl_error_text(text, sizeof text);
      if (vr != X509_V_OK)
        snprintf(msg, sizeof msg, "TLS handshake: %s (%s)", text, X509_verify_cert_error_string(vr));
      else snprintf(msg, sizeof msg, "TLS handshake: %s", text);
      conn_fail(c, msg);
      return;
    }
    if (!tls_version_seen[0]) {
      snprintf(tls_version_seen, sizeof tls_version_seen, "%s", SSL_get_version(c->ssl));
      snprintf(tls_cipher_seen, sizeof tls_cipher_seen, "%s", SSL_get_cipher_name(c->ssl));
    }
    ws_start(c);
  }
  if (ws_flush(c) < 0) return;
  for (;;) {
    ssize_t n;
    if (c->ssl) {
      ERR_clear_error();
      int r = SSL_read(c->ssl, rbuf, RBUF_SIZE);
      if (r <= 0) {
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
        if (e == SSL_ERROR_ZERO_RETURN) {
          conn_fail(c, "the server closed the connection without a close frame (close_notify)");
        } else {
          char text[256];
          ssl_error_text(text, sizeof text);
          snprintf(msg, sizeof msg, "TLS read: %s", text);
          conn_fail(c, msg);
        }
        return;
      }
      n = r;
    } else {
      n = recv(c->fd, rbuf, RBUF_SIZE, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n <= 0) {
        if (n == 0) conn_fail(c, "the server closed the connection without a close frame");
        else {
          snprintf(msg, sizeof msg, "read: %s", strerror(errno));
          conn_fail(c, msg);
        }
        return;
      }
    }
    if (ws_input(c, rbuf, (size_t)n) < 0) return;
    if (!c->ssl && n < RBUF_SIZE) break; /* a short read: the socket is drained */
  }
  ws_flush(c);
}

/* Says goodbye with a close frame (1000) and closes, without waiting for the answer. */
static void ws_goodbye(conn_t *c) {
  if (c->state == C_READY) {
    static const unsigned char bye[2] = {0x03, 0xe8};
    ws_queue_frame(c, 8, bye, 2);
    if (ws_flush(c) < 0) return;
  }
  if (c->fd >= 0) conn_close(c, C_CLOSED);
}

/* Whether every message sent has come back (ws-rr) or reached every open subscriber. */
static int ws_drained(int total) {
  for (int i = 0; i < total; i++) {
    conn_t *c = &conns[i];
    if (c->state != C_READY) continue;
    if (opt_mode == M_WS_RR ? c->rd_off != c->wr_off : !c->publisher && c->expect < fo_next_seq)
      return 0;
  }
  return 1;
}

static void on_event(conn_t *c, uint32_t events) {
  if (c->state == C_CONNECTING) {
    int err = 0;
    socklen_t len = sizeof err;
    if (events & (EPOLLERR | EPOLLHUP)) {
      getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
      char msg[128];
      snprintf(msg, sizeof msg, "connect: %s", strerror(err ? err : ECONNREFUSED));
      conn_fail(c, msg);
      return;
    }
    if (!(events & EPOLLOUT)) return;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
      char msg[128];
      snprintf(msg, sizeof msg, "connect: %s", strerror(err));
      conn_fail(c, msg);
      return;
    }
    if (opt_tls) start_tls(c);
    else if (IS_WS) ws_start(c);
    else c->state = C_READY;
  }
  if (IS_WS) drive_ws(c);
  else if (opt_tls) drive_tls(c);
  else drive_tcp(c, (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0);
}

static double hist_percentile(double q) {
  if (!lat_count) return 0;
  double exact = q * (double)lat_count; /* nearest-rank: ceil(q * count) without libm */
  uint64_t rank = (uint64_t)exact, seen = 0;
  if ((double)rank < exact) rank++;
  if (rank < 1) rank = 1;
  for (int i = 0; i < HIST_N; i++) {
    seen += hist[i];
    if (seen >= rank) {
      if (i < HIST_US) return (double)i;
      if (i == HIST_N - 1) return lat_max_ns / 1000.0;
      double us = HIST_US + (i - HIST_US) * 1000.0 + 500.0; /* middle of a 1 ms bucket */
      return us < lat_max_ns / 1000.0 ? us : lat_max_ns / 1000.0;
    }
  }
  return lat_max_ns / 1000.0;
}

static int accept_any_chain(X509_STORE_CTX *ctx, void *arg) {
  (void)ctx;
  (void)arg;
  return 1;
}

static void setup_tls(void) {
  ssl_ctx = SSL_CTX_new(TLS_client_method());
  if (!ssl_ctx) die("SSL_CTX_new failed");
  SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION);
  if (!strcmp(opt_tls_version, "1.2")) SSL_CTX_set_max_proto_version(ssl_ctx, TLS1_2_VERSION);
  if (!strcmp(opt_tls_version, "1.3")) SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_3_VERSION);
  /* full handshakes only: never cache or offer sessions */
  SSL_CTX_set_session_cache_mode(ssl_ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(ssl_ctx, SSL_OP_NO_TICKET);
  SSL_CTX_set_mode(ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  /* one key share the server is sure to take, so no HelloRetryRequest */
  SSL_CTX_set1_groups_list(ssl_ctx, "X25519:P-256");
  SSL_CTX_set_read_ahead(ssl_ctx, 1);
  if (opt_ca) {
    if (SSL_CTX_load_verify_locations(ssl_ctx, opt_ca, NULL) != 1) {
      char text[256];
      ssl_error_text(text, sizeof text);
      die("cannot load CA file %s: %s", opt_ca, text);
    }
    SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_PEER, NULL);
  } else {
    /* No chain verification at all (OpenSSL would otherwise still build and check
     * the chain and only ignore the verdict). The server's CertificateVerify
     * signature is still checked: every handshake is a full one. */
    SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_cert_verify_callback(ssl_ctx, accept_any_chain, NULL);
  }
}

static void resolve(void) {
  struct addrinfo hints, *res;
  memset(&hints, 0, sizeof hints);
  hints.ai_socktype = SOCK_STREAM;
  char port[16];
  snprintf(port, sizeof port, "%d", opt_port);
  int r = getaddrinfo(opt_host, port, &hints, &res);
  if (r != 0) die("cannot resolve %s: %s", opt_host, gai_strerror(r));
  memcpy(&peer, res->ai_addr, res->ai_addrlen);
  peer_len = res->ai_addrlen;
  freeaddrinfo(res);
}

/* What one process measured; lives in shared memory so the first process can add them up. */
typedef struct wstats {
  uint64_t ops, bytes, mismatches, errors, connect_errors, lat_count, lat_sum_ns, lat_max_ns;
  int ready_at_start, unfinished, done;
  double secs, cpu, server_cpu, box_busy;
  char first_error[512], tls_version[32], cipher[64];
  /* WebSocket */
  uint64_t closes, lost, ooo, msgs, wire;
  int close_code, deflated;
  double connect_s, join_s;
  char close_reason[128];
} wstats_t;

/* Runs this process's WebSocket connections (ws-rr, ws-fanout) and fills *out. Timeline:
 * connect and upgrade everything (at most WS_MAX_HANDSHAKING at once), for ws-fanout
 * join (probes until one reaches every subscriber), warm up, measure, then drain. */
static void run_ws_worker(uint64_t t0, wstats_t *out, int is_first) {
  int fanout = opt_mode == M_WS_FANOUT;
  int total = nconns + fanout; /* ws-fanout: the publisher is the last one */
  conns = calloc((size_t)total, sizeof *conns);
  if (!conns) die("out of memory");
  for (int i = 0; i < total; i++) {
    conns[i].fd = -1;
    conns[i].state = C_IDLE;
  }
  if (fanout) {
    conns[total - 1].publisher = 1;
    uint64_t ring = 1;
    while (ring < (uint64_t)opt_window) ring <<= 1;
    fo_ring_mask = ring - 1;
    fo_count = calloc((size_t)ring, sizeof *fo_count);
    fo_buf = malloc((size_t)opt_size);
    if (!fo_count || !fo_buf) die("out of memory");
    if (opt_json) {
      fo_ring = malloc((size_t)ring * (size_t)opt_size);
      fo_ring_tag = calloc((size_t)ring, sizeof *fo_ring_tag);
      fo_zc_cap = (size_t)opt_size + (size_t)opt_size / 8 + 64; /* deflate's worst case */
      fo_zc = malloc((size_t)ring * fo_zc_cap);
      fo_zc_len = calloc((size_t)ring, sizeof *fo_zc_len);
      fo_zc_tag = calloc((size_t)ring, sizeof *fo_zc_tag);
      if (!fo_ring || !fo_ring_tag || !fo_zc || !fo_zc_len || !fo_zc_tag) die("out of memory");
    }
  }
  if (opt_deflate) {
    zbuf_cap = (size_t)opt_size + 1; /* one byte more than a message may have */
    zbuf = malloc(zbuf_cap);
    if (!zbuf) die("out of memory");
  }

  enum { P_CONNECT, P_JOIN, P_WARM, P_MEASURE, P_DRAIN } phase = P_CONNECT;
  struct epoll_event evs[256];
  uint64_t connect_deadline = t0 + 30000000000ull, t_ready = 0, t_joined = 0, next_probe = 0;
  /* Probes go out 20 ms apart, then further apart (up to 640 ms): a server that needs longer
   * than the gap to deliver one (e.g. compressing it for each of 1,000 subscribers) would
   * otherwise always be one probe behind and the join would never complete. */
  uint64_t probe_gap = 20000000ull;
  uint64_t warm_end = 0, end = 0, meas_start = 0, meas_end = 0, drain_deadline = 0;
  double cpu0 = 0, cpu1 = 0, scpu0 = -1, scpu1 = -1, box0 = -1, box1 = -1;
  int ready_at_start = 0, opened = 0;
  for (;;) {
    uint64_t t = now_ns();
    if (phase == P_CONNECT) {
      while (opened < total && opened - ws_ready_ever < WS_MAX_HANDSHAKING)
        conn_open(&conns[opened++]);
      if (connect_errors || errors) break; /* first_error says which */
      if (ws_ready_ever == total) {
        t_ready = t;
        if (fanout) {
          phase = P_JOIN;
        } else {
          phase = P_WARM;
          warm_end = t0 + (uint64_t)(opt_warmup * 1e9);
          if (warm_end < t) warm_end = t;
        }
      } else if (t > connect_deadline) {
        note_error("only %d of %d connections were upgraded within 30 s", ws_ready_ever, total);
        break;
      }
    }
    if (phase == P_JOIN) {
      if (fo_running) {
        phase = P_WARM;
        t_joined = t;
        warm_end = t + (uint64_t)(opt_warmup * 1e9);
      } else if (!fo_pub || fo_live == 0) {
        note_error("the %s went away while joining", fo_pub ? "subscribers" : "publisher");
        break;
      } else if (t > t_ready + 10000000000ull) {
        note_error("10 s after the upgrades only %d of %d subscribers had the latest message: "
                   "does the server broadcast?", fo_probe_got, fo_live);
        break;
      } else if (t >= next_probe) {
        /* a probe: once one reaches every subscriber, each of them gets every later one */
        fo_probe = fo_next_seq++;
        fo_probe_got = 0;
        fo_publish(fo_probe);
        ws_flush(fo_pub);
        next_probe = t + probe_gap;
        if (probe_gap < 640000000ull) probe_gap *= 2;
      }
    }
    if (phase == P_WARM && t >= warm_end) {
      ready_at_start = ws_open_now - fanout;
      phase = P_MEASURE;
      measuring = 1;
      meas_start = t;
      end = t + (uint64_t)(opt_duration * 1e9);
      cpu0 = cpu_self_s();
      if (opt_server_pid && is_first) scpu0 = cpu_of_pid(opt_server_pid);
      if (is_first) box0 = cpu_box_busy_s();
    }
    if (phase == P_MEASURE && t >= end) {
      meas_end = t;
      cpu1 = cpu_self_s();
      if (opt_server_pid && is_first) scpu1 = cpu_of_pid(opt_server_pid);
      if (is_first) box1 = cpu_box_busy_s();
      measuring = 0;
      stopping = 1; /* nothing new; wait for what is in flight */
      phase = P_DRAIN;
      drain_deadline = t + 2000000000ull;
    }
    if (phase == P_DRAIN && (ws_drained(total) || t >= drain_deadline)) break;
    if (phase != P_CONNECT && ws_open_now == 0) break;
    if (fanout && phase >= P_WARM && !fo_pub) {
      note_error("the publisher's connection is gone");
      break;
    }
    if (fanout) fo_pump();

    uint64_t next = phase == P_CONNECT ? t + 10000000ull
                    : phase == P_JOIN  ? next_probe
                    : phase == P_WARM  ? warm_end
                    : phase == P_MEASURE ? end
                                         : drain_deadline;
    int timeout_ms = next > t ? (int)((next - t) / 1000000 + 1) : 0;
    if (timeout_ms > 100) timeout_ms = 100;
    int n = epoll_wait(epfd, evs, 256, timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait: %s", strerror(errno));
    }
    for (int i = 0; i < n; i++) {
      uint32_t idx = (uint32_t)(evs[i].data.u64 & 0xffffffffu);
      uint32_t gen = (uint32_t)(evs[i].data.u64 >> 32);
      conn_t *c = &conns[idx];
      if (c->gen != gen || c->fd < 0 || c->state == C_DEAD || c->state == C_CLOSED) continue;
      on_event(c, evs[i].events);
    }
    if (fanout) fo_pump();
  }
  stopping = 1;
  int unfinished = 0;
  for (int i = 0; i < total; i++) {
    conn_t *c = &conns[i];
    if (c->state == C_READY) {
      if (opt_mode == M_WS_RR && c->rd_off != c->wr_off) unfinished++;
      if (fanout && !c->publisher && c->expect < fo_next_seq) {
        unfinished++;
        fo_lost += fo_next_seq - c->expect;
      }
      ws_goodbye(c);
    } else if (c->fd >= 0) {
      conn_close(c, C_CLOSED);
    }
  }
  if (unfinished)
    note_error("%d connections were still missing messages 2 s after the run", unfinished);
  if (!meas_end) { /* ended early */
    meas_end = now_ns();
    if (!meas_start) meas_start = meas_end;
    cpu1 = cpu_self_s();
    if (!cpu0) cpu0 = cpu1;
  }

  out->ops = m_ops;
  out->bytes = m_bytes;
  out->mismatches = mismatches;
  out->errors = errors;
  out->connect_errors = connect_errors;
  out->lat_count = lat_count;
  out->lat_sum_ns = lat_sum_ns;
  out->lat_max_ns = lat_max_ns;
  out->ready_at_start = ready_at_start;
  out->unfinished = unfinished;
  out->secs = (double)(meas_end - meas_start) / 1e9;
  out->cpu = cpu1 - cpu0;
  out->server_cpu = scpu0 >= 0 && scpu1 >= 0 ? scpu1 - scpu0 : -1;
  out->box_busy = box0 >= 0 && box1 >= 0 ? box1 - box0 : -1;
  out->closes = closes;
  out->lost = fo_lost;
  out->ooo = fo_ooo;
  out->msgs = fo_msgs;
  out->wire = m_wire;
  out->deflated = ws_deflated;
  out->close_code = first_close_code;
  out->connect_s = t_ready ? (double)(t_ready - t0) / 1e9 : -1;
  out->join_s = t_joined ? (double)(t_joined - t_ready) / 1e9 : -1;
  snprintf(out->close_reason, sizeof out->close_reason, "%s", first_close_reason);
  snprintf(out->first_error, sizeof out->first_error, "%s", first_error);
  snprintf(out->tls_version, sizeof out->tls_version, "%s", tls_version_seen);
  snprintf(out->cipher, sizeof out->cipher, "%s", tls_cipher_seen);
  out->done = 1;
}

/* Runs this process's connections from t0 and fills *out. */
static void run_worker(uint64_t t0, wstats_t *out, int is_first) {
  conns = calloc((size_t)nconns, sizeof *conns);
  reruns = calloc((size_t)nconns, sizeof *reruns);
  uint32_t *rerun_now = calloc((size_t)nconns, sizeof *rerun_now);
  if (!conns || !reruns || !rerun_now) die("out of memory");
  uint64_t warm_end = t0 + (uint64_t)(opt_warmup * 1e9);
  uint64_t end = warm_end + (uint64_t)(opt_duration * 1e9);
  for (int i = 0; i < nconns; i++) {
    conns[i].fd = -1;
    conn_open(&conns[i]);
  }

  struct epoll_event evs[256];
  uint64_t meas_start = 0, meas_end = 0, drain_deadline = 0;
  double cpu0 = 0, cpu1 = 0, scpu0 = -1, scpu1 = -1, box0 = -1, box1 = -1;
  int ready_at_start = 0;
  for (;;) {
    uint64_t t = now_ns();
    if (!measuring && !stopping && t >= warm_end) {
      for (int i = 0; i < nconns; i++) ready_at_start += conns[i].state == C_READY;
      measuring = 1;
      meas_start = t;
      cpu0 = cpu_self_s();
      if (opt_server_pid && is_first) scpu0 = cpu_of_pid(opt_server_pid);
      if (is_first) box0 = cpu_box_busy_s();
    }
    if (measuring && t >= end) {
      meas_end = t;
      cpu1 = cpu_self_s();
      if (opt_server_pid && is_first) scpu1 = cpu_of_pid(opt_server_pid);
      if (is_first) box1 = cpu_box_busy_s();
      measuring = 0;
      stopping = 1; /* finish chunks in flight, read their echoes, then close */
      drain_deadline = t + 2000000000ull;
      for (int i = 0; i < nconns; i++)
        if (conns[i].state == C_CONNECTING || conns[i].state == C_TLS_HS ||
            (opt_mode == M_HANDSHAKE && conns[i].state != C_DEAD))
          conn_close(&conns[i], C_CLOSED);
    }
    if (stopping) {
      int busy = 0;
      for (int i = 0; i < nconns; i++) {
        conn_t *c = &conns[i];
        if (c->state != C_READY) continue;
        if (c->rd_off == c->wr_off && c->wr_off == c->chunk_end) conn_close(c, C_CLOSED);
        else busy++;
      }
      if (!busy || t >= drain_deadline) break;
    }
    if (opt_mode == M_HANDSHAKE) {
      /* reopen failed slots, but give up when nothing ever succeeds */
      if (connect_errors + errors > 1000 && m_ops == 0 && lat_count == 0) {
        note_error("handshakes keep failing");
        break;
      }
      if (!stopping)
        for (int i = 0; i < nconns; i++)
          if (conns[i].state == C_DEAD) conn_open(&conns[i]);
    } else {
      int alive = 0; /* give up early when every connection is gone */
      for (int i = 0; i < nconns && !alive; i++) alive = conns[i].state != C_DEAD;
      if (!alive) break;
    }

    uint64_t next = stopping ? drain_deadline : measuring ? end : warm_end;
    int timeout_ms = next > t ? (int)((next - t) / 1000000 + 1) : 0;
    if (timeout_ms > 100) timeout_ms = 100;
    if (nreruns) timeout_ms = 0;
    int n = epoll_wait(epfd, evs, 256, timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait: %s", strerror(errno));
    }
    for (int i = 0; i < n; i++) {
      uint32_t idx = (uint32_t)(evs[i].data.u64 & 0xffffffffu);
      uint32_t gen = (uint32_t)(evs[i].data.u64 >> 32);
      conn_t *c = &conns[idx];
      if (c->gen != gen || c->fd < 0 || c->state == C_DEAD || c->state == C_CLOSED) continue;
      on_event(c, evs[i].events);
    }
    /* connections that used up their budget: their turn again (they may queue themselves anew) */
    int k = nreruns;
    nreruns = 0;
    memcpy(rerun_now, reruns, (size_t)k * sizeof *reruns);
    for (int i = 0; i < k; i++) {
      conn_t *c = &conns[rerun_now[i]];
      c->rerun = 0;
      if (c->fd < 0 || c->state != C_READY) continue;
      on_event(c, EPOLLIN | EPOLLOUT);
    }
  }
  int unfinished = 0;
  for (int i = 0; i < nconns; i++) {
    if (conns[i].state == C_READY) unfinished++;
    if (conns[i].fd >= 0) conn_close(&conns[i], C_CLOSED);
  }
  free(rerun_now);
  if (unfinished) note_error("%d connections still had unechoed bytes 2 s after the run", unfinished);
  if (!meas_end) { /* ended early: every connection failed */
    meas_end = now_ns();
    if (!meas_start) meas_start = meas_end;
    cpu1 = cpu_self_s();
  }

  out->ops = m_ops;
  out->bytes = m_bytes;
  out->mismatches = mismatches;
  out->errors = errors;
  out->connect_errors = connect_errors;
  out->lat_count = lat_count;
  out->lat_sum_ns = lat_sum_ns;
  out->lat_max_ns = lat_max_ns;
  out->ready_at_start = ready_at_start;
  out->unfinished = unfinished;
  out->secs = (double)(meas_end - meas_start) / 1e9;
  out->cpu = cpu1 - cpu0;
  out->server_cpu = scpu0 >= 0 && scpu1 >= 0 ? scpu1 - scpu0 : -1;
  out->box_busy = box0 >= 0 && box1 >= 0 ? box1 - box0 : -1;
  snprintf(out->first_error, sizeof out->first_error, "%s", first_error);
  snprintf(out->tls_version, sizeof out->tls_version, "%s", tls_version_seen);
  snprintf(out->cipher, sizeof out->cipher, "%s", tls_cipher_seen);
  out->done = 1;
}

int main(int argc, char **argv) {
  parse_args(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  resolve();
  if (opt_tls) setup_tls();

  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }

  size_t patlen = 256 + (size_t)(opt_size > RBUF_SIZE ? opt_size : RBUF_SIZE);
  pat = malloc(patlen);
  tpat = malloc(patlen);
  rbuf = malloc(RBUF_SIZE);
  if (!pat || !tpat || !rbuf) die("out of memory");
  for (size_t i = 0; i < patlen; i++) {
    pat[i] = (unsigned char)((i * 31 + 7) & 255);
    tpat[i] = (unsigned char)(0x20 + pat[i] % 95); /* printable ASCII: valid UTF-8 */
  }

  /* per-process stats and latency histograms, shared so process 0 can add them up */
  size_t hist_bytes = HIST_N * sizeof(uint32_t);
  size_t shared_len = (size_t)opt_procs * (sizeof(wstats_t) + hist_bytes);
  unsigned char *shared =
      mmap(NULL, shared_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) die("mmap: %s", strerror(errno));
  wstats_t *ws = (wstats_t *)shared;
  uint32_t *hists = (uint32_t *)(shared + (size_t)opt_procs * sizeof(wstats_t));

  uint64_t t0 = now_ns();
  pid_t kids[256];
  int nkids = 0, me = 0;
  if (opt_procs > 256) opt_procs = 256;
  for (int p = 1; p < opt_procs; p++) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) die("fork: %s", strerror(errno));
    if (pid == 0) {
      me = p;
      nkids = 0;
      break;
    }
    kids[nkids++] = pid;
  }
  if (me != 0) prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive process 0 */
  nconns = opt_conns / opt_procs + (me < opt_conns % opt_procs);
  conn_base = me * (opt_conns / opt_procs) + (me < opt_conns % opt_procs ? me : opt_conns % opt_procs);
  hist = hists + (size_t)me * HIST_N;
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) die("epoll_create1: %s", strerror(errno));
  if (RAND_bytes((unsigned char *)&rng_state, sizeof rng_state) != 1 || !rng_state)
    rng_state = now_ns() | 1;
  if (IS_WS) run_ws_worker(t0, &ws[me], me == 0);
  else run_worker(t0, &ws[me], me == 0);
  if (me != 0) _exit(0);
  for (int k = 0; k < nkids; k++) {
    int status;
    while (waitpid(kids[k], &status, 0) < 0 && errno == EINTR) {
    }
  }

  /* add up */
  wstats_t tot;
  memset(&tot, 0, sizeof tot);
  double secs = ws[0].secs;
  for (int p = 0; p < opt_procs; p++) {
    wstats_t *w = &ws[p];
    if (!w->done) {
      fprintf(stderr, "loadgen: worker process %d died\n", p);
      return 1;
    }
    tot.ops += w->ops;
    tot.bytes += w->bytes;
    tot.mismatches += w->mismatches;
    tot.errors += w->errors;
    tot.connect_errors += w->connect_errors;
    tot.lat_count += w->lat_count;
    tot.lat_sum_ns += w->lat_sum_ns;
    if (w->lat_max_ns > tot.lat_max_ns) tot.lat_max_ns = w->lat_max_ns;
    tot.ready_at_start += w->ready_at_start;
    tot.unfinished += w->unfinished;
    tot.cpu += w->cpu;
    tot.closes += w->closes;
    tot.lost += w->lost;
    tot.ooo += w->ooo;
    tot.msgs += w->msgs;
    tot.wire += w->wire;
    tot.deflated += w->deflated;
    if (!tot.close_code && w->close_code) {
      tot.close_code = w->close_code;
      snprintf(tot.close_reason, sizeof tot.close_reason, "%s", w->close_reason);
    }
    if (!tot.first_error[0] && w->first_error[0])
      snprintf(tot.first_error, sizeof tot.first_error, "%s", w->first_error);
    if (!tot.tls_version[0] && w->tls_version[0]) {
      snprintf(tot.tls_version, sizeof tot.tls_version, "%s", w->tls_version);
      snprintf(tot.cipher, sizeof tot.cipher, "%s", w->cipher);
    }
    if (p > 0) {
      uint32_t *h = hists + (size_t)p * HIST_N;
      for (int i = 0; i < HIST_N; i++) hist[i] += h[i];
    }
  }
  lat_count = tot.lat_count;
  lat_max_ns = tot.lat_max_ns;

  if (secs <= 0) {
    fprintf(stderr, "loadgen: %s; first error: %s\n",
            opt_mode == M_HANDSHAKE ? "handshakes keep failing"
            : IS_WS                 ? "the run ended before the measurement"
                                    : "all connections failed",
            tot.first_error[0] ? tot.first_error : "none");
    return 1;
  }
  uint64_t ops = opt_mode == M_STREAM ? tot.bytes / (uint64_t)opt_size : tot.ops;
  const char *mode = opt_mode == M_RR          ? "rr"
                     : opt_mode == M_STREAM    ? "stream"
                     : opt_mode == M_HANDSHAKE ? "handshake"
                     : opt_mode == M_WS_RR     ? "ws-rr"
                                               : "ws-fanout";
  printf("{\"mode\":\"%s\",\"tls\":%s", mode, opt_tls ? "true" : "false");
  if (opt_tls)
    printf(",\"tls_version\":\"%s\",\"cipher\":\"%s\",\"verify\":%s", tot.tls_version, tot.cipher,
           opt_ca ? "true" : "false");
  if (opt_mode == M_HANDSHAKE) printf(",\"quickack\":%s", opt_quickack ? "true" : "false");
  printf(",\"procs\":%d,\"conns\":%d,\"connected\":%d,\"size\":%ld", opt_procs, opt_conns,
         tot.ready_at_start, opt_size);
  if (opt_mode == M_STREAM) printf(",\"inflight\":%ld", opt_inflight);
  if (IS_WS) {
    printf(",\"binary\":%s", opt_binary ? "true" : "false");
    if (ws[0].connect_s >= 0) printf(",\"connect_s\":%.3f", ws[0].connect_s);
  }
  if (opt_mode == M_WS_FANOUT) {
    printf(",\"subscribers\":%d,\"window\":%ld", opt_conns, opt_window);
    if (ws[0].join_s >= 0) printf(",\"join_s\":%.3f", ws[0].join_s);
  }
  printf(",\"warmup_s\":%.3f,\"duration_s\":%.4f", opt_warmup, secs);
  printf(",\"ops\":%llu,\"ops_per_s\":%.1f,\"bytes\":%llu,\"mb_per_s\":%.2f",
         (unsigned long long)ops, ops / secs, (unsigned long long)tot.bytes, tot.bytes / secs / 1e6);
  if (opt_mode != M_STREAM)
    printf(",\"p50_us\":%.0f,\"p99_us\":%.0f,\"p999_us\":%.0f,\"max_us\":%.0f,\"mean_us\":%.1f",
           hist_percentile(0.50), hist_percentile(0.99), hist_percentile(0.999),
           tot.lat_max_ns / 1000.0, tot.lat_count ? tot.lat_sum_ns / 1000.0 / tot.lat_count : 0.0);
  if (opt_mode == M_WS_FANOUT)
    printf(",\"msgs\":%llu,\"msgs_per_s\":%.1f,\"deliveries_per_s\":%.1f,\"lost\":%llu,"
           "\"out_of_order\":%llu",
           (unsigned long long)tot.msgs, tot.msgs / secs, ops / secs, (unsigned long long)tot.lost,
           (unsigned long long)tot.ooo);
  if (IS_WS && opt_deflate)
    printf(",\"deflate\":true,\"deflate_conns\":%d,\"wire_bytes\":%llu,"
           "\"wire_bytes_per_delivery\":%.1f",
           tot.deflated, (unsigned long long)tot.wire, ops ? (double)tot.wire / (double)ops : 0.0);
  else if (IS_WS)
    printf(",\"wire_bytes\":%llu,\"wire_bytes_per_delivery\":%.1f", (unsigned long long)tot.wire,
           ops ? (double)tot.wire / (double)ops : 0.0);
  if (IS_WS) {
    printf(",\"closes\":%llu", (unsigned long long)tot.closes);
    if (tot.close_code)
      printf(",\"close_code\":%d,\"close_reason\":\"%s\"", tot.close_code, tot.close_reason);
  }
  printf(",\"mismatches\":%llu,\"errors\":%llu,\"connect_errors\":%llu",
         (unsigned long long)tot.mismatches, (unsigned long long)tot.errors,
         (unsigned long long)tot.connect_errors);
  /* cpu_pct is of one core, summed over the processes */
  printf(",\"cpu_s\":%.3f,\"cpu_pct\":%.1f", tot.cpu, tot.cpu / secs * 100);
  if (opt_server_pid && ws[0].server_cpu >= 0)
    printf(",\"server_cpu_s\":%.3f,\"server_cpu_pct\":%.1f", ws[0].server_cpu,
           ws[0].server_cpu / secs * 100);
  if (ws[0].box_busy >= 0) {
    /* the whole machine's busy CPU over the window, and what neither we nor the server used */
    double others = ws[0].box_busy - tot.cpu - (ws[0].server_cpu > 0 ? ws[0].server_cpu : 0);
    printf(",\"box_busy_pct\":%.1f,\"others_cpu_pct\":%.1f,\"ncpu\":%ld",
           ws[0].box_busy / secs * 100, (others > 0 ? others : 0) / secs * 100,
           sysconf(_SC_NPROCESSORS_ONLN));
  }
  printf("}\n");
  fflush(stdout);

  if (tot.lost || tot.ooo) {
    fprintf(stderr, "loadgen: %llu messages lost, %llu out of order; first error: %s\n",
            (unsigned long long)tot.lost, (unsigned long long)tot.ooo,
            tot.first_error[0] ? tot.first_error : "none");
    return 1;
  }
  if (tot.mismatches || tot.errors || tot.unfinished || ops == 0) {
    fprintf(stderr, "loadgen: %llu mismatches, %llu %s%s; first error: %s\n",
            (unsigned long long)tot.mismatches, (unsigned long long)tot.errors,
            opt_mode == M_HANDSHAKE ? "failed handshakes" : "connections lost",
            ops == 0 ? ", nothing completed" : "", tot.first_error[0] ? tot.first_error : "none");
    return 1;
  }
  if (tot.connect_errors && opt_mode != M_HANDSHAKE) {
    fprintf(stderr, "loadgen: %llu connections failed to connect; first error: %s\n",
            (unsigned long long)tot.connect_errors, tot.first_error);
    return 1;
  }
  return 0;
}
