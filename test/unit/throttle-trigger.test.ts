/**
 * QEMU's auto-converge arithmetic (migration/ram.c migration_trigger_throttle, mig_throttle_guest_down)
 * replayed on period sequences: hand-made ones whose every value is worked out in the comments, and
 * periods recorded from a real migration of ours, checked against a line-by-line BigInt transcription
 * of the C code (uint64_t arithmetic, the double in tailslow).
 */
import { readFileSync } from 'node:fs';
import t from 'tap';
import { DEFAULT_PARAMETERS } from '../../shared/options.js';
import {
  nextThrottle,
  type PeriodSample,
  type ThrottleParameters,
  ThrottleTrigger,
} from '../../source/convergence/throttle-trigger.js';

const QEMU: ThrottleParameters = DEFAULT_PARAMETERS;
const MiB = 1048576;

function replay(samples: PeriodSample[], params: ThrottleParameters = QEMU): number[] {
  const trig = new ThrottleTrigger('auto-converge', params);
  return samples.map((p) => {
    trig.closePeriod(p);
    return trig.throttle;
  });
}

/** The C code, transcribed: uint64_t as BigInt, cpu_ideal via a double as QEMU computes it. */
function qemuReference(samples: PeriodSample[], p: ThrottleParameters): number[] {
  let highCnt = 0;
  let throttle = 0n;
  const out: number[] = [];
  for (const s of samples) {
    const xfer = BigInt(s.bytesSent);
    const dirty = BigInt(s.bytesDirty);
    const threshold = (xfer * BigInt(p['throttle-trigger-threshold'])) / 100n;
    if (dirty > threshold && ++highCnt >= 2) {
      highCnt = 0;
      if (throttle === 0n) throttle = BigInt(p['cpu-throttle-initial']);
      else {
        let inc = BigInt(p['cpu-throttle-increment']);
        if (p['cpu-throttle-tailslow']) {
          const cpuNow = 100n - throttle;
          const cpuIdeal = BigInt(Math.trunc(Number(cpuNow) * ((Number(threshold) * 1.0) / Number(dirty))));
          const d = cpuNow - cpuIdeal;
          inc = d < inc ? d : inc;
        }
        const next = throttle + inc;
        const max = BigInt(p['max-cpu-throttle']);
        throttle = next < max ? next : max;
      }
      // cpu_throttle_set: MAX(MIN(new, 99), 1)
      throttle = throttle > 99n ? 99n : throttle < 1n ? 1n : throttle;
    }
    out.push(Number(throttle));
  }
  return out;
}

t.test('fires on the second high period, consecutive or not, and the count starts over', async (t) => {
  const high = { bytesDirty: 60 * MiB, bytesSent: 100 * MiB }; // 60 > 50 % of 100
  const low = { bytesDirty: 50 * MiB, bytesSent: 100 * MiB }; // 50 is not > 50: not high
  t.same(replay([high, high]), [0, 20], 'two in a row: initial 20');
  t.same(
    replay([high, low, low, high]),
    [0, 0, 0, 20],
    'not consecutive: still fires (the counter is not reset by a low period)',
  );
  t.same(
    replay([high, high, high, high, high]),
    [0, 20, 20, 30, 30],
    'after firing, two more highs for the next step',
  );
  t.same(replay([high, high, high, low, high]), [0, 20, 20, 20, 30]);
});

t.test('the threshold is integer arithmetic on bytes sent, strictly exceeded', async (t) => {
  // 101 bytes sent × 50 / 100 = 50 (uint64 division): 51 dirty exceeds it, 50 does not
  t.same(
    replay([
      { bytesDirty: 51, bytesSent: 101 },
      { bytesDirty: 51, bytesSent: 101 },
    ]),
    [0, 20],
  );
  t.same(
    replay([
      { bytesDirty: 50, bytesSent: 101 },
      { bytesDirty: 50, bytesSent: 101 },
    ]),
    [0, 0],
  );
  // nothing sent in a period and anything dirtied: high (QEMU does the same)
  t.same(
    replay([
      { bytesDirty: 1, bytesSent: 0 },
      { bytesDirty: 1, bytesSent: 0 },
    ]),
    [0, 20],
  );
  const thr80 = { ...QEMU, 'throttle-trigger-threshold': 80 };
  const s = { bytesDirty: 70 * MiB, bytesSent: 100 * MiB };
  t.same(replay([s, s], thr80), [0, 0], '70 % is under a threshold of 80');
});

t.test('steps: initial, increment, capped at max-cpu-throttle and at 99', async (t) => {
  const high = { bytesDirty: 200 * MiB, bytesSent: 100 * MiB };
  const many = Array.from({ length: 24 }, () => high);
  const got = replay(many);
  t.same(
    got.filter((_, i) => i % 2 === 1),
    [20, 30, 40, 50, 60, 70, 80, 90, 99, 99, 99, 99],
    '20 + 10 per firing, then 99 (max-cpu-throttle)',
  );
  const capped = replay(many, { ...QEMU, 'max-cpu-throttle': 45 });
  t.same(capped.filter((_, i) => i % 2 === 1).slice(0, 5), [20, 30, 40, 45, 45]);
  const big = replay([high, high, high, high], {
    ...QEMU,
    'cpu-throttle-initial': 95,
    'cpu-throttle-increment': 30,
  });
  t.same(big, [0, 95, 95, 99], '95 + 30 is capped at 99');
});

