/*
 * loadgen: a single-threaded epoll load client for netkit's benchmarks.
 *
 *   gcc -O2 -o bench/.build/loadgen bench/loadgen.c -lssl -lcrypto
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

enum mode { M_RR, M_STREAM, M_HANDSHAKE, M_WS_RR, M_WS_FANOUT };
enum cstate { C_IDLE, C_CONNECTING, C_TLS_HS, C_WS_HS, C_READY, C_CLOSED, C_DEAD };
#define IS_WS (opt_mode == M_WS_RR || opt_mode == M_WS_FANOUT)

#define RBUF_SIZE (256 * 1024)
#define HIST_US 100000 /* 1 µs buckets up to 100 ms, then one overflow bucket */

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

static uint64_t m_ops = 0, m_bytes = 0, mismatches = 0, errors = 0, connect_errors = 0;
static uint64_t lat_count = 0, lat_sum_ns = 0, lat_max_ns = 0;
static uint32_t *hist;
static char first_error[512] = "";
static char tls_version_seen[32] = "";
static char tls_cipher_seen[64] = "";
/* WebSocket */
static uint64_t closes = 0, fo_lost = 0, fo_ooo = 0, fo_msgs = 0;
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

static void conn_close(conn_t *c, int state) {
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
  hist[us < HIST_US ? us : HIST_US]++;
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
  for (;;) {
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
  while (progress) {
    progress = 0;
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
    else c->state = C_READY;
  }
  if (opt_tls) drive_tls(c);
  else drive_tcp(c, (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0);
}

static double hist_percentile(double q) {
  if (!lat_count) return 0;
  double exact = q * (double)lat_count; /* nearest-rank: ceil(q * count) without libm */
  uint64_t rank = (uint64_t)exact, seen = 0;
  if ((double)rank < exact) rank++;
  if (rank < 1) rank = 1;
  for (int i = 0; i <= HIST_US; i++) {
    seen += hist[i];
    if (seen >= rank) return i == HIST_US ? lat_max_ns / 1000.0 : (double)i;
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
} wstats_t;

/* Runs this process's connections from t0 and fills *out. */
static void run_worker(uint64_t t0, wstats_t *out, int is_first) {
  conns = calloc((size_t)nconns, sizeof *conns);
  if (!conns) die("out of memory");
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
  }
  int unfinished = 0;
  for (int i = 0; i < nconns; i++) {
    if (conns[i].state == C_READY) unfinished++;
    if (conns[i].fd >= 0) conn_close(&conns[i], C_CLOSED);
  }
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
  rbuf = malloc(RBUF_SIZE);
  if (!pat || !rbuf) die("out of memory");
  for (size_t i = 0; i < patlen; i++) pat[i] = (unsigned char)((i * 31 + 7) & 255);

  /* per-process stats and latency histograms, shared so process 0 can add them up */
  size_t hist_bytes = (HIST_US + 1) * sizeof(uint32_t);
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
  hist = hists + (size_t)me * (HIST_US + 1);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) die("epoll_create1: %s", strerror(errno));
  run_worker(t0, &ws[me], me == 0);
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
    if (!tot.first_error[0] && w->first_error[0])
      snprintf(tot.first_error, sizeof tot.first_error, "%s", w->first_error);
    if (!tot.tls_version[0] && w->tls_version[0]) {
      snprintf(tot.tls_version, sizeof tot.tls_version, "%s", w->tls_version);
      snprintf(tot.cipher, sizeof tot.cipher, "%s", w->cipher);
    }
    if (p > 0) {
      uint32_t *h = hists + (size_t)p * (HIST_US + 1);
      for (int i = 0; i <= HIST_US; i++) hist[i] += h[i];
    }
  }
  lat_count = tot.lat_count;
  lat_max_ns = tot.lat_max_ns;

  if (secs <= 0) {
    fprintf(stderr, "loadgen: %s; first error: %s\n",
            opt_mode == M_HANDSHAKE ? "handshakes keep failing" : "all connections failed",
            tot.first_error[0] ? tot.first_error : "none");
    return 1;
  }
  uint64_t ops = opt_mode == M_STREAM ? tot.bytes / (uint64_t)opt_size : tot.ops;
  const char *mode = opt_mode == M_RR ? "rr" : opt_mode == M_STREAM ? "stream" : "handshake";
  printf("{\"mode\":\"%s\",\"tls\":%s", mode, opt_tls ? "true" : "false");
  if (opt_tls)
    printf(",\"tls_version\":\"%s\",\"cipher\":\"%s\",\"verify\":%s", tot.tls_version, tot.cipher,
           opt_ca ? "true" : "false");
  if (opt_mode == M_HANDSHAKE) printf(",\"quickack\":%s", opt_quickack ? "true" : "false");
  printf(",\"procs\":%d,\"conns\":%d,\"connected\":%d,\"size\":%ld", opt_procs, opt_conns,
         tot.ready_at_start, opt_size);
  if (opt_mode == M_STREAM) printf(",\"inflight\":%ld", opt_inflight);
  printf(",\"warmup_s\":%.3f,\"duration_s\":%.4f", opt_warmup, secs);
  printf(",\"ops\":%llu,\"ops_per_s\":%.1f,\"bytes\":%llu,\"mb_per_s\":%.2f",
         (unsigned long long)ops, ops / secs, (unsigned long long)tot.bytes, tot.bytes / secs / 1e6);
  if (opt_mode != M_STREAM)
    printf(",\"p50_us\":%.0f,\"p99_us\":%.0f,\"p999_us\":%.0f,\"max_us\":%.0f,\"mean_us\":%.1f",
           hist_percentile(0.50), hist_percentile(0.99), hist_percentile(0.999),
           tot.lat_max_ns / 1000.0, tot.lat_count ? tot.lat_sum_ns / 1000.0 / tot.lat_count : 0.0);
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
