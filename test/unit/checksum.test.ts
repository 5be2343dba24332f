import { xxh64 } from '@node-rs/xxhash';
import t from 'tap';
import { imageDigest, isZeroPage, pageChecksum, ZERO_CHECKSUM } from '../../shared/ram/checksum.js';

t.test('pageChecksum is xxh64 seeded with the page index', async (t) => {
  const page = Buffer.alloc(4096, 7);
  t.equal(pageChecksum(page, 12), xxh64(page, 12n));
  t.not(pageChecksum(page, 12), pageChecksum(page, 13), 'the same bytes at another index hash differently');
});

t.test('isZeroPage finds a single nonzero byte at any position', async (t) => {
  const page = new Uint8Array(4096);
  t.ok(isZeroPage(page));
  let missed = 0;
  for (let i = 0; i < page.length; i++) {
    page[i] = 1;
    if (isZeroPage(page)) missed++;
    page[i] = 0;
  }
  t.equal(missed, 0);
});

t.test('isZeroPage works on views, odd sizes and pages larger than 4 KiB', async (t) => {
  const big = new Uint8Array(3 * 65536 + 5);
  t.ok(isZeroPage(big.subarray(3)));
  big[big.length - 1] = 9;
  t.notOk(isZeroPage(big.subarray(3)));
  t.ok(isZeroPage(new Uint8Array(0)));
  t.ok(isZeroPage(new Uint8Array(new SharedArrayBuffer(4096))));
});

t.test('imageDigest hashes the table as little-endian u64s and prints 16 hex digits', async (t) => {
  const table = new BigUint64Array([1n, 0xdeadbeefn, ZERO_CHECKSUM, 2n ** 64n - 1n]);
  const bytes = Buffer.alloc(32);
  for (const [i, v] of table.entries()) bytes.writeBigUInt64LE(v, i * 8);
  const digest = imageDigest(table);
  t.equal(digest, xxh64(bytes).toString(16).padStart(16, '0'));
  t.match(digest, /^[0-9a-f]{16}$/);
  t.equal(imageDigest(table.subarray(1)), imageDigest(new BigUint64Array(table.subarray(1))));
});
