/**
 * QMP, two real processes each with a monitor on a unix socket, started without --connect and
 * without --listen (QEMU's `-incoming defer`):
 *  - the npm package `qemu-qmp` (a third-party client, not ours) drives a whole migration: it sets
 *    capabilities and parameters, migrate-incoming on port 0, migrate, polls query-migrate until
 *    completed; the result is verified (digests, the guest's self-check, the dumps byte for byte);
 *  - a client that negotiates as QEMU's Python qemu.qmp does (greeting parsed strictly, then
 *    qmp_capabilities with no arguments since no oob is offered);
 *  - QEMU's error classes and texts; one source process, several attempts (a cancelled one, then one
 *    with pause-before-switchover held in pre-switchover until migrate-continue); MIGRATION events.
 */
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { QmpClient, type QmpEvent } from '../../scripts/lib/qmp-client.js';
import {
  readJsonFile,
  type Started,
  startDestination,
  startSide,
  tempDir,
  waitExit,
  waitFor,
  waitStderrLine,
} from '../helpers/pair.js';

t.setTimeout(120_000);

// biome-ignore lint/suspicious/noExplicitAny: QMP answers are JSON of many shapes
type Json = Record<string, any>;

/** A side started with --qmp only; resolves once its monitor listens. */
async function withMonitor(
  t: Test,
  role: 'source' | 'destination',
  sock: string,
  args: string[],
  env?: Record<string, string>,
) {
  const side = startSide(
    t,
    role,
    ['--qmp', `unix:${sock}`, '--quiet', ...args],
    env ? { env: { ...process.env, ...env } } : {},
  );
  const line = await waitStderrLine(side, (l) => l.includes(': QMP on '), 20_000);
  if (!line) throw new Error(`${role} did not open its monitor: ${side.stderrLines.join(' | ')}`);
  return side;
}

/** qemu-qmp's callback API as promises. */
function qemuQmp(
  path: string,
): Promise<{ run: (cmd: string, args?: Json) => Promise<Json>; close: () => void; events: string[] }> {
  return import('qemu-qmp').then(({ default: QMP }) => {
    const q = new QMP();
    const events: string[] = [];
    // qemu-qmp emits each event under its lower-cased name on the socket itself, where a stream's own
    // 'resume' also fires: RESUME is watched with our client instead
    for (const e of ['migration', 'stop', 'shutdown', 'migration_pass']) q.on(e, () => events.push(e));
    return new Promise((resolve, reject) => {
      q.connect(path, (err) => {
        if (err) return reject(err);
        resolve({
          events,
          close: () => q.destroy(),
          run: (cmd, args) =>
            new Promise((ok, fail) => q.execute(cmd, args ?? null, (e, r) => (e ? fail(e) : ok(r as Json)))),
        });
      });
    });
  });
}

async function poll(
  client: { run: (c: string) => Promise<Json> },
  until: (info: Json) => boolean,
  ms: number,
) {
  const deadline = Date.now() + ms;
  let info: Json = {};
  while (Date.now() < deadline) {
    info = await client.run('query-migrate');
    if (until(info)) return info;
    await new Promise((r) => setTimeout(r, 100));
  }
  return info;
}

