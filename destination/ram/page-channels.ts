/**
 * Destination side of the page channels: page workers booted at load setup (so they are warm),
 * connected when the RAM section announces the source's ports (PAGE_CHANNELS), and a per-round
 * count: when every channel has ended round R, ROUND_DONE(R) goes back on the return path. The last
 * round (FINAL_ROUND) is waited for here, before anything after the RAM section loads.
 */
import type { Worker } from 'node:worker_threads';
import { ChecksumError, ErrorCode, MigrationError, SocketError } from '../../shared/errors.js';
import type { GuestMemory } from '../../shared/guest/memory.js';
import { monotonicMs } from '../../shared/guest/vcpu-control.js';
import type { LoadContext } from '../../shared/handlers.js';
import type { PageChannelPorts } from '../../shared/protocol/ram-records.js';
import { prepareNativeHash } from '../../shared/ram/native-hash.js';
import { closePageWorkers, type PageWorkerEvent } from '../../shared/ram/page-channel.js';
import { spawnTsWorker } from '../../shared/worker/spawn.js';

export const PAGE_WORKER_ENTRY = new URL('./page-worker.ts', import.meta.url);
/**
 * Rounds ended on some channels but not all: the source starts a round only after the last one was
 * confirmed, so more than a few means a broken or hostile source (the map would grow per frame).
 */
const MAX_OPEN_ROUNDS = 64;
/** Without a stall timeout (0), the final round may take this long. */
const FINAL_ROUND_DEFAULT_MS = 60_000;

export interface PageTables {
  checksums: BigUint64Array;
  received: Uint8Array;
}

export class DestinationPageChannels {
  /** Page copies each worker verified (Atomics.add per batch): progress, and pages-verified. */
  readonly verified: Int32Array;
  readonly #workers: Worker[] = [];
  readonly #roundEnds = new Map<number, number>();
  /** Highest round ended on every channel (rounds end in order: the next starts after ROUND_DONE). */
  #doneThrough = 0;
  #failure: MigrationError | null = null;
  #wake: (() => void) | null = null;
  /** Page copies dropped because they failed their checksum (torn by guest writes while sent). */
  tornCopies = 0;

  constructor(
    memory: GuestMemory,
    readonly channels: number,
    tables: PageTables,
    private readonly ctx: LoadContext,
  ) {
    this.verified = new Int32Array(new SharedArrayBuffer(channels * 4));
    for (let index = 0; index < channels; index++) {
      const w = spawnTsWorker(PAGE_WORKER_ENTRY, {
        ram: memory.shared.ram,
        pageSize: memory.pageSize,
        pageCount: memory.pageCount,
        checksums: tables.checksums.buffer,
        received: tables.received.buffer,
        verified: this.verified.buffer,
        index,
        migrationId: new Uint8Array(ctx.link.migrationId),
        security: ctx.link.security,
        nativeHash: prepareNativeHash(),
        stallTimeoutMs: ctx.stallTimeoutMs,
      });
      w.on('message', (m: PageWorkerEvent) => this.#onWorker(m));
      w.on('error', (err) =>
        this.#fail(new MigrationError(ErrorCode.INTERNAL, `page worker ${index}: ${err.message}`)),
      );
      this.#workers.push(w);
    }
    ctx.signal.addEventListener('abort', () => this.#wake?.(), { once: true });
  }

  /** Page copies verified on all channels. */
  get pagesVerified(): number {
    let n = 0;
    for (let i = 0; i < this.verified.length; i++) n += Atomics.load(this.verified, i);
    return n;
  }

  /**
   * The source's PAGE_CHANNELS: one port per channel, in channel order. The ports are the source's;
   * the host is not: page channels go to the main connection's peer address only, whatever host the
   * record names, so a source cannot make this destination connect to a third machine from its
   * network position (docs/PROTOCOL.md).
   */
  connect(announced: PageChannelPorts): void {
    if (announced.ports.length !== this.#workers.length)
      throw new MigrationError(
        ErrorCode.CONFIG_MISMATCH,
        `source announced ${announced.ports.length} page channels, its configuration said ${this.#workers.length}`,
      );
    for (const [i, w] of this.#workers.entries())
      w.postMessage({
        type: 'connect',
        host: unmapIPv4(this.ctx.link.peerAddress),
        port: announced.ports[i],
        from: this.ctx.link.localAddress,
      });
  }

  /**
   * Resolves once every channel has ended `round` (the source's FINAL_ROUND). Fails when a channel
   * fails, the migration is aborted, or no page lands for the stall timeout.
   */
  async roundEnded(round: number): Promise<void> {
    const stall = this.ctx.stallTimeoutMs || FINAL_ROUND_DEFAULT_MS;
    let seen = this.pagesVerified;
    let progressAt = monotonicMs();
    for (;;) {
      if (this.#failure) throw this.#failure;
      if (this.ctx.signal.aborted) throw this.ctx.signal.reason;
      if (this.#doneThrough >= round) return;
      const now = monotonicMs();
      const v = this.pagesVerified;
      if (v !== seen) {
        seen = v;
        progressAt = now;
      }
      if (now - progressAt > stall)
        throw new SocketError(
          ErrorCode.TIMEOUT,
          `page channels did not finish round ${round}: no page landed for ${Math.round(now - progressAt)} ms (stall-timeout ${stall} ms)`,
        );
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 50);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = null;
    }
  }

  close(): void {
    closePageWorkers(this.#workers);
  }

  #onWorker(m: PageWorkerEvent): void {
    if (m.type === 'round-done') {
      this.tornCopies += m.torn;
      const n = (this.#roundEnds.get(m.round) ?? 0) + 1;
      this.#roundEnds.set(m.round, n);
      if (this.#roundEnds.size > MAX_OPEN_ROUNDS) {
        this.#fail(
          new MigrationError(
            ErrorCode.MALFORMED,
            `page channels: more than ${MAX_OPEN_ROUNDS} rounds ended on some channels only`,
            { section: 'ram' },
          ),
        );
        return;
      }
      if (n === this.#workers.length) {
        this.#roundEnds.delete(m.round);
        this.#doneThrough = Math.max(this.#doneThrough, m.round);
        this.ctx.sendToSource({ type: 'round-done', round: m.round });
        this.#wake?.();
      }
      return;
    }
    if (m.type === 'error') {
      const Err = m.code === ErrorCode.CHECKSUM ? ChecksumError : MigrationError;
      this.#fail(new Err(m.code as ErrorCode, m.message, { page: m.page, section: 'ram' }));
    }
  }

  #fail(e: MigrationError): void {
    this.#failure ??= e;
    this.ctx.fail(e);
    this.#wake?.();
  }
}

/** `::ffff:10.0.0.1` (an IPv4 peer on a dual-stack listener) → `10.0.0.1`. */
function unmapIPv4(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m ? m[1]! : address;
}
