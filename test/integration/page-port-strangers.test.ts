/**
 * Anyone who can reach a source page-channel port may try it. During a plaintext and a TLS-PSK
 * migration, before the destination's page workers connect (they are held back 1.5 s by a test
 * hook), every page port gets: 56 junk bytes, an idle connection, a TLS handshake that cannot succeed
 * (a ClientHello at a plaintext port; a server with the wrong PSK at a TLS port), and a connection
 * from another loopback address (127.0.0.2). Each is dropped and reported (trace `mig:stranger`, a
 * rate-limited warning line); the migration completes verified; no message suggests the peer spoke
 * plaintext when it merely sent garbage.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import t from 'tap';
import { generatePsk } from '../../shared/tls/generate.js';
import { assertVerifiedMigration, runMigration, tempDir, waitStderrLine, withEnv } from '../helpers/pair.js';

t.setTimeout(120_000);

/** Opens every kind of stranger to `port`; returns their sockets (closed at teardown). */
function strangers(port: number, tlsPort: boolean, wrongPsk: Buffer): net.Socket[] {
  const out: net.Socket[] = [];
  const open = (opts: net.NetConnectOpts) => {
    const s = net.connect(opts);
    s.on('error', () => {});
    out.push(s);
    return s;
  };
  open({ host: '127.0.0.1', port }).on('connect', function (this: net.Socket) {
    this.write(randomBytes(56));
  });
  open({ host: '127.0.0.1', port }); // idle
  open({ host: '127.0.0.1', port, localAddress: '127.0.0.2' }).on('connect', function (this: net.Socket) {
    this.write(randomBytes(56));
  });
  const wrongTls = open({ host: '127.0.0.1', port });
  if (tlsPort) {
    // the source is the TLS client on its page port: play a TLS server with the wrong key
    const server = new tls.TLSSocket(wrongTls, {
      isServer: true,
      ciphers: 'PSK',
      pskCallback: () => wrongPsk,
    } as tls.TLSSocketOptions);
    server.on('error', () => {});
  } else {
    wrongTls.on('connect', () => {
      const c = tls.connect({ socket: wrongTls, rejectUnauthorized: false });
      c.on('error', () => {});
    });
  }
  return out;
}

for (const mode of ['plaintext', 'psk'] as const) {
  t.test(`${mode}: strangers on every page port are dropped; the migration completes verified`, async (t) => {
    t.setTimeout(90_000);
    const dir = await tempDir(t);
    const creds = mode === 'psk' ? ['--tls-psk', await generatePsk(join(dir, 'keys.psk'))] : [];
    withEnv(t, { SWITCHOVER_TEST_PAGE_CONNECT_DELAY_MS: '1500', SWITCHOVER_TRACE: '1' });
    const opened: net.Socket[] = [];
    t.teardown(() => {
      for (const s of opened) s.destroy();
    });
    const r = await runMigration(t, {
      ram: '64M',
      capabilities: 'return-path,multifd',
      source: [...creds, '--dirty-rate', '4M'],
      destination: creds,
      timeoutMs: 60_000,
      during: async ({ source }) => {
        const line = await waitStderrLine(source, (l) => l.includes('"mig:page-channels"'), 30_000);
        if (!line) return;
        const { ports } = JSON.parse(line) as { ports: number[] };
        for (const port of ports) opened.push(...strangers(port, mode === 'psk', randomBytes(32)));
      },
    });
    assertVerifiedMigration(t, r);
    const dropped = r.srcStderr.filter((l) => l.includes('"mig:stranger"')).map((l) => JSON.parse(l));
    t.ok(dropped.length >= 6, `strangers dropped and traced (${dropped.length})`);
    t.ok(
      dropped.some((d) => /not the destination's address/.test(d.reason)),
      'the connection from 127.0.0.2 is refused for its address',
    );
    const warnings = r.srcStderr.filter((l) => l.includes('warning: page port'));
    t.ok(warnings.length >= 1, `a warning line for the operator (${warnings[0]})`);
    t.ok(warnings.length <= 4, 'warnings are rate-limited');
    t.notOk(
      r.srcStderr.some((l) => /plaintext/i.test(l) && /page/i.test(l)),
      'no page-port message talks of plaintext',
    );
  });
}
