/**
 * TLS between real processes (destination and source started with scripts/lib/spawn-side.ts through
 * test/helpers/pair.ts, 32 MiB guests, return path on): x509 with and without client certificates and
 * TLS-PSK complete with the guest verified; wrong CA, wrong PSK, expired certificate, missing client
 * certificate and each plaintext/TLS mix-up fail fast with one clear line on both sides while the
 * source guest runs on. A refused source never spoils the destination for the right one.
 */
import { copyFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { generatePsk, generateX509, haveOpenssl } from '../../shared/tls/generate.js';
import {
  assertNoErrorLine,
  assertOneLineError,
  readJsonFile,
  runMigration,
  STACK_LINE,
  startDestination,
  startSide,
  tempDir,
  waitExit,
  waitStderrLine,
} from '../helpers/pair.js';

t.setTimeout(180_000);

const dir = await tempDir(t, 'switchover-tls-it-');
const openssl = await haveOpenssl();
const x509 = openssl ? await generateX509(join(dir, 'x509')) : '';
const other = openssl ? await generateX509(join(dir, 'other-ca'), { caName: 'some other CA' }) : '';
const expired = openssl ? await generateX509(join(dir, 'expired'), { expiredServer: true }) : '';
/** QEMU-style split: the destination has only its certificate and key (no verify-peer), the source only the CA. */
const noClientDst = join(dir, 'no-client-dst');
const caOnlySrc = join(dir, 'ca-only-src');
/** A source that trusts x509's CA but has no client certificate. */
const x509CaOnly = join(dir, 'x509-ca-only');
if (openssl) {
  await split(x509, x509CaOnly, ['ca-cert.pem']);
  const full = await generateX509(join(dir, 'no-client'), { client: false });
  await split(full, noClientDst, ['server-cert.pem', 'server-key.pem']);
  await split(full, caOnlySrc, ['ca-cert.pem']);
}
const psk = await generatePsk(join(dir, 'keys.psk'));
const wrongPsk = await generatePsk(join(dir, 'wrong.psk'));
const nonProgress = (lines: string[]) => lines.filter((l) => !l.startsWith('progress '));

async function completes(
  t: Test,
  dstArgs: string[],
  srcArgs: string[],
  transport: RegExp,
): Promise<string[]> {
  const r = await runMigration(t, { ram: '32M', destination: dstArgs, source: srcArgs, timeoutMs: 40_000 });
  const diag = { src: nonProgress(r.srcStderr), dst: r.dstStderr };
  t.equal(r.srcCode, 0, 'source exits 0', diag);
  t.equal(r.dstCode, 0, 'destination exits 0', diag);
  t.equal(r.srcReport?.status, 'completed', 'completed');
  t.equal(r.srcReport?.integrity?.match, true, 'integrity.match');
  t.equal(r.srcReport?.guest?.['self-check']?.ok, true, 'the migrated guest checked itself clean');
  t.equal(r.dumpsEqual, true, 'RAM dumps byte-identical');
  t.ok(
    r.dstStderr.some(
      (l) => /^switchover-destination: migration [0-9a-f]{32} from /.test(l) && transport.test(l),
    ),
    `the destination logged the migration over ${transport}`,
    diag,
  );
  assertNoErrorLine(t, r.srcStderr);
  assertNoErrorLine(t, r.dstStderr);
  t.comment(
    `wall ${r.elapsedMs} ms, total-time ${r.srcReport?.['total-time']} ms, mbps ${r.srcReport?.ram?.mbps}`,
  );
  return r.dstStderr;
}

t.test('x509 with client certificates (verify-peer) completes verified', async (t) => {
  if (!openssl) return void t.comment('no openssl: skipped');
  await completes(t, ['--tls-creds', x509], ['--tls-creds', x509], /TLSv1\.3 .*peer CN=switchover-client/);
});

t.test('x509 without client certificates completes verified (and warns on the destination)', async (t) => {
  if (!openssl) return void t.comment('no openssl: skipped');
  const dst = await completes(
    t,
    ['--tls-creds', noClientDst],
    ['--tls-creds', caOnlySrc],
    /TLSv1\.3 [^,]*\)$/,
  );
  t.ok(
    dst.some((l) =>
      /^switchover-destination: warning: x509 without ca-cert\.pem .*not authenticated/.test(l),
    ),
    'the destination warned that the source is not authenticated',
  );
});

t.test('TLS-PSK completes verified', async (t) => {
  await completes(t, ['--tls-psk', psk], ['--tls-psk', psk], /TLSv1\.2 ECDHE-PSK-/);
});

interface Failure {
  dst: string[];
  src: string[];
  /** The source's one error line. */
  srcLine: RegExp;
  /** The destination's refusal line(s). */
  dstLine: RegExp;
}

