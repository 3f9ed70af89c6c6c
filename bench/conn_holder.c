/*
 * conn_holder: opens many connections to a server and holds them idle, for
 * the connections-and-memory benchmark (bench/scenarios/connections.ts).
 *
 *   gcc -O2 -o bench/.build/conn_holder bench/conn_holder.c -lssl -lcrypto
 *
 *   conn_holder --mode tcp|tls|ws|wss --port N [--host 127.0.0.1] --conns N
 *               [--procs P] [--source-base 2] [--per-source N] [--concurrency C]
 *               [--path /] [--sni NAME] [--timeout S]
 *
 * Every connection is set up completely before it counts: tcp connects, tls
 * also completes a full TLS handshake (no verification, no resumption), ws
 * sends an HTTP/1.1 upgrade and checks the 101 and Sec-WebSocket-Accept, wss
 * does both. At most --concurrency setups are in flight at once (a listen
 * backlog never overflows), spread over --procs processes (a process may
 * hold at most its hard open-files limit of sockets). Connection i binds the
 * source address 127.0.0.(source-base + i / per-source) before connecting
 * (IP_BIND_ADDRESS_NO_PORT: the port is chosen at connect), because one
 * source address has only ~28k ephemeral ports.
 *
 * Then it prints one JSON line and holds the connections, reading commands
 * from stdin, one per line:
 *   check   every connection proves it is alive: tcp/tls send one byte and
 *           wait for its echo, ws/wss send a masked ping and wait for the
 *           pong. Prints a JSON line with alive/dead counts.
 *   publish K   (ws/wss) connection 0 sends K 32-byte text messages and every
 *           connection waits until it has received them all, as from a
 *           broadcast server. Prints how many connections did.
 *   quit    (or end of input) closes everything and exits 0.
 * Server data on an idle connection is read and dropped (ws pings are
 * answered); a connection the server closes counts as dropped.
 *
 * Output lines:
 *   {"event":"ready","mode":"ws","conns":N,"connected":N,"errors":0,
 *    "setup_s":1.23,"first_error":""}
 *   {"event":"checked","alive":N,"dead":0,"dropped":0,"check_s":0.4}
 *   {"event":"published","messages":1,"received_all":N,"missing":0,...}
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

enum { M_TCP, M_TLS, M_WS, M_WSS };
enum { S_CONNECT, S_TLS, S_UPGRADE_SEND, S_UPGRADE_READ, S_IDLE, S_CHECK, S_DEAD };

typedef struct {
  int fd;
  int state;
  SSL *ssl;
  /* upgrade request / response, then the frame parser's small buffer */
  char *buf;
  int len;
  int off;
  char accept[32];
  int checked; /* 1 once the current check succeeded */
  /* ws frame parser: header bytes so far, payload bytes left to skip, opcode */
  unsigned char hdr[14];
  int hlen;
  uint64_t skip;
  int op;
  int got; /* ws data frames received */
} Conn;

static int mode = M_TCP;
static const char *host = "127.0.0.1";
static int port = 0;
static int nconns = 0;
static int procs = 1;
static int source_base = 2;
static int per_source = 20000;
static int concurrency = 128;
static const char *path = "/";
static const char *sni = "localhost";
static double timeout_s = 120;

static SSL_CTX *ctx;
static Conn *conns;
static int count; /* this process's connections */
static int first; /* global index of this process's first connection */
static int ep;
static int in_setup, next_conn, connected, errors, dropped;
static int published; /* ws messages every connection should have received */
static char first_error[200];

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "conn_holder: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(2);
}

static void note_error(const char *fmt, ...) {
  errors++;
  if (first_error[0]) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(first_error, sizeof first_error, fmt, ap);
  va_end(ap);
  for (char *p = first_error; *p; p++)
    if (*p == '"' || *p == '\\' || *p < 0x20) *p = ' ';
}

static const char *ws_path(void) { return path; }

/* base64 of SHA-1(key + GUID), as the server must answer */
static void expected_accept(const char *key, char out[32]) {
  static const char *guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  char cat[128];
  snprintf(cat, sizeof cat, "%s%s", key, guid);
  unsigned char md[20];
  unsigned int mdlen = 0;
  EVP_Digest(cat, strlen(cat), md, &mdlen, EVP_sha1(), NULL);
  EVP_EncodeBlock((unsigned char *)out, md, 20);
}

