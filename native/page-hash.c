/*
 * A page batch's per-page work in one N-API call per batch (shared/ram/native-hash.ts builds and
 * loads it): describePages on the source, verifyPages on the destination; and the source's dirty
 * bitmap work (syncDirty, takeAll), which runs inside the downtime and, written in JavaScript, was
 * compiled by TurboFan on a background thread right at the switchover, taking one of two CPUs. Checksums are those of
 * shared/ram/checksum.ts pageChecksum: XXH64 of the page seeded with its index (XXH64 as specified in
 * xxhash's doc/xxhash_spec.md); a page of zero bytes is flagged ZERO with checksum 0 instead.
 *
 * Why native: one call per 256 pages instead of one per page (the per-call cost of @node-rs/xxhash,
 * argument checks and BigInt in and out, was ~40 % of hashing a 4 KiB page), and no JavaScript per
 * page at all in the page workers: that loop made BigInts (young-generation garbage) and was big
 * enough that TurboFan took 15-30 ms on a background thread to compile it, sometimes inside the
 * downtime, on a machine with two CPUs.
 */
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#define P1 0x9E3779B185EBCA87ULL
#define P2 0xC2B2AE3D27D4EB4FULL
#define P3 0x165667B19E3779F9ULL
#define P4 0x85EBCA77C2B2AE63ULL
#define P5 0x27D4EB2F165667C5ULL
static inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t round1(uint64_t acc, uint64_t in) { acc += in * P2; acc = rotl(acc, 31); return acc * P1; }
static inline uint64_t merge(uint64_t acc, uint64_t v) { v = round1(0, v); acc ^= v; return acc * P1 + P4; }
static uint64_t xxh64(const uint8_t *p, size_t len, uint64_t seed) {
  const uint8_t *end = p + len; uint64_t h;
  if (len >= 32) {
    const uint8_t *limit = end - 32;
    uint64_t v1 = seed + P1 + P2, v2 = seed + P2, v3 = seed, v4 = seed - P1;
    do { v1 = round1(v1, rd64(p)); v2 = round1(v2, rd64(p+8)); v3 = round1(v3, rd64(p+16)); v4 = round1(v4, rd64(p+24)); p += 32; } while (p <= limit);
    h = rotl(v1,1) + rotl(v2,7) + rotl(v3,12) + rotl(v4,18);
    h = merge(h, v1); h = merge(h, v2); h = merge(h, v3); h = merge(h, v4);
  } else h = seed + P5;
  h += (uint64_t)len;
  while (p + 8 <= end) { h ^= round1(0, rd64(p)); h = rotl(h, 27) * P1 + P4; p += 8; }
  if (p + 4 <= end) { h ^= (uint64_t)rd32(p) * P1; h = rotl(h, 23) * P2 + P3; p += 4; }
  while (p < end) { h ^= (*p) * P5; h = rotl(h, 11) * P1; p++; }
  h ^= h >> 33; h *= P2; h ^= h >> 29; h *= P3; h ^= h >> 32; return h;
}
static int all_zero(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i += 8) if (rd64(p + i) != 0) return 0;
  return 1;
}

#define PAGE_BATCH_HEADER 16
#define PAGE_DESCRIPTOR 16
#define FLAG_ZERO 0x01
static inline void wr_be32(uint8_t *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }
static inline uint32_t rd_be32(const uint8_t *p) { return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3]; }
static inline void wr_be64(uint8_t *p, uint64_t v) { wr_be32(p, (uint32_t)(v >> 32)); wr_be32(p + 4, (uint32_t)v); }
static inline uint64_t rd_be64(const uint8_t *p) { return ((uint64_t)rd_be32(p) << 32) | rd_be32(p + 4); }

/* Fetches exactly the n arguments a function needs into a; false if fewer were passed. */
static int args(napi_env env, napi_callback_info info, size_t n, napi_value *a) {
  size_t argc = n;
  return napi_get_cb_info(env, info, &argc, a, NULL, NULL) == napi_ok && argc >= n;
}

static int typed(napi_env env, napi_value v, napi_typedarray_type want, void **data, size_t *len) {
  napi_typedarray_type t;
  napi_value ab;
  size_t off;
  return napi_get_typedarray_info(env, v, &t, len, data, &ab, &off) == napi_ok && t == want;
}

/* Appends the run [first, end) to the pairs in runs; returns the new number of runs. */
static inline int32_t push_run(void *runs, int32_t n, int32_t first, int32_t end) {
  ((int32_t *)runs)[2 * n] = first;
  ((int32_t *)runs)[2 * n + 1] = end;
  return n + 1;
}

