/**
 * Return-path frames (destination → source), QEMU's layout (migration/migration.c, the return path):
 *
 * ```
 *  0        2        4
 *  +--------+--------+---------------------------+
 *  | be16   | be16   | payload (len bytes)       |
 *  | type   | len    |                           |
 *  +--------+--------+---------------------------+
 *
 *  SHUT 0x01           4   be32 status (0 ok, nonzero failed)
 *  PONG 0x02           4   be32 echo of a PING value
 *  SWITCHOVER_ACK 0x07 0   –
 *  RESUMED 0x20        var msgpack map (rp-bodies.ts)
 *  LOAD_COST 0x21      var msgpack map (rp-bodies.ts)
 *  ERROR 0x22          var msgpack {code, message}
 *  ROUND_DONE 0x23     4   be32 round
 *  TIME 0x24           var msgpack map (rp-bodies.ts)
 *  ACCEPT 0x25         2   be16 protocol version (main socket only: the answer to a MAIN hello)
 * ```
 * Type and length are checked against RP_TABLE (QEMU's rp_cmd_args) before the body is read; every
 * body field is then checked for its type and range (rp-bodies.ts), so a message that decodes is
 * safe to use as its type says.
 * The same framing carries the single ERROR frame a destination may write back on the main socket.
 */
import { ErrorCode, ProtocolError } from '../errors.js';
import { ByteReader } from './byte-reader.js';
import { ByteWriter } from './byte-writer.js';
import { ChunkQueue } from './chunk-queue.js';
import { RpType } from './constants.js';
import { malformed, packBody, unpackBody, unpackMap } from './msgpack.js';
import {
  decodeLoadCostBody,
  decodeResumedBody,
  decodeTimeBody,
  type LoadCostBody,
  type ResumedBody,
  type TimeBody,
} from './rp-bodies.js';

export interface RpSpec {
  name: string;
  length: number | 'variable';
  max?: number;
}

export const RP_TABLE: Readonly<Record<number, RpSpec>> = {
  [RpType.SHUT]: { name: 'SHUT', length: 4 },
  [RpType.PONG]: { name: 'PONG', length: 4 },
  [RpType.SWITCHOVER_ACK]: { name: 'SWITCHOVER_ACK', length: 0 },
  [RpType.RESUMED]: { name: 'RESUMED', length: 'variable', max: 0xffff },
  [RpType.LOAD_COST]: { name: 'LOAD_COST', length: 'variable', max: 0xffff },
  [RpType.ERROR]: { name: 'ERROR', length: 'variable', max: 0xffff },
  [RpType.ROUND_DONE]: { name: 'ROUND_DONE', length: 4 },
  [RpType.TIME]: { name: 'TIME', length: 'variable', max: 0xffff },
  [RpType.ACCEPT]: { name: 'ACCEPT', length: 2 },
};

/** Every message, typed: bodies are checked field by field on decode (rp-bodies.ts). */
export type RpMessage =
  | { type: 'shut'; status: number }
  | { type: 'pong'; value: number }
  | { type: 'switchover-ack' }
  | { type: 'resumed'; body: ResumedBody }
  | { type: 'load-cost'; body: LoadCostBody }
  | { type: 'error'; code: string; message: string }
  | { type: 'round-done'; round: number }
  | { type: 'time'; body: TimeBody }
  | { type: 'accept'; version: number };

/** ERROR messages longer than this are cut so the frame always fits its 64 KiB cap. */
export const RP_ERROR_MESSAGE_MAX = 8192;
export const RP_HEADER_LENGTH = 4;

/** Throws UNKNOWN_MESSAGE, BAD_LENGTH or OVERSIZE unless (type, len) fits `table`. */
export function checkRpHeader(type: number, len: number, table = RP_TABLE, offset?: number): RpSpec {
  const spec = Object.hasOwn(table, type) ? table[type] : undefined;
  if (spec === undefined) {
    throw new ProtocolError(ErrorCode.UNKNOWN_MESSAGE, `unknown return-path message 0x${type.toString(16)}`, {
      section: 'return-path',
      offset,
    });
  }
  if (spec.length === 'variable') {
    const max = spec.max ?? 0xffff;
    if (len > max) {
      throw new ProtocolError(ErrorCode.OVERSIZE, `return-path ${spec.name} is ${len} bytes, limit ${max}`, {
        section: spec.name,
        offset,
      });
    }
  } else if (len !== spec.length) {
    throw new ProtocolError(
      ErrorCode.BAD_LENGTH,
      `return-path ${spec.name} is ${len} bytes, expected ${spec.length}`,
      { section: spec.name, offset },
    );
  }
  return spec;
}

