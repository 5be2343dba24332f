/**
 * The migration bitmap (QEMU's RAMBlock bmap): pages still to send in this pass. Filled from the
 * guest's dirty log by sync() (an atomic harvest), drained page by page by the main channel's RAM
 * saver (next(), which clears a bit before copying the page) or a round at a time by page channels
 * (takeAll()).
 */
import type { GuestMemory } from '../shared/guest/memory.js';
import { popcount } from '../shared/guest/memory.js';

export class DirtyTracker {
  readonly #bits: Uint32Array;
  #pending = 0;
  #cursor = 0;
  syncCount = 0;
  /** Pages the guest dirtied in the current rate period (for dirty-pages-rate). */
  #periodPages = 0;
  #periodStart = 0;
  /** QEMU's dirty-pages-rate: pages/s over the last period of at least 1000 ms. */
  dirtyPagesRate = 0;

  constructor(private readonly memory: GuestMemory) {
    this.#bits = new Uint32Array(Math.ceil(memory.pageCount / 32));
  }

  get pending(): number {
    return this.#pending;
  }

  /** Setup: every page is pending; the guest log is cleared (its content is covered by the full pass). */
  startFullPass(now: number): void {
    const log = this.memory.dirty;
    for (let w = 0; w < log.length; w++) if (log[w] !== 0) Atomics.store(log, w, 0);
    this.#bits.fill(0xffffffff);
    const tail = this.memory.pageCount % 32;
    if (tail !== 0) this.#bits[this.#bits.length - 1] = (1 << tail) - 1;
    this.#pending = this.memory.pageCount;
    this.#cursor = 0;
    this.syncCount = 1;
    this.#periodStart = now;
  }

  /**
   * Dirty-log sync: harvest the guest log into the bitmap, a word at a time (the log and the bitmap
   * share a layout: bit p&31 of word p>>>5). Returns pages newly found dirty. No loop per page: the
   * last sync runs inside the downtime, often before this function has been compiled.
   */
  sync(now: number): number {
    const log = this.memory.dirty;
    const bits = this.#bits;
    let harvested = 0;
    let added = 0;
    for (let w = 0; w < bits.length; w++) {
      if (log[w] === 0) continue; // plain read first: cheap skip of clean words
      const got = Atomics.exchange(log, w, 0);
      const mine = bits[w]!;
      harvested += popcount(got);
      added += popcount(got & ~mine);
      bits[w] = mine | got;
    }
    this.#pending += added;
    this.#periodPages += harvested;
    this.syncCount++;
    if (now - this.#periodStart >= 1000) {
      this.dirtyPagesRate = Math.round((this.#periodPages * 1000) / (now - this.#periodStart));
      this.#periodPages = 0;
      this.#periodStart = now;
    }
    return added;
  }

  /**
   * Takes every pending page, in ascending order, into `out`; returns how many. One pass over the
   * bitmap words with no call per page: page channels build each round's list with it, and the last
   * list is built inside the downtime, where a per-page loop was slow enough (interpreted, then
   * compiled on a background thread) to cost milliseconds.
   */
  takeAll(out: Int32Array): number {
    const bits = this.#bits;
    let n = 0;
    for (let w = 0; w < bits.length; w++) {
      let word = bits[w]!;
      if (word === 0) continue;
      bits[w] = 0;
      const base = w << 5;
      while (word !== 0) {
        const low = word & -word;
        out[n++] = base + (31 - Math.clz32(low));
        word ^= low;
      }
    }
    this.#pending = 0;
    this.#cursor = 0;
    return n;
  }

  /**
   * Takes the next pending page at or after the cursor, clearing its bit; -1 when this pass reached the
   * end of RAM (the cursor wraps to 0 for the next pass).
   */
  next(): number {
    const bits = this.#bits;
    let w = this.#cursor >>> 5;
    let word = (bits[w] ?? 0) & (~0 << (this.#cursor & 31));
    while (word === 0) {
      w++;
      if (w >= bits.length) {
        this.#cursor = 0;
        return -1;
      }
      word = bits[w]!;
    }
    const low = word & -word;
    const p = w * 32 + (31 - Math.clz32(low));
    bits[w]! &= ~low;
    this.#pending--;
    this.#cursor = p + 1;
    return p;
  }

  /** Exact count (for tests): must equal `pending`. */
  count(): number {
    let n = 0;
    for (const v of this.#bits) n += popcount(v | 0);
    return n;
  }
}
