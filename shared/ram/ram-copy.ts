/**
 * Copying received bytes into guest RAM (a SharedArrayBuffer). V8 copies into shared memory with
 * relaxed atomics, word by word only when source and destination are aligned alike, else byte by
 * byte: 3 GB/s instead of 17 here, and a page's bytes sit at any offset of the socket chunk they
 * arrived in. With the addon: one memcpy. Without: through an aligned scratch buffer (two fast copies
 * beat one slow one).
 */
import type { Copier } from '../protocol/section-payload.js';
import type { NativeHash } from './native-hash.js';

const SCRATCH = 64 * 1024;

export function ramCopier(native: NativeHash | null): Copier {
  if (native) return (dst, at, src) => native.copyInto(dst, at, src);
  const scratch = Buffer.allocUnsafeSlow(SCRATCH);
  return (dst, at, src) => {
    if ((src.byteOffset - (dst.byteOffset + at)) % 8 === 0) return dst.set(src, at);
    for (let i = 0; i < src.length; i += SCRATCH) {
      const n = Math.min(SCRATCH, src.length - i);
      scratch.set(src.subarray(i, i + n)); // plain memory to plain memory: memmove
      dst.set(scratch.subarray(0, n), at + i); // both 8-aligned: word copies
    }
  };
}
