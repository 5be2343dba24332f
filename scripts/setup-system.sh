#!/usr/bin/env bash
# Installs the Debian packages the chaos tests need (iproute2, nftables, iptables, librsvg2-bin, and
# gcc + libnetfilter-queue-dev for the chaos suite's NFQUEUE delay helper),
# only when missing, and only when we are root. Safe to run repeatedly; fast when all are present.
set -u
need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v rsvg-convert >/dev/null 2>&1 || need+=(librsvg2-bin)
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
[ -f /usr/include/libnetfilter_queue/libnetfilter_queue.h ] || need+=(libnetfilter-queue-dev)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "setup-system: not root; cannot install ${need[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