static void conn_free(Conn *c) {
  if (c->ssl) {
    /* close_notify (non-blocking, best effort), so the server sees a clean end */
    if (c->state == S_IDLE || c->state == S_CHECK) SSL_shutdown(c->ssl);
    SSL_free(c->ssl);
  }
  c->ssl = NULL;
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  free(c->buf);
  c->buf = NULL;
}

static void fail(Conn *c, const char *what) {
  if (c->state < S_IDLE) {
    in_setup--;
    note_error("%s", what);
  } else {
    dropped++;
  }
  c->state = S_DEAD;
  conn_free(c);
}

static void watch(Conn *c, uint32_t events) {
  struct epoll_event ev = {.events = events, .data.ptr = c};
  if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void start(Conn *c, int global) {
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  c->ssl = NULL;
  c->buf = NULL;
  c->len = c->off = 0;
  in_setup++;
  c->state = S_CONNECT;
  if (c->fd < 0) {
    fail(c, strerror(errno));
    return;
  }
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
  struct sockaddr_in src = {.sin_family = AF_INET};
  int source = source_base + global / per_source;
  if (source > 254) source = 254;
  src.sin_addr.s_addr = htonl((127u << 24) | (unsigned)source);
  if (bind(c->fd, (struct sockaddr *)&src, sizeof src) < 0) {
    char why[120];
    snprintf(why, sizeof why, "bind 127.0.0.%d: %s", source, strerror(errno));
    fail(c, why);
    return;
  }
  struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, host, &dst.sin_addr);
  if (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS) {
    char why[120];
    snprintf(why, sizeof why, "connect: %s", strerror(errno));
    fail(c, why);
    return;
  }
  watch(c, EPOLLOUT);
}

static void ready(Conn *c) {
  in_setup--;
  connected++;
  c->state = S_IDLE;
  free(c->buf);
  c->buf = NULL;
  c->len = c->off = 0;
  if (c->ssl) SSL_set_mode(c->ssl, SSL_MODE_RELEASE_BUFFERS);
  watch(c, EPOLLIN | EPOLLRDHUP);
}

static void begin_upgrade(Conn *c) {
  unsigned char raw[16];
  RAND_bytes(raw, sizeof raw);
  char key[32];
  EVP_EncodeBlock((unsigned char *)key, raw, 16);
  expected_accept(key, c->accept);
  c->buf = malloc(1024);
  c->len = snprintf(c->buf, 1024,
                    "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n",
                    ws_path(), host, port, key);
  c->off = 0;
  c->state = S_UPGRADE_SEND;
}

/* write/read through TLS or the socket: >0 bytes, 0 would block, -1 error, -2 EOF */
static int io_write(Conn *c, const void *p, int n) {
  if (c->ssl) {
    int r = SSL_write(c->ssl, p, n);
    if (r > 0) return r;
    int e = SSL_get_error(c->ssl, r);
    return (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) ? 0 : -1;
  }
  ssize_t r = send(c->fd, p, n, MSG_NOSIGNAL);
  if (r >= 0) return (int)r;
  return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
}

static int io_read(Conn *c, void *p, int n) {
  if (c->ssl) {
    int r = SSL_read(c->ssl, p, n);
    if (r > 0) return r;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
    if (e == SSL_ERROR_ZERO_RETURN) return -2;
    return -1;
  }
  ssize_t r = recv(c->fd, p, n, 0);
  if (r > 0) return (int)r;
  if (r == 0) return -2;
  return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
}

static void after_transport(Conn *c) {
  if (mode == M_WS || mode == M_WSS) {
    begin_upgrade(c);
    watch(c, EPOLLOUT);
  } else {
    ready(c);
  }
}

static void drive_tls(Conn *c) {
  int r = SSL_do_handshake(c->ssl);
  if (r == 1) {
    after_transport(c);
    return;
  }
  int e = SSL_get_error(c->ssl, r);
  if (e == SSL_ERROR_WANT_READ) watch(c, EPOLLIN);
  else if (e == SSL_ERROR_WANT_WRITE) watch(c, EPOLLOUT);
  else {
    char why[160];
    unsigned long err = ERR_get_error();
    snprintf(why, sizeof why, "TLS handshake: %s",
             err ? ERR_reason_error_string(err) : "connection closed");
    ERR_clear_error();
    fail(c, why);
  }
}

