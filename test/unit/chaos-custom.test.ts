/** A chaos scenario composed on the command line: what it runs, and what it refuses (one line each). */
import t from 'tap';
import { CustomError, customScenario, parseLink } from '../../scripts/chaos/custom.js';

t.test('link impairments together, for the whole migration', async (t) => {
  t.same(parseLink('rate=100mbit,delay=50ms,loss=2%'), { rate: '100mbit', delayMs: 50, lossPercent: 2 });
  const sc = customScenario({
    link: 'rate=100mbit,delay=50ms,loss=2%',
    capabilities: 'return-path,multifd,switchover-ack',
    devices: ['precopy:size=16M,prep=2s'],
  });
  t.match(sc, {
    name: 'custom-rate100mbit+delay50ms+loss2pct',
    phase: 'whole',
    trigger: { on: 'start' },
    impairment: { kind: 'none' },
    link: { rate: '100mbit', delayMs: 50, lossPercent: 2 },
    guest: {
      ram: '64M',
      capabilities: 'return-path,multifd,switchover-ack',
      devices: ['precopy:size=16M,prep=2s'],
    },
    expect: { outcomes: ['migrated-verified', 'failed-source-intact'], retryVerified: false },
  });
});

t.test('a fault struck at a phase, over an impaired link', async (t) => {
  const sc = customScenario({ link: 'delay=20ms', fault: 'kill-destination', strike: 'switchover' });
  t.match(sc, {
    phase: 'switchover',
    trigger: { on: 'state', to: 'device' },
    impairment: { kind: 'signal', target: 'destination', signal: 'SIGKILL' },
    expect: { outcomes: ['migrated-verified', 'failed-source-intact'], retryVerified: true },
  });
  t.same(customScenario({ fault: 'kill-source' }).expect.outcomes, ['source-lost-destination-clean']);
});

t.test('mistakes are one line naming the option', async (t) => {
  const bad: [Parameters<typeof customScenario>[0], RegExp][] = [
    [{ link: 'rate=fast' }, /^--link: 'rate=fast' is not/],
    [{ link: 'loss=200%' }, /^--link: 'loss=200%' is not/],
    [{}, /needs --link or --fault/],
    [{ link: 'delay=5ms', strike: 'setup' }, /--strike needs a --fault/],
    [{ fault: 'explode' }, /^--fault: 'explode' is not one of/],
    [{ fault: 'kill-source', strike: 'later' }, /^--strike: 'later' is not one of/],
    [{ link: 'delay=5ms', ram: 'lots' }, /^--ram: 'lots' is not a size/],
    [{ link: 'delay=5ms', devices: ['prep=abc'] }, /^--device: /],
  ];
  for (const [o, re] of bad)
    t.throws(() => customScenario(o), { constructor: CustomError, message: re }, JSON.stringify(o));
});
