/**
 * Guest memory shared between the main thread, the vCPU worker and page workers, plus the dirty log:
 * one bit per page, set by the vCPU with Atomics.or after it writes a page, harvested by the migration
 * with Atomics.exchange before it copies the page (the analog of KVM's dirty log).
 */
import { loadNativeHash, prepareNativeHash } from '../ram/native-hash.js';
import { type Layout, layoutFor, PAGE_SIZE } from './layout.js';
import { CONTROL_BYTES } from './vcpu-control.js';

export interface GuestMemoryShared {
  ram: SharedArrayBuffer;
  dirty: SharedArrayBuffer;
  control: SharedArrayBuffer;
  ramBytes: number;
  pageSize: number;
}

export class GuestMemory {
  readonly layout: Layout;
  readonly bytes: Uint8Array;
  /** Dirty log, one bit per page. */
  readonly dirty: Int32Array;
  /** vCPU control words (see guest/vcpu-control.ts). */
  readonly control: Int32Array;

  constructor(readonly shared: GuestMemoryShared) {
    this.layout = layoutFor(shared.ramBytes, shared.pageSize);
    this.bytes = new Uint8Array(shared.ram, 0, this.layout.pageCount * shared.pageSize);
    this.dirty = new Int32Array(shared.dirty);
    this.control = new Int32Array(shared.control);
  }

  /** Bytes of guest RAM advised to use transparent huge pages (0: not advised; see allocate). */
  hugePagesAdvised = 0;

  /**
   * Allocates guest RAM untouched and, with the native addon, advises huge pages for it before the
   * first touch (SWITCHOVER_HUGE_PAGES=0 turns that off). Why: copying guest RAM into and out of
   * sockets is the migration's main cost, and on a host with shadow paging every 4 KiB page the
   * kernel copies costs a page-table fill: measured here, a 1 GiB buffer crossed a loopback socket at
   * 0.5 GB/s in 4 KiB pages and at 2.4-2.8 GB/s in 2 MiB pages (the same copy of a cache-sized buffer:
   * 3.4-4.3 GB/s). The SharedArrayBuffer's memory is private anonymous memory, which THP serves when
   * advised ("madvise" mode, the kernel default).
   */
  static allocate(ramBytes: number, pageSize = PAGE_SIZE): GuestMemory {
    const layout = layoutFor(ramBytes, pageSize);
    const ram = new SharedArrayBuffer(layout.pageCount * pageSize);
    const advised = adviseHugePages(ram);
    const memory = new GuestMemory({
      ram,
      dirty: new SharedArrayBuffer(Math.ceil(layout.pageCount / 32) * 4),
      control: new SharedArrayBuffer(CONTROL_BYTES),
      ramBytes: layout.pageCount * pageSize,
      pageSize,
    });
    memory.hugePagesAdvised = advised;
    return memory;
  }

  get pageSize(): number {
    return this.layout.pageSize;
  }

  get pageCount(): number {
    return this.layout.pageCount;
  }

  /** A view of page i (no copy). */
  page(i: number): Uint8Array {
    return this.bytes.subarray(i * this.layout.pageSize, (i + 1) * this.layout.pageSize);
  }

  /**
   * Touches every page once so the kernel backs it now, not inside the migration (QEMU prealloc=on).
   * Returns the milliseconds it took.
   */
  prefault(): number {
    const t0 = performance.now();
    const { pageSize, pageCount } = this.layout;
    for (let p = 0; p < pageCount; p++) this.bytes[p * pageSize] = 0;
    return performance.now() - t0;
  }

  /** Sets every page's dirty bit (the first pass sends everything). */
  markAllDirty(): void {
    const words = this.dirty.length;
    for (let w = 0; w < words; w++) Atomics.store(this.dirty, w, -1);
    const tail = this.layout.pageCount % 32;
    if (tail !== 0) Atomics.store(this.dirty, words - 1, (1 << tail) - 1);
  }

  /** Number of set bits (pending pages) without clearing them: the cheap estimate. */
  countDirty(): number {
    let n = 0;
    for (let w = 0; w < this.dirty.length; w++) {
      const v = this.dirty[w]!;
      if (v !== 0) n += popcount(v);
    }
    return n;
  }
}

export function popcount(v: number): number {
  let x = v - ((v >>> 1) & 0x55555555);
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (Math.imul((x + (x >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24) & 0xff;
}

/** Marks page p dirty (vCPU side, after the write). */
export function markDirty(dirty: Int32Array, p: number): void {
  Atomics.or(dirty, p >>> 5, 1 << (p & 31));
}

/** madvise(MADV_HUGEPAGE) through the addon; 0 when it is off, unavailable or refused. */
function adviseHugePages(ram: SharedArrayBuffer): number {
  if (process.env.SWITCHOVER_HUGE_PAGES === '0') return 0;
  const native = loadNativeHash(prepareNativeHash());
  const advised = native?.adviseHugePages(new Uint8Array(ram)) ?? 0;
  return Math.max(advised, 0);
}
