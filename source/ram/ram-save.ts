/**
 * The RAM save handler (QEMU ram.c analog): the dirty log, precopy rounds, the last copy's checksum
 * of every page (for the image digest) and the counters. How a round's pages travel is its
 * transport's business (transport.ts): the main channel or page channels. The orchestrator sees only
 * the SaveHandlers interface.
 *
 * A round takes every pending page out of the migration bitmap at once (harvest, then read: the bits
 * are cleared before any page is read) into a shared list, and the transport sends that list. A page
 * dirtied again meanwhile is found by the next sync and sent in a later round.
 */
import type { GuestMemory } from '../../shared/guest/memory.js';
import { monotonicMs } from '../../shared/guest/vcpu-control.js';
import type { Pending, SaveContext, SaveHandlers, SectionSink } from '../../shared/handlers.js';
import { encodeRamEos, encodeRamGeometry } from '../../shared/protocol/ram-records.js';
import type { RpMessage } from '../../shared/protocol/return-path-codec.js';
import { imageDigest } from '../../shared/ram/checksum.js';
import { loadNativeHash, prepareNativeHash } from '../../shared/ram/native-hash.js';
import type { ChecksumBackend } from '../../shared/ram/page-batch-builder.js';
import { DirtyTracker } from './dirty-tracker.js';
import { MainChannelPages } from './main-channel.js';
import { PageChannels } from './page-channels.js';
import type { PageTransport, RoundStats } from './transport.js';

/** QEMU ram_save_iterate gives up after 50 ms so other devices and the rate limiter get a turn. */
const ITERATE_MAX_MS = 50;

export interface RamCounters {
  /** Pages sent as zero pages (QEMU `duplicate`). */
  duplicate: number;
  /** Pages sent with data (QEMU `normal`). */
  normal: number;
  /** RAM bytes sent while the guest ran / while it was stopped. */
  precopyBytes: number;
  downtimeBytes: number;
}

export interface RamSaveOptions {
  /** Page channels to use (multifd-channels), or 0 for the main channel. */
  pageChannels: number;
  /** max-bandwidth (bytes/s, 0 = unlimited): batches shrink so a window's budget is not one big burst. */
  maxBandwidth: number;
}

export class RamSaver implements SaveHandlers {
  readonly idstr = 'ram';
  readonly instanceId = 0;
  readonly version = 1;
  readonly iterative = true;
  readonly tracker: DirtyTracker;
  readonly counters: RamCounters = { duplicate: 0, normal: 0, precopyBytes: 0, downtimeBytes: 0 };
  /** Checksum of the last copy sent of each page (0 for zero pages); shared with page workers. */
  readonly sentChecksums: BigUint64Array;
  readonly #list: Int32Array;
  readonly #transport: PageTransport;
  #round = 0;
  #roundOpen = false;

  constructor(
    private readonly memory: GuestMemory,
    opts: RamSaveOptions,
  ) {
    const native = loadNativeHash(prepareNativeHash());
    this.tracker = new DirtyTracker(memory, native);
    this.sentChecksums = new BigUint64Array(new SharedArrayBuffer(memory.pageCount * 8));
    this.#list = new Int32Array(new SharedArrayBuffer(memory.pageCount * 4));
    const tables = {
      memory,
      list: this.#list,
      sent: this.sentChecksums,
      native,
      onSent: (s: RoundStats) => this.#count(s),
    };
    this.#transport =
      opts.pageChannels > 0
        ? new PageChannels(tables, opts.pageChannels, opts.maxBandwidth)
        : new MainChannelPages(tables, opts.maxBandwidth);
  }

  /** Which transport moves the pages ('main-channel' | 'page-channels'), for the report. */
  get transport(): string {
    return this.#transport.kind;
  }

  /** Which page hasher ran (ram.checksum-backend). */
  get checksumBackend(): ChecksumBackend {
    return this.#transport.backend;
  }

  attach(ctx: SaveContext): void {
    this.#transport.attach(ctx);
  }

  async saveSetup(sink: SectionSink): Promise<void> {
    const { pageSize, pageCount } = this.memory;
    this.tracker.startFullPass(monotonicMs());
    await sink.emit(
      encodeRamGeometry({ pageSize, pageCount, blocks: [{ name: 'pc.ram', pages: pageCount }] }),
    );
    for (const record of await this.#transport.setup()) await sink.emit(record);
  }

  pendingEstimate(): Pending {
    return {
      mustPrecopy: (this.tracker.pending + this.#transport.unsentPages()) * this.memory.pageSize,
      canPostcopy: 0,
    };
  }

  pendingExact(): Pending {
    this.tracker.sync(monotonicMs());
    return this.pendingEstimate();
  }

  async saveIterate(sink: SectionSink): Promise<'more' | 'done'> {
    if (!this.#roundOpen) {
      if (this.tracker.pending === 0) return 'done';
      await this.#startRound(false);
    }
    if (await this.#transport.pump(sink, ITERATE_MAX_MS)) this.#roundOpen = false;
    return 'more';
  }

  /** Guest stopped: close any open round, final sync, the last round, EOS (in the END section). */
  async saveComplete(sink: SectionSink): Promise<void> {
    if (this.#roundOpen) {
      await this.#transport.closeRound((from, to) => this.tracker.requeue(this.#list, from, to));
      this.#roundOpen = false;
    }
    this.tracker.sync(monotonicMs());
    if (this.tracker.pending > 0) {
      await this.#startRound(true);
      await this.#transport.finish(sink);
      this.#roundOpen = false;
    }
    await sink.emit(encodeRamEos());
  }

  settled(): boolean {
    return this.#transport.settled();
  }

  sideChannelBytes(): number {
    return this.#transport.sideChannelBytes();
  }

  refillSideChannels(bytes: number): void {
    this.#transport.refill(bytes);
  }

  measuredBandwidth(): number | null {
    return this.#transport.measuredBandwidth();
  }

  onPeerMessage(m: RpMessage): void {
    this.#transport.onPeerMessage(m);
  }

  /** The image digest's input: resolves once every page sent has its checksum recorded. */
  handedOver(): Promise<void> {
    return this.#transport.handedOver();
  }

  /** Digest over the checksums of the last copies sent: what the destination must end up with. */
  digest(): string {
    return imageDigest(this.sentChecksums);
  }

  saveCleanup(): void {
    this.#transport.close();
  }

  async #startRound(guestStopped: boolean): Promise<void> {
    // guestStopped is an argument, not a field set at the switchover: writing a field V8 had seen as
    // constant deoptimized the round code inside the downtime (session 4's trace)
    const count = this.tracker.takeAll(this.#list);
    this.#roundOpen = true;
    await this.#transport.startRound(++this.#round, count, guestStopped);
  }

  #count(s: RoundStats): void {
    this.counters.duplicate += s.zero;
    this.counters.normal += s.pages - s.zero;
    if (s.guestStopped) this.counters.downtimeBytes += s.bytes;
    else this.counters.precopyBytes += s.bytes;
  }
}
