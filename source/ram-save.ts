/**
 * RAM save handler (QEMU ram.c analog, main-channel mode): dirty-log sync, page search, checksummed
 * page batches. Pages are copied into the batch before they are checksummed (the guest may be
 * writing the live page), and each page's bit is cleared before the copy (harvest, then read).
 * Keeps the checksum of the last copy sent of every page: the image digest is computed over it.
 */

import type { GuestMemory } from '../shared/guest/memory.js';
import { monotonicMs } from '../shared/guest/vcpu-control.js';
import type { Pending, SaveHandlers, SectionSink } from '../shared/handlers.js';
import { encodeRamEos, encodeRamGeometry, PageBatchWriter } from '../shared/protocol/ram-records.js';
import { imageDigest } from '../shared/ram/checksum.js';
import { DirtyTracker } from './dirty-tracker.js';

/** QEMU ram_save_iterate gives up after 50 ms so other devices and the rate limiter get a turn. */
const ITERATE_MAX_MS = 50;
const BATCH_PAGES = 256;

export interface RamCounters {
  /** Pages sent as zero pages (QEMU `duplicate`). */
  duplicate: number;
  /** Pages sent with data (QEMU `normal`). */
  normal: number;
  /** RAM bytes sent while the guest ran / while it was stopped. */
  precopyBytes: number;
  downtimeBytes: number;
}

export class RamSaver implements SaveHandlers {
  readonly idstr = 'ram';
  readonly instanceId = 0;
  readonly version = 1;
  readonly iterative = true;
  readonly tracker: DirtyTracker;
  readonly counters: RamCounters = { duplicate: 0, normal: 0, precopyBytes: 0, downtimeBytes: 0 };
  /** Checksum of the last copy sent of each page (0 for zero pages). */
  readonly sentChecksums: BigUint64Array;
  /** A ring of batch buffers: one is filled while earlier ones are still being flushed by the socket. */
  readonly #batches: { writer: PageBatchWriter; flushed: Promise<void> }[];
  /** Page indexes of the batch being built. */
  readonly #list = new Int32Array(BATCH_PAGES);
  #next = 0;
  #round = 1;
  #guestStopped = false;

  constructor(private readonly memory: GuestMemory) {
    this.tracker = new DirtyTracker(memory);
    this.sentChecksums = new BigUint64Array(memory.pageCount);
    this.#batches = Array.from({ length: 4 }, () => ({
      writer: new PageBatchWriter(BATCH_PAGES, memory.pageSize),
      flushed: Promise.resolve(),
    }));
  }

  async saveSetup(sink: SectionSink): Promise<void> {
    await startRamSave(this.memory, this.tracker, sink);
  }

  pendingEstimate(): Pending {
    return { mustPrecopy: this.tracker.pending * this.memory.pageSize, canPostcopy: 0 };
  }

  pendingExact(): Pending {
    this.tracker.sync(monotonicMs());
    this.#round++;
    return this.pendingEstimate();
  }

  async saveIterate(sink: SectionSink): Promise<'more' | 'done'> {
    const t0 = monotonicMs();
    while (!sink.rateLimited()) {
      if ((await this.#sendBatch(sink)) === 0) return 'done';
      // QEMU checks the clock every 64 pages; once per 256-page batch is close enough
      if (monotonicMs() - t0 > ITERATE_MAX_MS) break;
    }
    return 'more';
  }

  /** Guest stopped: final sync, then every remaining page, then EOS in the END section. */
  async saveComplete(sink: SectionSink): Promise<void> {
    this.#guestStopped = true;
    this.tracker.sync(monotonicMs());
    this.#round++;
    while (this.tracker.pending > 0) await this.#sendBatch(sink);
    await sink.emit(encodeRamEos());
  }

  /** Digest over the checksums of the last copies sent: what the destination must end up with. */
  digest(): string {
    return imageDigest(this.sentChecksums);
  }

  /** Fills one batch from the bitmap (wrapping once past the end of RAM) and emits it; returns pages sent. */
  async #sendBatch(sink: SectionSink): Promise<number> {
    const slot = this.#batches[this.#next]!;
    this.#next = (this.#next + 1) % this.#batches.length;
    await slot.flushed; // Node still holds the bytes of this buffer's previous batch until then
    const batch = slot.writer;
    batch.reset(0, this.#round);
    const list = this.#list;
    let n = 0;
    let wrapped = false;
    while (n < list.length) {
      const p = this.tracker.next();
      if (p >= 0) {
        list[n++] = p;
        continue;
      }
      if (wrapped || this.tracker.pending === 0) break;
      wrapped = true;
    }
    if (n === 0) return 0;
    batch.addPages(list, 0, n, this.memory.bytes, this.sentChecksums);
    this.counters.duplicate += batch.zeroPages;
    this.counters.normal += batch.normalPages;
    const chunks = batch.finish();
    let bytes = 0;
    for (const c of chunks) bytes += c.length;
    if (this.#guestStopped) this.counters.downtimeBytes += bytes;
    else this.counters.precopyBytes += bytes;
    const sent = await sink.emit(chunks);
    slot.flushed = sent?.flushed ?? Promise.resolve();
    return batch.count;
  }
}

/** Setup shared by both RAM savers: every page pending (the first pass), then the geometry as START payload. */
export async function startRamSave(
  memory: GuestMemory,
  tracker: DirtyTracker,
  sink: SectionSink,
): Promise<void> {
  const { pageSize, pageCount } = memory;
  tracker.startFullPass(monotonicMs());
  await sink.emit(encodeRamGeometry({ pageSize, pageCount, blocks: [{ name: 'pc.ram', pages: pageCount }] }));
}
