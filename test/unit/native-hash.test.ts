/**
 * The batch page hasher must give pageChecksum()'s bits exactly (the two sides may use either), and
 * it must be available where a C compiler and the Node headers are (CI installs gcc): a silent
 * fallback would hide a broken build behind slower page channels.
 */
import { execFileSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import t from 'tap';
import { pageChecksum } from '../../shared/ram/checksum.js';
import { loadNativeHash, prepareNativeHash } from '../../shared/ram/native-hash.js';

const haveCompiler = (process.env.CC ? [process.env.CC] : ['cc', 'gcc']).some((c) => {
  try {
    execFileSync(c, ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
});

t.test('builds where a compiler is, and matches pageChecksum bit for bit', async (t) => {
  const path = prepareNativeHash();
  if (!haveCompiler) {
    t.equal(path, null, 'no compiler: no addon, callers hash page by page');
    return;
  }
  t.type(path, 'string', 'the addon was built and loads');
  const native = loadNativeHash(path)!;
  for (const pageSize of [4096, 512, 8192]) {
    const pages = 64;
    const ram = new Uint8Array(new SharedArrayBuffer(pages * pageSize));
    randomFillSync(ram);
    for (const p of [3, 17, 40]) ram.fill(0, p * pageSize, (p + 1) * pageSize);
    ram[17 * pageSize + pageSize - 1] = 1; // zero but for the last byte: not a zero page
    const list = Int32Array.from({ length: pages }, (_, i) => (i * 7) % pages);
    const out = new BigUint64Array(pages);
    const zero = new Uint8Array(pages);
    native.hashPages(ram, pageSize, list, 0, pages, out, zero);
    let same = 0;
    let zeros = 0;
    for (let k = 0; k < pages; k++) {
      const p = list[k]!;
      const view = ram.subarray(p * pageSize, (p + 1) * pageSize);
      const isZero = view.every((b) => b === 0);
      if (zero[k] === (isZero ? 1 : 0) && out[k] === (isZero ? 0n : pageChecksum(view, p))) same++;
      if (zero[k] === 1) zeros++;
    }
    t.equal(same, pages, `every page agrees (page size ${pageSize})`);
    t.equal(zeros, 2, 'two zero pages found, the nearly-zero one is not');
    t.throws(
      () => native.hashPages(ram, pageSize, Int32Array.from([pages]), 0, 1, out, zero),
      RangeError,
      'a page outside RAM is refused',
    );
  }
});
