/**
 * A section payload as it arrived on the main channel: views of the socket chunks it spans, never
 * copied by the framer. A RAM batch (1 MiB of pages across ~16 socket chunks) is copied once, from
 * these views straight into guest RAM; joining it first would copy every page twice and allocate a
 * megabyte per batch. Handlers that want one Buffer call bytes() (one copy, only when the payload
 * spans chunks or lives in memory the reader reuses; cached). The parts are valid while the handler's
 * loadState runs; a transient payload's parts are reused after it.
 */
export class SectionPayload {
  readonly length: number;
  #joined: Buffer | null;

  constructor(
    readonly parts: readonly Buffer[],
    /** The parts are views of memory the reader reuses once the record is processed. */
    readonly transient = false,
  ) {
    let n = 0;
    for (const p of parts) n += p.length;
    this.length = n;
    this.#joined = parts.length === 1 && !transient ? parts[0]! : null;
  }

  static of(bytes: Buffer): SectionPayload {
    return new SectionPayload([bytes]);
  }

  /**
   * The payload in one Buffer a handler may keep: the chunk view itself when it arrived in one
   * piece of memory that is not reused, else one copy.
   */
  bytes(): Buffer {
    this.#joined ??= Buffer.concat(this.parts as Buffer[], this.length);
    return this.#joined;
  }

  /**
   * Copies payload bytes [from, from + target.length) into `target`, part by part with `copy`
   * (default: TypedArray set; guest RAM wants a faster one, see shared/ram/ram-copy.ts).
   */
  copyTo(target: Uint8Array, from: number, copy: Copier = setCopy): void {
    let skip = from;
    let filled = 0;
    for (const p of this.parts) {
      if (filled === target.length) return;
      if (skip >= p.length) {
        skip -= p.length;
        continue;
      }
      const n = Math.min(p.length - skip, target.length - filled);
      copy(target, filled, p.subarray(skip, skip + n));
      filled += n;
      skip = 0;
    }
    if (filled < target.length)
      throw new RangeError(`payload has ${this.length} bytes, read past it at ${from}`);
  }
}

/** Copies all of `src` into `dst` at `at`. */
export type Copier = (dst: Uint8Array, at: number, src: Uint8Array) => void;

const setCopy: Copier = (dst, at, src) => dst.set(src, at);