t.test('tailslow: the increment shrinks to what brings the dirty rate to the threshold', async (t) => {
  const params = { ...QEMU, 'cpu-throttle-tailslow': true };
  // throttle 20 → cpu_now 80. Dirty 100 MiB, threshold 50 % of 150 MiB = 75 MiB:
  // cpu_ideal = trunc(80 × 75/100) = 60 → increment min(80 − 60, 10) = 10 → 30
  t.equal(nextThrottle(20, params, 100 * MiB, 75 * MiB), 30);
  // dirty only a bit over: 80 MiB vs 75 → cpu_ideal = trunc(80 × 0.9375) = 75 → increment 5 → 25
  t.equal(nextThrottle(20, params, 80 * MiB, 75 * MiB), 25);
  // barely over: cpu_ideal = trunc(80 × 75/75.5) = trunc(79.47) = 79 → increment 1 → 21
  t.equal(nextThrottle(20, params, 75.5 * MiB, 75 * MiB), 21);
  // without tailslow the same periods step by the full 10
  t.equal(nextThrottle(20, QEMU, 80 * MiB, 75 * MiB), 30);
  // first firing ignores tailslow: initial
  t.equal(nextThrottle(0, params, 80 * MiB, 75 * MiB), 20);
  const seq = [
    { bytesDirty: 80 * MiB, bytesSent: 150 * MiB },
    { bytesDirty: 80 * MiB, bytesSent: 150 * MiB }, // fires: 20
    { bytesDirty: 80 * MiB, bytesSent: 150 * MiB },
    { bytesDirty: 80 * MiB, bytesSent: 150 * MiB }, // fires: 80 × 75/80 = 75 → +5 = 25
    { bytesDirty: 76 * MiB, bytesSent: 150 * MiB },
    { bytesDirty: 76 * MiB, bytesSent: 150 * MiB }, // cpu 75 × 75/76 = 74.01 → 74 → +1 = 26
  ];
  t.same(replay(seq, params), [0, 20, 20, 25, 25, 26]);
  t.same(replay(seq, params), qemuReference(seq, params));
});

t.test('onSync closes a period only more than 1000 ms after the last', async (t) => {
  const trig = new ThrottleTrigger('auto-converge', QEMU);
  // first sync starts the period; 1000 ms later is not "more than": still open
  t.equal(trig.onSync(0, 10 * MiB, 0), null);
  t.equal(trig.onSync(1000, 10 * MiB, 30 * MiB), null);
  t.equal(trig.highCount, 0, 'no period closed yet');
  // 1001 ms: closes with dirty 20 MiB (both syncs' pages) and 40 MiB sent: 20 > 20? no
  t.same(trig.onSync(1001, 0, 40 * MiB), {
    period: { bytesDirty: 20 * MiB, bytesSent: 40 * MiB },
    step: null,
  });
  t.equal(trig.highCount, 0);
  // next period: 30 MiB dirty, 20 MiB sent → high, the first
  t.same(trig.onSync(2500, 30 * MiB, 60 * MiB), {
    period: { bytesDirty: 30 * MiB, bytesSent: 20 * MiB },
    step: null,
  });
  t.equal(trig.highCount, 1);
  const closed = trig.onSync(3600, 30 * MiB, 80 * MiB);
  t.match(closed?.step, { kind: 'cpu-throttle', from: 0, to: 20 });
});

t.test('dirty-limit: the same trigger, the quota set once', async (t) => {
  const trig = new ThrottleTrigger('dirty-limit', QEMU);
  const high = { bytesDirty: 200, bytesSent: 100 };
  t.equal(trig.closePeriod(high), null);
  t.match(trig.closePeriod(high), { kind: 'dirty-limit' });
  t.equal(trig.dirtyLimitOn, true);
  t.equal(trig.closePeriod(high), null);
  t.equal(trig.closePeriod(high), null, 'in service already: nothing more to do');
  t.equal(trig.throttle, 0, 'the CPU throttle is never touched');
});

t.test('periods recorded from a real migration replay exactly as the C code', async (t) => {
  const recorded = JSON.parse(
    readFileSync(new URL('../fixtures/throttle-periods.json', import.meta.url), 'utf8'),
  ) as { samples: PeriodSample[]; throttles: number[] };
  t.ok(recorded.samples.length >= 8, `${recorded.samples.length} periods`);
  for (const params of [
    QEMU,
    { ...QEMU, 'cpu-throttle-tailslow': true },
    { ...QEMU, 'throttle-trigger-threshold': 90 },
  ]) {
    t.same(replay(recorded.samples, params), qemuReference(recorded.samples, params));
  }
  t.same(replay(recorded.samples), recorded.throttles, 'and the throttle the migration applied');
});
