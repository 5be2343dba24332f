/**
 * connectChannel is cancellable in every stage: a destination that accepts the TCP connection and
 * never answers the main hello (the ACCEPT wait), and a TLS peer that never finishes the handshake.
 * The cancel's reason comes out at once and the socket is closed, rather than the channel lingering
 * until its connect deadline (what a long-lived source driving several attempts cannot afford).
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { ErrorCode, MigrationError } from '../../shared/errors.js';
import { ChannelKind } from '../../shared/protocol/constants.js';
import { loadTlsConfig } from '../../shared/tls/config.js';
import { generatePsk } from '../../shared/tls/generate.js';
import { connectChannel } from '../../source/channel.js';

/** A server that accepts and reads but never writes; resolves each connection's close time. */
async function silentServer() {
  const closed: Promise<number>[] = [];
  const server = net.createServer((s) => {
    s.resume();
    closed.push(new Promise((r) => s.once('close', () => r(Date.now()))));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  return { port: (server.address() as net.AddressInfo).port, closed };
}

const cancelled = () => new MigrationError(ErrorCode.CANCELLED, 'cancelled by the test');

for (const mode of ['plain', 'tls'] as const) {
  t.test(`a cancel ends the ${mode === 'plain' ? 'ACCEPT wait' : 'TLS handshake'} at once`, async (t) => {
    const { port, closed } = await silentServer();
    let tls = null;
    if (mode === 'tls') {
      const root = await mkdtemp(join(tmpdir(), 'swov-cancel-'));
      t.teardown(() => rm(root, { recursive: true, force: true }));
      tls = loadTlsConfig({ tlsPsk: await generatePsk(join(root, 'keys.psk')) }, 'client');
    }
    const ac = new AbortController();
    const started = Date.now();
    const pending = connectChannel(
      {
        host: '127.0.0.1',
        port,
        migrationId: randomBytes(16),
        connectTimeoutMs: 20_000,
        tls,
        signal: ac.signal,
      },
      ChannelKind.MAIN,
      'main',
    );
    setTimeout(() => ac.abort(cancelled()), 300);
    const err = await pending.then(
      () => null,
      (e: unknown) => e,
    );
    const took = Date.now() - started;
    t.ok(err instanceof MigrationError, 'rejects with a MigrationError');
    t.equal((err as MigrationError).code, ErrorCode.CANCELLED, 'with the cancel reason');
    t.ok(took < 1500, `within a second of the cancel (took ${took} ms)`);
    t.equal(closed.length, 1, 'one connection was made');
    const closedAt = await Promise.race([
      closed[0],
      new Promise<number>((r) => setTimeout(() => r(-1), 2000)),
    ]);
    t.ok(closedAt > 0, 'and the server saw it closed');
  });
}

t.test('an aborted signal refuses before connecting', async (t) => {
  const { port, closed } = await silentServer();
  const ac = new AbortController();
  ac.abort(cancelled());
  await t.rejects(
    connectChannel(
      { host: '127.0.0.1', port, migrationId: randomBytes(16), connectTimeoutMs: 5000, signal: ac.signal },
      ChannelKind.MAIN,
      'main',
    ),
    { code: ErrorCode.CANCELLED },
  );
  t.equal(closed.length, 0, 'no connection was made');
});
