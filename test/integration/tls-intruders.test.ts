/**
 * Intruders at the right port while a real TLS-PSK migration runs (64 MiB at 16 MB/s: ~4 s of precopy):
 * a silent peer, a byte-a-second peer, a plaintext hello, a wrong PSK, an insider holding the PSK with
 * a foreign migration id, with the right id but a forged tag, as a second MAIN, and a byte-exact replay
 * of the real return path's TLS connection (recorded by a relay in front of the destination). Each is
 * refused and logged with its own reason; the real migration completes verified. Then a second source
 * while the migrated guest lingers: refused and logged, its own guest runs on.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { ChannelKind } from '../../shared/protocol/constants.js';
import { encodeHello } from '../../shared/protocol/hello.js';
import { ChannelBinding } from '../../shared/tls/binding.js';
import { loadTlsConfig } from '../../shared/tls/config.js';
import { generatePsk } from '../../shared/tls/generate.js';
import { secureClient } from '../../shared/tls/secure.js';
import {
  readJsonFile,
  runMigration,
  STACK_LINE,
  startDestination,
  startSide,
  tempDir,
  waitExit,
  waitProgress,
  waitStderrLine,
} from '../helpers/pair.js';

t.setTimeout(120_000);

const dir = await tempDir(t, 'switchover-intruders-');
const pskFile = await generatePsk(join(dir, 'keys.psk'));
const wrongPsk = loadTlsConfig({ tlsPsk: await generatePsk(join(dir, 'wrong.psk')) }, 'client')!;
const psk = loadTlsConfig({ tlsPsk: pskFile }, 'client')!;
const HELLO_MS = 1500;

/** Forwards every connection to the destination and records what the source sent on each. */
async function recordingRelay(target: { host: string; port: number }) {
  const up: Buffer[][] = [];
  const sockets: net.Socket[] = [];
  const server = net.createServer((client) => {
    const rec: Buffer[] = [];
    up.push(rec);
    const upstream = net.connect(target);
    sockets.push(client, upstream);
    for (const s of [client, upstream]) s.on('error', () => {});
    client.on('data', (d: Buffer) => rec.push(Buffer.from(d)));
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    server.close();
    for (const s of sockets) s.destroy();
  });
  return { address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`, up };
}

/** Sends bytes (optionally one per `gapMs`), reads until the peer closes; ms until closed. */
function poke(address: string, bytes: Buffer, gapMs = 0): Promise<number> {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.split(':').pop())];
  return new Promise((resolve) => {
    const started = Date.now();
    const s = net.connect({ host, port });
    s.on('error', () => {});
    s.resume();
    let i = 0;
    const timer = gapMs
      ? setInterval(() => i < bytes.length && !s.destroyed && s.write(bytes.subarray(i, ++i)), gapMs)
      : null;
    if (!gapMs && bytes.length) s.write(bytes);
    else if (gapMs) s.write(bytes.subarray(0, ++i));
    s.on('close', () => {
      if (timer) clearInterval(timer);
      resolve(Date.now() - started);
    });
  });
}

/** An insider: a TLS session with the right PSK, then one hello; resolves when the peer closes. */
async function insider(port: number, hello: (s: net.Socket) => Buffer): Promise<void> {
  const s = await secureClient({ host: '127.0.0.1', port }, psk, { host: '127.0.0.1', timeoutMs: 3000 });
  s.on('error', () => {});
  s.resume();
  const closed = new Promise((r) => s.on('close', r));
  s.write(hello(s));
  await closed;
}

t.test('intruders mid-migration are refused; the real migration completes verified', async (t) => {
  const tlsArgs = ['--tls-psk', pskFile];
  const timings: Record<string, number> = {};
  let relay: Awaited<ReturnType<typeof recordingRelay>> | null = null;
  const r = await runMigration(t, {
    ram: '64M',
    destination: [...tlsArgs, '--hello-timeout', String(HELLO_MS)],
    source: [...tlsArgs, '--max-bandwidth', '16M', '--dirty-rate', '4M'],
    timeoutMs: 60_000,
    connectVia: async (d) => {
      relay = await recordingRelay({ host: d.host, port: d.port });
      return relay.address;
    },
    during: async ({ source, destination }) => {
      t.ok(await waitProgress(source, 20_000), 'the migration is under way');
      const line = await waitStderrLine(destination, (l) => / migration [0-9a-f]{32} from /.test(l), 5000);
      const id = Buffer.from(/ migration ([0-9a-f]{32}) /.exec(line ?? '')?.[1] ?? '00'.repeat(16), 'hex');
      const port = destination.port;
      const addr = destination.address;
      const rp =
        (tag: (s: net.Socket) => Buffer, migrationId = id) =>
        (s: net.Socket) =>
          encodeHello({ kind: ChannelKind.RETURN_PATH, migrationId, authTag: tag(s) });
      const [silent, trickle] = await Promise.all([
        poke(addr, Buffer.alloc(0)),
        poke(addr, Buffer.from([0x16, 0x03, 0x01, 0x00, 0xc8, 0x01]), 1000), // a byte a second
        poke(addr, encodeHello({ kind: ChannelKind.MAIN, migrationId: randomBytes(16) })),
        secureClient({ host: '127.0.0.1', port }, wrongPsk, { host: '127.0.0.1', timeoutMs: 3000 }).catch(
          () => null,
        ),
      ]);
      timings.silent = silent;
      timings.trickle = trickle;
      await insider(
        port,
        rp(() => randomBytes(32), randomBytes(16)),
      ); // foreign migration id
      const own = new ChannelBinding();
      own.key = randomBytes(32);
      await insider(
        port,
        rp((s) => own.tag(s, { kind: ChannelKind.RETURN_PATH, migrationId: id })),
      ); // forged tag
      await insider(port, (s) => {
        const fields = { kind: ChannelKind.MAIN, migrationId: id };
        return encodeHello({ ...fields, authTag: new ChannelBinding().mainTag(s, fields) });
      }); // a second MAIN, valid for its own session
      // byte-exact replay of the real return path's TLS connection (what the relay recorded on it)
      const recorded = Buffer.concat(relay!.up[1] ?? []);
      timings.replayBytes = recorded.length;
      await poke(addr, recorded);
      timings.sourceStillRunning = source.child.exitCode === null ? 1 : 0;
    },
  });
  const refusals = r.dstStderr.filter((l) => / refused 127\.0\.0\.1:\d+: /.test(l));
  const diag = { dst: r.dstStderr, src: r.srcStderr.filter((l) => !l.startsWith('progress ')) };
  // a replayed TLS 1.2 handshake fails where a wrong key does (the Finished does not decrypt): one reason
  const badKey =
    /MIG_ERR_AUTH: TLS handshake failed: wrong PSK: .*, or the handshake was replayed or tampered with/;
  const expect: [string, RegExp, number][] = [
    ['silent peer', /MIG_ERR_TIMEOUT: first byte from .* no complete hello within 1500 ms/, 1],
    ['a byte a second', /MIG_ERR_TIMEOUT: TLS handshake not done within/, 1],
    ['plaintext hello', /MIG_ERR_AUTH: this destination requires TLS but the peer sent a plaintext hello/, 1],
    ['wrong PSK, and the replayed return-path connection', badKey, 2],
    ['foreign migration id', /MIG_ERR_REFUSED: return path for an unknown migration/, 1],
    ['forged tag', /MIG_ERR_AUTH: return path hello is not bound to this migration's main channel/, 1],
    ['second MAIN', /MIG_ERR_REFUSED: a migration is already in progress or done/, 1],
  ];
  for (const [name, re, n] of expect)
    t.equal(refusals.filter((l) => re.test(l)).length, n, `${name}: refused and logged`, diag);
  t.equal(refusals.length, 8, 'no other refusal', diag);
  t.ok(timings.silent! < HELLO_MS + 700, `silent peer cut off after ${timings.silent} ms`);
  t.ok(timings.trickle! < HELLO_MS + 700, `byte-a-second peer cut off after ${timings.trickle} ms`);
  t.ok(timings.replayBytes! > 56, `the replay carried ${timings.replayBytes} recorded bytes`);
  t.same(
    r.dstStderr.filter((l) => STACK_LINE.test(l)),
    [],
    'no stack trace',
  );
  t.equal(r.srcCode, 0, 'source exits 0', diag);
  t.equal(r.dstCode, 0, 'destination exits 0', diag);
  t.equal(r.srcReport?.integrity?.match, true, 'integrity.match');
  t.equal(r.srcReport?.guest?.['self-check']?.ok, true, 'self-check ok');
  t.equal(r.dumpsEqual, true, 'RAM dumps byte-identical');
  t.equal(timings.sourceStillRunning, 1, 'every intruder came and went while the migration ran');
});

t.test(
  'a second source while the migrated guest lingers is refused and logged; its guest runs on',
  async (t) => {
    const work = await tempDir(t);
    const tlsArgs = ['--tls-psk', pskFile];
    const dst = await startDestination(t, [
      '--ram',
      '32M',
      '--capabilities',
      'return-path',
      '--quiet',
      // Long enough for a second tsx process to start on a loaded 2-core CI runner (4 s was not).
      '--linger',
      '15000',
      ...tlsArgs,
    ]);
    const first = startSide(t, 'source', [
      '--connect',
      dst.address,
      '--ram',
      '32M',
      '--capabilities',
      'return-path',
      '--quiet',
      ...tlsArgs,
    ]);
    t.equal(await waitExit(first, 30_000), 0, 'the first migration completes', { dst: dst.stderrLines });
    const json = join(work, 'second.json');
    const second = startSide(t, 'source', [
      '--connect',
      dst.address,
      '--ram',
      '32M',
      '--capabilities',
      'return-path',
      '--json',
      json,
      '--quiet',
      ...tlsArgs,
    ]);
    t.equal(await waitExit(second, 20_000), 1, 'the second source fails');
    const report = await readJsonFile(json);
    t.match(report?.['error-desc'], /MIG_ERR_REFUSED: a migration is already in progress or done/);
    t.equal(report?.guest?.['running-after-failure'], true, "second source: guest['running-after-failure']");
    t.ok(
      await waitStderrLine(
        dst,
        (l) => /refused .*MIG_ERR_REFUSED: a migration is already in progress or done/.test(l),
        3000,
      ),
      'the destination logged it',
    );
    t.equal(await waitExit(dst, 25_000), 0, 'the destination, lingering, still exits 0');
  },
);