t.test('qemu-qmp (third party) drives a whole migration; the result is verified', async (t) => {
  const dir = await tempDir(t);
  const f = (n: string) => join(dir, n);
  const dst = await withMonitor(t, 'destination', f('dst.qmp'), [
    '--ram',
    '32M',
    '--json',
    f('dst.json'),
    '--dump-ram',
    f('dst.ram'),
  ]);
  const src = await withMonitor(t, 'source', f('src.qmp'), [
    '--ram',
    '32M',
    '--dirty-rate',
    '8M',
    '--json',
    f('src.json'),
    '--dump-ram',
    f('src.ram'),
  ]);
  const d = await qemuQmp(f('dst.qmp'));
  const watcher = new QmpClient();
  t.teardown(() => watcher.close());
  const dstEvents: string[] = [];
  watcher.on('event', (e) => dstEvents.push(e.event));
  await watcher.connect(`unix:${f('dst.qmp')}`);
  const s = await qemuQmp(f('src.qmp'));
  t.teardown(() => {
    d.close();
    s.close();
  });
  const caps = {
    capabilities: [
      { capability: 'return-path', state: true },
      { capability: 'events', state: true },
    ],
  };
  await d.run('migrate-set-capabilities', caps);
  await s.run('migrate-set-capabilities', caps);
  t.same(
    await d.run('query-status'),
    { running: false, singlestep: false, status: 'inmigrate' },
    'deferred incoming',
  );
  await d.run('migrate-incoming', { uri: 'tcp:127.0.0.1:0' });
  const waiting = await d.run('query-migrate');
  const port = Number(waiting['socket-address']?.[0]?.port);
  t.ok(port > 0, `listening on port ${port} (socket-address)`);
  await s.run('migrate-set-parameters', { 'downtime-limit': 500, 'max-bandwidth': 256 * 1048576 });
  t.match(await s.run('query-migrate-parameters'), { 'downtime-limit': 500 });
  t.same(await s.run('query-migrate'), {}, 'nothing ran yet: {}');
  await s.run('migrate', { uri: `tcp:127.0.0.1:${port}` });
  const done = await poll(s, (i) => ['completed', 'failed', 'cancelled'].includes(i.status), 30_000);
  t.equal(done.status, 'completed', 'query-migrate says completed', { info: done });
  t.match(done.ram, { total: 32 * 1048576, remaining: 0, 'page-size': 4096 }, 'MigrationStats');
  t.type(done.downtime, 'number');
  // the destination's digest comes back with its RESUMED message, just after the status says completed
  const verified = await poll(s, (i) => i['__org.switchover_report']?.integrity?.match !== undefined, 10_000);
  t.equal(verified['__org.switchover_report']?.integrity?.match, true, 'image digests match');
  const landed = await poll(
    d,
    (i) => i['__org.switchover_report']?.guest?.['self-check'] !== undefined,
    15_000,
  );
  t.equal(landed.status, 'completed');
  t.equal(
    landed['__org.switchover_report'].guest['self-check'].ok,
    true,
    "the destination guest's self-check is clean",
  );
  t.same(await d.run('query-status'), { running: true, singlestep: false, status: 'running' });
  t.equal((await s.run('query-status')).status, 'postmigrate');
  t.ok(s.events.filter((e) => e === 'migration').length >= 4, `MIGRATION events: ${s.events.join(',')}`);
  t.ok(s.events.includes('stop') && s.events.includes('migration_pass'), 'STOP and MIGRATION_PASS');
  t.ok(await waitFor(() => dstEvents.includes('RESUME'), 5000), 'the destination says RESUME', { dstEvents });
  t.ok(dstEvents.includes('MIGRATION'), 'and MIGRATION events (events capability on)');
  await s.run('quit');
  await d.run('quit');
  t.equal(await waitExit(src, 15_000), 0, 'source exits 0 at quit');
  t.equal(await waitExit(dst, 15_000), 0, 'destination exits 0 at quit');
  const [a, b] = await Promise.all([readFile(f('src.ram')), readFile(f('dst.ram'))]);
  t.ok(a.length === 32 * 1048576 && a.equals(b), 'the RAM dumps are byte-identical');
});

