/**
 * RAM section payloads (inside START/PART/END sections of idstr "ram"), one record per payload. The
 * first byte is the RamRecord kind. Page batches have their own file (page-batch.ts): the same bytes
 * travel on page channels.
 *
 * ```
 *  GEOMETRY      | 0x01 | be32 len | msgpack {pageSize, pageCount, blocks: [{name, pages}]} |   START
 *  PAGES         | 0x02 | ... page-batch.ts ...                                                  PART/END
 *  EOS           | 0x03 |                                                                        END
 *  FINAL_ROUND   | 0x04 | be32 round |           (page channels; once, in the completion stage, before EOS)
 *  PAGE_CHANNELS | 0x06 | be32 len | msgpack {host, ports: [port, ...]} |   (page channels; a PART right after START)
 * ```
 */
import { ErrorCode, ProtocolError } from '../errors.js';
import { ByteReader } from './byte-reader.js';
import { ByteWriter } from './byte-writer.js';
import { RamRecord } from './constants.js';
import { isPlainObject, malformed, packBody, unpackMap } from './msgpack.js';
import type { SectionPayload } from './section-payload.js';

export interface RamGeometry {
  pageSize: number;
  pageCount: number;
  blocks: { name: string; pages: number }[];
}

/** Where the source's page-channel listeners are: one port per channel, channel i on ports[i]. */
export interface PageChannelPorts {
  host: string;
  ports: number[];
}

/** Most page channels a PAGE_CHANNELS record may announce (QEMU's multifd-channels range). */
export const MAX_PAGE_CHANNELS = 255;

export type RamRecordDecoded =
  | { kind: 'geometry'; geometry: RamGeometry }
  | { kind: 'page-channels'; channels: PageChannelPorts }
  /** A page batch: decoded by the loader from the payload (page-batch.ts), not copied here. */
  | { kind: 'pages' }
  | { kind: 'eos' }
  | { kind: 'final-round'; round: number };

export function encodeRamGeometry(g: RamGeometry): Buffer {
  const body = packBody({ pageSize: g.pageSize, pageCount: g.pageCount, blocks: g.blocks });
  return new ByteWriter(5 + body.length).u8(RamRecord.GEOMETRY).u32(body.length).bytes(body).finish();
}

export function encodeRamEos(): Buffer {
  return Buffer.from([RamRecord.EOS]);
}

/**
 * Page channels: the switchover's round is the last. The source sends this as soon as it has handed
 * that round to its page workers, without waiting for ROUND_DONE (no later round exists to overtake
 * it); the destination must see the round end on every channel before it loads anything after the
 * RAM section (device state is checked against RAM).
 */
export function encodeRamFinalRound(round: number): Buffer {
  return new ByteWriter(5).u8(RamRecord.FINAL_ROUND).u32(round, 'round').finish();
}

export function encodePageChannels(c: PageChannelPorts): Buffer {
  const body = packBody({ host: c.host, ports: c.ports });
  return new ByteWriter(5 + body.length).u8(RamRecord.PAGE_CHANNELS).u32(body.length).bytes(body).finish();
}

/** Decodes one RAM record (layout checks only; a batch is left to page-batch.ts). */
export function decodeRamRecord(payload: SectionPayload): RamRecordDecoded {
  if (payload.length === 0)
    throw new ProtocolError(ErrorCode.TRUNCATED, 'RAM payload is empty', { section: 'ram', offset: 0 });
  const head = Buffer.alloc(1);
  payload.copyTo(head, 0);
  switch (head[0]!) {
    case RamRecord.PAGES:
      return { kind: 'pages' };
    case RamRecord.GEOMETRY:
      return { kind: 'geometry', geometry: decodeGeometry(payload.bytes()) };
    case RamRecord.PAGE_CHANNELS:
      return { kind: 'page-channels', channels: decodePageChannels(payload.bytes()) };
    case RamRecord.EOS:
      if (payload.length !== 1) throw malformed('ram', `EOS record has ${payload.length - 1} trailing bytes`);
      return { kind: 'eos' };
    case RamRecord.FINAL_ROUND: {
      if (payload.length !== 5)
        throw malformed('ram', `FINAL_ROUND record is ${payload.length} bytes, expected 5`);
      const round = payload.bytes().readUInt32BE(1);
      if (round === 0) throw malformed('ram', 'FINAL_ROUND names round 0', 'round');
      return { kind: 'final-round', round };
    }
    default:
      throw malformed('ram', `unknown RAM record kind 0x${head[0]!.toString(16)}`, 'kind');
  }
}

function decodeGeometry(payload: Buffer): RamGeometry {
  const r = new ByteReader(payload, 'ram geometry');
  r.u8();
  const body = unpackMap(r.bytes(r.u32()), 'ram geometry');
  r.expectEnd();
  const { pageSize, pageCount, blocks } = body;
  if (!isCount(pageSize) || pageSize === 0)
    throw malformed('ram geometry', 'pageSize must be a positive integer', 'pageSize');
  if (!isCount(pageCount))
    throw malformed('ram geometry', 'pageCount must be a non-negative integer', 'pageCount');
  if (!Array.isArray(blocks) || !blocks.every(isBlock)) {
    throw malformed('ram geometry', 'blocks must be [{name: string, pages: integer}]', 'blocks');
  }
  return { pageSize, pageCount, blocks: blocks.map((b) => ({ name: b.name, pages: b.pages })) };
}

function decodePageChannels(payload: Buffer): PageChannelPorts {
  const what = 'PAGE_CHANNELS';
  const r = new ByteReader(payload, what);
  r.u8();
  const body = unpackMap(r.bytes(r.u32()), what);
  r.expectEnd();
  if (typeof body.host !== 'string' || body.host.length === 0 || body.host.length > 255)
    throw malformed(what, 'host must be a string of 1..255 characters', 'host');
  const ports = body.ports;
  if (
    !Array.isArray(ports) ||
    ports.length === 0 ||
    ports.length > MAX_PAGE_CHANNELS ||
    !ports.every((p) => Number.isInteger(p) && p >= 1 && p <= 0xffff)
  )
    throw malformed(what, `ports must be 1..${MAX_PAGE_CHANNELS} TCP ports (1..65535)`, 'ports');
  return { host: body.host, ports: [...(ports as number[])] };
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function isBlock(b: unknown): b is { name: string; pages: number } {
  return isPlainObject(b) && typeof b.name === 'string' && isCount(b.pages);
}
