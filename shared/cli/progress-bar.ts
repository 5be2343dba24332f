/**
 * One-line live progress bar for a terminal (stderr by default), redrawn in place with plain ANSI
 * (`\r` + erase-to-end-of-line `\x1b[K`). Terminal-less consumers get parseable lines from
 * ./progress.ts instead; choose with `stream.isTTY`.
 *
 * The bar shows (total − remaining) / total and MAY MOVE BACKWARDS: after a dirty sync, remaining
 * grows when the guest dirtied more than the last round sent. A backwards step is marked with `↓`
 * (`v` in ASCII mode) until the bar advances again. Units: `mbps` is megabits/s and
 * `dirtyPagesRate` pages/s (QEMU's names and meanings); sizes are bytes, shown in IEC units.
 */

export interface ProgressBarState {
  status: string;
  /** Bytes still to send (QEMU ram.remaining). */
  remaining: number;
  /** Guest RAM bytes (QEMU ram.total). */
  total: number;
  /** Bytes sent so far (QEMU ram.transferred). */
  transferred: number;
  /** Megabits/s (QEMU mbps). */
  mbps: number;
  /** Pages/s (QEMU dirty-pages-rate). */
  dirtyPagesRate: number;
  /** Dirty-sync count / iteration number. */
  iteration: number;
  /** ms (QEMU expected-downtime). */
  expectedDowntime: number;
}

/** What the bar writes to: process.stderr, or anything with write() (tests). */
export interface ProgressBarStream {
  write(chunk: string): unknown;
  /** Terminal width; 100 when absent. */
  columns?: number;
}

export interface ProgressBarOptions {
  stream?: ProgressBarStream;
  /** Cells in the bar itself (default 24). */
  barWidth?: number;
  /** Use `#`/`-` instead of block characters. */
  ascii?: boolean;
  /** Skip redraws closer than this many ms apart unless the status changes (default 0 = never skip). */
  minIntervalMs?: number;
}

const ERASE_EOL = '\x1b[K';

function fin(x: number): boolean {
  return typeof x === 'number' && Number.isFinite(x);
}

export function formatBytes(n: number): string {
  if (!fin(n)) return '-';
  const sign = n < 0 ? '-' : '';
  let v = Math.abs(n);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${sign}${u === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[u]}`;
}

function num(x: number, digits = 0): string {
  return fin(x) ? x.toFixed(digits) : '-';
}

/** Fraction done in [0, 1], or null when it cannot be computed (total 0 or not a number). */
export function progressFraction(remaining: number, total: number): number | null {
  if (!fin(remaining) || !fin(total) || total <= 0) return null;
  return Math.min(1, Math.max(0, (total - remaining) / total));
}

export class ProgressBar {
  private readonly stream: ProgressBarStream;
  private readonly barWidth: number;
  private readonly full: string;
  private readonly empty: string;
  private readonly back: string;
  private readonly minIntervalMs: number;
  private last: ProgressBarState | undefined;
  private lastFraction: number | null = null;
  private backwards = false;
  private drawn = false;
  private lastDrawAt = Number.NEGATIVE_INFINITY;
  private finished = false;

  constructor(opts: ProgressBarOptions = {}) {
    this.stream = opts.stream ?? process.stderr;
    this.barWidth = Math.max(4, Math.floor(opts.barWidth ?? 24));
    this.full = opts.ascii ? '#' : '█';
    this.empty = opts.ascii ? '-' : '░';
    this.back = opts.ascii ? 'v' : '↓';
    this.minIntervalMs = Math.max(0, opts.minIntervalMs ?? 0);
  }

  /** The line (without control characters) the bar would draw for `p`; updates no state. */
  format(p: ProgressBarState, backwards = false): string {
    const f = progressFraction(p.remaining, p.total);
    const cells = f === null ? 0 : Math.round(f * this.barWidth);
    const bar = this.full.repeat(cells) + this.empty.repeat(this.barWidth - cells);
    const pct = f === null ? '  --%' : `${(f * 100).toFixed(1).padStart(5)}%`;
    const parts = [
      `${String(p.status ?? '')} [${bar}] ${pct}${backwards ? ` ${this.back}` : '  '}`,
      `remaining ${formatBytes(p.remaining)}/${formatBytes(p.total)}`,
      `sent ${formatBytes(p.transferred)}`,
      `${num(p.mbps, 1)} Mbps`,
      `dirty ${num(p.dirtyPagesRate)} pages/s`,
      `iter ${num(p.iteration)}`,
      `exp-downtime ${num(p.expectedDowntime)} ms`,
    ];
    return parts.join('  ');
  }

  /** Redraws the line. Never throws on odd numbers (total 0, NaN): those show as `--%` / `-`. */
  update(p: ProgressBarState): void {
    if (this.finished) return;
    const f = progressFraction(p.remaining, p.total);
    if (f !== null && this.lastFraction !== null) {
      if (f < this.lastFraction) this.backwards = true;
      else if (f > this.lastFraction) this.backwards = false;
    }
    if (f !== null) this.lastFraction = f;
    const statusChanged = this.last?.status !== p.status;
    this.last = { ...p };
    const now = performance.now();
    if (!statusChanged && now - this.lastDrawAt < this.minIntervalMs) return;
    this.lastDrawAt = now;
    this.draw();
  }

  /** Erases the line (e.g. before printing a log line); the next update() redraws it. */
  clear(): void {
    if (!this.drawn || this.finished) return;
    this.stream.write(`\r${ERASE_EOL}`);
    this.drawn = false;
  }

  /** Draws the latest state once more and ends the line. Idempotent. */
  /** The last redraw, with the migration's final status (completed: nothing remains, 100 %). */
  done(finalStatus?: string): void {
    if (this.finished) return;
    if (this.last && finalStatus)
      this.last = {
        ...this.last,
        status: finalStatus,
        remaining: finalStatus === 'completed' ? 0 : this.last.remaining,
      };
    if (this.last) this.draw();
    if (this.drawn) this.stream.write('\n');
    this.finished = true;
  }

  private draw(): void {
    if (!this.last) return;
    const cols =
      fin(this.stream.columns ?? Number.NaN) && this.stream.columns! > 0 ? this.stream.columns! : 100;
    let line = this.format(this.last, this.backwards);
    // Never wrap: a wrapped line cannot be redrawn with \r.
    if (line.length > cols - 1) line = line.slice(0, Math.max(0, cols - 1));
    this.stream.write(`\r${line}${ERASE_EOL}`);
    this.drawn = true;
  }
}
