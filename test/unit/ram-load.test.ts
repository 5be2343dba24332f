/**
 * The destination's RAM handler, main-channel path: batches arrive as views of socket chunks and land
 * in guest RAM verified; records are accepted only where the protocol puts them (FINAL_ROUND in the
 * completion stage with page channels, PAGE_CHANNELS right after geometry), and the guest may not
 * resume with a page missing or torn.
 */
import { randomFillSync } from 'node:crypto';
import { xxh64 } from '@node-rs/xxhash';
import t from 'tap';
import { RamLoader } from '../../destination/ram/ram-load.js';
import { GuestMemory } from '../../shared/guest/memory.js';
import {
  encodePageChannels,
  encodeRamEos,
  encodeRamFinalRound,
  encodeRamGeometry,
} from '../../shared/protocol/ram-records.js';
import { SectionPayload } from '../../shared/protocol/section-payload.js';
import { PageState } from '../../shared/ram/page-batch-verifier.js';
import * as B from '../helpers/byte-builder.js';

const PS = 4096;
const PAGES = 64;
const malformed = { code: 'MIG_ERR_MALFORMED' };
const of = (b: Buffer) => SectionPayload.of(b);

/** `bytes` cut into views at odd offsets, as socket chunks would deliver them. */
function chunked(bytes: Buffer, size: number): SectionPayload {
  const parts: Buffer[] = [];
  for (let at = 0; at < bytes.length; at += size) parts.push(Buffer.from(bytes.subarray(at, at + size)));
  return new SectionPayload(parts);
}

function loader(): { ram: RamLoader; memory: GuestMemory } {
  const memory = GuestMemory.allocate(PAGES * PS);
  const ram = new RamLoader(memory, { pageChannels: 0 });
  ram.loadState(
    'start',
    of(encodeRamGeometry({ pageSize: PS, pageCount: PAGES, blocks: [{ name: 'pc.ram', pages: PAGES }] })),
  );
  return { ram, memory };
}

function pageBytes(p: number): Buffer {
  const b = Buffer.alloc(PS);
  randomFillSync(b);
  b[0] = p;
  return b;
}

t.test('a batch split across chunks at odd offsets lands in guest RAM, verified', async (t) => {
  const { ram, memory } = loader();
  const pages = [7, 8, 9, 20].map((p) => ({ index: p, data: pageBytes(p), checksum: 0n }));
  for (const p of pages) p.checksum = xxh64(p.data, BigInt(p.index));
  const zero = { index: 30, zero: true, checksum: 0n };
  memory.bytes.fill(0xee, 30 * PS, 31 * PS);
  ram.loadState('part', chunked(B.pageBatch(0, 1, [...pages, zero]), 6553));
  for (const p of pages)
    t.ok(
      Buffer.from(memory.bytes.subarray(p.index * PS, (p.index + 1) * PS)).equals(p.data),
      `page ${p.index}`,
    );
  t.ok(
    memory.bytes.subarray(30 * PS, 31 * PS).every((b) => b === 0),
    'zero page cleared',
  );
  t.same(
    [ram.received[7], ram.received[30], ram.received[31]],
    [PageState.RECEIVED, PageState.RECEIVED, PageState.MISSING],
  );
  t.equal(ram.pagesVerified, 5);
  t.equal(ram.checksums[20], pages[3]!.checksum);
});

t.test(
  'a page that fails its checksum is TORN, counted, and fails verifyComplete unless resent',
  async (t) => {
    const { ram } = loader();
    const data = pageBytes(5);
    const batch = B.pageBatch(0, 1, [{ index: 5, data, checksum: xxh64(data, 5n) ^ 1n }]);
    ram.loadState('part', of(batch));
    t.equal(ram.tornCopies, 1);
    t.equal(ram.received[5], PageState.TORN);
    ram.loadState('end', of(encodeRamEos()));
    t.throws(() => ram.verifyComplete(), { code: 'MIG_ERR_CHECKSUM', page: 5 });
    ram.loadState('part', of(B.pageBatch(0, 2, [{ index: 5, data, checksum: xxh64(data, 5n) }])));
    t.throws(
      () => ram.verifyComplete(),
      { code: 'MIG_ERR_TRUNCATED', page: 0 },
      'now page 0 is the first missing one',
    );
  },
);

t.test('verifyComplete wants the RAM END section', async (t) => {
  const { ram } = loader();
  t.throws(() => ram.verifyComplete(), { code: 'MIG_ERR_TRUNCATED', message: /END section/ });
});

t.test('a batch whose length disagrees with its header, or a round end, is refused', async (t) => {
  const { ram } = loader();
  const data = pageBytes(1);
  const batch = B.pageBatch(0, 1, [{ index: 1, data, checksum: xxh64(data, 1n) }]);
  t.throws(() => ram.loadState('part', of(batch.subarray(0, batch.length - 1))), {
    code: 'MIG_ERR_TRUNCATED',
  });
  t.throws(() => ram.loadState('part', of(Buffer.concat([batch, Buffer.alloc(1)]))), malformed);
  t.throws(() => ram.loadState('part', of(B.roundEnd(1))), malformed, 'ROUND_END belongs on page channels');
  t.throws(() => ram.loadState('start', of(batch)), malformed, 'pages in START');
});

t.test('FINAL_ROUND and PAGE_CHANNELS without page channels, or out of place, are MALFORMED', async (t) => {
  for (const kind of ['start', 'part', 'end', 'full'] as const)
    t.throws(
      () => loader().ram.loadState(kind, of(encodeRamFinalRound(3))),
      malformed,
      `FINAL_ROUND in ${kind}`,
    );
  const channels = of(encodePageChannels({ host: '127.0.0.1', ports: [1, 2] }));
  t.throws(() => loader().ram.loadState('part', channels), { ...malformed, message: /only with multifd/ });
  const fresh = new RamLoader(GuestMemory.allocate(PAGES * PS), { pageChannels: 0 });
  t.throws(() => fresh.loadState('part', of(B.pageBatch(0, 1, []))), malformed, 'pages before geometry');
  t.throws(
    () =>
      loader().ram.loadState('start', of(encodeRamGeometry({ pageSize: PS, pageCount: PAGES, blocks: [] }))),
    malformed,
    'a second geometry',
  );
});

t.test('a geometry that does not match this guest is CONFIG_MISMATCH', async (t) => {
  const ram = new RamLoader(GuestMemory.allocate(PAGES * PS), { pageChannels: 0 });
  t.throws(
    () => ram.loadState('start', of(encodeRamGeometry({ pageSize: PS, pageCount: PAGES + 1, blocks: [] }))),
    { code: 'MIG_ERR_CONFIG_MISMATCH' },
  );
});