export function encodeRp(msg: RpMessage): Buffer {
  switch (msg.type) {
    case 'shut':
      return frame(RpType.SHUT, be32(msg.status, 'status'));
    case 'pong':
      return frame(RpType.PONG, be32(msg.value, 'value'));
    case 'switchover-ack':
      return frame(RpType.SWITCHOVER_ACK, Buffer.alloc(0));
    case 'round-done':
      return frame(RpType.ROUND_DONE, be32(msg.round, 'round'));
    case 'resumed':
      return frame(RpType.RESUMED, packBody(msg.body));
    case 'load-cost':
      return frame(RpType.LOAD_COST, packBody(msg.body));
    case 'time':
      return frame(RpType.TIME, packBody(msg.body));
    case 'accept':
      return frame(RpType.ACCEPT, Buffer.from([(msg.version >>> 8) & 0xff, msg.version & 0xff]));
    case 'error':
      return frame(
        RpType.ERROR,
        packBody({ code: msg.code, message: msg.message.slice(0, RP_ERROR_MESSAGE_MAX) }),
      );
  }
}

/** Decodes one frame's payload; (type, payload.length) must already have passed checkRpHeader. */
export function decodeRpPayload(type: number, payload: Buffer): RpMessage {
  const spec = checkRpHeader(type, payload.length);
  switch (type) {
    case RpType.SHUT:
      return { type: 'shut', status: u32(payload, spec) };
    case RpType.PONG:
      return { type: 'pong', value: u32(payload, spec) };
    case RpType.SWITCHOVER_ACK:
      return { type: 'switchover-ack' };
    case RpType.ROUND_DONE:
      return { type: 'round-done', round: u32(payload, spec) };
    case RpType.RESUMED:
      return { type: 'resumed', body: decodeResumedBody(unpackBody(payload, spec.name)) };
    case RpType.LOAD_COST:
      return { type: 'load-cost', body: decodeLoadCostBody(unpackBody(payload, spec.name)) };
    case RpType.TIME:
      return { type: 'time', body: decodeTimeBody(unpackBody(payload, spec.name)) };
    case RpType.ACCEPT:
      return { type: 'accept', version: payload.readUInt16BE(0) };
    default:
      return decodeError(payload);
  }
}

/** Incremental return-path reader: feed(chunk) yields whole messages, keeps the tail. Sticky errors. */
export class RpFramer {
  readonly #queue = new ChunkQueue();
  #consumed = 0;
  #error: unknown;

  get buffered(): number {
    return this.#queue.length;
  }

  feed(chunk: Buffer): RpMessage[] {
    if (this.#error !== undefined) throw this.#error;
    try {
      this.#queue.push(chunk);
      const out: RpMessage[] = [];
      for (let m = this.#next(); m !== undefined; m = this.#next()) out.push(m);
      return out;
    } catch (err) {
      this.#error = err;
      throw err;
    }
  }

  /** Call at end of input: throws TRUNCATED if a partial frame is buffered. */
  end(): void {
    if (this.#error !== undefined) throw this.#error;
    if (this.#queue.length > 0) {
      this.#error = new ProtocolError(
        ErrorCode.TRUNCATED,
        `return path ended inside a frame: ${this.#queue.length} bytes buffered at offset ${this.#consumed}`,
        { section: 'return-path', offset: this.#consumed },
      );
      throw this.#error;
    }
  }

  #next(): RpMessage | undefined {
    const q = this.#queue;
    if (q.length < RP_HEADER_LENGTH) return undefined;
    const type = q.peekU16(0);
    const len = q.peekU16(2);
    checkRpHeader(type, len, RP_TABLE, this.#consumed);
    if (q.length < RP_HEADER_LENGTH + len) return undefined;
    const bytes = q.take(RP_HEADER_LENGTH + len);
    this.#consumed += bytes.length;
    return decodeRpPayload(type, bytes.subarray(RP_HEADER_LENGTH));
  }
}

function decodeError(payload: Buffer): RpMessage {
  const body = unpackMap(payload, 'ERROR');
  for (const key of Object.keys(body))
    if (key !== 'code' && key !== 'message')
      throw malformed('ERROR', `unknown field '${key.slice(0, 64)}'`, key);
  if (typeof body.code !== 'string' || !/^MIG_ERR_[A-Z_]{1,40}$/.test(body.code))
    throw malformed('ERROR', 'code must be a MIG_ERR_ code', 'code');
  if (typeof body.message !== 'string' || body.message.length > RP_ERROR_MESSAGE_MAX)
    throw malformed(
      'ERROR',
      `message must be a string of at most ${RP_ERROR_MESSAGE_MAX} characters`,
      'message',
    );
  return { type: 'error', code: body.code, message: body.message };
}

function frame(type: number, payload: Buffer): Buffer {
  checkRpHeader(type, payload.length);
  return new ByteWriter(RP_HEADER_LENGTH + payload.length)
    .u16(type)
    .u16(payload.length)
    .bytes(payload)
    .finish();
}

function be32(v: number, field: string): Buffer {
  return new ByteWriter(4).u32(v, field).finish();
}

function u32(payload: Buffer, spec: RpSpec): number {
  return new ByteReader(payload, spec.name).u32();
}
