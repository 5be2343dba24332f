/**
 * `npm run bench:ack [-- --runs N] [--quick]` — the seed's experiment: the same migration (default
 * guest: 512 MiB, 32 MB/s dirtying, plus one precopy device of 300 MB whose destination preparation
 * takes 1480 ms) with and without switchover-ack, N runs each (default 3), interleaved. Prints the
 * median (min–max) downtime of each, their ratio, next to QEMU's cover letter (1900 → 420 ms), and
 * writes JSON to bench/results/ack-<timestamp>.json. `--quick` uses 64 MiB RAM, a 64 MB device and
 * 600 ms preparation. Each run is two real processes (`npm start`'s pair) over loopback.
 */

import { spawn } from 'node:child_process';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { scriptArgs } from '../../shared/cli/script-args.js';
import { ROOT } from '../lib/spawn-side.js';
import { fmt, spread, table, writeResult } from './stats.js';

const values = scriptArgs(
  'bench:ack',
  `usage: npm run bench:ack [-- --runs N] [--quick]

The same migration with and without switchover-ack (512 MiB guest, a 300 MB precopy device whose
destination preparation takes 1480 ms), N runs each (default 3), interleaved; median downtimes,
their ratio, next to QEMU's 1900 -> 420 ms. JSON under bench/results/.
  --runs N   runs of each (default 3)
  --quick    64 MiB guest, a 64 MB device, 600 ms preparation`,
  { runs: { type: 'string', default: '3' }, quick: { type: 'boolean', default: false } },
);
const runs = Number(values.runs);
const quick = values.quick;
const device = quick
  ? 'precopy:size=64M,prep=600ms,stop-copy=4M'
  : 'precopy:size=300M,prep=1480ms,stop-copy=4M';
const ram = quick ? '64M' : '512M';

interface RunResult {
  ack: boolean;
  status: string;
  downtime: number;
  expected: number;
  waitMs: number;
  totalMs: number;
  verified: boolean;
}

function runPair(args: string[]): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts/run-pair.ts'), ...args], {
      cwd: ROOT,
      stdio: 'ignore',
    });
    child.on('exit', (code) => resolve(code ?? 1));
  });
}

async function once(ack: boolean, dir: string, i: number): Promise<RunResult> {
  const json = join(dir, `${ack ? 'ack' : 'noack'}-${i}.json`);
  const caps = ack ? 'return-path,switchover-ack' : 'return-path';
  await runPair(['--ram', ram, '--device', device, '--capabilities', caps, '--quiet', '--json', json]);
  const r = JSON.parse(await readFile(json, 'utf8'));
  return {
    ack,
    status: r.status,
    downtime: r.downtime ?? Number.NaN,
    expected: r['expected-downtime'],
    waitMs: r['switchover-ack']?.['wait-ms'] ?? 0,
    totalMs: r['total-time'],
    verified: r.integrity?.match === true && r.guest?.['self-check']?.ok === true,
  };
}

const dir = join(tmpdir(), `bench-ack-${process.pid}`);
await mkdir(dir, { recursive: true });
const results: RunResult[] = [];
for (let i = 0; i < runs; i++) {
  for (const ack of [false, true]) {
    const r = await once(ack, dir, i);
    results.push(r);
    process.stderr.write(
      `run ${i + 1}/${runs} ${ack ? 'with' : 'without'} switchover-ack: ${r.status}, downtime ${r.downtime} ms\n`,
    );
  }
}
await rm(dir, { recursive: true, force: true });
const without = spread(results.filter((r) => !r.ack).map((r) => r.downtime));
const withAck = spread(results.filter((r) => r.ack).map((r) => r.downtime));
const ratio = without.median / withAck.median;
const rows = [
  ['case', 'downtime ms median (min–max)', 'QEMU cover letter'],
  ['without switchover-ack', fmt(without), '1900'],
  ['with switchover-ack', fmt(withAck), '420'],
  ['ratio without / with', ratio.toFixed(1), (1900 / 420).toFixed(1)],
];
process.stdout.write(`bench:ack  ram ${ram}  device ${device}  runs ${runs}\n${table(rows)}\n`);
const allOk = results.every((r) => r.status === 'completed' && r.verified);
process.stdout.write(`all runs completed and verified: ${allOk}\n`);
const out = await writeResult('ack', {
  ram,
  device,
  runs,
  without,
  with: withAck,
  ratio,
  seed: { without: 1900, with: 420 },
  results,
});
process.stdout.write(`wrote ${out}\n`);
