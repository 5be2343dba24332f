/**
 * RAM section payloads (inside START/PART/END sections of idstr "ram"). Binary, never msgpack,
 * except the one-off geometry. The first byte is the RamRecord kind.
 *
 * ```
 *  GEOMETRY  | 0x01 | be32 len | msgpack {pageSize, pageCount, blocks: [{name, pages}]} |
 *  EOS       | 0x03 |
 *  FINAL_ROUND | 0x04 | be32 round |   (page channels; once, in the completion stage, before EOS)
 *  PAGES     header (16):
 *            | 0x02 | u8 flags=0 | be16 block id | be32 round | be32 count | be32 data_len |
 *            count × descriptor (16):
 *            | be32 page index | u8 flags (ZERO=0x01) | 3 × 0x00 | be64 checksum |
 *            data (data_len = non-zero pages × pageSize):
 *            | page bytes of each non-zero page, in descriptor order |
 * ```
 * A ZERO page has no data and checksum 0. Other checksums are pageChecksum(page, index)
 * (shared/ram/checksum.ts); decodeRamPayload checks layout only, verifyBatch checks the hashes.
 */
import { ChecksumError, ErrorCode, ProtocolError } from '../errors.js';
import { pageChecksum, ZERO_CHECKSUM } from '../ram/checksum.js';
import { ByteReader } from './byte-reader.js';
import { ByteWriter } from './byte-writer.js';
import { MAX_BATCH_PAGES, PAGE_BATCH_HEADER, PAGE_DESCRIPTOR, PageFlag, RamRecord } from './constants.js';
import { isPlainObject, malformed, packBody, unpackMap } from './msgpack.js';
import { checkPageSize } from './page-batch-writer.js';

export { PageBatchWriter } from './page-batch-writer.js';

export interface RamGeometry {
  pageSize: number;
  pageCount: number;
  blocks: { name: string; pages: number }[];
}

export interface PageBatch {
  blockId: number;
  round: number;
  count: number;
  indexes: Uint32Array;
  flags: Uint8Array;
  checksums: BigUint64Array;
  /** byte offset into data of each page, -1 for zero pages */
  dataOffsets: Int32Array;
  data: Buffer;
}

export type RamPayload =
  | { kind: 'geometry'; geometry: RamGeometry }
  | { kind: 'pages'; batch: PageBatch }
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
 * Page channels: the switchover's round is the last. The source sends this as soon as every page
 * worker has handed that round to its socket, without waiting for ROUND_DONE (no later round exists
 * to overtake it); the destination must see the round end on every channel before it loads anything
 * after the RAM section (device state is checked against RAM).
 */
export function encodeRamFinalRound(round: number): Buffer {
  return new ByteWriter(5).u8(RamRecord.FINAL_ROUND).u32(round).finish();
}

export function decodeRamPayload(payload: Buffer, pageSize: number): RamPayload {
  if (payload.length === 0) {
    throw new ProtocolError(ErrorCode.TRUNCATED, 'RAM payload is empty', { section: 'ram', offset: 0 });
  }
  const kind = payload[0]!;
  switch (kind) {
    case RamRecord.GEOMETRY:
      return { kind: 'geometry', geometry: decodeGeometry(payload) };
    case RamRecord.PAGES:
      return { kind: 'pages', batch: decodePageBatch(payload, pageSize) };
    case RamRecord.EOS:
      if (payload.length !== 1) throw malformed('ram', `EOS record has ${payload.length - 1} trailing bytes`);
      return { kind: 'eos' };
    case RamRecord.FINAL_ROUND:
      if (payload.length !== 5)
        throw malformed('ram', `FINAL_ROUND record is ${payload.length} bytes, expected 5`);
      return { kind: 'final-round', round: payload.readUInt32BE(1) };
    default:
      throw malformed('ram', `unknown RAM record kind 0x${kind.toString(16)}`, 'kind');
  }
}