/*
 * describePages(ram: Uint8Array, pageSize, list: Int32Array, from, to, head: Uint8Array,
 *               sent: BigUint64Array, runs: Int32Array): number
 * Writes the descriptor of each page list[from..to) into head after the 16-byte batch header
 * (be32 page | u8 flags, ZERO 0x01 | 3 x 0 | be64 checksum; a zero page has checksum 0), sets
 * sent[page] to its checksum, and stores the runs of consecutive non-zero pages, in descriptor order,
 * as [first, end) pairs in runs. Returns the number of runs. RangeError on bad arguments or a page
 * outside ram.
 */
static napi_value describePages(napi_env env, napi_callback_info info) {
  napi_value a[8], result;
  void *ram, *list, *head, *sent, *runs;
  size_t ramLen, listLen, headLen, sentLen, runsLen;
  uint32_t ps, from, to;
  if (!args(env, info, 8, a)) goto bad;
  if (!typed(env, a[0], napi_uint8_array, &ram, &ramLen)) goto bad;
  if (napi_get_value_uint32(env, a[1], &ps) != napi_ok || ps == 0 || ps % 8 != 0) goto bad;
  if (!typed(env, a[2], napi_int32_array, &list, &listLen)) goto bad;
  if (napi_get_value_uint32(env, a[3], &from) != napi_ok || napi_get_value_uint32(env, a[4], &to) != napi_ok) goto bad;
  if (!typed(env, a[5], napi_uint8_array, &head, &headLen)) goto bad;
  if (!typed(env, a[6], napi_biguint64_array, &sent, &sentLen)) goto bad;
  if (!typed(env, a[7], napi_int32_array, &runs, &runsLen)) goto bad;
  if (from > to || to > listLen) goto bad;
  size_t n = to - from;
  if (PAGE_BATCH_HEADER + n * PAGE_DESCRIPTOR > headLen || 2 * n > runsLen) goto bad;
  for (size_t k = 0; k < n; k++) {
    int32_t page = ((int32_t *)list)[from + k];
    if (page < 0 || ((size_t)page + 1) * ps > ramLen || (size_t)page >= sentLen) goto bad;
  }
  int32_t nruns = 0, runStart = -1, runEnd = -1;
  for (size_t k = 0; k < n; k++) {
    int32_t page = ((int32_t *)list)[from + k];
    const uint8_t *p = (const uint8_t *)ram + (size_t)page * ps;
    uint8_t *d = (uint8_t *)head + PAGE_BATCH_HEADER + k * PAGE_DESCRIPTOR;
    int zero = all_zero(p, ps);
    uint64_t sum = zero ? 0 : xxh64(p, ps, (uint64_t)(uint32_t)page);
    wr_be32(d, (uint32_t)page);
    wr_be32(d + 4, zero ? (uint32_t)FLAG_ZERO << 24 : 0);
    wr_be64(d + 8, sum);
    ((uint64_t *)sent)[page] = sum;
    if (zero) continue;
    if (page == runEnd) {
      runEnd++;
    } else {
      if (runStart >= 0) nruns = push_run(runs, nruns, runStart, runEnd);
      runStart = page;
      runEnd = page + 1;
    }
  }
  if (runStart >= 0) nruns = push_run(runs, nruns, runStart, runEnd);
  napi_create_int32(env, nruns, &result);
  return result;
bad:
  napi_throw_range_error(env, NULL, "describePages: bad arguments or a page outside RAM");
  return NULL;
}

/*
 * verifyPages(ram: Uint8Array, pageSize, desc: Uint8Array, count, checksums: BigUint64Array,
 *             received: Uint8Array, receivedState, tornState): number
 * The destination's check of one batch whose pages are in ram: a zero page (ZERO flag) must carry
 * checksum 0 and is cleared in ram; any other page is hashed and compared with its descriptor.
 * A match records checksums[page] and received[page] = receivedState; a mismatch only sets
 * received[page] = tornState. Returns the number of mismatches, or -(page + 1) for a zero page that
 * carries a checksum (then nothing is changed). RangeError on bad arguments or a page outside ram.
 */
