/** Compares two large files chunk by chunk without holding either whole (RAM dumps of benches). */
import { createReadStream } from 'node:fs';

export async function sameFiles(a: string, b: string): Promise<boolean> {
  try {
    const ra = createReadStream(a, { highWaterMark: 1 << 22 })[Symbol.asyncIterator]();
    const rb = createReadStream(b, { highWaterMark: 1 << 22 })[Symbol.asyncIterator]();
    let bufA = Buffer.alloc(0);
    let bufB = Buffer.alloc(0);
    for (;;) {
      if (bufA.length === 0) bufA = (await ra.next()).value ?? Buffer.alloc(0);
      if (bufB.length === 0) bufB = (await rb.next()).value ?? Buffer.alloc(0);
      if (bufA.length === 0 || bufB.length === 0) return bufA.length === bufB.length;
      const n = Math.min(bufA.length, bufB.length);
      if (!bufA.subarray(0, n).equals(bufB.subarray(0, n))) return false;
      bufA = bufA.subarray(n);
      bufB = bufB.subarray(n);
    }
  } catch {
    return false;
  }
}
