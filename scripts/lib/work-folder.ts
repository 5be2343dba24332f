/**
 * The pair's work folder: the sides' reports, the probe's stop file and, with `--tls`, the run's
 * private keys. Made with mkdtemp, so the name cannot be guessed and a folder someone else made
 * beforehand is never adopted (its keys.psk could be swapped); 0700, so only this user reads the keys.
 */
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const WORK_FOLDER_PREFIX = 'switchover-pair-';

/** Synchronous, so a caller can make it with its signal handlers already in place and nothing between. */
export function makeWorkFolder(): string {
  const path = mkdtempSync(join(tmpdir(), WORK_FOLDER_PREFIX));
  // mkdtemp already makes it 0700 on Linux; said again so the guarantee does not rest on the platform
  chmodSync(path, 0o700);
  return path;
}

/** Synchronous, so it also runs from an 'exit' handler; a folder already gone is fine. */
export function removeWorkFolder(path: string): void {
  rmSync(path, { recursive: true, force: true });
}
