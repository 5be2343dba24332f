/**
 * The page-batch addon (native/page-hash.c): a batch's per-page work in one N-API call, with the same
 * checksums as pageChecksum() (hashing alone: 435 vs 740 ns per 4 KiB page here), and no JavaScript
 * per page in the page workers.
 *
 * Built on first use with the C compiler into node_modules/.cache/switchover/ (keyed by the source's
 * hash) against the Node headers, and loaded by absolute path, also inside page workers (the main
 * thread passes the path in workerData). Build it BEFORE guest RAM exists (prepareNativeHash() in
 * both mains): the compiler is a child process, and a fork makes all touched RAM copy-on-write
 * (see shared/worker/spawn.ts). No compiler or headers: null, and callers do the same work page by
 * page with @node-rs/xxhash. Both give the same bytes, so the two sides need not agree on which they
 * use.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cachedFile } from '../build-cache.js';

export interface NativeHash {
  /**
   * The source's per-page work for one batch: descriptors of list[from..to) into `head` after the
   * batch header, sent[page] = checksum, and the runs of consecutive non-zero pages as [first, end)
   * pairs in `runs` (capacity 2 per page). Returns the number of runs.
   */
  describePages(
    ram: Uint8Array,
    pageSize: number,
    list: Int32Array,
    from: number,
    to: number,
    head: Uint8Array,
    sent: BigUint64Array,
    runs: Int32Array,
  ): number;
  /**
   * The destination's check of one batch already in `ram` (native/page-hash.c says exactly what it
   * sets). Returns how many pages failed their checksum, or -(page + 1) for a zero page that
   * carries a checksum.
   */
  verifyPages(
    ram: Uint8Array,
    pageSize: number,
    desc: Uint8Array,
    count: number,
    checksums: BigUint64Array,
    received: Uint8Array,
    receivedState: number,
    tornState: number,
  ): number;
  /**
   * Dirty-log sync: atomically takes every set bit of the guest's log and ORs it into `bits` (same
   * layout). counts[0] = bits taken, counts[1] = pages newly set in `bits`.
   */
  syncDirty(log: Int32Array, bits: Uint32Array, counts: Int32Array): void;
  /** Every set bit's index, ascending, into `out`; clears `bits`. Returns how many. */
  takeAll(bits: Uint32Array, out: Int32Array): number;
  /** madvise(MADV_HUGEPAGE) over the whole pages of `ram` (before first touch): bytes advised, or -errno. */
  adviseHugePages(ram: Uint8Array): number;
  /** memcpy of `src` into `dst` at `dstOffset` (V8 copies into shared memory byte by byte when misaligned). */
  copyInto(dst: Uint8Array, dstOffset: number, src: Uint8Array): void;
  /** A duplicate of socket descriptor `fd` (close-on-exec), or -errno. */
  dupFd(fd: number): number;
}

const SOURCE = fileURLToPath(new URL('../../native/page-hash.c', import.meta.url));
let prepared: string | null | undefined;

/** Builds the addon if needed; returns its path, or null when it cannot be built here. */
export function prepareNativeHash(): string | null {
  if (prepared !== undefined) return prepared;
  prepared = null;
  if (process.env.SWITCHOVER_NATIVE_HASH === '0') return prepared;
  try {
    const source = readFileSync(SOURCE);
    const key = createHash('sha256').update(source).update(process.version).digest('hex').slice(0, 16);
    const include = join(dirname(dirname(process.execPath)), 'include', 'node');
    const file = cachedFile(`page-hash-${key}.node`, (tmp) =>
      compile([
        '-O3',
        '-shared',
        '-fPIC',
        `-I${include}`,
        '-I/usr/include/node',
        '-DNODE_GYP_MODULE_NAME=page_hash',
        SOURCE,
        '-o',
        tmp,
      ]),
    );
    loadNativeHash(file); // a build that does not load is no build
    prepared = file;
  } catch (err) {
    if (process.env.SWITCHOVER_DEBUG) process.stderr.write(`native page hash unavailable: ${err}\n`);
  }
  return prepared;
}

/** $CC, else cc, else gcc (Debian's gcc package may come without the cc alternative). */
function compile(args: string[]): void {
  const compilers = process.env.CC ? [process.env.CC] : ['cc', 'gcc'];
  let last: unknown;
  for (const c of compilers) {
    try {
      execFileSync(c, args, { stdio: 'ignore', timeout: 60_000 });
      return;
    } catch (err) {
      last = err;
    }
  }
  throw last;
}

const loaded = new Map<string, NativeHash>();

export function loadNativeHash(path: string | null | undefined): NativeHash | null {
  if (!path) return null;
  let h = loaded.get(path);
  if (!h) {
    h = createRequire(import.meta.url)(path) as NativeHash;
    loaded.set(path, h);
  }
  return h;
}
