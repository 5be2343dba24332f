/**
 * Runs the outside probe (scripts/probe.ts) as its own process against both guest services during
 * a pair run, and collects `probe.{service-downtime, interval}` for the report.
 */
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ROOT } from './spawn-side.js';

export class ServiceProbe {
  #done: Promise<string> | null = null;
  readonly #untilFile: string;

  constructor(workDir: string) {
    this.#untilFile = join(workDir, 'probe.stop');
  }

  start(targets: string[]): void {
    const args = [
      '--import',
      'tsx',
      join(ROOT, 'scripts/probe.ts'),
      '--interval',
      '1',
      '--until-file',
      this.#untilFile,
    ];
    for (const t of targets) args.push('--target', t);
    const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
    });
    this.#done = new Promise((resolve) => child.on('exit', () => resolve(out)));
  }

  /** Stops the probe and returns its figures (null if it never ran or saw no reply). */
  async stop(): Promise<Record<string, unknown> | null> {
    if (!this.#done) return null;
    await writeFile(this.#untilFile, '');
    const out = await this.#done;
    try {
      const r = JSON.parse(out.trim().split('\n').pop() ?? '') as Record<string, unknown>;
      if (r['service-downtime'] === null) return null;
      return {
        'service-downtime': r['service-downtime'],
        interval: r.interval,
        replies: r.replies,
        sent: r.sent,
        'longest-gap': r['longest-gap'],
        handover: r.handover,
        'gap-start': r['gap-start'],
        'gap-end': r['gap-end'],
        'gap-start-target': r['gap-start-target'],
        'gap-end-target': r['gap-end-target'],
      };
    } catch {
      return null;
    }
  }
}