/** A client as strict as QEMU's Python qemu.qmp: raw lines, greeting checked key by key. */
async function pythonStyleNegotiation(t: Test, path: string): Promise<void> {
  const sock = net.connect(path);
  t.teardown(() => sock.destroy());
  const lines: string[] = [];
  let buf = '';
  sock.on('data', (c) => {
    buf += c.toString('utf8');
    let i = buf.indexOf('\r\n');
    while (i >= 0) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 2);
      i = buf.indexOf('\r\n');
    }
  });
  t.ok(await waitFor(() => lines.length >= 1, 5000), 'a greeting line, CRLF-terminated');
  const greeting = JSON.parse(lines[0]!);
  t.same(Object.keys(greeting), ['QMP']);
  t.same(Object.keys(greeting.QMP).sort(), ['capabilities', 'version']);
  t.same(Object.keys(greeting.QMP.version).sort(), ['package', 'qemu']);
  t.same(Object.keys(greeting.QMP.version.qemu).sort(), ['major', 'micro', 'minor']);
  for (const v of Object.values(greeting.QMP.version.qemu))
    t.ok(Number.isInteger(v), 'version numbers are integers');
  t.ok(
    Array.isArray(greeting.QMP.capabilities) && !greeting.QMP.capabilities.includes('oob'),
    'no oob offered',
  );
  sock.write('{"execute": "query-status", "id": 7}');
  t.ok(await waitFor(() => lines.length >= 2, 5000));
  t.same(
    JSON.parse(lines[1]!),
    {
      id: 7,
      error: { class: 'CommandNotFound', desc: "Expecting capabilities negotiation with 'qmp_capabilities'" },
    },
    'a command before negotiation',
  );
  lines.splice(1);
  sock.write('{"execute": "qmp_capabilities"}');
  t.ok(await waitFor(() => lines.length >= 2, 5000));
  t.same(JSON.parse(lines[1]!), { return: {} }, 'negotiated, no arguments needed');
}

