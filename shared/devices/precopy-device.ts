/**
 * The precopy device, our analog of a VFIO device with PRE_COPY support (QEMU hw/vfio/migration.c).
 * Both halves live here.
 *
 * Source: sends `size` bytes of initial data while the guest runs, then state the device dirties at
 * `dirty-rate`; marks INIT_DATA_SENT once (only with switchover-ack, as QEMU); at switchover sends
 * `stop-copy` bytes. Destination: copies the data into the device's backing store and, once all
 * initial data is in, prepares resources for `prep` ms (real time; the cost of building device state
 * from the initial image). The final state can only be loaded after that. With switchover-ack the
 * device approves the switchover when preparation is done, so the cost stays out of the downtime;
 * without it, the cost lands in the downtime (the seed's 1900 ms vs 420 ms).
 *
 * Chunk payload (msgpack map): {k: 'setup'|'data'|'init-data-sent', phase: 'init'|'dirty'|'stop-copy',
 * n: bytes, sum: xxh64 hex of data, data: bin}.
 */
import { randomBytes } from 'node:crypto';
import { xxh64 } from '@node-rs/xxhash';
import { ChecksumError, ErrorCode, ProtocolError } from '../errors.js';
import { monotonicMs } from '../guest/vcpu-control.js';
import type { LoadContext, LoadHandlers, Pending, SaveHandlers, SectionSink } from '../handlers.js';
import { decodePayload, encodePayload } from '../protocol/payload.js';
import type { SectionPayload } from '../protocol/section-payload.js';

export interface PrecopyConfig {
  id: string;
  /** Initial data bytes (VFIO precopy initial_bytes). */
  size: number;
  /** Bytes/s of device state dirtied while the guest runs. */
  dirtyRate: number;
  /** Destination preparation after the initial data arrived, ms; Infinity = never approves. */
  prepMs: number;
  /** Bytes sent at switchover (VFIO stop-copy). */
  stopCopy: number;
}

const CHUNK = 1024 * 1024;
const ITERATE_MAX_MS = 50;

function dataChunk(phase: string, data: Buffer): Buffer {
  return encodePayload({ k: 'data', phase, n: data.length, sum: xxh64(data).toString(16), data });
}

export class PrecopySaver implements SaveHandlers {
  readonly idstr: string;
  readonly instanceId = 0;
  readonly version = 1;
  readonly iterative = true;
  /** Bytes of device data sent (payload bytes), for the report. */
  transferred = 0;
  #initLeft: number;
  #dirty = 0;
  #lastDirtyAt = monotonicMs();
  #markerSent = false;
  readonly #pattern = randomBytes(CHUNK);

  constructor(
    readonly config: PrecopyConfig,
    private readonly switchoverAck: boolean,
    private readonly guestRunning: () => boolean,
  ) {
    this.idstr = config.id;
    this.#initLeft = config.size;
  }

  async saveSetup(sink: SectionSink): Promise<void> {
    const { size, stopCopy, prepMs } = this.config;
    await sink.emit(
      encodePayload({
        k: 'setup',
        initialBytes: size,
        stopCopy,
        prepMs: Number.isFinite(prepMs) ? prepMs : -1,
      }),
    );
    this.#lastDirtyAt = monotonicMs();
  }

  #accrueDirty(): void {
    const now = monotonicMs();
    if (this.guestRunning() && this.#initLeft === 0)
      this.#dirty += (this.config.dirtyRate * (now - this.#lastDirtyAt)) / 1000;
    this.#lastDirtyAt = now;
  }