/** Runs a source that must be refused; returns the destination (still listening) for more. */
async function refused(t: Test, f: Failure) {
  const work = await tempDir(t);
  const json = join(work, 'source.json');
  const dst = await startDestination(t, [
    '--ram',
    '32M',
    '--capabilities',
    'return-path',
    '--quiet',
    ...f.dst,
  ]);
  const started = Date.now();
  const src = startSide(t, 'source', [
    '--connect',
    dst.address,
    ...['--ram', '32M', '--capabilities', 'return-path', '--json', json, ...f.src],
  ]);
  const code = await waitExit(src, 20_000);
  const wall = Date.now() - started;
  const report = await readJsonFile(json);
  const refusal = await waitStderrLine(dst, (l) => l.includes(': refused '), 5000);
  const diag = { src: nonProgress(src.stderrLines), dst: dst.stderrLines };
  t.equal(code, 1, 'source exits 1', diag);
  assertOneLineError(t, src.stderrLines, f.srcLine);
  t.equal(report?.status, 'failed', 'source report: failed');
  t.ok(
    report?.['total-time'] < 5000,
    `failed fast: total-time ${report?.['total-time']} ms (wall ${wall} ms)`,
  );
  t.equal(report?.guest?.['running-after-failure'], true, "guest['running-after-failure']");
  t.match(refusal, f.dstLine, 'the destination logged one clear refusal', diag);
  t.same(
    dst.stderrLines.filter((l) => STACK_LINE.test(l)),
    [],
    'no stack trace on the destination',
  );
  t.equal(dst.child.exitCode, null, 'the destination keeps waiting for a real source');
  return dst;
}

t.test('wrong CA: the source names the unknown CA; the destination sees it walk away', async (t) => {
  if (!openssl) return void t.comment('no openssl: skipped');
  const dst = await refused(t, {
    dst: ['--tls-creds', x509],
    src: ['--tls-creds', other],
    srcLine:
      /^switchover-source: MIG_ERR_AUTH: main channel .*TLS handshake failed: the destination's certificate: unknown CA/,
    dstLine:
      /refused 127\.0\.0\.1:\d+: MIG_ERR_AUTH: .*(closed the connection during the handshake|without a hello)/,
  });
  dst.kill();
});

t.test('expired server certificate and missing client certificate are named', async (t) => {
  if (!openssl) return void t.comment('no openssl: skipped');
  (
    await refused(t, {
      dst: ['--tls-creds', expired],
      src: ['--tls-creds', expired],
      srcLine: /MIG_ERR_AUTH: .*expired certificate \(CERT_HAS_EXPIRED\)/,
      dstLine: /MIG_ERR_AUTH/,
    })
  ).kill();
  (
    await refused(t, {
      dst: ['--tls-creds', x509],
      src: ['--tls-creds', x509CaOnly],
      srcLine:
        /MIG_ERR_AUTH: 127\.0\.0\.1:\d+ refused the migration: MIG_ERR_AUTH: the source presented no client certificate/,
      dstLine: /MIG_ERR_AUTH: the source presented no client certificate/,
    })
  ).kill();
});

t.test(
  'wrong PSK is named on both sides; the right source then migrates into the same destination',
  async (t) => {
    const dst = await refused(t, {
      dst: ['--tls-psk', psk, '--json', join(dir, 'after-wrong-psk.json')],
      src: ['--tls-psk', wrongPsk],
      srcLine: /^switchover-source: MIG_ERR_AUTH: .*wrong PSK: the key for identity 'switchover' differs/,
      dstLine: /MIG_ERR_AUTH: TLS handshake failed: wrong PSK/,
    });
    const src = startSide(t, 'source', [
      '--connect',
      dst.address,
      '--ram',
      '32M',
      '--capabilities',
      'return-path',
      '--tls-psk',
      psk,
      '--quiet',
    ]);
    t.equal(await waitExit(src, 30_000), 0, 'the right source completes', { src: src.stderrLines });
    t.equal(await waitExit(dst, 10_000), 0, 'destination exits 0');
    t.equal(
      (await readJsonFile(join(dir, 'after-wrong-psk.json')))?.guest?.['self-check']?.ok,
      true,
      'guest verified',
    );
  },
);

t.test('plaintext source to a TLS destination: MIG_ERR_AUTH on both sides', async (t) => {
  (
    await refused(t, {
      dst: ['--tls-psk', psk],
      src: [],
      srcLine:
        /^switchover-source: MIG_ERR_AUTH: 127\.0\.0\.1:\d+ refused the migration: MIG_ERR_AUTH: this destination requires TLS but the peer sent a plaintext hello/,
      dstLine: /MIG_ERR_AUTH: this destination requires TLS but the peer sent a plaintext hello/,
    })
  ).kill();
});

t.test('TLS source to a plaintext destination: recognised on both sides', async (t) => {
  (
    await refused(t, {
      dst: [],
      src: ['--tls-psk', psk],
      srcLine:
        /^switchover-source: MIG_ERR_AUTH: .*no TLS on the other side: the destination answered in plaintext/,
      dstLine: /MIG_ERR_BAD_HELLO: a TLS ClientHello arrived but this destination has no TLS/,
    })
  ).kill();
});

t.test('plaintext on a non-loopback address needs --insecure: exit 2 with one line', async (t) => {
  const side = startSide(t, 'destination', ['--listen', '0.0.0.0:0', '--quiet']);
  t.equal(await waitExit(side, 15_000), 2, 'exit 2');
  t.match(
    side.stderrLines[0],
    /^switchover-destination: MIG_ERR_USAGE: refusing to listen on 0\.0\.0\.0 without TLS/,
  );
  const ok = await startDestination(t, ['--quiet', '--insecure'], {}).catch((e) => e as Error);
  t.notOk(ok instanceof Error, 'loopback with --insecure is fine too');
  const warned = startSide(t, 'destination', ['--listen', '0.0.0.0:0', '--insecure', '--quiet']);
  t.match(
    await waitStderrLine(warned, () => true, 15_000),
    /warning: listening on 0\.0\.0\.0 WITHOUT TLS \(--insecure\)/,
  );
  warned.kill();
});

async function split(from: string, to: string, files: string[]): Promise<void> {
  await mkdir(to, { recursive: true });
  for (const f of files) await copyFile(join(from, f), join(to, f));
}
