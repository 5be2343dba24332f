/**
 * Destination side of the page channels: page workers booted when the configuration arrives (so
 * they are warm), connected when the source announces its ports (COMMAND PAGE_CHANNELS), and a
 * per-round count: when every channel has ended round R, ROUND_DONE(R) goes back on the return path.
 */
import type { Worker } from 'node:worker_threads';
import { ChecksumError, ErrorCode, MigrationError as MigErr, type MigrationError } from '../shared/errors.js';
import type { GuestMemory } from '../shared/guest/memory.js';
import { prepareNativeHash } from '../shared/ram/native-hash.js';
import type { PageChannelSecurity, PageWorkerEvent } from '../shared/ram/page-channel.js';
import { spawnTsWorker } from '../shared/worker/spawn.js';

export const PAGE_WORKER_ENTRY = new URL('./page-worker.ts', import.meta.url);

export class DestinationPageChannels {
  readonly checksums: BigUint64Array;
  readonly received: Uint8Array;
  readonly verified: Int32Array;
  readonly #workers: Worker[] = [];
  readonly #roundEnds = new Map<number, number>();
  /** Highest round ended on every channel (rounds end in order: the next starts after ROUND_DONE). */
  #doneThrough = 0;
  #roundWaiters: { round: number; resolve: () => void; reject: (e: MigrationError) => void }[] = [];
  #failure: MigrationError | null = null;
  /** Page copies dropped because they failed their checksum (torn by guest writes while sent). */
  tornCopies = 0;

  constructor(
    memory: GuestMemory,
    channels: number,
    migrationId: Buffer,
    security: PageChannelSecurity,
    private readonly onRoundDone: (round: number) => void,
    private readonly onError: (e: MigrationError) => void,
  ) {
    this.checksums = new BigUint64Array(new SharedArrayBuffer(memory.pageCount * 8));
    this.received = new Uint8Array(new SharedArrayBuffer(memory.pageCount));
    this.verified = new Int32Array(new SharedArrayBuffer(channels * 4));
    for (let index = 0; index < channels; index++) {
      const w = spawnTsWorker(PAGE_WORKER_ENTRY, {
        ram: memory.shared.ram,
        pageSize: memory.pageSize,
        pageCount: memory.pageCount,
        checksums: this.checksums.buffer,
        received: this.received.buffer,
        verified: this.verified.buffer,
        index,
        migrationId: new Uint8Array(migrationId),
        security,
        nativeHash: prepareNativeHash(),
      });
      w.on('message', (m: PageWorkerEvent) => this.#onWorker(m));
      w.on('error', (err) =>
        this.onError(new MigErr(ErrorCode.INTERNAL, `page worker ${index}: ${err.message}`)),
      );
      this.#workers.push(w);
    }
  }

  get channels(): number {
    return this.#workers.length;
  }

  connect(host: string, ports: number[]): void {
    if (ports.length !== this.#workers.length) {
      this.onError(
        new MigErr(
          ErrorCode.CONFIG_MISMATCH,
          `source announced ${ports.length} page channels, ${this.#workers.length} expected`,
        ),
      );
      return;
    }
    for (const [i, w] of this.#workers.entries()) w.postMessage({ type: 'connect', host, port: ports[i] });
  }

  close(): void {
    for (const w of this.#workers) w.postMessage({ type: 'close' });
    setTimeout(() => {
      for (const w of this.#workers) void w.terminate();
    }, 200).unref();
  }

  #onWorker(m: PageWorkerEvent): void {
    if (m.type === 'round-done') {
      this.tornCopies += m.torn;
      const n = (this.#roundEnds.get(m.round) ?? 0) + 1;
      this.#roundEnds.set(m.round, n);
      if (n === this.#workers.length) {
        this.#roundEnds.delete(m.round);
        this.#doneThrough = Math.max(this.#doneThrough, m.round);
        this.#settleWaiters();
        this.onRoundDone(m.round);
      }
      return;
    }
    if (m.type === 'error') {
      const Err = m.code === ErrorCode.CHECKSUM ? ChecksumError : MigErr;
      const e = new Err(m.code as ErrorCode, m.message, { page: m.page, section: 'ram' });
      this.#failure ??= e;
      this.#settleWaiters();
      this.onError(e);
    }
  }

  /** Resolves once every channel has ended `round` (the source's FINAL_ROUND); rejects if a channel fails. */
  roundEnded(round: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#roundWaiters.push({ round, resolve, reject });
      this.#settleWaiters();
    });
  }

  #settleWaiters(): void {
    this.#roundWaiters = this.#roundWaiters.filter((w) => {
      if (this.#failure) w.reject(this.#failure);
      else if (this.#doneThrough >= w.round) w.resolve();
      else return true;
      return false;
    });
  }
}
