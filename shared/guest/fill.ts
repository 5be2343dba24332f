/**
 * Deterministic initial content of the data pages: an AES-128-CTR keystream keyed by the seed, with the
 * counter at page*256, so any single page can be regenerated on its own (the self-check does that) and
 * filling 1 GiB runs at OpenSSL speed rather than a JS PRNG's.
 */
import { createCipheriv, createHash } from 'node:crypto';
import type { Layout } from './layout.js';

export type FillKind = 'random' | 'zero';

function keyFor(seed: number): Buffer {
  return createHash('sha256').update(`switchover-guest:${seed}`).digest().subarray(0, 16);
}

function ivForPage(page: number, pageSize: number): Buffer {
  const iv = Buffer.alloc(16);
  iv.writeBigUInt64BE(BigInt(page) * BigInt(pageSize / 16), 8);
  return iv;
}

/** Fills data pages [dataStart, pageCount) of ram with the keystream; other pages stay zero. */
export function fillRandom(ram: Uint8Array, layout: Layout, seed: number): void {
  const { pageSize, dataStart, pageCount } = layout;
  const cipher = createCipheriv('aes-128-ctr', keyFor(seed), ivForPage(dataStart, pageSize));
  const chunkPages = 256;
  const zeros = Buffer.alloc(chunkPages * pageSize);
  for (let p = dataStart; p < pageCount; p += chunkPages) {
    const n = Math.min(chunkPages, pageCount - p);
    const out = cipher.update(n === chunkPages ? zeros : zeros.subarray(0, n * pageSize));
    ram.set(out, p * pageSize);
  }
}

/** The initial content of one data page, written into `out` (pageSize bytes). */
export class PageFiller {
  readonly #key: Buffer;
  readonly #zeros: Buffer;
  constructor(
    seed: number,
    private readonly pageSize: number,
    private readonly kind: FillKind,
  ) {
    this.#key = keyFor(seed);
    this.#zeros = Buffer.alloc(pageSize);
  }

  initial(page: number, out: Buffer): void {
    if (this.kind === 'zero') {
      out.fill(0);
      return;
    }
    const c = createCipheriv('aes-128-ctr', this.#key, ivForPage(page, this.pageSize));
    c.update(this.#zeros).copy(out);
  }
}
