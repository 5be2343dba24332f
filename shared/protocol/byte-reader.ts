/**
 * Bounds-checked big-endian cursor over one Buffer.
 *
 * ```
 *  buf:  [ consumed ........ | offset → remaining() bytes ............ ]
 * ```
 * Every read checks the bytes it needs first and throws ProtocolError(TRUNCATED) naming the
 * context (the record being decoded) and the offset of the read, so a short record never turns
 * into a RangeError from Buffer.readUInt32BE. `bytes(n)` returns a view (no copy).
 */
import { ErrorCode, ProtocolError } from '../errors.js';

export class ByteReader {
  #offset = 0;

  constructor(
    private readonly buf: Buffer,
    private readonly context: string,
    /** Added to offsets in error messages, so a record's reader can report stream offsets. */
    private readonly baseOffset = 0,
  ) {}

  /** Bytes read so far. */
  get offset(): number {
    return this.#offset;
  }

  remaining(): number {
    return this.buf.length - this.#offset;
  }

  u8(): number {
    const at = this.#take(1);
    return this.buf[at]!;
  }

  u16(): number {
    return this.buf.readUInt16BE(this.#take(2));
  }

  u32(): number {
    return this.buf.readUInt32BE(this.#take(4));
  }

  u64(): bigint {
    return this.buf.readBigUInt64BE(this.#take(8));
  }

  /** A view of the next n bytes; it shares memory with the input buffer. */
  bytes(n: number): Buffer {
    const at = this.#take(n);
    return this.buf.subarray(at, at + n);
  }

  /** Throws MALFORMED if bytes are left over (for records whose length is fully declared). */
  expectEnd(): void {
    if (this.remaining() !== 0) {
      throw new ProtocolError(
        ErrorCode.MALFORMED,
        `${this.context}: ${this.remaining()} unexpected trailing bytes at offset ${this.baseOffset + this.#offset}`,
        { section: this.context, offset: this.baseOffset + this.#offset },
      );
    }
  }

  #take(n: number): number {
    const at = this.#offset;
    if (!Number.isInteger(n) || n < 0 || n > this.buf.length - at) {
      throw new ProtocolError(
        ErrorCode.TRUNCATED,
        `${this.context}: need ${n} bytes at offset ${this.baseOffset + at}, only ${this.buf.length - at} left`,
        { section: this.context, offset: this.baseOffset + at },
      );
    }
    this.#offset = at + n;
    return at;
  }
}
