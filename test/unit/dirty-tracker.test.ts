import t from 'tap';
import { GuestMemory, markDirty } from '../../shared/guest/memory.js';
import { loadNativeHash, type NativeHash, prepareNativeHash } from '../../shared/ram/native-hash.js';
import { DirtyTracker } from '../../source/ram/dirty-tracker.js';

/** Every pending page, in order (the round's list). */
function drain(tr: DirtyTracker, pages: number): number[] {
  const out = new Int32Array(pages);
  return Array.from(out.subarray(0, tr.takeAll(out)));
}

t.test('the first pass yields every page once, in order', async (t) => {
  const mem = GuestMemory.allocate(100 * 4096);
  const tr = new DirtyTracker(mem);
  tr.startFullPass(0);
  t.equal(tr.pending, 100);
  t.same(
    drain(tr, 100),
    Array.from({ length: 100 }, (_, i) => i),
  );
  t.equal(tr.pending, 0);
  t.equal(tr.count(), 0);
});

t.test('a write after the harvest is found by the next sync, never lost', async (t) => {
  const mem = GuestMemory.allocate(64 * 4096);
  const tr = new DirtyTracker(mem);
  tr.startFullPass(0);
  drain(tr, 64);
  markDirty(mem.dirty, 5);
  markDirty(mem.dirty, 40);
  t.equal(tr.sync(1), 2);
  t.equal(tr.pending, 2);
  t.same(drain(tr, 64), [5, 40], 'the round takes both (bits cleared before the pages are read)');
  markDirty(mem.dirty, 5); // written while the round sends it: found by the next sync
  t.equal(tr.sync(2), 1, 'page 5 is dirty again');
  t.same(drain(tr, 64), [5]);
  t.equal(tr.pending, 0);
});

t.test('requeue makes pages of an unfinished round pending again, each once', async (t) => {
  const mem = GuestMemory.allocate(64 * 4096);
  const tr = new DirtyTracker(mem);
  tr.startFullPass(0);
  const list = new Int32Array(64);
  t.equal(tr.takeAll(list), 64);
  markDirty(mem.dirty, 60);
  tr.sync(1);
  tr.requeue(list, 58, 64); // pages 58..63 were not sent; 60 is also newly dirty
  t.equal(tr.pending, 6);
  t.equal(tr.count(), 6);
  t.same(drain(tr, 64), [58, 59, 60, 61, 62, 63]);
});

t.test('sync counts pages and the rate period', async (t) => {
  const mem = GuestMemory.allocate(64 * 4096);
  const tr = new DirtyTracker(mem);
  tr.startFullPass(0);
  for (let i = 0; i < 10; i++) markDirty(mem.dirty, i);
  tr.sync(1500);
  t.equal(tr.syncCount, 2);
  t.ok(tr.dirtyPagesRate > 0, 'a period of at least 1000 ms produced a rate');
});

t.test('the first rate comes from the first sync, later ones from periods of 1 s', async (t) => {
  const mem = GuestMemory.allocate(64 * 4096);
  const tr = new DirtyTracker(mem);
  tr.startFullPass(0);
  for (let i = 0; i < 10; i++) markDirty(mem.dirty, i);
  tr.sync(50);
  t.equal(tr.dirtyPagesRate, 0, 'under 100 ms: no rate yet');
  for (let i = 10; i < 30; i++) markDirty(mem.dirty, i);
  tr.sync(300);
  t.equal(tr.dirtyPagesRate, 100, 'the first sync after 100 ms: 30 pages in 300 ms');
  for (let i = 30; i < 40; i++) markDirty(mem.dirty, i);
  tr.sync(800);
  t.equal(tr.dirtyPagesRate, 100, 'then QEMU periods of at least 1000 ms: unchanged after 500 ms');
  tr.sync(1300);
  t.equal(tr.dirtyPagesRate, 10, '10 pages in the 1000 ms period');
});

