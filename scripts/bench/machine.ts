/**
 * Facts about the machine that move benchmark figures and that no figure shows, printed with every
 * bench table and stored in its JSON.
 *
 * DAMON: a kernel thread (kdamond) that samples memory access and may page out cold memory. On the
 * machine these benchmarks were written on, one ran in `paddr` mode with a `pageout` scheme every
 * 500 ms and took one of the two CPUs for 1–34 ms each time (perf sched timehist); a switchover that
 * meets such a burst waits for a CPU (traced: the source's main thread woken by the stopped vCPU
 * waited 2.5 ms while kdamond held the other CPU). We report it; changing kernel settings is the
 * machine owner's call, not a benchmark's.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface DamonFact {
  kdamond: string;
  state: string;
  operations: string | null;
  actions: string[];
}

const DAMON_ADMIN = '/sys/kernel/mm/damon/admin/kdamonds';

function read(path: string): string | null {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return null;
  }
}

/** Every kdamond that is on, with what it monitors and does (empty without DAMON or its sysfs). */
export function activeDamon(root = DAMON_ADMIN): DamonFact[] {
  let names: string[];
  try {
    names = readdirSync(root).filter((n) => /^\d+$/.test(n));
  } catch {
    return [];
  }
  const facts: DamonFact[] = [];
  for (const kdamond of names) {
    const state = read(join(root, kdamond, 'state'));
    if (state !== 'on') continue;
    const ctx = join(root, kdamond, 'contexts', '0');
    const schemes = Number(read(join(ctx, 'schemes', 'nr_schemes')) ?? 0);
    const actions: string[] = [];
    for (let i = 0; i < schemes; i++) actions.push(read(join(ctx, 'schemes', String(i), 'action')) ?? '?');
    facts.push({ kdamond, state, operations: read(join(ctx, 'operations')), actions });
  }
  return facts;
}

/** One line for the bench header, or null when there is nothing to say. */
export function machineNote(damon: DamonFact[]): string | null {
  if (damon.length === 0) return null;
  const what = damon
    .map(
      (d) =>
        `kdamond ${d.kdamond} (${d.operations ?? '?'}${d.actions.length ? `, ${d.actions.join('+')}` : ''})`,
    )
    .join(', ');
  return `note: DAMON is on here — ${what}; its periodic scans take a CPU for ms at a time and add noise to these figures`;
}
