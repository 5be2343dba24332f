/*
 * What the chaos suite's NFQUEUE helpers (nfq-delay.c, nfq-flip.c) share: binding a queue in the
 * current network namespace, and reading the netlink socket's pending verdict requests.
 */
#include <errno.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <linux/netfilter.h>
#include <linux/netlink.h>
#include <stdio.h>
#include <sys/socket.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

/*
 * Binds queue `num` for IPv4 with `cb`, copying `mode` (NFQNL_COPY_META or NFQNL_COPY_PACKET up to
 * `range` bytes), holding up to `maxlen` packets, with a netlink receive buffer of `rcvbuf` bytes.
 * Returns the netlink descriptor to poll, or -1 (the reason printed).
 */
static int nfq_bind_queue(int num, nfq_callback *cb, uint8_t mode, uint32_t range, uint32_t maxlen,
                          unsigned rcvbuf, struct nfq_handle **h, struct nfq_q_handle **qh) {
  *h = nfq_open();
  if (!*h) { perror("nfq_open"); return -1; }
  nfq_unbind_pf(*h, AF_INET);
  if (nfq_bind_pf(*h, AF_INET) < 0) { perror("nfq_bind_pf"); return -1; }
  *qh = nfq_create_queue(*h, num, cb, NULL);
  if (!*qh) { perror("nfq_create_queue"); return -1; }
  if (nfq_set_mode(*qh, mode, range) < 0) { perror("nfq_set_mode"); return -1; }
  nfq_set_queue_maxlen(*qh, maxlen);
  int fd = nfq_fd(*h);
  nfnl_rcvbufsiz(nfq_nfnlh(*h), rcvbuf);
  int one = 1;
  setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof one);
  return fd;
}

/* Hands every pending netlink message to the queue's callback. */
static void nfq_drain(struct nfq_handle *h, int fd, char *buf, size_t size) {
  for (;;) {
    ssize_t n = recv(fd, buf, size, MSG_DONTWAIT);
    if (n < 0) break;
    nfq_handle_packet(h, buf, (int)n);
  }
}
