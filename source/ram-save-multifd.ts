/**
 * RAM save handler with page channels (QEMU multifd analog). The main thread keeps the dirty log
 * and decides rounds; page workers (source/page-worker.ts) move the bytes, each on its own TCP
 * connection. A round's page list is taken from the migration bitmap (bits cleared before any
 * copy); round R+1 starts only after the destination confirmed round R on every channel
 * (RP ROUND_DONE), so a newer copy of a page can never be overtaken by an older one.
 */
import type { Worker } from 'node:worker_threads';
import { withDeadline } from '../shared/deadline.js';
import { ErrorCode, MigrationError } from '../shared/errors.js';
import type { GuestMemory } from '../shared/guest/memory.js';
import { monotonicMs } from '../shared/guest/vcpu-control.js';
import type { Pending, SaveHandlers, SectionSink } from '../shared/handlers.js';
import { encodeRamEos, encodeRamFinalRound } from '../shared/protocol/ram-records.js';
import { imageDigest } from '../shared/ram/checksum.js';
import { loadNativeHash, prepareNativeHash } from '../shared/ram/native-hash.js';
import {
  type PageChannelSecurity,
  type PageWorkerEvent,
  SRC,
  SRC_WORDS,
} from '../shared/ram/page-channel.js';
import { spawnTsWorker } from '../shared/worker/spawn.js';
import { DirtyTracker } from './dirty-tracker.js';
import { type RamCounters, startRamSave } from './ram-save.js';

export const PAGE_WORKER_ENTRY = new URL('./page-worker.ts', import.meta.url);
/** How long one iterate turn waits for a round to finish before giving other handlers a turn. */
const ITERATE_WAIT_MS = 50;
/** Rounds smaller than this measure the round trip more than the path's rate. */
const MIN_MEASURED_ROUND = 1 << 20;

export class MultifdRamSaver implements SaveHandlers {
  readonly idstr = 'ram';
  readonly instanceId = 0;
  readonly version = 1;
  readonly iterative = true;
  readonly tracker: DirtyTracker;
  readonly counters: RamCounters = { duplicate: 0, normal: 0, precopyBytes: 0, downtimeBytes: 0 };
  readonly sentChecksums: BigUint64Array;
  readonly #control = new Int32Array(new SharedArrayBuffer(SRC_WORDS * 4));
  readonly #list: Int32Array;
  readonly #workers: Worker[] = [];
  readonly #connected: Promise<void>[] = [];
  #round = 0;
  #inFlight: { round: number; pages: number; sentBy: number; done: boolean; stopped: boolean } | null = null;
  #wakeRound: (() => void) | null = null;
  #error: MigrationError | null = null;
  /** Bytes the workers sent (page channels), for `transferred`. */
  bytesSent = 0;
  /**
   * End-to-end rate of the last round big enough to measure (bytes/ms, null until then): bytes
   * sent in it over the time from its start to ROUND_DONE. Counting bytes as they enter the kernel
   * measures socket buffers filling in a burst, then nothing while they drain (0 on a slow path,
   * which would never let the migration switch over); a whole round measures what the path carries.
   */
  roundBandwidth: number | null = null;
  #roundStart = { at: 0, kib: 0 };

  constructor(
    private readonly memory: GuestMemory,
    private readonly channels: number,
    private readonly onError: (e: MigrationError) => void,
  ) {
    this.tracker = new DirtyTracker(memory, loadNativeHash(prepareNativeHash()));
    const sums = new SharedArrayBuffer(memory.pageCount * 8);
    this.sentChecksums = new BigUint64Array(sums);
    this.#list = new Int32Array(new SharedArrayBuffer(memory.pageCount * 4));
  }

  /** Starts the page workers listening on `host`; resolves with their ports (for PAGE_CHANNELS). */
  async listen(host: string, migrationId: Buffer, security: PageChannelSecurity): Promise<number[]> {
    const ports: Promise<number>[] = [];
    for (let index = 0; index < this.channels; index++) {
      const w = spawnTsWorker(PAGE_WORKER_ENTRY, {
        ram: this.memory.shared.ram,
        pageSize: this.memory.pageSize,
        pageCount: this.memory.pageCount,
        checksums: this.sentChecksums.buffer,
        control: this.#control.buffer,
        list: this.#list.buffer,
        index,
        host,
        migrationId: new Uint8Array(migrationId),
        security,
        nativeHash: prepareNativeHash(),
      });
      this.#workers.push(w);
      this.#connected.push(
        new Promise((resolve) =>
          w.on('message', (m: PageWorkerEvent) => m.type === 'connected' && resolve()),
        ),
      );
      ports.push(
        new Promise((resolve) =>
          w.on('message', (m: PageWorkerEvent) => m.type === 'listening' && resolve(m.port)),
        ),
      );
      w.on('message', (m: PageWorkerEvent) => this.#onWorker(m));
      w.on('error', (err) =>
        this.#fail(new MigrationError(ErrorCode.INTERNAL, `page worker ${index}: ${err.message}`)),
      );
    }
    return Promise.all(ports);
  }

