import { xxh64 } from '@node-rs/xxhash';
import t from 'tap';
import {
  decodeRamPayload,
  encodeRamEos,
  encodeRamFinalRound,
  encodeRamGeometry,
  type PageBatch,
  PageBatchWriter,
  verifyBatch,
} from '../../shared/protocol/ram-records.js';
import * as B from '../helpers/byte-builder.js';
import { geometry, PAGE, pageOf, sampleBatchPages } from '../helpers/sample-stream.js';

const code = (c: string) => ({ code: `MIG_ERR_${c}` });
const batchOf = (payload: Buffer, pageSize = PAGE): PageBatch => {
  const r = decodeRamPayload(payload, pageSize);
  if (r.kind !== 'pages') throw new Error(`expected pages, got ${r.kind}`);
  return r.batch;
};

t.test('geometry and EOS encode to the builder bytes and round-trip', async (t) => {
  t.same(encodeRamGeometry(geometry), B.ramGeometry(B.msgpack(geometry)));
  t.same(decodeRamPayload(encodeRamGeometry(geometry), PAGE), { kind: 'geometry', geometry });
  t.same(encodeRamEos(), Buffer.from([0x03]));
  t.same(decodeRamPayload(encodeRamEos(), PAGE), { kind: 'eos' });
});

t.test('FINAL_ROUND is 0x04 and a be32 round; any other length is MALFORMED', async (t) => {
  t.same(encodeRamFinalRound(0x01020304), Buffer.from([0x04, 0x01, 0x02, 0x03, 0x04]));
  t.same(decodeRamPayload(Buffer.from([0x04, 0, 0, 0, 7]), PAGE), { kind: 'final-round', round: 7 });
  t.same(decodeRamPayload(encodeRamFinalRound(0xffffffff), PAGE), { kind: 'final-round', round: 0xffffffff });
  for (const bad of [[0x04], [0x04, 0, 0, 7], [0x04, 0, 0, 0, 7, 0]]) {
    t.throws(() => decodeRamPayload(Buffer.from(bad), PAGE), code('MALFORMED'), `${bad.length} bytes`);
  }
});

t.test('PageBatchWriter builds the builder bytes for zero and non-zero pages', async (t) => {
  const w = new PageBatchWriter(8, PAGE);
  w.reset(2, 9);
  for (const p of sampleBatchPages()) w.add(p.index, p.zero ? new Uint8Array(PAGE) : p.data!);
  t.same(
    { count: w.count, zero: w.zeroPages, normal: w.normalPages, full: w.full },
    { count: 3, zero: 1, normal: 2, full: false },
  );
  t.same(Buffer.concat(w.finish()), B.pageBatch(2, 9, sampleBatchPages()));
  t.same(
    [w.checksumAt(0), w.checksumAt(1), w.checksumAt(2)],
    sampleBatchPages().map((p) => p.checksum),
  );
  t.same([w.indexAt(0), w.indexAt(1), w.indexAt(2)], [5, 6, 9]);
});

t.test('a decoded batch exposes descriptors and data offsets and verifies', async (t) => {
  const batch = batchOf(B.pageBatch(2, 9, sampleBatchPages()));
  t.same(
    { blockId: batch.blockId, round: batch.round, count: batch.count },
    { blockId: 2, round: 9, count: 3 },
  );
  t.same([...batch.indexes], [5, 6, 9]);
  t.same([...batch.flags], [0, 1, 0]);
  t.same([...batch.dataOffsets], [0, -1, PAGE]);
  t.same(batch.data.subarray(PAGE, 2 * PAGE), pageOf(9));
  t.equal(batch.checksums[2], xxh64(pageOf(9), 9n));
  verifyBatch(batch, PAGE);
});

t.test('add() copies the page before checksumming, so later guest writes do not leak in', async (t) => {
  const w = new PageBatchWriter(4, PAGE);
  w.reset(0, 1);
  const live = pageOf(1);
  w.add(1, live);
  live.fill(0xee);
  const batch = batchOf(Buffer.concat(w.finish()));
  t.same(batch.data, pageOf(1));
  verifyBatch(batch, PAGE);
});

t.test('a full writer reports full, and reset() starts a new batch', async (t) => {
  const w = new PageBatchWriter(2, PAGE);
  w.reset(0, 1);
  w.add(0, pageOf(1));
  w.add(1, new Uint8Array(PAGE));
  t.ok(w.full);
  t.throws(() => w.add(2, pageOf(2)), code('INTERNAL'));
  w.reset(1, 2);
  t.equal(w.count, 0);
  w.add(3, pageOf(3));
  t.same([...batchOf(Buffer.concat(w.finish())).indexes], [3]);
  t.throws(() => new PageBatchWriter(4097), code('PARAMETER'));
  t.throws(() => w.add(4, new Uint8Array(PAGE + 1)), code('INTERNAL'));
});