static void drive_setup(Conn *c) {
  if (c->state == S_CONNECT) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
      char why[120];
      snprintf(why, sizeof why, "connect: %s", strerror(err));
      fail(c, why);
      return;
    }
    if (mode == M_TLS || mode == M_WSS) {
      c->ssl = SSL_new(ctx);
      SSL_set_fd(c->ssl, c->fd);
      SSL_set_tlsext_host_name(c->ssl, sni);
      SSL_set_connect_state(c->ssl);
      c->state = S_TLS;
      drive_tls(c);
    } else {
      after_transport(c);
    }
    return;
  }
  if (c->state == S_TLS) {
    drive_tls(c);
    return;
  }
  if (c->state == S_UPGRADE_SEND) {
    while (c->off < c->len) {
      int n = io_write(c, c->buf + c->off, c->len - c->off);
      if (n == 0) {
        watch(c, EPOLLOUT);
        return;
      }
      if (n < 0) {
        fail(c, "writing the upgrade request failed");
        return;
      }
      c->off += n;
    }
    c->state = S_UPGRADE_READ;
    c->len = 0;
    watch(c, EPOLLIN);
  }
  if (c->state == S_UPGRADE_READ) {
    for (;;) {
      if (c->len >= 1023) {
        fail(c, "upgrade response head over 1 KiB");
        return;
      }
      int n = io_read(c, c->buf + c->len, 1023 - c->len);
      if (n == 0) return;
      if (n < 0) {
        fail(c, "the server closed during the upgrade");
        return;
      }
      c->len += n;
      c->buf[c->len] = 0;
      char *end = strstr(c->buf, "\r\n\r\n");
      if (!end) continue;
      if (strncmp(c->buf, "HTTP/1.1 101", 12) != 0) {
        char why[120];
        char *eol = strstr(c->buf, "\r\n");
        snprintf(why, sizeof why, "upgrade refused: %.*s", (int)(eol - c->buf), c->buf);
        fail(c, why);
        return;
      }
      if (!strcasestr(c->buf, c->accept)) {
        fail(c, "wrong Sec-WebSocket-Accept");
        return;
      }
      /* frames after the head (none expected while idle) are dropped */
      ready(c);
      return;
    }
  }
}

/* One masked ping with an empty payload: 0x89 0x80 + 4-byte mask. */
static const unsigned char PING[6] = {0x89, 0x80, 1, 2, 3, 4};

/* A whole server frame was read: act on control frames. Returns 1 for a pong. */
static int frame_done(Conn *c, int op) {
  if (op == 0x8) {
    fail(c, "closed by the server");
    return 0;
  }
  if (op == 0x9) {
    static const unsigned char pong[6] = {0x8A, 0x80, 9, 9, 9, 9};
    io_write(c, pong, 6);
  }
  if (op == 0x1 || op == 0x2) c->got++;
  return op == 0xA;
}

/* Reads what an idle or checking connection got; returns 1 when its check is done. */
static int drain(Conn *c) {
  unsigned char tmp[4096];
  int done = 0;
  for (;;) {
    int n = io_read(c, tmp, sizeof tmp);
    if (n == 0) break;
    if (n < 0) {
      fail(c, "closed by the server");
      return 0;
    }
    if (mode == M_TCP || mode == M_TLS) {
      if (c->state == S_CHECK) done = 1;
      continue;
    }
    /* ws: server frames (unmasked), parsed just enough to see control frames */
    for (int i = 0; i < n && c->state != S_DEAD;) {
      if (c->skip > 0) {
        uint64_t take = (uint64_t)(n - i) < c->skip ? (uint64_t)(n - i) : c->skip;
        i += (int)take;
        c->skip -= take;
        if (c->skip == 0 && frame_done(c, c->op) && c->state == S_CHECK) done = 1;
        continue;
      }
      c->hdr[c->hlen++] = tmp[i++];
      if (c->hlen < 2) continue;
      int len7 = c->hdr[1] & 0x7f;
      int need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + ((c->hdr[1] & 0x80) ? 4 : 0);
      if (c->hlen < need) continue;
      uint64_t pl = (uint64_t)len7;
      if (len7 == 126) pl = ((uint64_t)c->hdr[2] << 8) | c->hdr[3];
      if (len7 == 127) {
        pl = 0;
        for (int k = 2; k < 10; k++) pl = (pl << 8) | c->hdr[k];
      }
      c->op = c->hdr[0] & 0x0f;
      c->hlen = 0;
      if (pl > 0) c->skip = pl;
      else if (frame_done(c, c->op) && c->state == S_CHECK) done = 1;
    }
    if (c->state == S_DEAD) return 0;
  }
  return done;
}