t.test('errors, several attempts, pause-before-switchover, events', async (t) => {
  const dir = await tempDir(t);
  const f = (n: string) => join(dir, n);
  // the pre-switchover deadline shortened to 2 s (60 s otherwise)
  const src: Started = await withMonitor(t, 'source', f('src.qmp'), ['--ram', '32M', '--dirty-rate', '8M'], {
    SWITCHOVER_TEST_PRE_SWITCHOVER_MS: '2000',
  });
  await pythonStyleNegotiation(t, f('src.qmp'));
  // before negotiation: QEMU's CommandNotFound
  const raw = new QmpClient();
  t.teardown(() => raw.close());
  const c = new QmpClient();
  t.teardown(() => c.close());
  await c.connect(`unix:${f('src.qmp')}`);
  const events: QmpEvent[] = [];
  c.on('event', (e) => events.push(e));
  const fails = async (cmd: string, args: Json | undefined, cls: string, desc: string | RegExp) => {
    const e = await c.execute(cmd, args).then(
      () => null,
      (err) => err,
    );
    t.equal(e?.errorClass, cls, `${cmd}: ${cls}`);
    t.match(e?.desc, desc);
  };
  await fails(
    'no-such-command',
    undefined,
    'CommandNotFound',
    'The command no-such-command has not been found',
  );
  await fails('migrate', {}, 'GenericError', "Parameter 'uri' is missing");
  await fails(
    'migrate',
    { uri: 'tcp:127.0.0.1:1', speed: 1 },
    'GenericError',
    "Parameter 'speed' is unexpected",
  );
  await fails(
    'migrate',
    { uri: 'exec:cat' },
    'GenericError',
    "Parameter 'uri' expects a valid migration protocol",
  );
  await fails(
    'migrate-continue',
    { state: 'pre-switchover' },
    'GenericError',
    'Migration not in expected state: none',
  );

  // attempt 1: a slow one, cancelled; the guest runs on. Each attempt needs a fresh destination:
  // the first three start together
  const [dst1, dstA, dstB] = await Promise.all(
    ['dst1', 'dstA', 'dstB'].map((n) => withMonitor(t, 'destination', f(`${n}.qmp`), ['--ram', '32M'])),
  );
  const d1 = new QmpClient();
  t.teardown(() => d1.close());
  await d1.connect(`unix:${f('dst1.qmp')}`);
  await c.execute('migrate-set-capabilities', {
    capabilities: [
      { capability: 'return-path', state: true },
      { capability: 'events', state: true },
    ],
  });
  await d1.execute('migrate-set-capabilities', {
    capabilities: [{ capability: 'return-path', state: true }],
  });
  await d1.execute('migrate-incoming', { uri: 'tcp:127.0.0.1:0' });
  const port1 = Number(((await d1.execute('query-migrate')) as Json)['socket-address'][0].port);
  await c.execute('migrate-set-parameters', { 'max-bandwidth': 2 * 1048576 });
  await c.execute('migrate', { uri: `tcp:127.0.0.1:${port1}` });
  await fails(
    'migrate',
    { uri: `tcp:127.0.0.1:${port1}` },
    'GenericError',
    "There's a migration process in progress",
  );
  await fails(
    'migrate-set-capabilities',
    { capabilities: [{ capability: 'auto-converge', state: true }] },
    'GenericError',
    "There's a migration process in progress",
  );
  await c.execute('migrate_cancel');
  t.ok(
    await waitFor(
      () => events.some((e) => e.event === 'MIGRATION' && e.data?.status === 'cancelled'),
      10_000,
    ),
    'MIGRATION cancelled',
  );
  t.match(
    await c.execute('query-status'),
    { running: true, status: 'running' },
    'the guest runs on after the cancel',
  );
  await d1.execute('quit').catch(() => {});
  await waitExit(dst1, 10_000);

  // attempts held in pre-switchover: a cancel ends the wait, and so does its deadline; the guest,
  // stopped there, runs on after either
  await c.execute('migrate-set-parameters', { 'max-bandwidth': 0 });
  await c.execute('migrate-set-capabilities', {
    capabilities: [{ capability: 'pause-before-switchover', state: true }],
  });
  for (const [name, ending] of [
    ['dstA', 'cancel'],
    ['dstB', 'deadline'],
  ] as const) {
    const d = new QmpClient();
    t.teardown(() => d.close());
    await d.connect(`unix:${f(`${name}.qmp`)}`);
    await d.execute('migrate-set-capabilities', {
      capabilities: [{ capability: 'return-path', state: true }],
    });
    await d.execute('migrate-incoming', { uri: 'tcp:127.0.0.1:0' });
    const port = Number(((await d.execute('query-migrate')) as Json)['socket-address'][0].port);
    events.length = 0;
    await c.execute('migrate', { uri: `tcp:127.0.0.1:${port}` });
    t.ok(
      await waitFor(() => events.some((e) => e.data?.status === 'pre-switchover'), 20_000),
      `${ending}: held in pre-switchover`,
    );
    const held = Date.now();
    if (ending === 'cancel') await c.execute('migrate_cancel');
    const end = ending === 'cancel' ? 'cancelled' : 'failed';
    t.ok(
      await waitFor(() => events.some((e) => e.data?.status === end), 10_000),
      `${ending}: MIGRATION ${end}`,
    );
    const waited = Date.now() - held;
    if (ending === 'cancel') t.ok(waited < 1500, `the cancel ended the wait at once (${waited} ms)`);
    else t.ok(waited >= 1500 && waited < 6000, `the deadline ended the wait (${waited} ms, deadline 2 s)`);
    t.ok(await waitFor(() => events.some((e) => e.event === 'RESUME'), 5000), `${ending}: RESUME`);
    t.match(
      await c.execute('query-status'),
      { running: true, status: 'running' },
      `${ending}: the guest runs on`,
    );
    if (ending === 'deadline')
      t.match(
        ((await c.execute('query-migrate')) as Json)['error-desc'],
        /no migrate-continue within 2 s in pre-switchover/,
      );
    await d.execute('quit').catch(() => {});
  }
  await Promise.all([waitExit(dstA, 10_000), waitExit(dstB, 10_000)]);

  // attempt 2, same source process: pause-before-switchover holds it in pre-switchover
  const dst2 = await withMonitor(t, 'destination', f('dst2.qmp'), ['--ram', '32M']);
  const d2 = new QmpClient();
  t.teardown(() => d2.close());
  await d2.connect(`unix:${f('dst2.qmp')}`);
  await d2.execute('migrate-set-capabilities', {
    capabilities: [{ capability: 'return-path', state: true }],
  });
  await d2.execute('migrate-incoming', { uri: 'tcp:127.0.0.1:0' });
  const port2 = Number(((await d2.execute('query-migrate')) as Json)['socket-address'][0].port);
  await c.execute('migrate-set-capabilities', {
    capabilities: [{ capability: 'pause-before-switchover', state: true }],
  });
  await c.execute('migrate-set-parameters', { 'max-bandwidth': 0 });
  events.length = 0;
  await c.execute('migrate', { uri: `tcp:127.0.0.1:${port2}` });
  t.ok(
    await waitFor(() => events.some((e) => e.data?.status === 'pre-switchover'), 20_000),
    'MIGRATION pre-switchover',
  );
  await new Promise((r) => setTimeout(r, 500));
  t.equal(((await c.execute('query-migrate')) as Json).status, 'pre-switchover', 'it waits there');
  t.match(await c.execute('query-status'), { running: false, status: 'finish-migrate' });
  t.ok(
    events.some((e) => e.event === 'STOP'),
    'STOP came with it',
  );
  await fails(
    'migrate-continue',
    { state: 'active' },
    'GenericError',
    'Migration not in expected state: pre-switchover',
  );
  await c.execute('migrate-continue', { state: 'pre-switchover' });
  t.ok(
    await waitFor(() => events.some((e) => e.data?.status === 'completed'), 20_000),
    'MIGRATION completed',
  );
  const info = await poll(
    { run: (cmd) => c.execute(cmd) as Promise<Json> },
    (i) => i['__org.switchover_report']?.integrity?.match !== undefined,
    10_000,
  );
  t.equal(info['__org.switchover_report']?.integrity?.match, true, 'verified');
  t.same(
    events.filter((e) => e.event === 'MIGRATION').map((e) => e.data?.status),
    ['setup', 'active', 'pre-switchover', 'device', 'completed'],
    'the statuses, in order',
  );
  await fails('migrate', { uri: `tcp:127.0.0.1:${port2}` }, 'GenericError', /already migrated/);
  await c.execute('quit');
  await d2.execute('quit');
  t.equal(await waitExit(src, 15_000), 0);
  t.equal(await waitExit(dst2, 15_000), 0);
  void raw;
});

