/**
 * The switchover decision's bandwidth: a 100 ms window of bytes handed to the kernel, or, for page
 * channels, the end-to-end rate of whole rounds. Page channels fill socket buffers in a burst and
 * then wait for ROUND_DONE while the buffers drain; a window in that wait carries no bytes, and a
 * bandwidth of 0 gives a threshold of 0, so a migration over a slow path could never switch over.
 */
import t from 'tap';
import { DEFAULT_PARAMETERS } from '../../shared/options.js';
import { ConvergenceMeter } from '../../source/switchover.js';

const params = { ...DEFAULT_PARAMETERS, 'downtime-limit': 300 };

t.test('a busy window sets the bandwidth and the threshold (QEMU rule)', async (t) => {
  const m = new ConvergenceMeter(params);
  m.update({ bytes: 10_000_000, ms: 100 }, 1, 0);
  t.equal(m.bandwidth, 100_000);
  t.equal(m.threshold, 100_000 * 300);
  m.update({ bytes: 0, ms: 100 }, 1, 0);
  t.equal(m.threshold, 0, 'an empty busy window drops the threshold to 0');
});

t.test('an idle window may not lower the estimate', async (t) => {
  const m = new ConvergenceMeter(params);
  m.update({ bytes: 10_000_000, ms: 100 }, 1, 0);
  m.update({ bytes: 0, ms: 100, idle: true }, 1, 0);
  t.equal(m.bandwidth, 100_000);
});

t.test('an end-to-end round rate replaces an empty window', async (t) => {
  const m = new ConvergenceMeter(params);
  m.noteSync(3_000_000);
  m.update({ bytes: 0, ms: 100 }, 1, 3_000_000, 20_000);
  t.equal(m.bandwidth, 20_000);
  t.equal(m.threshold, 20_000 * 300);
  t.equal(m.expectedDowntime, 150, 'expected downtime = dirty bytes at the last sync / round rate');
});