// the addon's syncDirty/takeAll and the JavaScript loops must agree: both are run (no compiler: only JS)
const path = prepareNativeHash();
for (const [label, native] of [['JavaScript', null], ...(path ? [['addon', loadNativeHash(path)]] : [])] as [
  string,
  NativeHash | null,
][]) {
  t.test(
    `${label}: sync merges the log word by word: already-pending pages are not counted twice`,
    async (t) => {
      const mem = GuestMemory.allocate(96 * 4096);
      const tr = new DirtyTracker(mem, native);
      tr.startFullPass(0);
      tr.takeAll(new Int32Array(96));
      // bit 31 of a word is the sign bit of the Int32Array log: pages 31 and 63 check it
      for (const p of [0, 31, 32, 63, 95]) markDirty(mem.dirty, p);
      t.equal(tr.sync(1), 5);
      markDirty(mem.dirty, 31);
      markDirty(mem.dirty, 64);
      t.equal(tr.sync(2), 1, 'page 31 was still pending; only 64 is new');
      t.equal(tr.pending, 6);
      t.equal(tr.count(), 6);
      t.same(Array.from(mem.dirty), [0, 0, 0], 'the guest log is cleared by the harvest');
    },
  );

  t.test(`${label}: the rate counts every harvested write, pending or not`, async (t) => {
    const mem = GuestMemory.allocate(64 * 4096);
    const tr = new DirtyTracker(mem, native);
    tr.startFullPass(0); // every page pending
    for (let i = 0; i < 20; i++) markDirty(mem.dirty, i);
    t.equal(tr.sync(1000), 0, 'nothing new: all 20 were pending');
    t.equal(tr.dirtyPagesRate, 20, '20 pages in 1000 ms');
  });

  t.test(
    `${label}: takeAll drains every pending page in ascending order and clears the bitmap`,
    async (t) => {
      const mem = GuestMemory.allocate(100 * 4096);
      const tr = new DirtyTracker(mem, native);
      tr.startFullPass(0);
      const out = new Int32Array(100);
      tr.requeue(Int32Array.from([0]), 0, 1); // already pending: no change
      const n = tr.takeAll(out);
      t.equal(n, 100);
      t.same(
        Array.from(out.subarray(0, n)),
        Array.from({ length: 100 }, (_, i) => i),
      );
      t.equal(tr.pending, 0);
      t.equal(tr.count(), 0);
      for (const p of [99, 3, 31, 64]) markDirty(mem.dirty, p);
      tr.sync(1);
      t.equal(tr.takeAll(out), 4);
      t.same(Array.from(out.subarray(0, 4)), [3, 31, 64, 99]);
      t.equal(tr.takeAll(out), 0, 'nothing left');
    },
  );
}

t.test(
  'addon and JavaScript agree on random logs',
  { skip: path ? false : 'no compiler here' },
  async (t) => {
    const pages = 40_000;
    const [js, nat] = [null, loadNativeHash(path)].map((native) => {
      const mem = GuestMemory.allocate(pages * 4096);
      return { mem, tr: new DirtyTracker(mem, native) };
    });
    let seed = 12345;
    const rnd = () => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed;
    };
    const list = [new Int32Array(pages), new Int32Array(pages)];
    for (const side of [js!, nat!]) side.tr.startFullPass(0);
    for (let round = 0; round < 5; round++) {
      for (let k = 0; k < 3000; k++) {
        const p = rnd() % pages;
        for (const side of [js!, nat!]) markDirty(side.mem.dirty, p);
      }
      t.equal(nat!.tr.sync(round), js!.tr.sync(round), `round ${round}: same pages newly pending`);
      t.equal(nat!.tr.pending, js!.tr.pending);
      const n = [js!.tr.takeAll(list[0]!), nat!.tr.takeAll(list[1]!)];
      t.equal(n[1], n[0], 'same count');
      t.ok(
        Buffer.from(list[0]!.buffer, 0, n[0]! * 4).equals(Buffer.from(list[1]!.buffer, 0, n[1]! * 4)),
        'same list',
      );
    }
  },
);
