/**
 * TLS credential loading (QEMU file names and keys.psk format), the option rules and the safe-default
 * listen policy. No sockets.
 */
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { isLoopback, parseCommon } from '../../shared/cli/args.js';
import { describeTls, keyFileWarning, loadTlsConfig, parsePskFile } from '../../shared/tls/config.js';
import { generatePsk, generateX509, haveOpenssl } from '../../shared/tls/generate.js';
import { destinationSecurity, sourceSecurity } from '../../shared/tls/policy.js';

const usage = { code: 'MIG_ERR_USAGE' };
const key32 = 'ab'.repeat(32);

t.test(
  'keys.psk: identity:hex-key lines, comments and blank lines skipped, first identity is the client',
  async (t) => {
    const r = parsePskFile(`# QEMU keys.psk\n\nalice:${key32}\nbob:${'cd'.repeat(16)}\r\n`);
    t.equal(r.identity, 'alice');
    t.same(Object.keys(r.keys), ['alice', 'bob']);
    t.equal(r.keys.bob, 'cd'.repeat(16));
    t.equal(parsePskFile(`x:${key32.toUpperCase()}`).keys.x, key32, 'hex is case-insensitive');
  },
);

t.test('keys.psk: malformed lines are usage errors naming the line', async (t) => {
  t.throws(() => parsePskFile(''), { ...usage, message: /no identity:hex-key line/ });
  t.throws(() => parsePskFile(`\nalice ${key32}`), {
    ...usage,
    message: /line 2: expected identity:hex-key/,
  });
  t.throws(() => parsePskFile(`:${key32}`), { ...usage, message: /line 1/ });
  t.throws(() => parsePskFile('alice:abc'), { ...usage, message: /even number of hex digits/ });
  t.throws(() => parsePskFile('alice:zz'.padEnd(40, 'z')), { ...usage, message: /hex/ });
  t.throws(() => parsePskFile(`alice:${'ab'.repeat(15)}`), { ...usage, message: /15 bytes \(16\.\.256/ });
  t.throws(() => parsePskFile(`a:${key32}\na:${key32}`), { ...usage, message: /appears twice/ });
  t.throws(() => parsePskFile(`${'i'.repeat(129)}:${key32}`), { ...usage, message: /longer than 128/ });
});

t.test(
  '--tls-creds and --tls-psk: exclusive; --tls-hostname only with x509; files checked per role',
  async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'swov-tlscfg-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const psk = await generatePsk(join(dir, 'keys.psk'));
    t.throws(() => loadTlsConfig({ tlsCreds: dir, tlsPsk: psk }, 'client'), {
      ...usage,
      message: /exclusive/,
    });
    t.throws(() => loadTlsConfig({ tlsPsk: psk, tlsHostname: 'h' }, 'client'), usage);
    t.equal(loadTlsConfig({}, 'server'), null, 'no option: plaintext');
    const p = loadTlsConfig({ tlsPsk: psk }, 'server');
    t.equal(p?.kind, 'psk');
    t.equal(keyFileWarning(p!), null, 'a mode-600 key file draws no warning');
    await chmod(psk, 0o644);
    t.match(keyFileWarning(p!), /readable by others/);
    t.throws(() => loadTlsConfig({ tlsPsk: join(dir, 'nope') }, 'client'), { ...usage, message: /ENOENT/ });
    t.throws(() => loadTlsConfig({ tlsCreds: join(dir, 'nope') }, 'client'), {
      ...usage,
      message: /not a directory/,
    });
    t.throws(() => loadTlsConfig({ tlsCreds: dir }, 'server'), {
      ...usage,
      message: /server-cert\.pem is missing/,
    });
    t.throws(() => loadTlsConfig({ tlsCreds: dir }, 'client'), {
      ...usage,
      message: /ca-cert\.pem is missing/,
    });
  },
);

t.test(
  'x509 directory: verify-peer follows ca-cert.pem on the destination; client cert optional',
  async (t) => {
    if (!(await haveOpenssl())) {
      t.comment('no openssl command: skipped');
      return;
    }
    const root = await mkdtemp(join(tmpdir(), 'swov-x509-'));
    t.teardown(() => rm(root, { recursive: true, force: true }));
    const full = await generateX509(join(root, 'full'));
    const server = loadTlsConfig({ tlsCreds: full }, 'server');
    t.same(server?.kind === 'x509' && [server.verifyPeer, !!server.ca, !!server.cert], [true, true, true]);
    t.match(describeTls(server, 'server'), /verify-peer/);
    const client = loadTlsConfig({ tlsCreds: full, tlsHostname: 'localhost' }, 'client');
    t.same(client?.kind === 'x509' && [!!client.cert, client.hostname], [true, 'localhost']);
    const bare = await generateX509(join(root, 'bare'), { client: false, ca: false });
    const s2 = loadTlsConfig({ tlsCreds: bare }, 'server');
    t.equal(s2?.kind === 'x509' && s2.verifyPeer, false, 'no ca-cert.pem: no verify-peer');
    t.match(
      destinationSecurity({ tlsCreds: bare, insecure: false }, '127.0.0.1').warnings.join(),
      /not authenticated/,
    );
    await rm(join(full, 'client-key.pem'));
    t.throws(() => loadTlsConfig({ tlsCreds: full }, 'client'), {
      ...usage,
      message: /both client-cert\.pem/,
    });
  },
);

t.test('safe defaults: plaintext listens on loopback only unless --insecure (with a warning)', async (t) => {
  for (const h of ['127.0.0.1', '127.1.2.3', '::1', 'localhost', '::ffff:127.0.0.1']) t.ok(isLoopback(h), h);
  for (const h of ['0.0.0.0', '::', '10.0.0.1', 'example.com', '128.0.0.1']) t.notOk(isLoopback(h), h);
  t.same(destinationSecurity({ insecure: false }, '127.0.0.1'), { tls: null, warnings: [] });
  t.throws(() => destinationSecurity({ insecure: false }, '0.0.0.0'), {
    ...usage,
    message: /refusing to listen on 0\.0\.0\.0 without TLS/,
  });
  t.match(destinationSecurity({ insecure: true }, '0.0.0.0').warnings[0], /WITHOUT TLS \(--insecure\)/);
  const dir = await mkdtemp(join(tmpdir(), 'swov-pol-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const psk = await generatePsk(join(dir, 'k.psk'));
  t.same(destinationSecurity({ tlsPsk: psk, insecure: false }, '0.0.0.0').warnings, [], 'TLS: any address');
  t.match(sourceSecurity({ insecure: false }, '10.0.0.2').warnings[0], /plaintext/);
  await writeFile(join(dir, 'empty.psk'), '# nothing\n');
  t.throws(() => sourceSecurity({ tlsPsk: join(dir, 'empty.psk'), insecure: false }, 'h'), usage);
});

t.test('CLI: the security options parse; --hello-timeout is bounded', async (t) => {
  const o = parseCommon(['--tls-psk', 'f', '--hello-timeout', '1.5s', '--insecure'], 'destination');
  t.same([o.tlsPsk, o.helloTimeoutMs, o.insecure], ['f', 1500, true]);
  t.same(
    [parseCommon([], 'destination').helloTimeoutMs, parseCommon([], 'destination').insecure],
    [5000, false],
    'defaults',
  );
  t.throws(() => parseCommon(['--hello-timeout', '0'], 'destination'), usage);
  t.throws(() => parseCommon(['--hello-timeout', 'soon'], 'destination'), usage);
});
