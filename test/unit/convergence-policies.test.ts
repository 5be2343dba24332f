/** The convergence policies' arithmetic: when each timeout fires, once; the downtime schedule. */
import t from 'tap';
import { DEFAULT_POLICIES } from '../../shared/policy-options.js';
import { ConvergencePolicies } from '../../source/convergence/policies.js';

const GiB = 2 ** 30;

t.test('progress timeout: fires once, measured from the last new low', async (t) => {
  const p = new ConvergencePolicies({ ...DEFAULT_POLICIES, progressTimeoutMs: 2000 }, 16 * 2 ** 20, 300);
  t.same(p.observe(1000, 0, 100), [], 'the low is fresh');
  t.same(p.observe(1999, 0, 100), [], '1999 ms without a new low');
  const fired = p.observe(2000, 0, 100);
  t.equal(fired.length, 1);
  t.match(fired[0], { kind: 'progress-timeout', action: 'abort' });
  t.match(fired[0]?.reason, /no new low \(0 MiB, reached at 0 s\) for 2 s/);
  t.same(p.observe(9000, 0, 100), [], 'only once');
  const paused = new ConvergencePolicies(
    { ...DEFAULT_POLICIES, progressTimeoutMs: 500, progressTimeoutAction: 'pause' },
    GiB,
    300,
  );
  t.same(paused.observe(1400, 1000, 5), [], 'a new low at 1000 restarts the wait');
  t.match(paused.observe(1500, 1000, 5), [{ kind: 'progress-timeout', action: 'pause' }]);
});

t.test('completion timeout: per GiB of guest RAM, at least one GiB', async (t) => {
  const small = new ConvergencePolicies(
    { ...DEFAULT_POLICIES, completionTimeoutPerGibMs: 4000 },
    16 * 2 ** 20,
    300,
  );
  t.equal(small.completionTimeoutMs, 4000, 'a 16 MiB guest counts as 1 GiB (KubeVirt rounds up too)');
  const big = new ConvergencePolicies({ ...DEFAULT_POLICIES, completionTimeoutPerGibMs: 4000 }, 3 * GiB, 300);
  t.equal(big.completionTimeoutMs, 12_000);
  t.same(big.observe(11_999, 11_999, 0), []);
  t.match(big.observe(12_000, 12_000, 0), [{ kind: 'completion-timeout', action: 'abort' }]);
  t.same(big.observe(20_000, 20_000, 0), [], 'once');
  const off = new ConvergencePolicies(DEFAULT_POLICIES, GiB, 300);
  t.same(off.observe(1e9, 0, 1), [], 'all off by default');
});

t.test('downtime steps: equal raises from downtime-limit to the maximum, one per delay', async (t) => {
  const p = new ConvergencePolicies(
    { ...DEFAULT_POLICIES, downtimeSteps: { maxMs: 1300, steps: 4, delayMs: 1000 } },
    GiB,
    300,
  );
  t.same(p.observe(999, 999, 0), [], 'nothing before the first delay');
  t.match(p.observe(1000, 1000, 0), [{ kind: 'downtime-step', step: 1, from: 300, to: 550 }]);
  // a late sample catches up with every step it passed, in order
  const late = p.observe(3500, 3500, 0);
  t.match(late, [
    { step: 2, from: 550, to: 800 },
    { step: 3, from: 800, to: 1050 },
  ]);
  t.match(p.observe(4000, 4000, 0), [{ step: 4, to: 1300 }]);
  t.same(p.observe(10_000, 10_000, 0), [], 'the maximum is the last step');
  t.equal(p.downtimeLimit, 1300);
});

t.test('steps come before a timeout in the same sample', async (t) => {
  const p = new ConvergencePolicies(
    {
      ...DEFAULT_POLICIES,
      completionTimeoutPerGibMs: 1000,
      downtimeSteps: { maxMs: 600, steps: 1, delayMs: 1000 },
    },
    GiB,
    300,
  );
  t.same(
    p.observe(1000, 1000, 0).map((e) => e.kind),
    ['downtime-step', 'completion-timeout'],
  );
});

t.test('the command line: defaults, QEMU parameter ranges, one clear line per mistake', async (t) => {
  const { parseCommon } = await import('../../shared/cli/args.js');
  const o = parseCommon(['--connect', 'h:1'], 'source');
  t.same(o.policies, DEFAULT_POLICIES, 'no policy unless asked');
  t.match(o.parameters, {
    'throttle-trigger-threshold': 50,
    'cpu-throttle-initial': 20,
    'cpu-throttle-increment': 10,
    'cpu-throttle-tailslow': false,
    'max-cpu-throttle': 99,
    'vcpu-dirty-limit': 1,
    'x-vcpu-dirty-limit-period': 1000,
  });
  const steps = parseCommon(['--ram', '2G', '--downtime-max', '2000', '--cpu-throttle-tailslow'], 'pair');
  t.same(steps.policies.downtimeSteps, { maxMs: 2000, steps: 10, delayMs: 150_000 }, "Nova's 75 s per GiB");
  t.equal(steps.parameters['cpu-throttle-tailslow'], true);
  const bad: [string[], RegExp][] = [
    [['--downtime-max', '200'], /--downtime-max: 200 ms is not above --downtime-limit \(300 ms\)/],
    [['--downtime-steps', '5'], /need --downtime-max/],
    [
      ['--downtime-max', '900', '--downtime-steps', '0'],
      /--downtime-steps: '0' is not an integer in 1..1000/,
    ],
    [
      ['--progress-timeout-action', 'postcopy'],
      /--progress-timeout-action: 'postcopy' is not one of abort, pause/,
    ],
    [['--completion-timeout-per-gib', 'soon'], /is not a duration/],
    [['--cpu-throttle-initial', '100'], /'cpu-throttle-initial' expects an integer in 1…99, got 100/],
    [['--x-vcpu-dirty-limit-period', '0'], /'x-vcpu-dirty-limit-period' expects an integer in 1…1000/],
    [['--throttle-trigger-threshold', '101'], /'throttle-trigger-threshold' expects an integer in 1…100/],
  ];
  for (const [args, message] of bad)
    t.throws(() => parseCommon(['--connect', 'h:1', ...args], 'source'), { message }, args.join(' '));
  t.throws(() => parseCommon(['--listen', 'h:1', '--progress-timeout', '5s'], 'destination'), {
    message: /--progress-timeout is not a destination option/,
  });
});
