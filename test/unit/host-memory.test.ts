import t from 'tap';
import { parseCommon } from '../../shared/cli/args.js';
import { guestRamCap } from '../../shared/host-memory.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

t.test('the guest RAM cap follows available memory, not only the total', async (t) => {
  const busy = guestRamCap(24 * GiB, 4 * GiB);
  t.equal(busy.bytes, 4 * GiB - 256 * MiB, 'a 24 GiB host with 4 GiB available: 4 GiB less headroom');
  t.match(busy.why, /4096 MiB available on this host, less 256 MiB headroom/);
  const idle = guestRamCap(24 * GiB, 23 * GiB);
  t.equal(idle.bytes, 18 * GiB, 'a nearly idle host: 75 % of its total');
  t.match(idle.why, /75 % of this host's 24576 MiB/);
  t.equal(guestRamCap(8 * GiB, 100 * MiB).bytes, 0, 'less than the headroom available: nothing');
  t.equal(guestRamCap(8 * GiB, 3 * GiB + 123).bytes % 4096, 0, 'whole pages');
});

t.test('--ram and --metrics-port out of range are usage errors naming the option', async (t) => {
  const usage = (re: RegExp) => ({ code: 'MIG_ERR_USAGE', message: re });
  t.throws(
    () => parseCommon(['--ram', '64T'], 'source'),
    usage(/^--ram: '64T' is more than this host can hold: at most \d+ bytes/),
  );
  t.throws(() => parseCommon(['--ram', '0'], 'source'), usage(/^--ram: '0' is below the smallest guest/));
  t.throws(
    () => parseCommon(['--ram', '100'], 'source'),
    usage(/^--ram: '100' is not a whole number of 4096-byte pages/),
  );
  t.throws(
    () => parseCommon(['--metrics-port', '99999'], 'source'),
    usage(/^--metrics-port: '99999' is not a port/),
  );
  t.throws(() => parseCommon(['--metrics-port', '1.5'], 'source'), usage(/is not a port/));
  t.equal(parseCommon(['--ram', '64M'], 'source').ramBytes, 64 * MiB);
  t.equal(parseCommon(['--metrics-port', '0'], 'source').metricsPort, 0);
});
