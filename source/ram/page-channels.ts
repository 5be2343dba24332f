/**
 * Pages on page channels (QEMU multifd analog), the main-thread side. Page workers (page-worker.ts)
 * each own one TCP connection and move the bytes; this module starts them, announces their ports
 * (RAM record PAGE_CHANNELS), hands them rounds through shared control words, shares out the
 * max-bandwidth allowance, and waits for rounds: round R+1 starts only after the destination
 * confirmed round R on every channel (RP ROUND_DONE), so a newer copy of a page can never be
 * overtaken by an older one. The last round is not waited for: it is named (FINAL_ROUND) and the
 * destination waits for it.
 *
 * Every wait here ends within the stall timeout of the last sign of progress (bytes handed to the
 * sockets, a worker's round sent, a ROUND_DONE), on a worker's failure, or at once when the migration
 * is cancelled (the context's signal).
 */
import type { Worker } from 'node:worker_threads';
import { ErrorCode, MigrationError, SocketError } from '../../shared/errors.js';
import { monotonicMs } from '../../shared/guest/vcpu-control.js';
import type { SaveContext, SectionSink } from '../../shared/handlers.js';
import { encodePageChannels, encodeRamFinalRound } from '../../shared/protocol/ram-records.js';
import type { RpMessage } from '../../shared/protocol/return-path-codec.js';
import { prepareNativeHash } from '../../shared/ram/native-hash.js';
import { closePageWorkers, type PageWorkerEvent, SRC, SRC_WORDS } from '../../shared/ram/page-channel.js';
import { TraceEvent } from '../../shared/trace.js';
import { spawnTsWorker } from '../../shared/worker/spawn.js';
import { batchPagesFor, type PageTransport, type TransportTables } from './transport.js';

export const PAGE_WORKER_ENTRY = new URL('./page-worker.ts', import.meta.url);
/** Rounds smaller than this measure the round trip more than the path's rate. */
const MIN_MEASURED_ROUND = 1 << 20;
/** How long the channels may take to connect when the stall timeout is off (0). */
const CONNECT_DEFAULT_MS = 10_000;
/** Strangers on the page ports are reported at most this often (the rest are counted). */
const STRANGER_LOG_MS = 1000;

interface Round {
  round: number;
  pages: number;
  /** Workers that handed the round to their sockets. */
  sentBy: number;
  done: boolean;
  guestStopped: boolean;
}

export class PageChannels implements PageTransport {
  readonly kind = 'page-channels';
  readonly #t: TransportTables;
  readonly #channels: number;
  readonly #control = new Int32Array(new SharedArrayBuffer(SRC_WORDS * 4));
  readonly #workers: Worker[] = [];
  #ctx: SaveContext | null = null;
  #connected: Promise<void> | null = null;
  #connectedCount = 0;
  #inFlight: Round | null = null;
  #error: MigrationError | null = null;
  #wake: (() => void) | null = null;
  /** Last sign of progress (monotonic ms) and the sent counter seen then. */
  #progressAt = 0;
  #progressKib = 0;
  /** End-to-end rate of the last round big enough to measure (bytes/ms); see measuredBandwidth. */
  #roundBandwidth: number | null = null;
  #roundStart = { at: 0, kib: 0 };
  #strangers = { lastLogAt: 0, suppressed: 0 };

