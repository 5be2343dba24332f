/*
 * nfq-delay QUEUE_NUM DELAY_MS — the chaos suite's delay helper (this kernel has no netem).
 *
 * Binds NFQUEUE QUEUE_NUM in the current network namespace, holds every queued packet DELAY_MS
 * milliseconds and then accepts it, in arrival order (FIFO: a constant delay never reorders).
 * Copies metadata only. Prints "ready" once bound; on SIGTERM/SIGINT it releases every held packet
 * and prints one JSON line: {"packets":N,"mean-hold-ms":X,"max-hold-ms":Y,"overflow":Z}.
 * Built by scripts/chaos/impairments.ts with: gcc -O2 nfq-delay.c -lnetfilter_queue
 */
#include <arpa/inet.h>
#include "nfq-common.h"
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define MAXQ 65536

struct held { uint32_t id; double due; double at; };
static struct held q[MAXQ];
static unsigned head, count;
static double delay_ms, hold_sum, hold_max;
static unsigned long long packets, overflow;
static volatile sig_atomic_t stopping;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void on_signal(int sig) { (void)sig; stopping = 1; }

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa, void *data) {
  (void)msg; (void)data;
  struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
  if (!ph) return 0;
  uint32_t id = ntohl(ph->packet_id);
  if (count == MAXQ) { /* never drop on our account: an overflowing packet passes undelayed */
    overflow++;
    return nfq_set_verdict(qh, id, NF_ACCEPT, 0, NULL);
  }
  double t = now_ms();
  q[(head + count) % MAXQ] = (struct held){ id, t + delay_ms, t };
  count++;
  return 0;
}

static void release(struct nfq_q_handle *qh, int all) {
  double t = now_ms();
  while (count && (all || q[head].due <= t)) {
    double hold = t - q[head].at;
    hold_sum += hold;
    if (hold > hold_max) hold_max = hold;
    packets++;
    nfq_set_verdict(qh, q[head].id, NF_ACCEPT, 0, NULL);
    head = (head + 1) % MAXQ;
    count--;
  }
}

int main(int argc, char **argv) {
  if (argc != 3) { fprintf(stderr, "usage: nfq-delay QUEUE_NUM DELAY_MS\n"); return 2; }
  int num = atoi(argv[1]);
  delay_ms = atof(argv[2]);
  struct nfq_handle *h;
  struct nfq_q_handle *qh;
  int fd = nfq_bind_queue(num, &on_packet, NFQNL_COPY_META, 0, MAXQ, 32 * 1024 * 1024, &h, &qh);
  if (fd < 0) return 1;
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  printf("ready\n");
  fflush(stdout);
  static char buf[65536] __attribute__((aligned));
  while (!stopping) {
    release(qh, 0);
    int timeout = 100;
    if (count) {
      double wait = q[head].due - now_ms();
      timeout = wait <= 0 ? 0 : (int)wait + 1;
    }
    struct pollfd p = { fd, POLLIN, 0 };
    int r = poll(&p, 1, timeout);
    if (r < 0 && errno != EINTR) { perror("poll"); break; }
    if (r > 0) {
      nfq_drain(h, fd, buf, sizeof buf);
    }
  }
  release(qh, 1);
  printf("{\"packets\":%llu,\"mean-hold-ms\":%.2f,\"max-hold-ms\":%.2f,\"overflow\":%llu}\n", packets,
         packets ? hold_sum / packets : 0.0, hold_max, overflow);
  fflush(stdout);
  nfq_destroy_queue(qh);
  nfq_close(h);
  return 0;
}
