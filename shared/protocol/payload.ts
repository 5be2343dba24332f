/**
 * Device payload encoding: msgpack maps through one module-level Packr with records off, so every
 * payload decodes on its own (record mode depends on structures sent earlier). pack() returns a
 * slice of a shared arena, so the result is copied before it is kept or queued.
 */
import { Packr } from 'msgpackr';
import { ErrorCode, ProtocolError } from '../errors.js';

const packr = new Packr({ useRecords: false, moreTypes: false });

export function encodePayload(value: Record<string, unknown>): Buffer {
  return Buffer.from(packr.pack(value));
}

export function decodePayload(buf: Buffer, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = packr.unpack(buf);
  } catch (err) {
    throw new ProtocolError(
      ErrorCode.MALFORMED,
      `${what}: payload is not valid msgpack`,
      { section: what },
      { cause: err },
    );
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new ProtocolError(ErrorCode.MALFORMED, `${what}: payload is not a map`, { section: what });
  }
  return value as Record<string, unknown>;
}
