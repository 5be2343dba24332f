/**
 * The page-batch format (shared/protocol/page-batch.ts) and the one builder and one verifier that
 * use it, on both backends. Expected bytes come from the independent byte builder. The page-channel
 * decoder is fed whole, split at every byte boundary, and a byte at a time; every error has a tamper
 * case.
 */
import { randomFillSync } from 'node:crypto';
import { xxh64 } from '@node-rs/xxhash';
import t from 'tap';
import { MAX_BATCH_PAGES } from '../../shared/protocol/constants.js';
import {
  decodeFrameHeader,
  encodeRoundEnd,
  PageChannelDecoder,
  type PageChannelEvent,
  scanDescriptors,
} from '../../shared/protocol/page-batch.js';
import { loadNativeHash, type NativeHash, prepareNativeHash } from '../../shared/ram/native-hash.js';
import { PageBatchBuilder } from '../../shared/ram/page-batch-builder.js';
import { PageBatchVerifier, PageState } from '../../shared/ram/page-batch-verifier.js';
import * as B from '../helpers/byte-builder.js';

const PS = 64;
const PAGES = 32;
const code = (c: string) => ({ code: `MIG_ERR_${c}` });
const native = loadNativeHash(prepareNativeHash());
const backends: [string, NativeHash | null][] = [
  ['js', null],
  ...(native ? [['native', native] as [string, NativeHash]] : []),
];

/** Guest RAM of PAGES random pages, with pages 3 and 4 all zero. */
function ram(): Buffer {
  const r = Buffer.from(new SharedArrayBuffer(PAGES * PS));
  randomFillSync(r);
  r.fill(0, 3 * PS, 5 * PS);
  return r;
}

/** The builder's view of page p of `r` as a BatchPage for the byte builder. */
function page(r: Buffer, p: number): B.BatchPage {
  const data = Buffer.from(r.subarray(p * PS, (p + 1) * PS));
  const zero = data.every((b) => b === 0);
  return zero ? { index: p, zero: true, checksum: 0n } : { index: p, data, checksum: xxh64(data, BigInt(p)) };
}

for (const [name, backend] of backends) {
  t.test(`${name} builder: the byte builder's bytes, checksums recorded, runs as views of RAM`, async (t) => {
    const r = ram();
    const list = Int32Array.from([0, 1, 2, 3, 4, 5, 9, 10, 7]);
    const sent = new BigUint64Array(PAGES);
    const b = new PageBatchBuilder(16, PS, backend);
    t.equal(b.backend, name);
    const chunks = b.build(3, 7, list, 1, 8, r, sent);
    const expected = B.pageBatch(
      3,
      7,
      [...list.subarray(1, 8)].map((p) => page(r, p)),
    );
    t.same(Buffer.concat(chunks), expected);
    t.equal(chunks.length, 1 + 3, 'header, then runs [1,3) [5,6) [9,11)');
    t.equal(chunks[1]!.buffer, r.buffer, 'page data is not copied');
    t.same({ count: b.count, zero: b.zeroPages, normal: b.normalPages }, { count: 7, zero: 2, normal: 5 });
    t.equal(sent[9], xxh64(r.subarray(9 * PS, 10 * PS), 9n));
    t.equal(sent[3], 0n);
    t.throws(() => b.build(0, 1, list, 0, 0, r, sent), code('INTERNAL'), 'empty batch');
    t.throws(
      () => b.build(0, 1, Int32Array.from([PAGES]), 0, 1, r, sent),
      code('INTERNAL'),
      'page outside RAM',
    );
  });
}

t.test('ROUND_END encodes to the builder bytes; round 0 cannot be encoded', async (t) => {
  t.same(encodeRoundEnd(0x01020304), B.roundEnd(0x01020304));
  t.throws(() => encodeRoundEnd(0), code('MALFORMED'));
});

t.test('frame headers decode, and each broken field is its own error', async (t) => {
  t.same(decodeFrameHeader(B.pageBatch(2, 9, [page(ram(), 1)]), PS), {
    kind: 'pages',
    block: 2,
    round: 9,
    count: 1,
    dataLen: PS,
  });
  t.same(decodeFrameHeader(B.roundEnd(4), PS), { kind: 'round-end', round: 4 });
  const head = (opts: Parameters<typeof B.pageBatch>[3]) => B.pageBatch(0, 1, [], opts);
  t.throws(() => decodeFrameHeader(B.pageBatch(0, 1, []).subarray(0, 15), PS), code('TRUNCATED'));
  t.throws(() => decodeFrameHeader(Buffer.from([0x07, ...Buffer.alloc(15)]), PS), code('MALFORMED'), 'kind');
  t.throws(() => decodeFrameHeader(head({ headerFlags: 1, count: 1 }), PS), code('MALFORMED'), 'flags');
  t.throws(() => decodeFrameHeader(head({ count: 0 }), PS), code('MALFORMED'), 'no pages');
  t.throws(
    () => decodeFrameHeader(head({ count: MAX_BATCH_PAGES + 1 }), PS),
    code('OVERSIZE'),
    'too many pages',
  );
  t.throws(
    () => decodeFrameHeader(head({ count: 1, dataLen: PS - 1 }), PS),
    code('MALFORMED'),
    'part of a page',
  );
  t.throws(
    () => decodeFrameHeader(head({ count: 1, dataLen: 2 * PS }), PS),
    code('MALFORMED'),
    'more data than pages',
  );
  t.throws(() => decodeFrameHeader(B.roundEnd(4, { reserved: 1 }), PS), code('MALFORMED'), 'round end flags');
  t.throws(() => decodeFrameHeader(B.roundEnd(4, { count: 1 }), PS), code('MALFORMED'), 'round end count');
  t.throws(() => decodeFrameHeader(B.roundEnd(0), PS), code('MALFORMED'), 'round end of round 0');
  t.throws(
    () => decodeFrameHeader(B.roundEnd(4), PS, false),
    code('MALFORMED'),
    'no round end on the main channel',
  );
});

