import t from 'tap';
import { GuestMemory, markDirty } from '../../shared/guest/memory.js';
import { DirtyTracker } from '../../source/dirty-tracker.js';

t.test('the first pass yields every page once, in order', async (t) => {
  const mem = GuestMemory.allocate(100 * 4096);
  const tr = new DirtyTracker(mem);
  tr.startFullPass(0);
  t.equal(tr.pending, 100);
  const got: number[] = [];
  for (let p = tr.next(); p >= 0; p = tr.next()) got.push(p);
  t.same(
    got,
    Array.from({ length: 100 }, (_, i) => i),
  );
  t.equal(tr.pending, 0);
  t.equal(tr.count(), 0);
});

t.test('a write after the harvest is found by the next sync, never lost', async (t) => {
  const mem = GuestMemory.allocate(64 * 4096);
  const tr = new DirtyTracker(mem);
  tr.startFullPass(0);
  while (tr.next() >= 0) {}
  markDirty(mem.dirty, 5);
  markDirty(mem.dirty, 40);
  t.equal(tr.sync(1), 2);
  t.equal(tr.pending, 2);
  markDirty(mem.dirty, 5); // dirtied again after the sync: pending once, found by the next sync
  t.equal(tr.next(), 5);
  t.equal(tr.sync(2), 1, 'page 5 is dirty again');
  const rest: number[] = [];
  for (let p = tr.next(); p >= 0; p = tr.next()) rest.push(p);
  // the cursor passed 5 already: 40 comes now, 5 after the wrap
  const wrapped: number[] = [];
  for (let p = tr.next(); p >= 0; p = tr.next()) wrapped.push(p);
  t.same(
    [...rest, ...wrapped].sort((a, b) => a - b),
    [5, 40],
  );
  t.equal(tr.pending, 0);
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
