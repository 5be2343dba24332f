/**
 * Pure gap arithmetic for the outside probe (scripts/probe.ts): the longest silence between
 * consecutive reply arrivals is the service downtime (README "Measuring downtime").
 */
import { ErrorCode, ParameterError } from '../../shared/errors.js';

export interface Gap {
  /** Longest distance between two consecutive times (0 with fewer than two times). */
  gap: number;
  /** Time before the gap (the last reply before the silence); null when `times` is empty. */
  start: number | null;
  /** Time after the gap (the first reply after the silence); null when `times` is empty. */
  end: number | null;
}

function checked(times: readonly number[], what: string): number[] {
  let sorted = true;
  for (let i = 0; i < times.length; i++) {
    const v = times[i]!;
    if (!Number.isFinite(v)) {
      throw new ParameterError(ErrorCode.PARAMETER, `${what}: time #${i} is not a finite number (${v})`, {
        field: what,
      });
    }
    if (i > 0 && v < times[i - 1]!) sorted = false;
  }
  return sorted ? (times as number[]) : [...times].sort((a, b) => a - b);
}

/**
 * Longest gap between consecutive times (any order; sorted internally, input not modified).
 * Empty: `{gap: 0, start: null, end: null}`. One time t: `{gap: 0, start: t, end: t}`.
 * On ties the earliest gap wins.
 */
export function longestGap(times: readonly number[]): Gap {
  const ts = checked(times, 'longestGap');
  if (ts.length === 0) return { gap: 0, start: null, end: null };
  let best = 0;
  let at = 0;
  for (let i = 1; i < ts.length; i++) {
    const g = ts[i]! - ts[i - 1]!;
    if (g > best) {
      best = g;
      at = i;
    }
  }
  if (best === 0) return { gap: 0, start: ts[0]!, end: ts[0]! };
  return { gap: best, start: ts[at - 1]!, end: ts[at]! };
}

/**
 * The achieved send period: mean distance between consecutive times, leaving out distances over
 * 3 × `interval` (spells when the probe sent at another period, or was stalled); `interval` itself
 * when there is nothing to measure.
 */
export function basePeriod(times: readonly number[], interval: number): number {
  const ts = checked(times, 'basePeriod');
  let sum = 0;
  let n = 0;
  for (let i = 1; i < ts.length; i++) {
    const d = ts[i]! - ts[i - 1]!;
    if (d > 3 * interval) continue;
    sum += d;
    n++;
  }
  return n ? sum / n : interval;
}

/** Every gap longer than `threshold`, in time order (for spotting several stalls in one run). */
export function gapsOver(times: readonly number[], threshold: number): Gap[] {
  const ts = checked(times, 'gapsOver');
  const out: Gap[] = [];
  for (let i = 1; i < ts.length; i++) {
    const g = ts[i]! - ts[i - 1]!;
    if (g > threshold) out.push({ gap: g, start: ts[i - 1]!, end: ts[i]! });
  }
  return out;
}