t.test('descriptors: runs of non-zero pages, and each broken descriptor is its own error', async (t) => {
  const r = ram();
  const pages = [2, 3, 5, 6, 7, 1].map((p) => page(r, p));
  const bytes = B.pageBatch(0, 1, pages);
  const desc = bytes.subarray(16, 16 + pages.length * 16);
  const runs = new Int32Array(2 * pages.length);
  t.equal(scanDescriptors(desc, pages.length, PS, PAGES, 5 * PS, runs), 3);
  t.same([...runs.subarray(0, 6)], [2, 3, 5, 8, 1, 2]);
  const tamper = (i: number, at: number, value: number) => {
    const d = Buffer.from(desc);
    d[i * 16 + at] = value;
    return d;
  };
  t.throws(
    () => scanDescriptors(tamper(0, 4, 0x02), 6, PS, PAGES, 5 * PS, runs),
    code('MALFORMED'),
    'flag bit',
  );
  t.throws(
    () => scanDescriptors(tamper(0, 6, 1), 6, PS, PAGES, 5 * PS, runs),
    code('MALFORMED'),
    'reserved byte',
  );
  t.throws(
    () => scanDescriptors(desc, 6, PS, 6, 5 * PS, runs),
    { ...code('MALFORMED'), page: 6 },
    'page beyond RAM',
  );
  t.throws(() => scanDescriptors(tamper(1, 15, 1), 6, PS, PAGES, 5 * PS, runs), {
    ...code('CHECKSUM'),
    page: 3,
  });
  t.throws(() => scanDescriptors(desc, 6, PS, PAGES, 4 * PS, runs), code('MALFORMED'), 'data_len disagrees');
});

/** Two rounds on one channel: batches of round 1, its end, a batch of round 2, its end. */
function channelStream(r: Buffer): { bytes: Buffer; pages: number[] } {
  const b1 = B.pageBatch(
    0,
    1,
    [0, 1, 2, 3].map((p) => page(r, p)),
  );
  const b2 = B.pageBatch(
    0,
    1,
    [10, 12].map((p) => page(r, p)),
  );
  const b3 = B.pageBatch(
    0,
    2,
    [4, 20, 21].map((p) => page(r, p)),
  );
  return {
    bytes: Buffer.concat([b1, b2, B.roundEnd(1), b3, B.roundEnd(2)]),
    pages: [0, 1, 2, 3, 10, 12, 4, 20, 21],
  };
}

/** Every event of feeding `chunks`, in order (a batch summarised while it is current). */
function feedAll(d: PageChannelDecoder, ...chunks: Buffer[]): unknown[] {
  const out: unknown[] = [];
  for (const c of chunks) d.feed(c, (e) => out.push(...summary([e])));
  return out;
}

function summary(events: PageChannelEvent[]): unknown[] {
  return events.map((e) => (e.kind === 'batch' ? { batch: e.round, count: e.count } : { end: e.round }));
}

const EXPECTED = [
  { batch: 1, count: 4 },
  { batch: 1, count: 2 },
  { end: 1 },
  { batch: 2, count: 3 },
  { end: 2 },
];

t.test('several batches in one chunk: each is handed over while its descriptors are current', async (t) => {
  const src = ram();
  const d = new PageChannelDecoder(Buffer.from(new SharedArrayBuffer(src.length)), PS);
  const seen: number[][] = [];
  d.feed(
    Buffer.concat([B.pageBatch(0, 1, [page(src, 1)]), B.pageBatch(0, 1, [page(src, 2), page(src, 5)])]),
    (e) => {
      if (e.kind === 'batch')
        seen.push(Array.from({ length: e.count }, (_, i) => e.descriptors.readUInt32BE(i * 16)));
    },
  );
  t.same(seen, [[1], [2, 5]]);
});

