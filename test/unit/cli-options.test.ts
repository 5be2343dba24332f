/**
 * Each command takes only its own options (another command's is a usage error that says whose it
 * is), values a user can get wrong are usage errors naming the option, and each command's help lists
 * its own options only.
 */
import t from 'tap';
import { parseCommon } from '../../shared/cli/args.js';
import { usageText } from '../../shared/cli/help.js';
import { type Command, OPTIONS } from '../../shared/cli/option-table.js';

const usage = (re: RegExp) => ({ code: 'MIG_ERR_USAGE', message: re });

t.test("another command's option is refused, naming who takes it", async (t) => {
  const cases: [Command, string[], RegExp][] = [
    [
      'destination',
      ['--timeline', 'x.svg'],
      /^--timeline is not a destination option \(source and npm start take it\)$/,
    ],
    ['destination', ['--metrics-port', '0'], /^--metrics-port is not a destination option/],
    ['source', ['--linger', '5'], /^--linger is not a source option \(destination takes it\)$/],
    ['source', ['--insecure'], /^--insecure is not a source option/],
    ['pair', ['--connect', '127.0.0.1:1'], /^--connect is not a npm start option \(source takes it\)$/],
    ['pair', ['--service', '127.0.0.1:0'], /^--service is not a npm start option/],
    ['source', ['--tls', 'psk'], /^--tls is not a source option \(npm start takes it\)$/],
  ];
  for (const [command, argv, re] of cases)
    t.throws(() => parseCommon(argv, command), usage(re), argv.join(' '));
});

t.test('values a user can get wrong: one line naming the option', async (t) => {
  t.throws(() => parseCommon(['--ram', '-5M'], 'source'), usage(/^--ram: '-5M' is not a size/));
  t.throws(
    () => parseCommon(['--dirty-rate', 'fast'], 'pair'),
    usage(/^--dirty-rate: 'fast' is not a rate .*max\)$/),
  );
  t.throws(
    () => parseCommon(['--max-bandwidth', 'fast'], 'pair'),
    usage(/^--max-bandwidth: 'fast' is not a rate/),
  );
  t.throws(
    () => parseCommon(['--device', 'prep=abc'], 'pair'),
    usage(/^--device: /),
    'device specs are checked by the pair',
  );
  t.throws(() => parseCommon(['--device', 'precopy:siz=1M'], 'source'), usage(/^--device: /));
  t.throws(() => parseCommon(['--bogus'], 'source'), usage(/^unknown option '--bogus'$/));
  t.throws(() => parseCommon(['--ram'], 'source'), usage(/^--ram needs a value$/));
  t.throws(() => parseCommon(['stray'], 'source'), usage(/^unexpected argument 'stray'/));
  t.throws(() => parseCommon(['--tls', 'rsa'], 'pair'), usage(/^--tls: 'rsa' is not one of x509, psk$/));
  t.throws(() => parseCommon(['--probe-interval', '-1'], 'pair'), usage(/^--probe-interval: '-1'/));
  t.equal(parseCommon(['--probe-interval', '0', '--tls', 'psk'], 'pair').probeIntervalMs, 0);
  t.equal(parseCommon(['--ram=64M'], 'destination').ramBytes, 64 * 1024 * 1024);
  t.equal(parseCommon(['--dirty-rate', 'max'], 'source').dirtyRate, Number.POSITIVE_INFINITY);
});

t.test('--help wins over a bad value', async (t) => {
  t.equal(parseCommon(['--ram', 'lots', '--help'], 'source').help, true);
});

t.test("each command's help lists its own options only", async (t) => {
  for (const command of ['source', 'destination', 'pair'] as const) {
    const text = usageText(command);
    for (const [name, def] of Object.entries(OPTIONS)) {
      const listed = new RegExp(`^  --${name}(?![\\w-])`, 'm').test(text);
      t.equal(
        listed,
        (def.commands as readonly string[]).includes(command),
        `${command} --help and --${name}`,
      );
    }
  }
  t.match(
    usageText('destination'),
    /--ram SIZE\s+preallocate/,
    'the destination says what --ram means there',
  );
});

t.test('capabilities for a QMP client are refused without --qmp, not ignored', async (t) => {
  for (const cap of ['events', 'pause-before-switchover']) {
    t.throws(
      () => parseCommon(['--capabilities', `return-path,${cap}`], 'source'),
      {
        code: 'MIG_ERR_CAPABILITY',
        message: new RegExp(`^capability '${cap}' needs a QMP monitor: .*give --qmp`),
      },
      cap,
    );
    const o = parseCommon(['--capabilities', `return-path,${cap}`, '--qmp', 'unix:/tmp/x.qmp'], 'source');
    t.equal(o.capabilities[cap as 'events'], true, `${cap} with --qmp`);
  }
});