static napi_value verifyPages(napi_env env, napi_callback_info info) {
  napi_value a[8], result;
  void *ram, *desc, *sums, *rec;
  size_t ramLen, descLen, sumsLen, recLen;
  uint32_t ps, count, okState, tornState;
  if (!args(env, info, 8, a)) goto bad;
  if (!typed(env, a[0], napi_uint8_array, &ram, &ramLen)) goto bad;
  if (napi_get_value_uint32(env, a[1], &ps) != napi_ok || ps == 0 || ps % 8 != 0) goto bad;
  if (!typed(env, a[2], napi_uint8_array, &desc, &descLen)) goto bad;
  if (napi_get_value_uint32(env, a[3], &count) != napi_ok || (size_t)count * PAGE_DESCRIPTOR > descLen) goto bad;
  if (!typed(env, a[4], napi_biguint64_array, &sums, &sumsLen)) goto bad;
  if (!typed(env, a[5], napi_uint8_array, &rec, &recLen)) goto bad;
  if (napi_get_value_uint32(env, a[6], &okState) != napi_ok || napi_get_value_uint32(env, a[7], &tornState) != napi_ok) goto bad;
  const uint8_t *d0 = (const uint8_t *)desc;
  for (uint32_t k = 0; k < count; k++) {
    const uint8_t *d = d0 + (size_t)k * PAGE_DESCRIPTOR;
    uint32_t page = rd_be32(d);
    if (((size_t)page + 1) * ps > ramLen || page >= sumsLen || page >= recLen) goto bad;
    if ((d[4] & FLAG_ZERO) && rd_be64(d + 8) != 0) {
      napi_create_int64(env, -(int64_t)page - 1, &result);
      return result;
    }
  }
  int32_t torn = 0;
  for (uint32_t k = 0; k < count; k++) {
    const uint8_t *d = d0 + (size_t)k * PAGE_DESCRIPTOR;
    uint32_t page = rd_be32(d);
    uint8_t *p = (uint8_t *)ram + (size_t)page * ps;
    if (d[4] & FLAG_ZERO) {
      memset(p, 0, ps);
      ((uint64_t *)sums)[page] = 0;
      ((uint8_t *)rec)[page] = (uint8_t)okState;
      continue;
    }
    uint64_t want = rd_be64(d + 8);
    if (xxh64(p, ps, (uint64_t)page) != want) {
      ((uint8_t *)rec)[page] = (uint8_t)tornState;
      torn++;
      continue;
    }
    ((uint64_t *)sums)[page] = want;
    ((uint8_t *)rec)[page] = (uint8_t)okState;
  }
  napi_create_int32(env, torn, &result);
  return result;
bad:
  napi_throw_range_error(env, NULL, "verifyPages: bad arguments or a page outside RAM");
  return NULL;
}

/*
 * syncDirty(log: Int32Array, bits: Uint32Array, counts: Int32Array): the source's dirty-log sync.
 * Takes every set bit of the guest's log (an atomic exchange per non-zero word: the vCPU sets bits
 * with Atomics.or meanwhile) and ORs it into the migration bitmap, same layout. counts[0] = bits
 * taken, counts[1] = pages newly pending (not already set in bits).
 */
static napi_value syncDirty(napi_env env, napi_callback_info info) {
  napi_value a[3];
  void *log, *bits, *counts;
  size_t logLen, bitsLen, countsLen;
  if (!args(env, info, 3, a)) goto bad;
  if (!typed(env, a[0], napi_int32_array, &log, &logLen)) goto bad;
  if (!typed(env, a[1], napi_uint32_array, &bits, &bitsLen)) goto bad;
  if (!typed(env, a[2], napi_int32_array, &counts, &countsLen) || countsLen < 2) goto bad;
  int32_t taken = 0, added = 0;
  size_t n = logLen < bitsLen ? logLen : bitsLen;
  for (size_t w = 0; w < n; w++) {
    int32_t *word = (int32_t *)log + w;
    if (__atomic_load_n(word, __ATOMIC_RELAXED) == 0) continue; /* cheap skip of clean words */
    uint32_t got = (uint32_t)__atomic_exchange_n(word, 0, __ATOMIC_SEQ_CST);
    uint32_t mine = ((uint32_t *)bits)[w];
    taken += __builtin_popcount(got);
    added += __builtin_popcount(got & ~mine);
    ((uint32_t *)bits)[w] = mine | got;
  }
  ((int32_t *)counts)[0] = taken;
  ((int32_t *)counts)[1] = added;
  return NULL;
bad:
  napi_throw_range_error(env, NULL, "syncDirty: bad arguments");
  return NULL;
}

/*
 * takeAll(bits: Uint32Array, out: Int32Array): number — every set bit's page index, ascending, into
 * out; bits is cleared. Returns how many.
 */
static napi_value takeAll(napi_env env, napi_callback_info info) {
  napi_value a[2], result;
  void *bits, *out;
  size_t bitsLen, outLen;
  if (!args(env, info, 2, a)) goto bad;
  if (!typed(env, a[0], napi_uint32_array, &bits, &bitsLen)) goto bad;
  if (!typed(env, a[1], napi_int32_array, &out, &outLen)) goto bad;
  size_t total = 0;
  for (size_t w = 0; w < bitsLen; w++) total += __builtin_popcount(((uint32_t *)bits)[w]);
  if (total > outLen) goto bad;
  int32_t n = 0;
  for (size_t w = 0; w < bitsLen; w++) {
    uint32_t word = ((uint32_t *)bits)[w];
    if (word == 0) continue;
    ((uint32_t *)bits)[w] = 0;
    while (word != 0) {
      ((int32_t *)out)[n++] = (int32_t)(w * 32 + __builtin_ctz(word));
      word &= word - 1;
    }
  }
  napi_create_int32(env, n, &result);
  return result;
bad:
  napi_throw_range_error(env, NULL, "takeAll: bad arguments or out too short");
  return NULL;
}

