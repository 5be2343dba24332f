/*
 * nfq-flip QUEUE_NUM AFTER_BYTES BIT — the chaos suite's page-channel corrupter.
 *
 * Binds NFQUEUE QUEUE_NUM in the current network namespace and passes every queued TCP segment on,
 * unchanged but one: once AFTER_BYTES bytes of TCP payload have gone by, it flips bit BIT of the
 * next payload byte, once, and re-injects that segment modified with its TCP checksum updated
 * (RFC 1624): the kernel checks a mangled segment's checksum again and would drop it otherwise, and
 * TCP would just resend the good bytes. It is used on the destination's INPUT hook for the page
 * channels only, so the flipped byte reaches the page worker the way a corrupting path delivers it.
 * Prints "ready" once bound; when it flips, one JSON line {"flipped":OFFSET,"t":MONOTONIC_MS}; on
 * SIGTERM/SIGINT {"packets":N,"payload-bytes":M}.
 * Built by scripts/chaos/helpers.ts with: gcc -O2 nfq-flip.c -lnetfilter_queue
 */
#include <arpa/inet.h>
#include "nfq-common.h"
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>


static unsigned long long after, seen, packets;
static int bit, flipped;
static volatile sig_atomic_t stopping;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void on_signal(int sig) { (void)sig; stopping = 1; }

/* The 16-bit word of the TCP segment `tcp` (length `len`) that holds byte `pos`, in host order. */
static uint16_t word_at(const unsigned char *tcp, int len, int pos) {
  int at = pos & ~1;
  return (uint16_t)((tcp[at] << 8) | (at + 1 < len ? tcp[at + 1] : 0));
}

/* Flips `mask` in tcp[pos] and updates the TCP checksum incrementally: HC' = ~(~HC + ~m + m'). */
static void flip_with_checksum(unsigned char *tcp, int len, int pos, unsigned char mask) {
  uint16_t before = word_at(tcp, len, pos);
  tcp[pos] ^= mask;
  uint16_t after = word_at(tcp, len, pos);
  uint32_t sum = (uint16_t)~(uint16_t)((tcp[16] << 8) | tcp[17]);
  sum += (uint16_t)~before;
  sum += after;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  uint16_t hc = (uint16_t)~sum;
  tcp[16] = (unsigned char)(hc >> 8);
  tcp[17] = (unsigned char)hc;
}

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa, void *data) {
  (void)msg; (void)data;
  struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
  if (!ph) return 0;
  uint32_t id = ntohl(ph->packet_id);
  unsigned char *pkt;
  int len = nfq_get_payload(nfa, &pkt);
  packets++;
  if (len < 20 || (pkt[0] >> 4) != 4 || pkt[9] != 6) return nfq_set_verdict(qh, id, NF_ACCEPT, 0, NULL);
  int ihl = (pkt[0] & 0x0f) * 4;
  if (len < ihl + 20) return nfq_set_verdict(qh, id, NF_ACCEPT, 0, NULL);
  int doff = (pkt[ihl + 12] >> 4) * 4;
  int at = ihl + doff, payload = len - at;
  if (payload <= 0) return nfq_set_verdict(qh, id, NF_ACCEPT, 0, NULL);
  if (!flipped && seen + (unsigned long long)payload > after) {
    int k = (int)(after > seen ? after - seen : 0);
    flip_with_checksum(pkt + ihl, len - ihl, doff + k, (unsigned char)(1u << bit));
    flipped = 1;
    printf("{\"flipped\":%llu,\"t\":%.3f}\n", seen + (unsigned long long)k, now_ms());
    fflush(stdout);
    seen += (unsigned long long)payload;
    return nfq_set_verdict(qh, id, NF_ACCEPT, (uint32_t)len, pkt);
  }
  seen += (unsigned long long)payload;
  return nfq_set_verdict(qh, id, NF_ACCEPT, 0, NULL);
}

int main(int argc, char **argv) {
  if (argc != 4) { fprintf(stderr, "usage: nfq-flip QUEUE_NUM AFTER_BYTES BIT\n"); return 2; }
  int num = atoi(argv[1]);
  after = strtoull(argv[2], NULL, 10);
  bit = atoi(argv[3]) & 7;
  struct nfq_handle *h;
  struct nfq_q_handle *qh;
  int fd = nfq_bind_queue(num, &on_packet, NFQNL_COPY_PACKET, 0xffff, 65536, 64 * 1024 * 1024, &h, &qh);
  if (fd < 0) return 1;
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  printf("ready\n");
  fflush(stdout);
  static char buf[0x20000] __attribute__((aligned));
  while (!stopping) {
    struct pollfd p = { fd, POLLIN, 0 };
    int r = poll(&p, 1, 100);
    if (r < 0 && errno != EINTR) { perror("poll"); break; }
    if (r > 0) {
      nfq_drain(h, fd, buf, sizeof buf);
    }
  }
  printf("{\"packets\":%llu,\"payload-bytes\":%llu}\n", packets, seen);
  fflush(stdout);
  nfq_destroy_queue(qh);
  nfq_close(h);
  return 0;
}
