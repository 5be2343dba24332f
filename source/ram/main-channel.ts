/**
 * Pages on the main channel (QEMU's plain precopy, no multifd): each batch is one RAM PART section
 * (the last one of the final round inside END), built in place from guest RAM by the page-batch
 * builder, so the kernel copies the pages straight from the guest into the socket. The stream is one
 * ordered connection: a newer copy of a page can never overtake an older one, so rounds need no
 * confirmation.
 */

import { monotonicMs } from '../../shared/guest/vcpu-control.js';
import type { SaveContext, SectionSink } from '../../shared/handlers.js';
import { PageBatchBuilder } from '../../shared/ram/page-batch-builder.js';
import { BATCH_PAGES } from '../../shared/ram/page-channel.js';
import { batchPagesFor, type PageTransport, type TransportTables } from './transport.js';

/**
 * Batches in rotation: Node holds a written buffer until the kernel has taken it, so a builder (its
 * header buffer; the page views point into guest RAM) is reused only after its write left Node.
 */
const RING = 4;

export class MainChannelPages implements PageTransport {
  readonly kind = 'main-channel';
  readonly #t: TransportTables;
  readonly #ram: Buffer;
  readonly #ring: { builder: PageBatchBuilder; flushed: Promise<void> }[];
  readonly #limitedBatch: number;
  #slot = 0;
  #round = 0;
  #count = 0;
  #cursor = 0;
  #guestStopped = false;

  constructor(tables: TransportTables, maxBandwidth: number) {
    this.#t = tables;
    const { memory } = tables;
    this.#ram = Buffer.from(memory.shared.ram, 0, memory.pageCount * memory.pageSize);
    this.#ring = Array.from({ length: RING }, () => ({
      builder: new PageBatchBuilder(BATCH_PAGES, memory.pageSize, tables.native),
      flushed: Promise.resolve(),
    }));
    this.#limitedBatch = batchPagesFor(maxBandwidth, memory.pageSize);
  }

  get backend() {
    return this.#ring[0]!.builder.backend;
  }

  attach(_ctx: SaveContext): void {}

  async setup(): Promise<Buffer[]> {
    return [];
  }

  async startRound(round: number, count: number, guestStopped: boolean): Promise<void> {
    this.#round = round;
    this.#count = count;
    this.#cursor = 0;
    this.#guestStopped = guestStopped;
  }

  async pump(sink: SectionSink, ms: number): Promise<boolean> {
    const t0 = monotonicMs();
    while (this.#cursor < this.#count && !sink.rateLimited()) {
      await this.#sendBatch(sink, this.#limitedBatch);
      if (monotonicMs() - t0 > ms) break;
    }
    return this.#cursor >= this.#count;
  }

  unsentPages(): number {
    return this.#count - this.#cursor;
  }

  async closeRound(requeue: (from: number, to: number) => void): Promise<void> {
    if (this.#cursor < this.#count) requeue(this.#cursor, this.#count);
    this.#cursor = this.#count;
  }

  async finish(sink: SectionSink): Promise<void> {
    // the guest is stopped and the limiter is off: full-size batches
    while (this.#cursor < this.#count) await this.#sendBatch(sink, BATCH_PAGES);
  }

  /** Checksums are recorded as each batch is built. */
  async handedOver(): Promise<void> {}

  settled(): boolean {
    return true;
  }

  sideChannelBytes(): number {
    return 0;
  }

  refill(_bytes: number): void {}

  measuredBandwidth(): number | null {
    return null;
  }

  onPeerMessage(): void {}

  close(): void {}

  async #sendBatch(sink: SectionSink, pages: number): Promise<void> {
    const slot = this.#ring[this.#slot]!;
    this.#slot = (this.#slot + 1) % RING;
    await slot.flushed; // Node may still hold this builder's previous header
    const from = this.#cursor;
    const to = Math.min(this.#count, from + pages);
    this.#cursor = to;
    const b = slot.builder;
    const chunks = b.build(0, this.#round, this.#t.list, from, to, this.#ram, this.#t.sent);
    let bytes = 0;
    for (const c of chunks) bytes += c.length;
    this.#t.onSent({ pages: b.count, zero: b.zeroPages, bytes, guestStopped: this.#guestStopped });
    const sent = await sink.emit(chunks);
    slot.flushed = sent?.flushed ?? Promise.resolve();
  }
}
