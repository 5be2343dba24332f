/** Size and rate parsing for the command line: K/M/G suffixes are binary (1K = 1024), as QEMU's. */
import { ErrorCode, ParameterError } from './errors.js';

const SUFFIX: Readonly<Record<string, number>> = {
  '': 1,
  B: 1,
  K: 1024,
  M: 1024 ** 2,
  G: 1024 ** 3,
  T: 1024 ** 4,
};

/** `512M` → 536870912. Fractions allowed (`1.5G`); the result is rounded down to a whole byte. */
export function parseSize(text: string, what: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGTB]?)(?:i?B)?\s*$/i.exec(text);
  if (!m)
    throw new ParameterError(
      ErrorCode.USAGE,
      `${what}: '${text}' is not a size (examples: 4096, 64K, 512M, 1G)`,
      { field: what },
    );
  return Math.floor(Number(m[1]) * SUFFIX[m[2]!.toUpperCase()]!);
}

/** A rate in bytes per second; `/s` may follow the size. `max` returns Infinity when allowed. */
export function parseRate(text: string, what: string, allowMax = false): number {
  if (allowMax && text.trim().toLowerCase() === 'max') return Number.POSITIVE_INFINITY;
  try {
    return parseSize(text.replace(/\/s\s*$/i, ''), what);
  } catch {
    throw new ParameterError(
      ErrorCode.USAGE,
      `${what}: '${text}' is not a rate in bytes/s (examples: 64M, 1G, 512K/s${allowMax ? ', max' : ''})`,
      { field: what },
    );
  }
}

/** `1480ms`, `1.5s` or a bare number of milliseconds. */
export function parseDuration(text: string, what: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*$/i.exec(text);
  if (!m)
    throw new ParameterError(
      ErrorCode.USAGE,
      `${what}: '${text}' is not a duration (examples: 300, 300ms, 1.5s)`,
      { field: what },
    );
  return Number(m[1]) * (m[2]?.toLowerCase() === 's' ? 1000 : 1);
}

/** `1536` → "1.5 KiB": one decimal below 100, none from 100 up; bytes below 1 KiB stay bytes. */
/** `bytes` in MiB with at most one decimal ("16 MiB", "11.6 MiB"): the convergence decisions' reasons. */
export function formatMiB(bytes: number): string {
  return `${Math.round((bytes / 1048576) * 10) / 10} MiB`;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(Math.abs(v) >= 100 ? 0 : 1)} ${units[i]}`;
}
