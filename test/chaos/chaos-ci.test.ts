/**
 * The CI-sized chaos subset (scenarios marked `ci: true` in scripts/chaos/scenarios.ts: 100mbit
 * rate, 5 % loss, 2 s partition during iteration, destination SIGKILL during iteration, a flipped
 * page bit), run through the same code as `npm run chaos` in real network namespaces. Each must end
 * in an allowed outcome with no problem recorded, and leave no namespace or link behind.
 *
 * Skipped, with the reason, when not root or when `ip netns` cannot create a namespace. About
 * 40-60 s; every namespace and helper is also torn down in t.teardown if a scenario throws.
 */
import t from 'tap';
import { cleanupAllSync, leftovers, netnsAvailable, sweepStale } from '../../scripts/chaos/netns.js';
import { runScenario } from '../../scripts/chaos/run-scenario.js';
import { CI_SUBSET } from '../../scripts/chaos/scenarios.js';

const avail = await netnsAvailable();
if (!avail.ok) {
  t.plan(0, `chaos CI subset skipped: ${avail.reason}`);
} else {
  t.setTimeout(180_000);
  await sweepStale();
  t.teardown(cleanupAllSync);
  for (const sc of CI_SUBSET) {
    t.test(sc.name, async (t) => {
      t.setTimeout(60_000);
      t.teardown(cleanupAllSync);
      const rec = await runScenario(sc, { quick: true });
      const summary = {
        outcome: rec.outcome,
        'phase-hit': rec['phase-hit'],
        impairment: rec.impairment,
        'detect-ms': rec['detect-ms'],
        'retry-outcome': rec['retry-outcome'],
        'exit-codes': rec['exit-codes'],
        'destination-error': rec['destination-error'],
        problems: rec.problems,
      };
      t.ok(sc.expect.outcomes.includes(rec.outcome), `outcome ${rec.outcome} is allowed`, summary);
      t.not(rec.outcome, 'DEFECT', 'no DEFECT', summary);
      t.same(rec.problems, [], 'no problem recorded', summary);
      t.ok(rec.impairment.mechanism.length > 0, `mechanism: ${rec.impairment.mechanism}`);
      if (sc.expect.mbps) t.ok(rec.report?.ram?.mbps, `ram.mbps ${rec.report?.ram?.mbps}`);
      t.same(await leftovers(), [], 'namespaces and links torn down');
    });
  }
}
