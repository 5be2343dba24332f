/**
 * `npm run chaos -- --list | --scenario NAME [--scenario NAME...] | --all [--json FILE] [--quick]`
 *
 * The chaos suite (README "Chaos suite"): real source and destination processes in two network namespaces
 * joined by a veth pair, under network impairments (rate, loss, delay, partitions; each by the most
 * real mechanism the kernel has, named in the output) and process faults (SIGKILL / SIGSTOP of
 * either side at a chosen phase, a bit-flipping relay). Each scenario must end in an allowed
 * outcome: migrated-verified, failed-source-intact or, for a killed source,
 * source-lost-destination-clean; anything else is a DEFECT. Needs root, iproute2, tc and nftables
 * (scripts/setup-system.sh installs them); stale namespaces of crashed runs are swept at startup.
 *
 *   --list             the scenarios, their phase and expected outcomes
 *   --scenario NAME    run one scenario (repeatable)
 *   --all              run the whole matrix
 *   --ci               run the CI subset
 *   --json FILE        write one record per scenario
 *   --quick            shorter long partitions (30 s → 8 s)
 *   --verbose          echo the source's progress and stderr lines
 *   --keep-logs DIR    keep every side's full stderr (trace lines included) per scenario
 *   --help             this text
 *
 * Exit 0 when every scenario ended in an allowed outcome, 1 otherwise, 2 on bad usage or when the
 * machine cannot run the suite.
 */
import { writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { CustomError, customScenario, FAULTS } from './custom.js';
import { netnsAvailable, sweepStale } from './netns.js';
import { type ChaosRecord, runScenario } from './run-scenario.js';
import { CI_SUBSET, findScenario, SCENARIOS, type Scenario } from './scenarios.js';

const USAGE = `usage: npm run chaos -- --list | --scenario NAME [--scenario NAME...] | --all | --ci | --custom ... [--json FILE] [--quick]

  --list             list the scenarios
  --scenario NAME    run one scenario (repeatable)
  --all              run the whole matrix
  --ci               run the CI subset
  --custom           run one scenario composed from the options below
  --json FILE        write the records as JSON
  --quick            shorten the long partition (30 s → 8 s)
  --verbose          echo the source's progress and stderr lines
  --keep-logs DIR    keep every side's full stderr (trace lines included) per scenario
  --help             this text

Custom scenario (--custom):
  --link SPEC        link impairments for the whole migration, together:
                     rate=N{k,m,g}bit, delay=MSms (each direction), loss=P% (each direction)
  --fault F          ${FAULTS.join(' | ')} (default none)
  --strike PHASE     setup | iteration | ack-wait | switchover: when the fault strikes (default iteration)
  --ram SIZE  --dirty-rate RATE  --max-bandwidth RATE  --capabilities LIST  --downtime-limit MS
  --device SPEC (repeatable)  --timeout MS      the guest and migration, as on npm start
                     (defaults: 64M, 2M, 0 = the link shapes, return-path,multifd, 300, none, 90000)

  e.g. npm run chaos -- --custom --link rate=100mbit,delay=50ms,loss=2% \\
         --capabilities return-path,multifd,switchover-ack --device precopy:size=16M,prep=2s`;

function usageError(msg: string): never {
  process.stderr.write(`chaos: MIG_ERR_USAGE: ${msg} (see 'npm run chaos -- --help')\n`);
  process.exit(2);
}

function pad(s: string, n: number): string {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s.padEnd(n);
}

/** Short mechanism label for the table; the full text is in the JSON record. */
function mechLabel(m: string): string {
  if (m.startsWith('tc netem')) return 'netem';
  if (m.startsWith('kill(')) return m.split(' from')[0]!;
  const labels: [string, string][] = [
    ['NFQUEUE', 'NFQUEUE helper'],
    ['userspace TCP relay', 'node delay relay'],
    ['tbf', 'tbf'],
    ['numgen', 'nft numgen drop'],
    ['reject', 'nft reject tcp-reset'],
    ["'drop'", 'nft drop'],
    ['node:net relay', 'node:net relay'],
  ];
  return labels.find(([k]) => m.includes(k))?.[1] ?? m;
}

export function formatTable(records: ChaosRecord[]): string {
  const cols: [string, number][] = [
    ['scenario', 25],
    ['impairment', 26],
    ['mechanism', 22],
    ['phase→hit', 22],
    ['outcome', 30],
    ['detect-ms', 9],
    ['total', 8],
    ['retry', 18],
    ['verdict', 7],
  ];
  const head = cols.map(([h, w]) => pad(h, w)).join(' ');
  const rows = records.map((r) =>
    [
      r.scenario,
      r.impairment.what,
      mechLabel(r.impairment.mechanism),
      `${r.phase}→${r['phase-hit']}`,
      r.outcome === 'DEFECT' ? '*** DEFECT ***' : r.outcome,
      r['detect-ms'] === null ? '-' : String(r['detect-ms']),
      `${(r['total-ms'] / 1000).toFixed(1)}s`,
      r['retry-outcome'],
      r.verdict === 'pass' ? 'ok' : 'FAIL',
    ]
      .map((v, i) => pad(v, cols[i]![1]))
      .join(' '),
  );
  const notes = records
    .filter((r) => r.problems.length)
    .map((r) => `  ${r.scenario}: ${r.problems.join('; ')}`);
  return [head, '-'.repeat(head.length), ...rows, ...(notes.length ? ['', 'problems:', ...notes] : [])].join(
    '\n',
  );
}

function errorRecord(sc: Scenario, err: unknown): ChaosRecord {
  return {
    scenario: sc.name,
    phase: sc.phase,
    'phase-hit': 'not reached',
    impairment: { what: sc.impairment.kind, mechanism: 'harness error', 'applied-at': null, evidence: '' },
    outcome: 'DEFECT',
    'detect-ms': null,
    'retry-outcome': 'n/a',
    'total-ms': 0,
    verdict: 'fail',
    problems: [`harness error: ${(err as Error).message}`],
    'exit-codes': {},
    'destination-error': null,
    report: null,
  };
}

export async function runAll(
  scenarios: Scenario[],
  opts: { quick?: boolean; verbose?: boolean; keepLogs?: string; log?: (l: string) => void } = {},
): Promise<ChaosRecord[]> {
  const log = opts.log ?? (() => {});
  const records: ChaosRecord[] = [];
  for (const sc of scenarios) {
    log(`▶ ${sc.name} (${sc.phase}, ${sc.impairment.kind})`);
    let rec: ChaosRecord;
    try {
      rec = await runScenario(sc, opts);
    } catch (err) {
      rec = errorRecord(sc, err);
    }
    records.push(rec);
    const loud = rec.outcome === 'DEFECT' ? '  <<<<<<<<<< DEFECT' : '';
    log(
      `  ${rec.verdict === 'pass' ? 'ok  ' : 'FAIL'} ${sc.name}: ${rec.outcome}, detect ${rec['detect-ms'] ?? '-'} ms, ${rec['total-ms']} ms, retry ${rec['retry-outcome']}${loud}`,
    );
    for (const p of rec.problems) log(`       ${p}`);
  }
  return records;
}

async function main(): Promise<number> {
  let v: {
    list?: boolean;
    all?: boolean;
    ci?: boolean;
    quick?: boolean;
    verbose?: boolean;
    'keep-logs'?: string;
    help?: boolean;
    json?: string;
    custom?: boolean;
    link?: string;
    fault?: string;
    strike?: string;
    ram?: string;
    'dirty-rate'?: string;
    'max-bandwidth'?: string;
    capabilities?: string;
    'downtime-limit'?: string;
    device?: string[];
    timeout?: string;
  };
  let names: string[] = [];
  try {
    const parsed = parseArgs({
      args: process.argv.slice(2),
      options: {
        list: { type: 'boolean' },
        scenario: { type: 'string', multiple: true },
        all: { type: 'boolean' },
        ci: { type: 'boolean' },
        json: { type: 'string' },
        quick: { type: 'boolean' },
        verbose: { type: 'boolean' },
        'keep-logs': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        custom: { type: 'boolean' },
        link: { type: 'string' },
        fault: { type: 'string' },
        strike: { type: 'string' },
        ram: { type: 'string' },
        'dirty-rate': { type: 'string' },
        'max-bandwidth': { type: 'string' },
        capabilities: { type: 'string' },
        'downtime-limit': { type: 'string' },
        device: { type: 'string', multiple: true },
        timeout: { type: 'string' },
      },
    });
    v = parsed.values;
    names = parsed.values.scenario ?? [];
  } catch (err) {
    usageError((err as Error).message.split('\n')[0]!);
  }
  if (v.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const modes = [v.list, v.all, v.ci, v.custom, names.length > 0].filter(Boolean).length;
  if (modes !== 1) usageError('choose exactly one of --list, --scenario NAME, --all, --ci, --custom');
  const customOnly = [
    'link',
    'fault',
    'strike',
    'ram',
    'dirty-rate',
    'max-bandwidth',
    'capabilities',
    'downtime-limit',
    'device',
    'timeout',
  ] as const;
  const stray = customOnly.find((k) => v[k] !== undefined);
  if (!v.custom && stray) usageError(`--${stray} composes a --custom scenario`);
  let custom: Scenario | null = null;
  if (v.custom) {
    try {
      custom = customScenario({
        link: v.link,
        fault: v.fault,
        strike: v.strike,
        ram: v.ram,
        dirtyRate: v['dirty-rate'],
        maxBandwidth: v['max-bandwidth'],
        capabilities: v.capabilities,
        downtimeLimit: v['downtime-limit'],
        devices: v.device,
        timeoutMs: v.timeout,
      });
    } catch (err) {
      if (err instanceof CustomError) usageError(err.message);
      throw err;
    }
  }
  if (v.list) {
    for (const s of SCENARIOS)
      process.stdout.write(
        `${pad(s.name, 26)} ${pad(s.phase, 11)} ${pad(s.impairment.kind, 10)} ${s.expect.outcomes.join(' | ')}${s.ci ? '  [ci]' : ''}\n`,
      );
    return 0;
  }
  const unknown = names.filter((n) => !findScenario(n));
  if (unknown.length) usageError(`unknown scenario ${unknown.join(', ')} (see --list)`);
  const chosen = custom
    ? [custom]
    : v.all
      ? SCENARIOS
      : v.ci
        ? CI_SUBSET
        : names.map((n) => findScenario(n)!);
  const avail = await netnsAvailable();
  if (!avail.ok) {
    process.stderr.write(`chaos: cannot run: ${avail.reason}\n`);
    return 2;
  }
  const swept = await sweepStale();
  if (swept.length) process.stderr.write(`chaos: swept stale ${swept.join(', ')}\n`);
  const log = (l: string) => process.stderr.write(`${l}\n`);
  const started = Date.now();
  const records = await runAll(chosen, { quick: v.quick, verbose: v.verbose, keepLogs: v['keep-logs'], log });
  if (v.json) await writeFile(v.json, `${JSON.stringify(records, null, 2)}\n`);
  process.stdout.write(`\n${formatTable(records)}\n\n`);
  const failed = records.filter((r) => r.verdict !== 'pass');
  const defects = records.filter((r) => r.outcome === 'DEFECT');
  process.stdout.write(
    `${records.length} scenarios in ${((Date.now() - started) / 1000).toFixed(1)} s: ${records.length - failed.length} ok, ${failed.length} failed, ${defects.length} DEFECT\n`,
  );
  return failed.length ? 1 : 0;
}

if (process.argv[1]?.endsWith('main.ts')) {
  main().then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`chaos: ${(err as Error).stack ?? err}\n`);
      process.exit(1);
    },
  );
}
