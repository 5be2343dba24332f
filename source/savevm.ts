/**
 * Walks the registered save handlers and frames their payloads as sections (QEMU savevm.c):
 * START at setup, PART while iterating, END (iterative) or FULL (others) at switchover. Section ids
 * are given in registration order. Every iterative handler gets a turn each round, so RAM can never
 * starve a device that owes the switchover-ack (QEMU's pre-9.0 bug).
 */
import type { SaveHandlers, SectionSink } from '../shared/handlers.js';
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

  async setup(): Promise<void> {
    for (const { handler, sectionId } of this.#entries) {
      if (!handler.iterative) continue;
      this.tracer.emit(TraceEvent.SECTION_START, { idstr: handler.idstr, sectionId });
      const header = {
        sectionId,
        idstr: handler.idstr,
        instanceId: handler.instanceId,
        versionId: handler.version,
      };
      const payloads: (Buffer | Buffer[])[] = [];
      await handler.saveSetup?.({ emit: async (p) => void payloads.push(p), rateLimited: () => false });
      await this.#write(encodeSectionStart(header, payloads.flat()));
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

  /** Iterative handlers' final chunks (the last one as END), in registration order. */
  async completeIterable(): Promise<void> {
    for (const { handler, sectionId } of this.#entries) {
      if (!handler.iterative) continue;
      // the last payload goes out as END; hold each one until the next arrives (copied: the handler
      // may reuse its buffers once emit resolves)
      let held: Buffer | null = null;
      await handler.saveComplete({
        emit: async (p) => {
          if (held) await this.#write(encodeSectionPart(sectionId, held));
          held = Buffer.concat(Array.isArray(p) ? p : [p]);
        },
        rateLimited: () => false,
      });
      await this.#write(encodeSectionEnd(sectionId, held ?? Buffer.alloc(0)));
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