t.test('a zero page with a nonzero checksum is CHECKSUM naming the page', async (t) => {
  const pages = sampleBatchPages();
  pages[1]!.checksum = 1n;
  t.throws(() => decodeRamPayload(B.pageBatch(0, 1, pages), PAGE), { ...code('CHECKSUM'), page: 6 });
});

t.test('verifyBatch finds a flipped data byte as CHECKSUM', async (t) => {
  const bytes = B.pageBatch(0, 1, sampleBatchPages());
  bytes[bytes.length - 1]! ^= 1;
  t.throws(() => verifyBatch(batchOf(bytes), PAGE), { ...code('CHECKSUM'), page: 9 });
});

t.test('a data_len that is not non-zero pages × pageSize is MALFORMED', async (t) => {
  const pages = sampleBatchPages();
  pages[2]!.data = pages[2]!.data!.subarray(0, PAGE - 1);
  t.throws(() => decodeRamPayload(B.pageBatch(0, 1, pages), PAGE), code('MALFORMED'));
  t.throws(
    () => decodeRamPayload(B.pageBatch(0, 1, sampleBatchPages()), PAGE * 2),
    code('MALFORMED'),
    'other page size',
  );
});

t.test('payload lengths must match the header exactly', async (t) => {
  const bytes = B.pageBatch(0, 1, sampleBatchPages());
  t.throws(() => decodeRamPayload(bytes.subarray(0, bytes.length - 1), PAGE), code('TRUNCATED'));
  t.throws(() => decodeRamPayload(bytes.subarray(0, 10), PAGE), code('TRUNCATED'));
  t.throws(() => decodeRamPayload(Buffer.concat([bytes, Buffer.alloc(1)]), PAGE), code('MALFORMED'));
  t.throws(() => decodeRamPayload(Buffer.alloc(0), PAGE), code('TRUNCATED'));
  t.throws(() => decodeRamPayload(Buffer.from([0x03, 0x00]), PAGE), code('MALFORMED'));
});

t.test('more pages than MAX_BATCH_PAGES is OVERSIZE before descriptors are read', async (t) => {
  t.throws(() => decodeRamPayload(B.pageBatch(0, 1, [], { count: 4097 }), PAGE), code('OVERSIZE'));
});

t.test('bad flags, reserved bytes, kinds and geometry bodies are MALFORMED', async (t) => {
  t.throws(
    () => decodeRamPayload(B.pageBatch(0, 1, sampleBatchPages(), { headerFlags: 1 }), PAGE),
    code('MALFORMED'),
  );
  const pages = sampleBatchPages();
  pages[0]!.flags = 0x80;
  t.throws(() => decodeRamPayload(B.pageBatch(0, 1, pages), PAGE), code('MALFORMED'));
  t.throws(() => decodeRamPayload(Buffer.from([0x00]), PAGE), code('MALFORMED'));
  t.throws(() => decodeRamPayload(Buffer.from([0x09]), PAGE), code('MALFORMED'));
  for (const body of [
    { ...geometry, pageSize: 0 },
    { ...geometry, pageCount: -1 },
    { ...geometry, blocks: [{ name: 1, pages: 2 }] },
    [geometry],
  ]) {
    t.throws(() => decodeRamPayload(B.ramGeometry(B.msgpack(body)), PAGE), code('MALFORMED'));
  }
  const trailing = Buffer.concat([B.ramGeometry(B.msgpack(geometry)), Buffer.alloc(1)]);
  t.throws(() => decodeRamPayload(trailing, PAGE), code('MALFORMED'));
});

t.test('addPages() gives the bytes add() gives: runs, gaps, zero pages inside a run', async (t) => {
  const pages = 12;
  const ram = new Uint8Array(new SharedArrayBuffer(pages * PAGE));
  for (let p = 0; p < pages; p++) if (p % 4 !== 2) ram.set(pageOf(p + 1), p * PAGE); // pages 2, 6, 10 stay zero
  const list = Int32Array.from([0, 1, 2, 3, 4, 7, 9, 10, 11, 5]);
  const one = new PageBatchWriter(16, PAGE);
  const bulk = new PageBatchWriter(16, PAGE);
  one.reset(1, 4);
  bulk.reset(1, 4);
  for (const p of list) one.add(p, ram.subarray(p * PAGE, (p + 1) * PAGE));
  const sent = new BigUint64Array(pages);
  bulk.addPages(list, 0, 4, ram, sent);
  bulk.addPages(list, 4, list.length, ram, sent);
  t.same(Buffer.concat(bulk.finish()), Buffer.concat(one.finish()));
  t.same(
    [...list].map((p) => sent[p]),
    [...list].map((_, i) => one.checksumAt(i)),
  );
  t.equal(bulk.zeroPages, 2);
  t.throws(() => bulk.addPages(Int32Array.from([1, 2, 3, 4, 5, 6, 7]), 0, 7, ram, sent), code('INTERNAL'));
  const fresh = new PageBatchWriter(4, PAGE);
  fresh.reset(0, 1);
  t.throws(() => fresh.addPages(Int32Array.from([11, 12]), 0, 2, ram, sent), code('INTERNAL'));
});