  /** Bytes handed to the page channels so far (per batch, live; KiB resolution). */
  sentBytesLive(): number {
    return Atomics.load(this.#control, SRC.SENT_KIB) * 1024;
  }

  /** max-bandwidth for the workers: a new window's allowance (0 = unlimited). */
  refill(bytesPerWindow: number): void {
    const c = this.#control;
    if (bytesPerWindow <= 0) {
      Atomics.store(c, SRC.UNLIMITED, 1);
    } else {
      Atomics.store(c, SRC.UNLIMITED, 0);
      const sent = Atomics.load(c, SRC.SENT_KIB);
      Atomics.store(
        c,
        SRC.ALLOW_KIB,
        Math.max(Atomics.load(c, SRC.ALLOW_KIB), sent) + Math.ceil(bytesPerWindow / 1024),
      );
    }
    Atomics.notify(c, SRC.ALLOW_KIB);
  }

  async saveSetup(sink: SectionSink): Promise<void> {
    await startRamSave(this.memory, this.tracker, sink);
  }

  pendingEstimate(): Pending {
    const inFlight = this.#inFlight && !this.#inFlight.done ? this.#inFlight.pages : 0;
    return { mustPrecopy: (this.tracker.pending + inFlight) * this.memory.pageSize, canPostcopy: 0 };
  }

  pendingExact(): Pending {
    this.tracker.sync(monotonicMs());
    return this.pendingEstimate();
  }

  /** Every destination page worker connected (they boot in parallel with the setup). */
  async waitConnected(timeoutMs: number): Promise<void> {
    await withDeadline(
      Promise.all(this.#connected),
      timeoutMs,
      () => new MigrationError(ErrorCode.TIMEOUT, `page channels not connected within ${timeoutMs} ms`),
    );
  }

  async saveIterate(_sink: SectionSink): Promise<'more' | 'done'> {
    this.#throwIfFailed();
    if (this.#inFlight && !this.#inFlight.done) {
      await this.#waitRound(ITERATE_WAIT_MS);
      return 'more';
    }
    if (this.tracker.pending === 0) return 'done';
    this.#startRound(false);
    return 'more';
  }

  async saveComplete(sink: SectionSink): Promise<void> {
    this.refill(0);
    while (this.#inFlight && !this.#inFlight.done) await this.#waitRound(1000);
    this.tracker.sync(monotonicMs());
    if (this.tracker.pending > 0) {
      // The last round: no later round can overtake its pages, so waiting for its ROUND_DONE would
      // only add a return-path round trip to the downtime. Name it at once (the destination waits
      // for it on every channel before it loads anything after RAM): waiting here until the workers
      // had handed it to their sockets put two thread hops in front of the destination's last step
      // (FINAL_ROUND reached it ~3 ms after the pages, in traced W2 runs). The image digest, which
      // needs the round's checksums, waits for that instead (handedOver()).
      await sink.emit(encodeRamFinalRound(this.#startRound(true)));
    }
    await sink.emit(encodeRamEos());
  }

  /**
   * Resolves once every worker has handed the round on its way to its socket and recorded its
   * checksums (for the image digest); rejects if a page channel failed.
   */
  async handedOver(): Promise<void> {
    while (this.#inFlight && !this.#inFlight.done && this.#inFlight.sentBy < this.#workers.length)
      await this.#waitRound(1000);
    this.#throwIfFailed();
  }

  /** A round is on its way: switching over now would finish it inside the downtime, then send again. */
  get roundInFlight(): boolean {
    return this.#inFlight !== null && !this.#inFlight.done;
  }

  /** The destination placed and verified every page of `round` on every channel. */
  noteRoundDone(round: number): void {
    if (this.#inFlight?.round === round && !this.#inFlight.done) {
      this.#inFlight.done = true;
      const bytes = (Atomics.load(this.#control, SRC.SENT_KIB) - this.#roundStart.kib) * 1024;
      const ms = monotonicMs() - this.#roundStart.at;
      if (bytes >= MIN_MEASURED_ROUND && ms > 0) this.roundBandwidth = bytes / ms;
    }
    this.#wakeRound?.();
  }

  digest(): string {
    return imageDigest(this.sentChecksums);
  }

  saveCleanup(): void {
    for (const w of this.#workers) w.postMessage({ type: 'close' });
    setTimeout(() => {
      for (const w of this.#workers) void w.terminate();
    }, 200).unref();
  }

  /**
   * Lists every pending page and hands the list to the workers. `guestStopped` is an argument, not a
   * field set at the switchover: writing a field V8 had seen as constant deoptimized this function
   * inside the downtime.
   */
  #startRound(guestStopped: boolean): number {
    const n = this.tracker.takeAll(this.#list);
    const round = ++this.#round;
    const c = this.#control;
    Atomics.store(c, SRC.ROUND, round);
    Atomics.store(c, SRC.COUNT, n);
    Atomics.store(c, SRC.CURSOR, 0);
    this.#inFlight = { round, pages: n, sentBy: 0, done: false, stopped: guestStopped };
    this.#roundStart = { at: monotonicMs(), kib: Atomics.load(c, SRC.SENT_KIB) };
    for (const w of this.#workers) w.postMessage({ type: 'round', round });
    return round;
  }

  #onWorker(m: PageWorkerEvent): void {
    switch (m.type) {
      case 'round-sent': {
        if (this.#inFlight?.round === m.round && ++this.#inFlight.sentBy === this.#workers.length)
          this.#wakeRound?.();
        this.bytesSent += m.bytes;
        this.counters.duplicate += m.zero;
        this.counters.normal += m.pages - m.zero;
        if (this.#inFlight?.stopped) this.counters.downtimeBytes += m.bytes;
        else this.counters.precopyBytes += m.bytes;
        return;
      }
      case 'error':
        this.#fail(new MigrationError(m.code as ErrorCode, m.message));
        return;
      default:
        return;
    }
  }

  #fail(e: MigrationError): void {
    this.#error ??= e;
    this.onError(e);
    this.#wakeRound?.();
  }

  #throwIfFailed(): void {
    if (this.#error) throw this.#error;
  }

  #waitRound(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(timer);
        self.#wakeRound = null;
        resolve();
      }
      this.#wakeRound = done;
    }).then(() => this.#throwIfFailed());
  }
}