  pendingEstimate(): Pending {
    this.#accrueDirty();
    return { mustPrecopy: this.#initLeft + Math.floor(this.#dirty), canPostcopy: 0 };
  }

  /** QEMU 8.1: precopy sizes plus the stop-copy size. */
  pendingExact(): Pending {
    const p = this.pendingEstimate();
    return { mustPrecopy: p.mustPrecopy + this.config.stopCopy, canPostcopy: 0 };
  }

  async saveIterate(sink: SectionSink): Promise<'more' | 'done'> {
    const t0 = monotonicMs();
    this.#accrueDirty();
    while (!sink.rateLimited() && monotonicMs() - t0 < ITERATE_MAX_MS) {
      if (this.#initLeft > 0) {
        const n = Math.min(CHUNK, this.#initLeft);
        this.#initLeft -= n;
        await this.#send(sink, 'init', n);
        if (this.#initLeft === 0 && this.switchoverAck && !this.#markerSent) {
          this.#markerSent = true;
          await sink.emit(encodePayload({ k: 'init-data-sent' }));
        }
        continue;
      }
      if (this.#dirty >= 1) {
        const n = Math.min(CHUNK, Math.floor(this.#dirty));
        this.#dirty -= n;
        await this.#send(sink, 'dirty', n);
        continue;
      }
      return 'done';
    }
    return 'more';
  }

  async saveComplete(sink: SectionSink): Promise<void> {
    this.#accrueDirty();
    // a guest that switched over before all initial data went (a paused guest does not wait) sends the rest now
    while (this.#initLeft > 0) {
      const n = Math.min(CHUNK, this.#initLeft);
      this.#initLeft -= n;
      await this.#send(sink, 'init', n);
    }
    let left = Math.floor(this.#dirty) + this.config.stopCopy;
    this.#dirty = 0;
    while (left > 0) {
      const n = Math.min(CHUNK, left);
      left -= n;
      await this.#send(sink, 'stop-copy', n);
    }
    await sink.emit(encodePayload({ k: 'end' }));
  }

  async #send(sink: SectionSink, phase: string, n: number): Promise<void> {
    this.transferred += n;
    await sink.emit(dataChunk(phase, this.#pattern.subarray(0, n)));
  }
}

export class PrecopyLoader implements LoadHandlers {
  readonly idstr: string;
  readonly instanceId = 0;
  readonly version = 1;
  readonly minVersion = 1;
  initialBytes = 0;
  loadedInitial = 0;
  loadedTotal = 0;
  /** Measured preparation time, ms (null until done). */
  prepMs: number | null = null;
  approvedAt: number | null = null;
  #ctx: LoadContext | null = null;
  #prepDone: Promise<void> | null = null;
  #markerSeen = false;
  #ended = false;

  constructor(
    readonly config: PrecopyConfig,
    private readonly switchoverAck: boolean,
    private readonly onPrepStart?: (id: string, ms: number) => void,
  ) {
    this.idstr = config.id;
  }

  switchoverAckNeeded(): boolean {
    return true;
  }

  loadSetup(ctx: LoadContext): void {
    this.#ctx = ctx;
  }

  async loadState(kind: string, payload: SectionPayload): Promise<void> {
    const body = decodePayload(payload.bytes(), this.idstr);
    switch (body.k) {
      case 'setup':
        this.initialBytes = Number(body.initialBytes);
        return;
      case 'data':
        return this.#onData(body, kind);
      case 'init-data-sent':
        return this.#onMarker();
      case 'end':
        if (this.loadedInitial < this.initialBytes) {
          throw new ProtocolError(
            ErrorCode.TRUNCATED,
            `${this.idstr}: END after ${this.loadedInitial} of ${this.initialBytes} initial bytes`,
            { section: this.idstr },
          );
        }
        // the final state needs the prepared resources: waiting here is downtime when the ACK was not used
        await this.#prepDone;
        this.#ended = true;
        return;
      default:
        throw new ProtocolError(
          ErrorCode.MALFORMED,
          `${this.idstr}: unknown chunk kind '${String(body.k)}'`,
          { section: this.idstr },
        );
    }
  }

  #onData(body: Record<string, unknown>, kind: string): Promise<void> | undefined {
    const data = body.data as Buffer;
    if (!Buffer.isBuffer(data) || data.length !== body.n || xxh64(data).toString(16) !== body.sum) {
      throw new ChecksumError(ErrorCode.CHECKSUM, `${this.idstr}: device data chunk fails its checksum`, {
        section: this.idstr,
      });
    }
    this.loadedTotal += data.length;
    if (body.phase === 'init') {
      this.loadedInitial += data.length;
      if (this.loadedInitial >= this.initialBytes && !this.#prepDone) this.#startPrep();
    }
    void kind;
    return undefined;
  }

  /** Preparation runs beside the stream (the device works while more data arrives). */
  #startPrep(): void {
    const ms = this.config.prepMs;
    const t0 = monotonicMs();
    this.onPrepStart?.(this.idstr, ms);
    this.#prepDone = new Promise<void>((resolve) => {
      if (!Number.isFinite(ms)) return; // never: holds the switchover forever (tests)
      setTimeout(() => {
        this.prepMs = monotonicMs() - t0;
        resolve();
        this.#maybeApprove();
      }, ms);
    });
  }

  #onMarker(): void {
    if (!this.switchoverAck) {
      throw new ProtocolError(
        ErrorCode.CAPABILITY_MISMATCH,
        `${this.idstr}: received INIT_DATA_SENT but switchover-ack is not used`,
        { section: this.idstr },
      );
    }
    this.#markerSeen = true;
    this.#maybeApprove();
  }

  #maybeApprove(): void {
    if (!this.switchoverAck || !this.#markerSeen || this.prepMs === null || this.approvedAt !== null) return;
    this.approvedAt = monotonicMs();
    this.#ctx?.approveSwitchover(this.idstr);
  }

  get complete(): boolean {
    return this.#ended;
  }
}
