/**
 * --dump-ram: writes guest RAM to a file, the test oracle both sides produce. In pieces: Node's
 * writeFile refuses a single buffer over 2 GiB, and guests can be larger.
 *
 * The file holds guest memory, so it is private (0600) and created, never reused: O_EXCL refuses a
 * path that exists and O_NOFOLLOW a symlink, so nobody can plant a link or a file others can read at
 * the path beforehand.
 */
import { constants as fsConstants } from 'node:fs';
import { type FileHandle, open, unlink } from 'node:fs/promises';
import { ErrorCode, MigrationError } from '../errors.js';

const PIECE = 256 * 1024 * 1024;
const CREATE_PRIVATE_NEW =
  fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW;

export async function writeRamDump(path: string, bytes: Uint8Array): Promise<void> {
  const file = await createNew(path);
  try {
    for (let at = 0; at < bytes.length; at += PIECE) {
      const piece = bytes.subarray(at, Math.min(bytes.length, at + PIECE));
      let done = 0;
      while (done < piece.length) done += (await file.write(piece, done, piece.length - done)).bytesWritten;
    }
  } catch (err) {
    // a partial dump would pass for a dump; it is ours (created above), so remove it
    await file.close().catch(() => {});
    await unlink(path).catch(() => {});
    throw err;
  }
  await file.close();
}

async function createNew(path: string): Promise<FileHandle> {
  try {
    return await open(path, CREATE_PRIVATE_NEW, 0o600);
  } catch (err) {
    // EEXIST: a file is there; ELOOP: O_NOFOLLOW met a symlink at the path
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' || code === 'ELOOP') {
      throw new MigrationError(
        ErrorCode.USAGE,
        `--dump-ram: ${path} exists (dumps are never overwritten: remove it first)`,
        { field: '--dump-ram' },
        { cause: err },
      );
    }
    throw err;
  }
}
