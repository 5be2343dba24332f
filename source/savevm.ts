/**
 * Walks the registered save handlers and frames their payloads as sections (QEMU savevm.c):
 * START (then PARTs) at setup, PART while iterating, END (iterative) or FULL (others) at switchover.
 * Section ids are given in registration order. Every iterative handler gets a turn each round, so
 * RAM can never starve a device that owes the switchover-ack (QEMU's pre-9.0 bug).
 *
 * The orchestrator reaches handlers only through this walker and the SaveHandlers interface: what a
 * handler does outside the main channel (side-channel bytes, bandwidth, in-flight data, peer
 * messages) is summed or forwarded here.
 */
import type { SaveContext, SaveHandlers, SectionSink } from '../shared/handlers.js';
import type { RpMessage } from '../shared/protocol/return-path-codec.js';
import {
  encodeSectionEnd,
  encodeSectionFull,
  encodeSectionPart,
  encodeSectionStart,
} from '../shared/protocol/stream-codec.js';
import type { ChannelWriter } from '../shared/socket-io.js';
import type { Tracer } from '../shared/trace.js';
import { TraceEvent } from '../shared/trace.js';
import type { RateLimiter } from './rate-limit.js';

export class SaveVm {
  readonly #entries: { handler: SaveHandlers; sectionId: number }[];

  constructor(
    private readonly writer: ChannelWriter,
    private readonly limiter: RateLimiter,
    private readonly tracer: Tracer,
    handlers: SaveHandlers[],
  ) {
    this.#entries = handlers.map((handler, sectionId) => ({ handler, sectionId }));
  }

  get handlers(): SaveHandlers[] {
    return this.#entries.map((e) => e.handler);
  }

  async setup(ctx: SaveContext): Promise<void> {
    for (const { handler } of this.#entries) handler.attach?.(ctx);
    for (const { handler, sectionId } of this.#entries) {
      if (!handler.iterative) continue;
      this.tracer.emit(TraceEvent.SECTION_START, { idstr: handler.idstr, sectionId });
      const header = {
        sectionId,
        idstr: handler.idstr,
        instanceId: handler.instanceId,
        versionId: handler.version,
      };
      const payloads: Buffer[] = [];
      await handler.saveSetup?.({
        emit: async (p) => void payloads.push(Buffer.concat(Array.isArray(p) ? p : [p])),
        rateLimited: () => false,
      });
      // the first setup payload opens the section, any further ones follow it as PARTs
      await this.#write(encodeSectionStart(header, payloads.slice(0, 1)));
      for (const p of payloads.slice(1)) await this.#write(encodeSectionPart(sectionId, p));
    }
  }

  /** One round: every iterative handler sends until done, rate-limited or out of its time slice. */
  async iterate(): Promise<boolean> {
    let allDone = true;
    for (const { handler, sectionId } of this.#entries) {
      if (!handler.iterative || !handler.saveIterate) continue;
      const r = await handler.saveIterate(this.#partSink(sectionId));
      if (r === 'more') allDone = false;
    }
    return allDone;
  }

  pendingEstimate(): number {
    let n = 0;
    for (const { handler } of this.#entries) n += handler.pendingEstimate?.().mustPrecopy ?? 0;
    return n;
  }

  pendingExact(): number {
    let n = 0;
    for (const { handler } of this.#entries)
      n += (handler.pendingExact ?? handler.pendingEstimate)?.call(handler).mustPrecopy ?? 0;
    return n;
  }

  /** No handler has data on its way unconfirmed (a switchover now would not wait for it). */
  settled(): boolean {
    return this.#entries.every(({ handler }) => handler.settled?.() ?? true);
  }

  /** Bytes all handlers sent outside the main channel. */
  sideChannelBytes(): number {
    let n = 0;
    for (const { handler } of this.#entries) n += handler.sideChannelBytes?.() ?? 0;
    return n;
  }

  /** A new rate window for side channels (0 = unlimited). */
  refillSideChannels(bytes: number): void {
    for (const { handler } of this.#entries) handler.refillSideChannels?.(bytes);
  }

  /** The lowest rate a handler measured on its own path (bytes/ms), or null when none measures one. */
  measuredBandwidth(): number | null {
    let rate: number | null = null;
    for (const { handler } of this.#entries) {
      const r = handler.measuredBandwidth?.() ?? null;
      if (r !== null) rate = rate === null ? r : Math.min(rate, r);
    }
    return rate;
  }

  /** Hands a return-path message the orchestrator does not handle itself to the handlers. */
  deliver(m: RpMessage): void {
    for (const { handler } of this.#entries) handler.onPeerMessage?.(m);
  }

  /**
   * Iterative handlers' final chunks, in registration order: each payload goes out as a PART once
   * the next one arrives, the last one as END. Payloads are held, not copied (a RAM batch is views
   * of guest RAM and a reused header): the `flushed` promise a handler gets back settles only when
   * the held payload has actually been written and left Node, so it reuses nothing too early.
   */
  async completeIterable(): Promise<void> {
    for (const { handler, sectionId } of this.#entries) {
      if (!handler.iterative) continue;
      let held: { chunks: Buffer[]; flushed: Deferred } | null = null;
      const release = async (type: 'part' | 'end', h: { chunks: Buffer[]; flushed: Deferred } | null) => {
        const chunks = h?.chunks ?? [];
        const frame =
          type === 'part' ? encodeSectionPart(sectionId, chunks) : encodeSectionEnd(sectionId, chunks);
        const { flushed } = await this.#write(frame);
        h?.flushed.follow(flushed);
      };
      await handler.saveComplete({
        emit: async (p) => {
          if (held) await release('part', held);
          held = { chunks: Array.isArray(p) ? p : [p], flushed: new Deferred() };
          return { flushed: held.flushed.promise };
        },
        rateLimited: () => false,
      });
      await release('end', held);
    }
  }

  /** Non-iterative handlers' whole state as FULL sections. */
  async completeNonIterable(): Promise<void> {
    for (const { handler, sectionId } of this.#entries) {
      if (handler.iterative) continue;
      const payloads: (Buffer | Buffer[])[] = [];
      await handler.saveComplete({ emit: async (p) => void payloads.push(p), rateLimited: () => false });
      const header = {
        sectionId,
        idstr: handler.idstr,
        instanceId: handler.instanceId,
        versionId: handler.version,
      };
      await this.#write(encodeSectionFull(header, payloads.flat()));
    }
  }

  cleanup(): void {
    for (const { handler } of this.#entries) handler.saveCleanup?.();
  }

  #partSink(sectionId: number): SectionSink {
    return {
      emit: (p) => this.#write(encodeSectionPart(sectionId, p)),
      rateLimited: () => this.limiter.exhausted(),
    };
  }

  async #write(chunks: Buffer[]): Promise<{ flushed: Promise<void> }> {
    let n = 0;
    for (const c of chunks) n += c.length;
    this.limiter.account(n);
    const { accepted, flushed } = this.writer.writeTracked(chunks);
    await accepted;
    return { flushed };
  }
}

/** A promise settled later by following another one. */
class Deferred {
  readonly promise: Promise<void>;
  #resolve!: () => void;
  #reject!: (e: unknown) => void;

  constructor() {
    this.promise = new Promise<void>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    this.promise.catch(() => {});
  }

  follow(p: Promise<void>): void {
    p.then(this.#resolve, this.#reject);
  }
}
