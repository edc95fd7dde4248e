/*
 * Bench helper: real TCP connection churn at a steady rate, beyond what a Deno client reaches on
 * two cores (about 2,700 connections a second). Compiled at bench time into a temporary
 * directory by bench/events_churn_grid.ts; never commit the binary.
 *
 *   churn_client server ADDR PORT
 *       Accepts and closes at once (with a reset, so no socket lingers) until killed.
 *   churn_client client RATE SECONDS DST_ADDR DST_PORT SRC_ADDR...
 *       Opens RATE connections a second for SECONDS seconds, non-blocking, spread over the source
 *       addresses; each one is closed with a reset (SO_LINGER 0) as soon as it is established,
 *       so the client never runs out of ports to TIME_WAIT. Prints one JSON line:
 *       {"connections":N,"failed":N,"seconds":S,"rate":R,"cpuSeconds":C}, C being its user+system
 *       time (the kernel forwards what it sends in softirqs that run on its behalf).
 *
 * Only ever pointed at the bench's own namespaces and documentation-range addresses.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* Connections in flight at most: a stalled server must not exhaust descriptors. */
#define MAX_IN_FLIGHT 8192
/* A connection not established within this long counts as failed. */
#define CONNECT_TIMEOUT_S 2.0

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void reset_on_close(int fd) {
  struct linger l = {.l_onoff = 1, .l_linger = 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

static struct sockaddr_in address(const char *text, int port) {
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)port);
  if (inet_pton(AF_INET, text, &a.sin_addr) != 1) {
    fprintf(stderr, "Cannot parse %s as an IPv4 address\n", text);
    exit(2);
  }
  return a;
}

static int serve(const char *addr, int port) {
  struct sockaddr_in a = address(addr, port);
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(listener, (struct sockaddr *)&a, sizeof a) != 0 || listen(listener, 4096) != 0) {
    perror("Cannot listen");
    return 1;
  }
  for (;;) {
    int fd = accept(listener, NULL, NULL);
    if (fd < 0) continue;
    reset_on_close(fd);
    close(fd);
  }
}

static int churn(double rate, double seconds, const char *dst, int port, int nsrc,
                 char **srcs) {
  struct sockaddr_in to = address(dst, port);
  struct sockaddr_in from[64];
  if (nsrc > 64) nsrc = 64;
  for (int i = 0; i < nsrc; i++) from[i] = address(srcs[i], 0);
  int ep = epoll_create1(0);
  static double opened_at[65536];
  long started = 0, connections = 0, failed = 0;
  int in_flight = 0;
  double t0 = now_s(), last_sweep = t0;
  struct epoll_event events[1024];
  for (;;) {
    double t = now_s();
    double elapsed = t - t0;
    if (elapsed >= seconds && in_flight == 0) break;
    if (elapsed >= seconds + CONNECT_TIMEOUT_S) break;
    long owed = elapsed < seconds ? (long)(rate * elapsed) - started : 0;
    for (; owed > 0 && in_flight < MAX_IN_FLIGHT; owed--) {
      started++;
      int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
      if (fd < 0 || fd >= 65536) {
        if (fd >= 0) close(fd);
        failed++;
        continue;
      }
      int one = 1;
      setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
      reset_on_close(fd);
      if (nsrc > 0) bind(fd, (struct sockaddr *)&from[started % nsrc], sizeof from[0]);
      if (connect(fd, (struct sockaddr *)&to, sizeof to) != 0 && errno != EINPROGRESS) {
        close(fd);
        failed++;
        continue;
      }
      struct epoll_event e = {.events = EPOLLOUT, .data.fd = fd};
      epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
      opened_at[fd] = t;
      in_flight++;
    }
    int n = epoll_wait(ep, events, 1024, 1);
    for (int i = 0; i < n; i++) {
      int fd = events[i].data.fd;
      int error = 0;
      socklen_t len = sizeof error;
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len);
      /* A reset from the server (it closes at once) still means the handshake completed. */
      if (error == 0 || error == ECONNRESET || error == EPIPE) connections++;
      else {
        failed++;
        if (getenv("CHURN_DEBUG")) fprintf(stderr, "error %d events %x\n", error, events[i].events);
      }
      opened_at[fd] = 0;
      close(fd); /* a reset, thanks to SO_LINGER 0 */
      in_flight--;
    }
    /* Twice a second, give up on connections that took too long (closing removes them). */
    if (t - last_sweep > 0.5) {
      last_sweep = t;
      for (int fd = 0; fd < 65536; fd++) {
        if (opened_at[fd] > 0 && t - opened_at[fd] > CONNECT_TIMEOUT_S) {
          opened_at[fd] = 0;
          close(fd);
          failed++;
          in_flight--;
        }
      }
    }
  }
  double took = now_s() - t0;
  if (took > seconds) took = seconds;
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  double cpu = (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec / 1e6 +
               (double)u.ru_stime.tv_sec + (double)u.ru_stime.tv_usec / 1e6;
  printf("{\"connections\":%ld,\"failed\":%ld,\"seconds\":%.3f,\"rate\":%.0f,\"cpuSeconds\":%.3f}\n",
         connections, failed, took, connections / took, cpu);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 4 && strcmp(argv[1], "server") == 0) return serve(argv[2], atoi(argv[3]));
  if (argc >= 6 && strcmp(argv[1], "client") == 0) {
    return churn(atof(argv[2]), atof(argv[3]), argv[4], atoi(argv[5]), argc - 6, argv + 6);
  }
  fprintf(stderr,
          "usage: churn_client server ADDR PORT | client RATE SECONDS DST PORT SRC...\n");
  return 2;
}
