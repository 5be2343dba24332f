/**
 * A valid stream holding every record kind, built with the independent byte builder, plus the
 * records a decoder must return for it. Shared by the codec, split-chunk and fuzz tests.
 */
import { xxh64 } from '@node-rs/xxhash';
import { SectionPayload } from '../../shared/protocol/section-payload.js';
import * as B from './byte-builder.js';

export const PAGE = 64;

export const configBody = {
  machine: 'sim-1',
  pageSize: 4096,
  ramSize: 1 << 20,
  capabilities: { 'return-path': true, 'switchover-ack': false },
  note: 'extra keys survive',
};
export const geometry = { pageSize: PAGE, pageCount: 16, blocks: [{ name: 'pc.ram', pages: 16 }] };
export const pageChannels = { host: '127.0.0.1', ports: [40001, 40002] };
export const vmdescJson = { page_size: 4096, devices: [{ name: 'cpu', instance_id: 0 }] };

export function pageOf(fill: number, size = PAGE): Buffer {
  const p = Buffer.alloc(size);
  for (let i = 0; i < size; i++) p[i] = (fill * 31 + i * 7) & 0xff;
  return p;
}

/** One batch with a non-zero, a zero and another non-zero page (pageSize = PAGE). */
export function sampleBatchPages(): B.BatchPage[] {
  const p5 = pageOf(5);
  const p9 = pageOf(9);
  return [
    { index: 5, data: p5, checksum: xxh64(p5, 5n) },
    { index: 6, zero: true, checksum: 0n },
    { index: 9, data: p9, checksum: xxh64(p9, 9n) },
  ];
}

export interface Sample {
  /** Each record's bytes, in stream order (the first is the header). */
  parts: Buffer[];
  bytes: Buffer;
  /** Decoded records with Buffers as hex (see normalize). */
  expected: unknown[];
}

export function sampleStream(): Sample {
  const hex = (b: Buffer) => b.toString('hex');
  const geometryBytes = B.ramGeometry(B.msgpack(geometry));
  const devState = B.msgpack({ counter: 7, regs: [1, 2, 3] });
  const batch = B.pageBatch(0, 1, sampleBatchPages());
  const eos = Buffer.from([0x03]);
  const pcRecord = B.ramPageChannels(B.msgpack(pageChannels));
  const rows: [Buffer, unknown][] = [
    [B.streamHeader(), { type: 'header', version: 2 }],
    [B.configuration(B.msgpack(configBody)), { type: 'configuration', body: configBody }],
    [B.command(1), { type: 'command', command: 1, payload: '' }],
    [B.command(2, B.be32(1)), { type: 'command', command: 2, payload: '00000001' }],
    [
      B.sectionWithHeader(0x01, 0, 'ram', 0, 4, geometryBytes),
      { type: 'start', sectionId: 0, idstr: 'ram', instanceId: 0, versionId: 4, payload: hex(geometryBytes) },
    ],
    [
      B.sectionWithHeader(0x01, 1, 'précopy-dev', 3, 2, devState),
      {
        type: 'start',
        sectionId: 1,
        idstr: 'précopy-dev',
        instanceId: 3,
        versionId: 2,
        payload: hex(devState),
      },
    ],
    [B.sectionShort(0x02, 0, pcRecord), { type: 'part', sectionId: 0, payload: hex(pcRecord) }],
    [B.sectionShort(0x02, 0, batch), { type: 'part', sectionId: 0, payload: hex(batch) }],
    [B.sectionShort(0x02, 0, eos), { type: 'part', sectionId: 0, payload: '03' }],
    [B.command(11), { type: 'command', command: 11, payload: '' }],
    [B.sectionShort(0x03, 0, eos), { type: 'end', sectionId: 0, payload: '03' }],
    [B.sectionShort(0x03, 1, Buffer.alloc(0)), { type: 'end', sectionId: 1, payload: '' }],
    [
      B.sectionWithHeader(0x04, 2, 'cpu', 0, 1, devState),
      { type: 'full', sectionId: 2, idstr: 'cpu', instanceId: 0, versionId: 1, payload: hex(devState) },
    ],
    [B.eof(), { type: 'eof' }],
    [B.vmdesc(JSON.stringify(vmdescJson)), { type: 'vmdesc', json: vmdescJson }],
  ];
  const parts = rows.map((r) => r[0]);
  return { parts, bytes: Buffer.concat(parts), expected: rows.map((r) => r[1]) };
}

/** Deep copy with every Buffer (or section payload) replaced by its hex string, so records compare by content. */
export function normalize(value: unknown): unknown {
  if (Buffer.isBuffer(value)) return value.toString('hex');
  if (value instanceof SectionPayload) return value.bytes().toString('hex');
  if (Array.isArray(value)) return value.map(normalize);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalize(v)]));
  }
  return value;
}