/** Throws ChecksumError naming the first page whose bytes do not hash to its descriptor's checksum. */
export function verifyBatch(batch: PageBatch, pageSize: number): void {
  for (let i = 0; i < batch.count; i++) {
    const off = batch.dataOffsets[i]!;
    if (off < 0) continue;
    const index = batch.indexes[i]!;
    const actual = pageChecksum(batch.data.subarray(off, off + pageSize), index);
    if (actual !== batch.checksums[i]) {
      throw new ChecksumError(
        ErrorCode.CHECKSUM,
        `page ${index} (block ${batch.blockId}, round ${batch.round}): checksum ${hex64(actual)}, sent ${hex64(batch.checksums[i]!)}`,
        { section: 'ram', page: index },
      );
    }
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

function decodePageBatch(payload: Buffer, pageSize: number): PageBatch {
  checkPageSize(pageSize);
  if (payload.length < PAGE_BATCH_HEADER) {
    throw new ProtocolError(
      ErrorCode.TRUNCATED,
      `page batch header is ${payload.length} of ${PAGE_BATCH_HEADER} bytes`,
      {
        section: 'ram',
        offset: payload.length,
      },
    );
  }
  if (payload[1] !== 0)
    throw malformed('ram', `page batch flags 0x${payload[1]!.toString(16)} are not 0`, 'flags');
  const blockId = payload.readUInt16BE(2);
  const round = payload.readUInt32BE(4);
  const count = payload.readUInt32BE(8);
  const dataLen = payload.readUInt32BE(12);
  if (count > MAX_BATCH_PAGES) {
    throw new ProtocolError(ErrorCode.OVERSIZE, `page batch of ${count} pages exceeds ${MAX_BATCH_PAGES}`, {
      section: 'ram',
      offset: 8,
    });
  }
  const dataAt = PAGE_BATCH_HEADER + count * PAGE_DESCRIPTOR;
  checkBatchLength(payload.length, dataAt + dataLen);
  const batch: PageBatch = {
    blockId,
    round,
    count,
    indexes: new Uint32Array(count),
    flags: new Uint8Array(count),
    checksums: new BigUint64Array(count),
    dataOffsets: new Int32Array(count),
    data: payload.subarray(dataAt, dataAt + dataLen),
  };
  const nonZero = readDescriptors(payload, batch, pageSize);
  if (nonZero * pageSize !== dataLen) {
    throw malformed('ram', `data_len ${dataLen} is not ${nonZero} non-zero pages × ${pageSize}`, 'data_len');
  }
  return batch;
}

/** Fills the batch's descriptor arrays; returns the number of non-zero pages. */
function readDescriptors(payload: Buffer, batch: PageBatch, pageSize: number): number {
  let nonZero = 0;
  for (let i = 0; i < batch.count; i++) {
    const at = PAGE_BATCH_HEADER + i * PAGE_DESCRIPTOR;
    const index = payload.readUInt32BE(at);
    const flags = payload[at + 4]!;
    const checksum = payload.readBigUInt64BE(at + 8);
    if (
      (flags & ~PageFlag.ZERO) !== 0 ||
      payload[at + 5] !== 0 ||
      payload[at + 6] !== 0 ||
      payload[at + 7] !== 0
    ) {
      throw new ProtocolError(ErrorCode.MALFORMED, `page ${index}: bad descriptor flags or reserved bytes`, {
        section: 'ram',
        page: index,
        offset: at + 4,
      });
    }
    batch.indexes[i] = index;
    batch.flags[i] = flags;
    batch.checksums[i] = checksum;
    if (flags & PageFlag.ZERO) {
      if (checksum !== ZERO_CHECKSUM) {
        throw new ChecksumError(
          ErrorCode.CHECKSUM,
          `zero page ${index} carries checksum ${hex64(checksum)}`,
          {
            section: 'ram',
            page: index,
            offset: at + 8,
          },
        );
      }
      batch.dataOffsets[i] = -1;
    } else {
      batch.dataOffsets[i] = nonZero * pageSize;
      nonZero++;
    }
  }
  return nonZero;
}

function checkBatchLength(actual: number, expected: number): void {
  if (actual < expected) {
    throw new ProtocolError(
      ErrorCode.TRUNCATED,
      `page batch is ${actual} bytes, header declares ${expected}`,
      {
        section: 'ram',
        offset: actual,
      },
    );
  }
  if (actual > expected) {
    throw malformed('ram', `page batch is ${actual} bytes, header declares ${expected}`, 'data_len');
  }
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function isBlock(b: unknown): b is { name: string; pages: number } {
  return isPlainObject(b) && typeof b.name === 'string' && isCount(b.pages);
}

function hex64(v: bigint): string {
  return `0x${v.toString(16).padStart(16, '0')}`;
}
