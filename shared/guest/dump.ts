/**
 * --dump-ram: writes guest RAM to a file, the test oracle both sides produce. In pieces: Node's
 * writeFile refuses a single buffer over 2 GiB, and guests can be larger.
 */
import { open } from 'node:fs/promises';

const PIECE = 256 * 1024 * 1024;

export async function writeRamDump(path: string, bytes: Uint8Array): Promise<void> {
  const file = await open(path, 'w');
  try {
    for (let at = 0; at < bytes.length; at += PIECE) {
      const piece = bytes.subarray(at, Math.min(bytes.length, at + PIECE));
      let done = 0;
      while (done < piece.length) done += (await file.write(piece, done, piece.length - done)).bytesWritten;
    }
  } finally {
    await file.close();
  }
}
