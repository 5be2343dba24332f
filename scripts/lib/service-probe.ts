/**
 * Runs the outside probe (scripts/probe.ts) as its own process against both guest services during
 * a pair run, and collects `probe.{service-downtime, interval}` for the report.
 */
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { ROOT } from './spawn-side.js';

/** How long a pair waits for the probe process to start sending before it migrates without waiting. */
const PROBE_READY_MS = 15_000;

/**
 * A free UDP port on 127.0.0.1 for the source's guest service, so the probe can be told both
 * targets before the source exists (the port is free when checked; the source binds it moments later).
 */
export async function freeUdpPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.bind(0, '127.0.0.1', resolve);
  });
  const { port } = s.address();
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

export class ServiceProbe {
  #done: Promise<string> | null = null;
  readonly #untilFile: string;

  constructor(workDir: string) {
    this.#untilFile = join(workDir, 'probe.stop');
  }

  /** Starts the probe process; resolves once it is sending (false if it never got there in time). */
  start(targets: string[], intervalMs = 5, fastMs = Math.min(1, intervalMs)): Promise<boolean> {
    const args = [
      '--import',
      'tsx',
      join(ROOT, 'scripts/probe.ts'),
      '--interval',
      String(intervalMs),
      '--fast-interval',
      String(fastMs),
      '--until-file',
      this.#untilFile,
    ];
    for (const t of targets) args.push('--target', t);
    const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
    });
    this.#done = new Promise((resolve) => child.on('exit', () => resolve(out)));
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), PROBE_READY_MS);
      const done = (ok: boolean) => {
        clearTimeout(timer);
        resolve(ok);
      };
      createInterface({ input: child.stderr }).on('line', (l) => {
        if (l.startsWith('probe: sending')) done(true);
      });
      child.on('exit', () => done(false));
    });
  }

  /** Stops the probe and returns its figures (null if it never ran or saw no reply). */
  async stop(): Promise<Record<string, unknown> | null> {
    if (!this.#done) return null;
    await writeFile(this.#untilFile, '');
    const out = await this.#done;
    try {
      const r = JSON.parse(out.trim().split('\n').pop() ?? '') as Record<string, unknown>;
      if (r['service-downtime'] === null) return null;
      const first =
        typeof r.start === 'number' && typeof r['leading-silence'] === 'number'
          ? (r.start as number) + (r['leading-silence'] as number)
          : null;
      return {
        'service-downtime': r['service-downtime'],
        interval: r.interval,
        'resolution-ms': r['resolution-ms'],
        replies: r.replies,
        sent: r.sent,
        'longest-gap': r['longest-gap'],
        handover: r.handover,
        'gap-start': r['gap-start'],
        'gap-end': r['gap-end'],
        'gap-start-target': r['gap-start-target'],
        'gap-end-target': r['gap-end-target'],
        'first-reply': first,
      };
    } catch {
      return null;
    }
  }
}

/**
 * A completed migration's service downtime is the handover gap: the last reply from the source guest
 * to the first from the destination guest. If the probe saw no handover (it started after the
 * switchover, e.g. a short migration finished while the probe process was still loading), its
 * longest gap is some other silence: report null and say why rather than a number that looks right.
 */
export function probeCoverage(
  probe: Record<string, unknown>,
  status: unknown,
  downtimeStart: unknown,
): Record<string, unknown> {
  if (probe.handover === true) return probe;
  // no handover seen: the longest silence is not a downtime of the migration (the source guest ran
  // on after a failure, or the probe missed the switch); it stays as longest-gap
  const { 'service-downtime': _dropped, ...rest } = probe;
  const late =
    typeof probe['first-reply'] === 'number' &&
    typeof downtimeStart === 'number' &&
    probe['first-reply'] > downtimeStart;
  return {
    ...rest,
    'not-covered':
      status !== 'completed'
        ? `the migration ended ${String(status)}: there was no handover to measure`
        : late
          ? 'the probe got its first reply after the downtime had begun'
          : 'the probe saw no handover from the source guest to the destination guest',
  };
}