  constructor(tables: TransportTables, channels: number, maxBandwidth: number) {
    this.#t = tables;
    this.#channels = channels;
    Atomics.store(this.#control, SRC.BATCH, batchPagesFor(maxBandwidth, tables.memory.pageSize));
    this.refill(maxBandwidth > 0 ? maxBandwidth / 10 : 0);
  }

  get backend() {
    return this.#t.native && this.#t.memory.pageSize % 8 === 0 ? ('native' as const) : ('js' as const);
  }

  attach(ctx: SaveContext): void {
    this.#ctx = ctx;
    ctx.signal.addEventListener('abort', () => this.#wake?.(), { once: true });
  }

  /** Starts the workers listening; the destination learns their ports from the PAGE_CHANNELS record. */
  async setup(): Promise<Buffer[]> {
    const ctx = this.#ctx!;
    const { memory } = this.#t;
    const ports: Promise<number>[] = [];
    const connected: Promise<void>[] = [];
    for (let index = 0; index < this.#channels; index++) {
      const w = spawnTsWorker(PAGE_WORKER_ENTRY, {
        ram: memory.shared.ram,
        pageSize: memory.pageSize,
        pageCount: memory.pageCount,
        checksums: this.#t.sent.buffer,
        control: this.#control.buffer,
        list: this.#t.list.buffer,
        index,
        host: ctx.link.localAddress,
        peerAddress: ctx.link.peerAddress,
        migrationId: new Uint8Array(ctx.link.migrationId),
        security: ctx.link.security,
        nativeHash: prepareNativeHash(),
        stallTimeoutMs: ctx.stallTimeoutMs,
      });
      this.#workers.push(w);
      ports.push(once(w, 'listening').then((m) => m.port));
      connected.push(once(w, 'connected').then(() => void this.#connectedCount++));
      w.on('message', (m: PageWorkerEvent) => this.#onWorker(m));
      w.on('error', (err) =>
        this.#fail(new MigrationError(ErrorCode.INTERNAL, `page worker ${index}: ${err.message}`)),
      );
    }
    const listening = await this.#until(
      Promise.all(ports),
      CONNECT_DEFAULT_MS,
      'page workers did not start listening',
    );
    this.#connected = Promise.all(connected).then(() => {});
    this.#connected.catch(() => {});
    this.#progressAt = monotonicMs();
    ctx.tracer.emit(TraceEvent.PAGE_CHANNELS, { host: ctx.link.localAddress, ports: listening });
    return [encodePageChannels({ host: ctx.link.localAddress, ports: listening })];
  }

  async startRound(round: number, count: number, guestStopped: boolean): Promise<void> {
    await this.#waitConnected();
    const c = this.#control;
    Atomics.store(c, SRC.ROUND, round);
    Atomics.store(c, SRC.COUNT, count);
    Atomics.store(c, SRC.CURSOR, 0);
    this.#inFlight = { round, pages: count, sentBy: 0, done: false, guestStopped };
    this.#roundStart = { at: monotonicMs(), kib: Atomics.load(c, SRC.SENT_KIB) };
    this.#noteProgress();
    for (const w of this.#workers) w.postMessage({ type: 'round', round });
  }

  async pump(_sink: SectionSink, ms: number): Promise<boolean> {
    await this.#waitFor(
      () => this.#inFlight?.done ?? true,
      `round ${this.#inFlight?.round} not confirmed`,
      ms,
    );
    return this.#inFlight?.done ?? true;
  }

  /**
   * Pages of the open round no worker has taken yet (QEMU counts a page queued to multifd as sent).
   * The whole round until its ROUND_DONE, as before, made `remaining` stand still at all of RAM
   * through a long first pass: a progress timeout shorter than that pass fired on a healthy migration.
   */
  unsentPages(): number {
    const r = this.#inFlight;
    if (!r || r.done) return 0;
    return Math.max(0, r.pages - Atomics.load(this.#control, SRC.CURSOR));
  }

  async closeRound(): Promise<void> {
    await this.#waitFor(() => this.#inFlight?.done ?? true, `round ${this.#inFlight?.round} not confirmed`);
  }

  /**
   * The last round: no later round can overtake its pages, so waiting for its ROUND_DONE would only
   * add a return-path round trip to the downtime. Name it at once (the destination waits for it on
   * every channel before it loads anything after RAM); the image digest, which needs the round's
   * checksums, waits for the workers instead (handedOver()).
   */
  async finish(sink: SectionSink): Promise<void> {
    this.refill(0);
    await sink.emit(encodeRamFinalRound(this.#inFlight!.round));
  }

  async handedOver(): Promise<void> {
    const r = this.#inFlight;
    if (!r) return;
    await this.#waitFor(
      () => r.done || r.sentBy === this.#workers.length,
      `round ${r.round} not handed to the sockets`,
    );
  }

  settled(): boolean {
    return !(this.#inFlight && !this.#inFlight.done);
  }

  sideChannelBytes(): number {
    return Atomics.load(this.#control, SRC.SENT_KIB) * 1024;
  }

  /**
   * A new window's allowance (0 = unlimited): a token bucket shared by the workers. Unused allowance
   * carries over only up to one batch per worker — a worker waiting for room for a whole batch must
   * be able to collect it (forgetting every leftover held 16 MiB/s to ~10 with 1 MiB batches), but an
   * idle spell must not buy a burst; an overshoot carries over as debt (two workers can pass the
   * check at once): allow = min(allow, sent + one batch per worker) + budget.
   */
  refill(bytesPerWindow: number): void {
    const c = this.#control;
    if (bytesPerWindow <= 0) {
      Atomics.store(c, SRC.UNLIMITED, 1);
    } else {
      Atomics.store(c, SRC.UNLIMITED, 0);
      const sent = Atomics.load(c, SRC.SENT_KIB);
      const allow = Atomics.load(c, SRC.ALLOW_KIB);
      const batchKib = Math.ceil((Atomics.load(c, SRC.BATCH) * (this.#t.memory.pageSize + 16) + 16) / 1024);
      const carry = batchKib * this.#channels;
      Atomics.store(c, SRC.ALLOW_KIB, Math.min(allow, sent + carry) + Math.ceil(bytesPerWindow / 1024));
    }
    Atomics.notify(c, SRC.ALLOW_KIB);
  }

  /**
   * Bytes sent in the last round big enough to measure over the time from its start to ROUND_DONE.
   * Counting bytes as they enter the kernel measures socket buffers filling in a burst, then nothing
   * while they drain (0 on a slow path, which would never let the migration switch over); a whole
   * round measures what the path carries.
   */
  measuredBandwidth(): number | null {
    return this.#roundBandwidth;
  }

  onPeerMessage(m: RpMessage): void {
    if (m.type !== 'round-done') return;
    const r = this.#inFlight;
    if (r?.round === m.round && !r.done) {
      r.done = true;
      const bytes = (Atomics.load(this.#control, SRC.SENT_KIB) - this.#roundStart.kib) * 1024;
      const ms = monotonicMs() - this.#roundStart.at;
      if (bytes >= MIN_MEASURED_ROUND && ms > 0) this.#roundBandwidth = bytes / ms;
      this.#noteProgress();
    }
    this.#wake?.();
  }

  close(): void {
    closePageWorkers(this.#workers);
  }

  #onWorker(m: PageWorkerEvent): void {
    switch (m.type) {
      case 'round-sent': {
        const r = this.#inFlight;
        if (r?.round === m.round) r.sentBy++;
        this.#t.onSent({
          pages: m.pages,
          zero: m.zero,
          bytes: m.bytes,
          guestStopped: r?.guestStopped ?? false,
        });
        this.#noteProgress();
        this.#wake?.();
        return;
      }
      case 'stranger':
        this.#onStranger(m.remote, m.reason);
        return;
      case 'error':
        this.#fail(new SocketError(m.code as ErrorCode, m.message));
        return;
      default:
        return;
    }
  }

  #onStranger(remote: string, reason: string): void {
    this.#ctx?.tracer.emit(TraceEvent.STRANGER, { remote, reason });
    const s = this.#strangers;
    const now = monotonicMs();
    if (now - s.lastLogAt < STRANGER_LOG_MS) {
      s.suppressed++;
      return;
    }
    const more = s.suppressed > 0 ? ` (${s.suppressed} more since the last report)` : '';
    s.lastLogAt = now;
    s.suppressed = 0;
    this.#ctx?.warn(`page port: dropped a connection from ${remote}: ${reason}${more}`);
  }

  async #waitConnected(): Promise<void> {
    if (this.#connectedCount === this.#channels) return;
    const ms = this.#ctx!.stallTimeoutMs || CONNECT_DEFAULT_MS;
    const left = Math.max(1, this.#progressAt + ms - monotonicMs());
    await this.#until(
      this.#connected!,
      left,
      `page channels: ${this.#connectedCount} of ${this.#channels} connected within ${ms} ms`,
    );
  }

  #fail(e: MigrationError): void {
    this.#error ??= e;
    this.#ctx?.fail(e);
    this.#wake?.();
  }

  #noteProgress(): void {
    this.#progressAt = monotonicMs();
    this.#progressKib = Atomics.load(this.#control, SRC.SENT_KIB);
  }

  #throwIfStopped(): void {
    if (this.#error) throw this.#error;
    const signal = this.#ctx?.signal;
    if (signal?.aborted)
      throw signal.reason ?? new MigrationError(ErrorCode.CANCELLED, 'migration cancelled');
  }

  /**
   * Waits until `cond()` (or for at most `ms`, when given); throws on a worker failure, a cancel,
   * or when nothing has moved for the stall timeout (`what` says what was awaited).
   */
  async #waitFor(cond: () => boolean, what: string, ms?: number): Promise<void> {
    const until = ms === undefined ? Number.POSITIVE_INFINITY : monotonicMs() + ms;
    const stall = this.#ctx?.stallTimeoutMs ?? 0;
    for (;;) {
      this.#throwIfStopped();
      if (cond()) return;
      const now = monotonicMs();
      if (Atomics.load(this.#control, SRC.SENT_KIB) !== this.#progressKib) this.#noteProgress();
      if (stall > 0 && now - this.#progressAt > stall)
        throw new SocketError(
          ErrorCode.TIMEOUT,
          `page channels: ${what}: no progress for ${Math.round(now - this.#progressAt)} ms (stall-timeout ${stall} ms)`,
        );
      if (now >= until) return;
      await this.#sleep(Math.min(until - now, 50));
    }
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        if (this.#wake === done) this.#wake = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#wake = done;
    });
  }

  /** `work`, unless `ms` pass, a worker fails or the migration is cancelled first. */
  async #until<T>(work: Promise<T>, ms: number, timeoutMessage: string): Promise<T> {
    let settled = false;
    let value: T | undefined;
    let failure: unknown = null;
    work.then(
      (v) => {
        settled = true;
        value = v;
        this.#wake?.();
      },
      (e) => {
        settled = true;
        failure = e;
        this.#wake?.();
      },
    );
    const end = monotonicMs() + ms;
    while (!settled) {
      this.#throwIfStopped();
      const left = end - monotonicMs();
      if (left <= 0) throw new SocketError(ErrorCode.TIMEOUT, timeoutMessage);
      await this.#sleep(Math.min(left, 100));
    }
    if (failure) throw failure;
    return value as T;
  }
}

/** The first message of `type` from a worker. */
function once<T extends PageWorkerEvent['type']>(
  w: Worker,
  type: T,
): Promise<Extract<PageWorkerEvent, { type: T }>> {
  return new Promise((resolve) => {
    const on = (m: PageWorkerEvent) => {
      if (m.type !== type) return;
      w.off('message', on);
      resolve(m as Extract<PageWorkerEvent, { type: T }>);
    };
    w.on('message', on);
  });
}
