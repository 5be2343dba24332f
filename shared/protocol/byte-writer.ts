/**
 * Small growable big-endian writer used by the encoders.
 *
 * ```
 *  [ written (length) | spare capacity ]   grows by doubling; finish() returns the written view
 * ```
 * Integers are range-checked so a caller bug is a ProtocolError(MALFORMED) naming the field,
 * never a RangeError from Buffer.writeUInt32BE. Size the writer exactly (`new ByteWriter(n)`)
 * when the record length is known and it never reallocates.
 */
import { ErrorCode, ProtocolError } from '../errors.js';

const U64_MAX = 0xffff_ffff_ffff_ffffn;

export class ByteWriter {
  #buf: Buffer;
  #length = 0;

  constructor(initialCapacity = 64) {
    this.#buf = Buffer.allocUnsafe(Math.max(1, initialCapacity));
  }

  /** Bytes written so far. */
  get length(): number {
    return this.#length;
  }

  u8(v: number, field = 'u8'): this {
    checkUint(v, 0xff, field);
    const at = this.#reserve(1);
    this.#buf[at] = v;
    return this;
  }

  u16(v: number, field = 'u16'): this {
    checkUint(v, 0xffff, field);
    const at = this.#reserve(2);
    this.#buf.writeUInt16BE(v, at);
    return this;
  }

  u32(v: number, field = 'u32'): this {
    checkUint(v, 0xffff_ffff, field);
    const at = this.#reserve(4);
    this.#buf.writeUInt32BE(v, at);
    return this;
  }

  u64(v: bigint, field = 'u64'): this {
    if (typeof v !== 'bigint' || v < 0n || v > U64_MAX) {
      throw new ProtocolError(ErrorCode.MALFORMED, `${field} out of u64 range: ${String(v)}`, { field });
    }
    const at = this.#reserve(8);
    this.#buf.writeBigUInt64BE(v, at);
    return this;
  }

  bytes(src: Uint8Array): this {
    const at = this.#reserve(src.length);
    this.#buf.set(src, at);
    return this;
  }

  /** Overwrites a u32 already written at `at` (length fields filled in after the body). */
  patchU32(at: number, v: number, field = 'u32'): this {
    checkUint(v, 0xffff_ffff, field);
    if (at < 0 || at + 4 > this.#length) {
      throw new ProtocolError(
        ErrorCode.INTERNAL,
        `patch of ${field} at ${at} is outside the ${this.#length} bytes written`,
      );
    }
    this.#buf.writeUInt32BE(v, at);
    return this;
  }

  /** The written bytes. The writer starts empty again; the returned buffer is not reused. */
  finish(): Buffer {
    const out = this.#buf.subarray(0, this.#length);
    this.#buf = Buffer.allocUnsafe(Math.max(1, Math.min(this.#buf.length, 64)));
    this.#length = 0;
    return out;
  }

  /** Makes room for n bytes and returns where they go. Callers must not hold `#buf` across it. */
  #reserve(n: number): number {
    const at = this.#length;
    if (at + n > this.#buf.length) {
      const grown = Buffer.allocUnsafe(Math.max(at + n, this.#buf.length * 2));
      this.#buf.copy(grown, 0, 0, at);
      this.#buf = grown;
    }
    this.#length = at + n;
    return at;
  }
}

function checkUint(v: number, max: number, field: string): void {
  if (!Number.isInteger(v) || v < 0 || v > max) {
    throw new ProtocolError(ErrorCode.MALFORMED, `${field} out of range 0..${max}: ${v}`, { field });
  }
}