/*
 * adviseHugePages(ram: Uint8Array): number — madvise(MADV_HUGEPAGE) over the whole pages of ram, to be
 * called before ram is first touched. Returns the bytes advised, or -errno. Why: on a host whose
 * guest kernel runs under shadow paging (this machine: PVM), every 4 KiB page the kernel copies into
 * or out of a socket costs a shadow-page-table fill; a 1 GiB guest in 4 KiB pages moved at 0.5 GB/s
 * over loopback, in 2 MiB pages at 2.4-2.8 GB/s (/tmp experiment in the issue note).
 */
static napi_value adviseHugePages(napi_env env, napi_callback_info info) {
  napi_value a[1], result;
  void *ram;
  size_t len;
  if (!args(env, info, 1, a) || !typed(env, a[0], napi_uint8_array, &ram, &len)) {
    napi_throw_range_error(env, NULL, "adviseHugePages: expected a Uint8Array");
    return NULL;
  }
  long page = sysconf(_SC_PAGESIZE);
  uintptr_t start = ((uintptr_t)ram + page - 1) & ~(uintptr_t)(page - 1);
  uintptr_t end = ((uintptr_t)ram + len) & ~(uintptr_t)(page - 1);
  double advised = 0;
  if (end > start) {
    if (madvise((void *)start, end - start, MADV_HUGEPAGE) != 0) advised = -errno;
    else advised = (double)(end - start);
  }
  napi_create_double(env, advised, &result);
  return result;
}

/*
 * copyInto(dst: Uint8Array, dstOffset, src: Uint8Array): memcpy of src into dst at dstOffset. Why:
 * V8 copies into a SharedArrayBuffer (guest RAM) with relaxed atomics, a byte at a time unless
 * source and destination are aligned alike, and a page's bytes sit at any offset of the socket
 * chunk they arrived in: 3 GB/s instead of 17 (measured here), 0.42 s of every GiB on the main
 * channel. RangeError if src does not fit.
 */
static napi_value copyInto(napi_env env, napi_callback_info info) {
  napi_value a[3];
  void *dst, *src;
  size_t dstLen, srcLen;
  double off;
  if (!args(env, info, 3, a)) goto bad;
  if (!typed(env, a[0], napi_uint8_array, &dst, &dstLen)) goto bad;
  if (napi_get_value_double(env, a[1], &off) != napi_ok || off < 0 || off != (double)(size_t)off) goto bad;
  if (!typed(env, a[2], napi_uint8_array, &src, &srcLen)) goto bad;
  if ((size_t)off > dstLen || srcLen > dstLen - (size_t)off) goto bad;
  memcpy((uint8_t *)dst + (size_t)off, src, srcLen);
  return NULL;
bad:
  napi_throw_range_error(env, NULL, "copyInto: bad arguments or src does not fit");
  return NULL;
}

/*
 * dupFd(fd): a second descriptor of the same socket (F_DUPFD_CLOEXEC), or -errno. Why: Node lets only
 * sockets it creates itself read into a caller's buffer (onread); the destination's main channel is
 * accepted by a server, so it is re-opened as a new net.Socket on a duplicate descriptor (the first
 * one is still registered with the event loop under its own number) and read into a reused ring:
 * 16 times fewer reads than Node's 64 KiB chunks and no fresh buffer per read.
 */
static napi_value dupFd(napi_env env, napi_callback_info info) {
  napi_value a[1], result;
  int32_t fd;
  if (!args(env, info, 1, a) || napi_get_value_int32(env, a[0], &fd) != napi_ok || fd < 0) {
    napi_throw_range_error(env, NULL, "dupFd: expected a descriptor");
    return NULL;
  }
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  napi_create_int32(env, copy < 0 ? -errno : copy, &result);
  return result;
}

static napi_value Init(napi_env env, napi_value exports) {
  static const struct { const char *name; napi_callback fn; } fns[] = {
    {"describePages", describePages}, {"verifyPages", verifyPages}, {"syncDirty", syncDirty},
    {"takeAll", takeAll}, {"adviseHugePages", adviseHugePages}, {"copyInto", copyInto},
    {"dupFd", dupFd}};
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value fn;
    napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &fn);
    napi_set_named_property(env, exports, fns[i].name, fn);
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