t.test('quit during an attempt cancels it: the source ends at once, its guest never stopped', async (t) => {
  const dir = await tempDir(t);
  const dst = await startDestination(t, ['--ram', '32M', '--capabilities', 'return-path', '--quiet']);
  // 1 MiB/s for 32 MiB: half a minute, were quit to wait for it
  const src = await withMonitor(t, 'source', join(dir, 'src.qmp'), [
    '--ram',
    '32M',
    '--capabilities',
    'return-path',
    '--max-bandwidth',
    '1M',
    '--connect',
    dst.address,
    '--json',
    join(dir, 'src.json'),
  ]);
  const c = new QmpClient();
  t.teardown(() => c.close());
  await c.connect(`unix:${join(dir, 'src.qmp')}`);
  const active = await poll(
    { run: (cmd) => c.execute(cmd) as Promise<Json> },
    (info) => info.status === 'active',
    15_000,
  );
  t.equal(active.status, 'active', 'the attempt (from --connect) is under way');
  const asked = Date.now();
  await c.execute('quit');
  t.equal(await waitExit(src, 10_000), 0, 'quit: exit 0');
  const took = Date.now() - asked;
  t.ok(took < 5000, `the source ended ${took} ms after quit`);
  const report = await readJsonFile(join(dir, 'src.json'));
  t.equal(report?.status, 'cancelled', 'the attempt was cancelled, and reported');
  t.equal(report?.guest?.['running-after-failure'], true, 'its guest ran to the end');
});