t.test('the page-channel decoder puts page data in its place in RAM, fed whole', async (t) => {
  const src = ram();
  const { bytes, pages } = channelStream(src);
  const dst = Buffer.from(new SharedArrayBuffer(src.length));
  const d = new PageChannelDecoder(dst, PS);
  t.same(feedAll(d, bytes), EXPECTED);
  t.ok(d.atFrameBoundary);
  for (const p of pages) {
    const zero = src.subarray(p * PS, (p + 1) * PS).every((x) => x === 0);
    if (!zero) t.same(dst.subarray(p * PS, (p + 1) * PS), src.subarray(p * PS, (p + 1) * PS), `page ${p}`);
  }
});

t.test('the page-channel decoder gives the same events split at every byte boundary', async (t) => {
  const src = ram();
  const { bytes } = channelStream(src);
  for (let cut = 1; cut < bytes.length; cut++) {
    const d = new PageChannelDecoder(Buffer.from(new SharedArrayBuffer(src.length)), PS);
    const events = feedAll(d, bytes.subarray(0, cut), bytes.subarray(cut));
    if (JSON.stringify(events) !== JSON.stringify(EXPECTED)) t.fail(`split at ${cut}`);
  }
  t.pass(`${bytes.length - 1} splits`);
});

t.test('the page-channel decoder fed a byte at a time, through target()/advance()', async (t) => {
  const src = ram();
  const { bytes } = channelStream(src);
  const dst = Buffer.from(new SharedArrayBuffer(src.length));
  const d = new PageChannelDecoder(dst, PS);
  const events: PageChannelEvent[] = [];
  const boundaries: number[] = [];
  for (let i = 0; i < bytes.length; i++) {
    const target = d.target();
    t.ok(target.length > 0, 'target is never empty') || t.bailout();
    target[0] = bytes[i]!;
    const e = d.advance(1);
    if (e) events.push(e);
    if (d.atFrameBoundary) boundaries.push(i + 1);
  }
  t.same(summary(events), EXPECTED);
  t.equal(boundaries.length, 5, 'a frame boundary after each of the 5 frames, never inside one');
  t.equal(boundaries.at(-1), bytes.length);
});

t.test('the page-channel decoder refuses rounds out of order, naming the channel offset', async (t) => {
  const r = ram();
  const b = (round: number) => B.pageBatch(0, round, [page(r, 1)]);
  const decode = (...frames: Buffer[]) =>
    feedAll(new PageChannelDecoder(Buffer.from(new SharedArrayBuffer(r.length)), PS), Buffer.concat(frames));
  t.same(decode(B.roundEnd(1), B.roundEnd(3)), [{ end: 1 }, { end: 3 }], 'an empty round may end');
  t.throws(
    () => decode(b(2), B.roundEnd(2), b(2)),
    { ...code('MALFORMED'), field: 'round' },
    'a batch of an ended round',
  );
  t.throws(() => decode(b(2), b(3)), code('MALFORMED'), 'a batch of the next round before its end');
  t.throws(() => decode(b(2), B.roundEnd(3)), code('MALFORMED'), 'the end of another round');
  t.throws(() => decode(B.roundEnd(2), B.roundEnd(2)), code('MALFORMED'), 'a round ending twice');
  t.throws(() => decode(b(1), Buffer.from([0x09, ...Buffer.alloc(15)])), {
    ...code('MALFORMED'),
    offset: b(1).length,
  });
});

for (const [name, backend] of backends) {
  t.test(
    `${name} verifier: RECEIVED with the checksum, TORN for a bad page, zero pages cleared`,
    async (t) => {
      const src = ram();
      const pages = [1, 3, 6].map((p) => page(src, p));
      const dst = Buffer.from(new SharedArrayBuffer(src.length));
      dst.fill(0xee); // zero page 3 must be cleared
      const d = new PageChannelDecoder(dst, PS);
      let e!: Extract<PageChannelEvent, { kind: 'batch' }>;
      d.feed(B.pageBatch(0, 1, pages), (x) => {
        if (x.kind === 'batch') e = { ...x, descriptors: Buffer.from(x.descriptors) };
      });
      dst[6 * PS + 5]! ^= 0x10; // page 6 torn after it landed
      const checksums = new BigUint64Array(PAGES);
      const received = new Uint8Array(PAGES);
      const v = new PageBatchVerifier({ ram: dst, pageSize: PS, checksums, received }, backend);
      t.equal(v.backend, name);
      t.equal(v.verify(e.descriptors, e.count), 1, 'one torn page');
      t.same(
        [received[1], received[3], received[6]],
        [PageState.RECEIVED, PageState.RECEIVED, PageState.TORN],
      );
      t.same([checksums[1], checksums[3], checksums[6]], [pages[0]!.checksum, 0n, 0n]);
      t.ok(
        dst.subarray(3 * PS, 4 * PS).every((x) => x === 0),
        'zero page cleared',
      );
      const bad = Buffer.from(e.descriptors);
      bad[16 + 15] = 1; // page 3 (zero) with a checksum
      received.fill(0);
      t.throws(() => v.verify(bad, e.count), { ...code('CHECKSUM'), page: 3 });
      t.same([...received.subarray(0, 8)], [0, 0, 0, 0, 0, 0, 0, 0], 'nothing changed');
    },
  );
}
