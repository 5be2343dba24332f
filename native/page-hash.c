/*
 * Page checksums for a whole batch in one N-API call (shared/ram/native-hash.ts builds and loads it).
 * Same function as shared/ram/checksum.ts pageChecksum: XXH64 of the page seeded with its index; a
 * page of zero bytes is reported as zero (checksum 0) instead. One call per 256 pages instead of one
 * per page: the per-call cost of @node-rs/xxhash (argument checks, BigInt in and out) was ~40 % of
 * hashing a 4 KiB page here. XXH64 as specified in xxhash's doc/xxhash_spec.md.
 */
#include <node_api.h>
#include <stdint.h>
#include <string.h>
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

/*
 * hashPages(ram: Uint8Array, pageSize: number, list: Int32Array, from: number, to: number,
 *           out: BigUint64Array, zero: Uint8Array | null): for k in [from, to), page = list[k]:
 * out[k - from] = checksum of that page of ram, zero[k - from] = 1 if it is all zero bytes (out 0).
 * Throws RangeError when a page lies outside ram or the outputs are too short.
 */
static napi_value hashPages(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value a[7];
  if (napi_get_cb_info(env, info, &argc, a, NULL, NULL) != napi_ok || argc < 7) goto bad;
  napi_typedarray_type t;
  size_t n, off;
  napi_value ab;
  void *ram, *list, *out, *zero = NULL;
  size_t ramLen, listLen, outLen, zeroLen = 0;
  uint32_t ps, from, to;
  if (napi_get_typedarray_info(env, a[0], &t, &ramLen, &ram, &ab, &off) != napi_ok || t != napi_uint8_array) goto bad;
  if (napi_get_value_uint32(env, a[1], &ps) != napi_ok || ps == 0 || ps % 8 != 0) goto bad;
  if (napi_get_typedarray_info(env, a[2], &t, &listLen, &list, &ab, &off) != napi_ok || t != napi_int32_array) goto bad;
  if (napi_get_value_uint32(env, a[3], &from) != napi_ok || napi_get_value_uint32(env, a[4], &to) != napi_ok) goto bad;
  if (napi_get_typedarray_info(env, a[5], &t, &outLen, &out, &ab, &off) != napi_ok || t != napi_biguint64_array) goto bad;
  napi_valuetype zt;
  napi_typeof(env, a[6], &zt);
  if (zt != napi_null && (napi_get_typedarray_info(env, a[6], &t, &zeroLen, &zero, &ab, &off) != napi_ok || t != napi_uint8_array)) goto bad;
  if (from > to || to > listLen || to - from > outLen || (zero && to - from > zeroLen)) goto bad;
  n = to - from;
  for (size_t k = 0; k < n; k++) {
    int32_t page = ((int32_t *)list)[from + k];
    if (page < 0 || ((size_t)page + 1) * ps > ramLen) goto bad;
    const uint8_t *p = (const uint8_t *)ram + (size_t)page * ps;
    if (zero && all_zero(p, ps)) {
      ((uint8_t *)zero)[k] = 1;
      ((uint64_t *)out)[k] = 0;
    } else {
      if (zero) ((uint8_t *)zero)[k] = 0;
      ((uint64_t *)out)[k] = xxh64(p, ps, (uint64_t)(uint32_t)page);
    }
  }
  return NULL;
bad:
  napi_throw_range_error(env, NULL, "hashPages: bad arguments or a page outside RAM");
  return NULL;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "hashPages", NAPI_AUTO_LENGTH, hashPages, NULL, &fn);
  napi_set_named_property(env, exports, "hashPages", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
