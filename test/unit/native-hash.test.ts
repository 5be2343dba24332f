/**
 * The page-batch addon must produce exactly what the page-by-page path produces (the two sides may
 * use either), and it must be available where a C compiler and the Node headers are (CI installs
 * gcc): a silent fallback would hide a broken build behind slower page channels.
 */
import { execFileSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import t, { type Test } from 'tap';
import { PAGE_BATCH_HEADER, PAGE_DESCRIPTOR, PageFlag } from '../../shared/protocol/constants.js';
import { pageChecksum } from '../../shared/ram/checksum.js';
import { loadNativeHash, type NativeHash, prepareNativeHash } from '../../shared/ram/native-hash.js';
import { PageBatchBuilder } from '../../shared/ram/page-batch-builder.js';
import { PageState } from '../../shared/ram/page-batch-verifier.js';

const haveCompiler = (process.env.CC ? [process.env.CC] : ['cc', 'gcc']).some((c) => {
  try {
    execFileSync(c, ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
});

function addon(t: Test): NativeHash | null {
  const path = prepareNativeHash();
  if (!haveCompiler) {
    t.equal(path, null, 'no compiler: no addon, callers work page by page');
    return null;
  }
  t.type(path, 'string', 'the addon was built and loads');
  return loadNativeHash(path);
}

/** RAM of random pages, a few all-zero, one zero but for its last byte. */
function guestRam(pages: number, pageSize: number): Buffer {
  const ram = Buffer.from(new SharedArrayBuffer(pages * pageSize));
  randomFillSync(ram);
  for (const p of [3, 4, 17, 40]) ram.fill(0, p * pageSize, (p + 1) * pageSize);
  ram[17 * pageSize + pageSize - 1] = 1;
  return ram;
}

t.test('describePages builds the same batch as the page-by-page path, byte for byte', async (t) => {
  const native = addon(t);
  if (!native) return;
  for (const pageSize of [4096, 512, 8192]) {
    const pages = 64;
    const ram = guestRam(pages, pageSize);
    // runs of consecutive pages, zero pages inside runs, and jumps back
    const list = Int32Array.from([0, 1, 2, 3, 4, 5, 6, 40, 41, 17, 18, 63, 10, 9, 8, 20, 21, 22]);
    const withAddon = new PageBatchBuilder(64, pageSize, native);
    const pageByPage = new PageBatchBuilder(64, pageSize, null);
    const sentA = new BigUint64Array(pages);
    const sentB = new BigUint64Array(pages);
    const a = withAddon.build(0, 7, list, 1, list.length, ram, sentA);
    const b = pageByPage.build(0, 7, list, 1, list.length, ram, sentB);
    t.same(
      a.map((c: Buffer) => c.length),
      b.map((c: Buffer) => c.length),
      `the same header and runs (page size ${pageSize})`,
    );
    t.ok(Buffer.concat(a).equals(Buffer.concat(b)), 'the same bytes');
    t.same(Array.from(sentA), Array.from(sentB), 'the same checksums recorded');
    t.equal(withAddon.zeroPages, 3, 'pages 3, 4 and 40 are zero; 17 (one byte set) is not');
    t.equal(withAddon.zeroPages, pageByPage.zeroPages);
    t.equal(sentA[41], pageChecksum(ram.subarray(41 * pageSize, 42 * pageSize), 41));
    t.throws(
      () => withAddon.build(0, 7, Int32Array.from([pages]), 0, 1, ram, sentA),
      /page hashing/,
      'a page outside RAM is refused',
    );
  }
});

t.test(
  'verifyPages: checks, clears zero pages, marks torn copies, refuses a zero page with a checksum',
  async (t) => {
    const native = addon(t);
    if (!native) return;
    const ps = 4096;
    const pages = 64;
    const src = guestRam(pages, ps);
    const list = Int32Array.from([2, 3, 4, 5, 30, 31]);
    const batch = new PageBatchBuilder(64, ps, native);
    const sent = new BigUint64Array(pages);
    const [head] = batch.build(0, 1, list, 0, list.length, src, sent);
    const desc = Buffer.from(head!.subarray(PAGE_BATCH_HEADER));

    const dst = Buffer.from(new SharedArrayBuffer(pages * ps));
    src.copy(dst);
    dst.fill(0xee, 3 * ps, 4 * ps); // a zero page whose bytes were never sent: must be cleared
    dst[30 * ps + 100] ^= 0xff; // torn copy
    const checksums = new BigUint64Array(pages);
    const received = new Uint8Array(pages);
    const torn = native.verifyPages(
      dst,
      ps,
      desc,
      list.length,
      checksums,
      received,
      PageState.RECEIVED,
      PageState.TORN,
    );
    t.equal(torn, 1, 'one page failed its checksum');
    t.equal(received[30], PageState.TORN);
    t.equal(checksums[30], 0n, 'a torn copy records no checksum');
    for (const p of [2, 3, 4, 5, 31]) {
      t.equal(received[p], PageState.RECEIVED, `page ${p} received`);
      t.equal(checksums[p], sent[p], `page ${p} checksum recorded`);
    }
    t.ok(
      dst.subarray(3 * ps, 4 * ps).every((b) => b === 0),
      'zero page cleared',
    );
    t.equal(received[6], PageState.MISSING, 'pages outside the batch untouched');

    const bad = Buffer.from(desc);
    const zeroAt = 1 * PAGE_DESCRIPTOR; // page 3, a zero page
    t.equal(bad[zeroAt + 4]! & PageFlag.ZERO, PageFlag.ZERO);
    bad.writeBigUInt64BE(5n, zeroAt + 8);
    const before = Buffer.from(received);
    t.equal(
      native.verifyPages(dst, ps, bad, list.length, checksums, received, PageState.RECEIVED, PageState.TORN),
      -(3 + 1),
      'a zero page with a checksum is named',
    );
    t.ok(Buffer.from(received).equals(before), 'and nothing was changed');

    const outside = Buffer.from(desc);
    outside.writeUInt32BE(pages, 0);
    t.throws(
      () => native.verifyPages(dst, ps, outside, 1, checksums, received, PageState.RECEIVED, PageState.TORN),
      RangeError,
      'a page outside RAM is refused',
    );
  },
);

t.test(
  'guest RAM is advised to use huge pages before it is touched (SWITCHOVER_HUGE_PAGES=0 turns it off)',
  async (t) => {
    const native = addon(t);
    if (!native) return;
    const ram = new Uint8Array(new SharedArrayBuffer(8 << 20));
    const advised = native.adviseHugePages(ram);
    t.ok(advised > (8 << 20) - 8192 && advised <= 8 << 20, `whole pages of the buffer advised (${advised})`);
    t.throws(() => native.adviseHugePages(new Int32Array(4) as unknown as Uint8Array), RangeError);
    const { GuestMemory } = await import('../../shared/guest/memory.js');
    t.ok(GuestMemory.allocate(4 << 20).hugePagesAdvised > 0, 'GuestMemory.allocate advises');
    process.env.SWITCHOVER_HUGE_PAGES = '0';
    t.teardown(() => delete process.env.SWITCHOVER_HUGE_PAGES);
    t.equal(GuestMemory.allocate(4 << 20).hugePagesAdvised, 0, 'off when asked');
  },
);

t.test('copyInto copies like TypedArray set, at any alignment, and refuses what does not fit', async (t) => {
  const native = addon(t);
  if (!native) return;
  const dst = new Uint8Array(new SharedArrayBuffer(4096));
  const src = Buffer.alloc(1000);
  randomFillSync(src);
  for (const [at, skew] of [
    [0, 0],
    [3, 5],
    [4095 - 999, 1],
  ]) {
    native.copyInto(dst, at, src.subarray(skew));
    t.ok(
      Buffer.from(dst.buffer, at, 1000 - skew).equals(src.subarray(skew)),
      `at ${at}, source offset ${skew}`,
    );
  }
  t.throws(() => native.copyInto(dst, 4000, src), RangeError);
  t.throws(() => native.copyInto(dst, -1, src), RangeError);
});