static int count_conns(void) { return count; }
static int count_ok(int i) { return i < count && conns[i].state == S_IDLE; }

static int run_check(void) {
  int waiting = 0;
  for (int i = 0; i < count; i++) {
    Conn *c = &conns[i];
    if (c->state != S_IDLE) continue;
    c->checked = 0;
    c->state = S_CHECK;
    int n = (mode == M_TCP || mode == M_TLS) ? io_write(c, "x", 1) : io_write(c, PING, 6);
    if (n <= 0) {
      fail(c, "check write failed");
      continue;
    }
    waiting++;
  }
  double deadline = now() + 30;
  struct epoll_event evs[256];
  while (waiting > 0 && now() < deadline) {
    int n = epoll_wait(ep, evs, 256, 200);
    for (int i = 0; i < n; i++) {
      Conn *c = evs[i].data.ptr;
      if (c->state == S_DEAD) continue;
      int was = c->state;
      int done = drain(c);
      if (c->state == S_DEAD) {
        if (was == S_CHECK) waiting--;
        continue;
      }
      if (done && c->state == S_CHECK) {
        c->state = S_IDLE;
        c->checked = 1;
        waiting--;
      }
    }
  }
  int alive = 0;
  for (int i = 0; i < count; i++) {
    if (conns[i].state == S_CHECK) conns[i].state = S_IDLE; /* no answer in time */
    if (conns[i].checked) alive++;
  }
  return alive;
}

/*
 * ws: connection 0 (in the child that has it) sends `count` 32-byte text
 * messages; then every connection waits until it has received them all (a
 * broadcast server sends each to every client, the sender included).
 * Returns how many connections did, within 30 s.
 */
static int run_publish(int count, int *target) {
  if (first == 0 && count_ok(0)) {
    Conn *c = &conns[0];
    for (int i = 0; i < count; i++) {
      unsigned char frame[2 + 4 + 32];
      frame[0] = 0x81;
      frame[1] = 0x80 | 32;
      unsigned char mask[4] = {0x12, 0x34, 0x56, 0x78};
      memcpy(frame + 2, mask, 4);
      char text[33];
      snprintf(text, sizeof text, "conn_holder broadcast %010d", i);
      for (int k = 0; k < 32; k++) frame[6 + k] = (unsigned char)text[k] ^ mask[k & 3];
      if (io_write(c, frame, sizeof frame) != (int)sizeof frame) {
        fail(c, "publish write failed");
        break;
      }
    }
  }
  *target += count;
  double deadline = now() + 30;
  struct epoll_event evs[256];
  for (;;) {
    int waiting = 0;
    for (int i = 0; i < count_conns(); i++)
      if (conns[i].state == S_IDLE && conns[i].got < *target) waiting++;
    if (waiting == 0 || now() >= deadline) break;
    int n = epoll_wait(ep, evs, 256, 200);
    for (int i = 0; i < n; i++) {
      Conn *c = evs[i].data.ptr;
      if (c->state != S_DEAD) drain(c);
    }
  }
  int reached = 0;
  for (int i = 0; i < count_conns(); i++)
    if (conns[i].state == S_IDLE && conns[i].got >= *target) reached++;
  return reached;
}

