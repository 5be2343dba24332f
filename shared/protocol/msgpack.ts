/**
 * The one msgpackr instance every protocol body goes through (configuration, PAGE_CHANNELS, RAM
 * geometry, return-path bodies). Records are off so each body decodes on its own: record mode would
 * make a message depend on structures sent before it.
 *
 * Decoding never throws anything but ProtocolError(MALFORMED): msgpackr's own errors (truncated
 * data, trailing bytes, bad extensions) are wrapped with the original as `cause`.
 */
import { Packr } from 'msgpackr';
import { ErrorCode, ProtocolError } from '../errors.js';

export const packr = new Packr({ useRecords: false });

export function packBody(value: unknown): Buffer {
  return packr.pack(value);
}

/** Decodes one msgpack value that must fill `buf` exactly. */
export function unpackBody(buf: Buffer, what: string): unknown {
  try {
    return packr.unpack(buf);
  } catch (err) {
    throw new ProtocolError(
      ErrorCode.MALFORMED,
      `${what}: body is not valid msgpack`,
      { section: what },
      { cause: err },
    );
  }
}

/** Decodes a body that must be a msgpack map (a plain object). */
export function unpackMap(buf: Buffer, what: string): Record<string, unknown> {
  const value = unpackBody(buf, what);
  if (!isPlainObject(value)) {
    throw new ProtocolError(ErrorCode.MALFORMED, `${what}: body is not a msgpack map`, { section: what });
  }
  return value;
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

export function malformed(what: string, message: string, field?: string): ProtocolError {
  return new ProtocolError(ErrorCode.MALFORMED, `${what}: ${message}`, { section: what, field });
}
