/**
 * Byte queue for the incremental framers: a list of received chunks, never concatenated.
 *
 * ```
 *  chunks: [ c0 (from head) ][ c1 ][ c2 ] ...      length = bytes from head to the end
 * ```
 * Framers peek at header fields (which sit in the first few chunks), decide the whole record's
 * length, wait until `length` covers it, then `take` it: a view when the record lies in one chunk,
 * otherwise one copy of exactly the record's bytes. Feeding n bytes costs O(n) in total.
 * Chunks are never written to, so views handed out stay valid while the caller leaves its
 * buffers alone (Node's socket buffers are fresh per read).
 */
import { ErrorCode, ProtocolError } from '../errors.js';

export class ChunkQueue {
  #chunks: Buffer[] = [];
  /** Index of the first live chunk; consumed chunks are dropped in batches. */
  #first = 0;
  /** Bytes already consumed from the first live chunk. */
  #head = 0;
  #length = 0;

  get length(): number {
    return this.#length;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#length += chunk.length;
  }

  /** Byte at `at` (relative to the head). Caller checks `at < length`. */
  peekU8(at: number): number {
    let pos = this.#head + at;
    for (let i = this.#first; i < this.#chunks.length; i++) {
      const c = this.#chunks[i]!;
      if (pos < c.length) return c[pos]!;
      pos -= c.length;
    }
    throw outOfRange(at, this.#length);
  }

  peekU16(at: number): number {
    return (this.peekU8(at) << 8) | this.peekU8(at + 1);
  }

  peekU32(at: number): number {
    return this.peekU16(at) * 0x10000 + this.peekU16(at + 2);
  }

  /** Removes and returns the first n bytes (n ≤ length): a view if contiguous, else one exact copy. */
  take(n: number): Buffer {
    if (n > this.#length) throw outOfRange(n, this.#length);
    const first = this.#chunks[this.#first];
    if (first !== undefined && first.length - this.#head >= n) {
      const out = first.subarray(this.#head, this.#head + n);
      this.#advance(n);
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const c = this.#chunks[this.#first]!;
      const part = Math.min(c.length - this.#head, n - filled);
      c.copy(out, filled, this.#head, this.#head + part);
      filled += part;
      this.#advance(part);
    }
    return out;
  }

  /** Removes the first n bytes (n ≤ length) as views of the chunks they lie in: no copy. */
  takeParts(n: number): Buffer[] {
    if (n > this.#length) throw outOfRange(n, this.#length);
    const out: Buffer[] = [];
    let left = n;
    while (left > 0) {
      const c = this.#chunks[this.#first]!;
      const part = Math.min(c.length - this.#head, left);
      out.push(c.subarray(this.#head, this.#head + part));
      left -= part;
      this.#advance(part);
    }
    return out;
  }

  #advance(n: number): void {
    this.#length -= n;
    this.#head += n;
    while (this.#first < this.#chunks.length && this.#head >= this.#chunks[this.#first]!.length) {
      this.#head -= this.#chunks[this.#first]!.length;
      this.#first++;
    }
    if (this.#length === 0) {
      this.#chunks = [];
      this.#first = 0;
      this.#head = 0;
    } else if (this.#first > 64 && this.#first * 2 > this.#chunks.length) {
      this.#chunks = this.#chunks.slice(this.#first);
      this.#first = 0;
    }
  }
}

function outOfRange(at: number, length: number): ProtocolError {
  return new ProtocolError(ErrorCode.INTERNAL, `chunk queue read at ${at} past ${length} buffered bytes`);
}