/* A child: sets up its share, reports, then serves commands from the parent. */
static void child(int cmd_fd, int out_fd) {
  ep = epoll_create1(EPOLL_CLOEXEC);
  conns = calloc(count, sizeof(Conn));
  for (int i = 0; i < count; i++) conns[i].fd = -1, conns[i].state = S_DEAD;
  double t0 = now();
  double deadline = t0 + timeout_s;
  struct epoll_event evs[256];
  int limit = concurrency / procs > 0 ? concurrency / procs : 1;
  while ((next_conn < count || in_setup > 0) && now() < deadline) {
    while (next_conn < count && in_setup < limit) {
      start(&conns[next_conn], first + next_conn);
      next_conn++;
    }
    int n = epoll_wait(ep, evs, 256, 100);
    for (int i = 0; i < n; i++) {
      Conn *c = evs[i].data.ptr;
      if (c->state == S_DEAD) continue;
      if (c->state < S_IDLE) drive_setup(c);
      else drain(c);
    }
  }
  for (int i = 0; i < count; i++) {
    if (conns[i].state < S_IDLE && conns[i].fd >= 0) fail(&conns[i], "setup timed out");
  }
  double setup_s = now() - t0;
  dprintf(out_fd, "%d %d %d %.3f %s\n", connected, errors, dropped, setup_s, first_error);
  FILE *cmd = fdopen(cmd_fd, "r");
  char line[64];
  struct pollfd pf = {.fd = cmd_fd, .events = POLLIN};
  for (;;) {
    /* keep reading idle connections (pings, closes) while waiting for a command */
    int r = poll(&pf, 1, 100);
    if (r == 0) {
      int n = epoll_wait(ep, evs, 256, 0);
      for (int i = 0; i < n; i++) {
        Conn *c = evs[i].data.ptr;
        if (c->state != S_DEAD) drain(c);
      }
      continue;
    }
    if (!fgets(line, sizeof line, cmd) || strncmp(line, "quit", 4) == 0) break;
    if (strncmp(line, "check", 5) == 0) {
      double t1 = now();
      int alive = run_check();
      dprintf(out_fd, "%d %d %.3f\n", alive, dropped, now() - t1);
    } else if (strncmp(line, "publish", 7) == 0) {
      double t1 = now();
      int reached = run_publish(atoi(line + 7), &published);
      dprintf(out_fd, "%d %d %.3f\n", reached, dropped, now() - t1);
    }
  }
  for (int i = 0; i < count; i++) conn_free(&conns[i]);
  exit(0);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v && (i++, 1))
    if (ARG("--mode")) {
      if (!strcmp(v, "tcp")) mode = M_TCP;
      else if (!strcmp(v, "tls")) mode = M_TLS;
      else if (!strcmp(v, "ws")) mode = M_WS;
      else if (!strcmp(v, "wss")) mode = M_WSS;
      else die("--mode must be tcp, tls, ws or wss");
    } else if (ARG("--host")) host = v;
    else if (ARG("--port")) port = atoi(v);
    else if (ARG("--conns")) nconns = atoi(v);
    else if (ARG("--procs")) procs = atoi(v);
    else if (ARG("--source-base")) source_base = atoi(v);
    else if (ARG("--per-source")) per_source = atoi(v);
    else if (ARG("--concurrency")) concurrency = atoi(v);
    else if (ARG("--path")) path = v;
    else if (ARG("--sni")) sni = v;
    else if (ARG("--timeout")) timeout_s = atof(v);
    else die("unknown or incomplete flag %s (see the comment at the top of conn_holder.c)", a);
  }
  if (port <= 0 || nconns <= 0 || procs <= 0 || per_source <= 0 || concurrency <= 0)
    die("--port and --conns are required; counts must be positive");
  if (procs > nconns) procs = nconns;
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    int share = (nconns + procs - 1) / procs;
    if ((rlim_t)share + 64 > rl.rlim_cur)
      die("%d connections per process exceed the open-files limit %llu: use more --procs", share,
          (unsigned long long)rl.rlim_cur);
  }
  signal(SIGPIPE, SIG_IGN);
  if (mode == M_TLS || mode == M_WSS) {
    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  }
  size_t np = procs > 0 ? (size_t)procs : 1;
  int (*cmd)[2] = calloc(np, sizeof *cmd);
  int (*out)[2] = calloc(np, sizeof *out);
  pid_t *pids = calloc(np, sizeof *pids);
  for (int p = 0; p < procs; p++) {
    if (pipe(cmd[p]) < 0 || pipe(out[p]) < 0) die("pipe: %s", strerror(errno));
    int lo = (int)((long long)nconns * p / procs);
    int hi = (int)((long long)nconns * (p + 1) / procs);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) die("fork: %s", strerror(errno));
    if (pid == 0) {
      for (int q = 0; q <= p; q++) {
        if (q < p) close(cmd[q][1]), close(out[q][0]);
      }
      close(cmd[p][1]);
      close(out[p][0]);
      close(STDIN_FILENO);
      first = lo;
      count = hi - lo;
      child(cmd[p][0], out[p][1]);
    }
    pids[p] = pid;
    close(cmd[p][0]);
    close(out[p][1]);
  }
  FILE **from = calloc(np, sizeof *from);
  int total_conn = 0, total_err = 0, total_drop = 0;
  double setup = 0;
  char err_text[220] = "";
  for (int p = 0; p < procs; p++) {
    from[p] = fdopen(out[p][0], "r");
    char line[400];
    if (!fgets(line, sizeof line, from[p])) die("a holder process died during setup");
    int c, e, d, off = 0;
    double s;
    if (sscanf(line, "%d %d %d %lf %n", &c, &e, &d, &s, &off) < 4) die("bad child line");
    total_conn += c, total_err += e, total_drop += d;
    if (s > setup) setup = s;
    line[strcspn(line, "\n")] = 0;
    if (!err_text[0] && line[off]) snprintf(err_text, sizeof err_text, "%s", line + off);
  }
  static const char *names[] = {"tcp", "tls", "ws", "wss"};
  printf("{\"event\":\"ready\",\"mode\":\"%s\",\"conns\":%d,\"procs\":%d,\"connected\":%d,"
         "\"errors\":%d,\"dropped\":%d,\"setup_s\":%.3f,\"first_error\":\"%s\"}\n",
         names[mode], nconns, procs, total_conn, total_err, total_drop, setup, err_text);
  fflush(stdout);
  char line[64];
  while (fgets(line, sizeof line, stdin)) {
    if (strncmp(line, "check", 5) == 0) {
      for (int p = 0; p < procs; p++) dprintf(cmd[p][1], "check\n");
      int alive = 0, drop = 0;
      double took = 0;
      for (int p = 0; p < procs; p++) {
        char reply[128];
        if (!fgets(reply, sizeof reply, from[p])) die("a holder process died during a check");
        int a, d;
        double s;
        sscanf(reply, "%d %d %lf", &a, &d, &s);
        alive += a, drop += d;
        if (s > took) took = s;
      }
      printf("{\"event\":\"checked\",\"alive\":%d,\"dead\":%d,\"dropped\":%d,\"check_s\":%.3f}\n",
             alive, total_conn - alive, drop, took);
      fflush(stdout);
    } else if (strncmp(line, "publish", 7) == 0 && (mode == M_WS || mode == M_WSS)) {
      int n = atoi(line + 7);
      if (n < 1) n = 1;
      for (int p = 0; p < procs; p++) dprintf(cmd[p][1], "publish %d\n", n);
      int reached = 0, drop = 0;
      double took = 0;
      for (int p = 0; p < procs; p++) {
        char reply[128];
        if (!fgets(reply, sizeof reply, from[p])) die("a holder process died during a publish");
        int r, d;
        double s;
        sscanf(reply, "%d %d %lf", &r, &d, &s);
        reached += r, drop += d;
        if (s > took) took = s;
      }
      printf("{\"event\":\"published\",\"messages\":%d,\"received_all\":%d,\"missing\":%d,"
             "\"dropped\":%d,\"publish_s\":%.3f}\n",
             n, reached, total_conn - reached, drop, took);
      fflush(stdout);
    } else if (strncmp(line, "quit", 4) == 0) {
      break;
    }
  }
  for (int p = 0; p < procs; p++) dprintf(cmd[p][1], "quit\n"), close(cmd[p][1]);
  for (int p = 0; p < procs; p++) waitpid(pids[p], NULL, 0);
  return 0;
}
