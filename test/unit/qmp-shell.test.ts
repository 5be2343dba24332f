/**
 * The QMP client (scripts/lib/qmp-client.ts) and shell (scripts/qmp-shell.ts) against a fake QMP
 * server on a unix socket that speaks QEMU's protocol: greeting, capabilities negotiation, replies
 * matched by id, an event after `migrate`, and the misbehaviours the client must bound.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import {
  MAX_LINE_BYTES,
  parseQmpAddress,
  parseShellCommand,
  QmpClient,
  type QmpClientError,
  QmpError,
  type QmpEvent,
} from '../../scripts/lib/qmp-client.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

t.setTimeout(10_000);

/** How the fake server misbehaves: `silent` never greets, `not-qmp` greets with something else. */
type ServerMode = 'normal' | 'silent' | 'not-qmp';

interface FakeConnection {
  /** Every line the client sent, in order. */
  received: string[];
  /** Bytes arrived before the greeting was sent (a client must wait for it). */
  spokeBeforeGreeting: boolean;
}

interface FakeQmpServer {
  path: string;
  connections: FakeConnection[];
  close(): Promise<void>;
}

const GREETING = {
  QMP: { version: { qemu: { micro: 0, minor: 2, major: 9 }, package: '' }, capabilities: ['oob'] },
};
const MIGRATION_EVENT = {
  event: 'MIGRATION',
  data: { status: 'active' },
  timestamp: { seconds: 1_796_585_165, microseconds: 42 },
};

async function startFakeQmp(path: string, mode: ServerMode = 'normal'): Promise<FakeQmpServer> {
  const connections: FakeConnection[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {}); // the client may cut the connection at any point
    const connection: FakeConnection = { received: [], spokeBeforeGreeting: false };
    connections.push(connection);
    const send = (message: unknown) => socket.write(`${JSON.stringify(message)}\r\n`);
    let greeted = false;
    let negotiated = false;
    // a short delay, so a client that talks first is caught doing it
    const greetTimer = setTimeout(() => {
      if (mode === 'silent') return;
      greeted = true;
      send(mode === 'not-qmp' ? { hello: 'SSH-2.0' } : GREETING);
    }, 30);
    socket.on('close', () => clearTimeout(greetTimer));

    const handle = (line: string) => {
      connection.received.push(line);
      const request = JSON.parse(line) as {
        execute: string;
        arguments?: Record<string, unknown>;
        id?: unknown;
      };
      const reply = (body: object) => send(request.id === undefined ? body : { ...body, id: request.id });
      if (!negotiated) {
        if (request.execute === 'qmp_capabilities') {
          negotiated = true;
          reply({ return: {} });
        } else {
          reply({
            error: {
              class: 'CommandNotFound',
              desc: "Expecting capabilities negotiation with 'qmp_capabilities'",
            },
          });
        }
        return;
      }
      switch (request.execute) {
        case 'query-status':
          reply({ return: { running: true, status: 'running' } });
          break;
        case 'echo':
          reply({ return: request.arguments ?? {} });
          break;
        case 'sleep': {
          const ms = Number(request.arguments?.ms);
          setTimeout(() => !socket.destroyed && reply({ return: { slept: ms } }), ms);
          break;
        }
        case 'never':
          break;
        case 'migrate':
          // reply and event in one write: the client must still deliver the event
          socket.write(
            `${JSON.stringify({ return: {}, id: request.id })}\r\n${JSON.stringify(MIGRATION_EVENT)}\r\n`,
          );
          break;
        case 'huge':
          socket.write(`{"return": "${'x'.repeat(MAX_LINE_BYTES + 10)}"}\r\n`);
          break;
        default:
          reply({
            error: { class: 'CommandNotFound', desc: `The command ${request.execute} has not been found` },
          });
      }
    };

    let buffered = '';
    socket.on('data', (chunk) => {
      if (!greeted) connection.spokeBeforeGreeting = true;
      buffered += chunk.toString('utf8');
      for (let newline = buffered.indexOf('\n'); newline >= 0; newline = buffered.indexOf('\n')) {
        const line = buffered.slice(0, newline).trim();
        buffered = buffered.slice(newline + 1);
        if (line) handle(line);
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  return {
    path,
    connections,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A temp dir with a fresh fake server in it; both are removed when the test ends. */
async function setUp(t: Test, mode: ServerMode = 'normal') {
  const dir = await mkdtemp(join(tmpdir(), 'qmp-test-'));
  const server = await startFakeQmp(join(dir, 'qmp.sock'), mode);
  t.teardown(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });
  return server;
}

/** A client that is closed when the test ends. */
function newClient(t: Test, options?: ConstructorParameters<typeof QmpClient>[0]): QmpClient {
  const client = new QmpClient(options);
  t.teardown(() => client.close());
  return client;
}

t.test('negotiates: waits for the greeting, then qmp_capabilities before anything else', async (t) => {
  const server = await setUp(t);
  const client = newClient(t);
  const greeting = await client.connect(`unix:${server.path}`);
  t.same(greeting, GREETING);
  t.ok(client.connected);
  t.same(await client.execute('query-status'), { running: true, status: 'running' });
  const [connection] = server.connections;
  t.notOk(connection!.spokeBeforeGreeting, 'nothing sent before the greeting');
  const sent = connection!.received.map((line) => JSON.parse(line));
  t.equal(sent[0].execute, 'qmp_capabilities', 'qmp_capabilities first');
  t.equal(sent[1].execute, 'query-status');
  t.not(sent[0].id, sent[1].id, 'every request has its own id');
});

t.test('a bare path is a unix socket too', async (t) => {
  const server = await setUp(t);
  const client = newClient(t);
  await client.connect(server.path);
  t.same(await client.execute('echo', { a: 1 }), { a: 1 });
});

t.test('replies are matched by id, not by order', async (t) => {
  const server = await setUp(t);
  const client = newClient(t);
  await client.connect(server.path);
  const finished: string[] = [];
  const slow = client.execute('sleep', { ms: 80 }).then((r) => {
    finished.push('sleep');
    return r;
  });
  const fast = client.execute('echo', { x: [1, 2] }).then((r) => {
    finished.push('echo');
    return r;
  });
  t.same(await Promise.all([slow, fast]), [{ slept: 80 }, { x: [1, 2] }]);
  t.same(finished, ['echo', 'sleep'], 'the later request was answered first');

  const own = await client.request({ execute: 'echo', arguments: { y: 2 }, id: 'mine' });
  t.same(
    own,
    { return: { y: 2 }, id: 'mine' },
    'a request keeps its own id; request() gives the whole reply',
  );
});

t.test('an error reply rejects with its class and desc; the connection stays usable', async (t) => {
  const server = await setUp(t);
  const client = newClient(t);
  await client.connect(server.path);
  const err = await client.execute('no-such-command', { a: 1 }).catch((e: unknown) => e);
  t.ok(err instanceof QmpError);
  t.match(err, {
    errorClass: 'CommandNotFound',
    desc: 'The command no-such-command has not been found',
    message: 'The command no-such-command has not been found',
    command: 'no-such-command',
  });
  t.same(await client.execute('echo'), {});
});

t.test('events are delivered, also when they come in the same chunk as a reply', async (t) => {
  const server = await setUp(t);
  const client = newClient(t);
  const events: QmpEvent[] = [];
  client.on('event', (event) => events.push(event));
  await client.connect(server.path);
  const waited = client.waitForEvent('MIGRATION', {
    timeoutMs: 2000,
    match: (data) => data.status === 'active',
  });
  t.same(await client.execute('migrate', { uri: 'tcp:127.0.0.1:4444' }), {});
  t.same(await waited, MIGRATION_EVENT);
  t.same(events, [MIGRATION_EVENT]);
  await t.rejects(client.waitForEvent('STOP', { timeoutMs: 50 }), {
    name: 'QmpClientError',
    kind: 'command-timeout',
  });
});

t.test('a server that never greets fails within the connect timeout', async (t) => {
  const server = await setUp(t, 'silent');
  const client = newClient(t);
  const started = performance.now();
  await t.rejects(client.connect(server.path, { timeoutMs: 200 }), {
    kind: 'timeout',
    message: 'no QMP greeting within 200 ms',
  });
  const elapsed = performance.now() - started;
  t.ok(elapsed >= 190 && elapsed < 2000, `gave up after ${elapsed.toFixed(0)} ms`);
  t.notOk(client.connected);
  t.same(server.connections[0]!.received, [], 'sent nothing');
});

t.test('a server that greets with something else is not QMP', async (t) => {
  const server = await setUp(t, 'not-qmp');
  const client = newClient(t);
  await t.rejects(client.connect(server.path, { timeoutMs: 2000 }), {
    name: 'QmpClientError',
    kind: 'greeting',
  });
});

t.test('no server at the address is a connect error', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'qmp-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const client = newClient(t);
  await t.rejects(client.connect(`unix:${join(dir, 'absent.sock')}`), {
    name: 'QmpClientError',
    kind: 'connect',
    message: /ENOENT/,
  });
});

t.test('a line over 1 MiB closes the connection with an error', async (t) => {
  const server = await setUp(t);
  const client = newClient(t);
  await client.connect(server.path);
  const closed = new Promise<QmpClientError | undefined>((resolve) => client.once('close', resolve));
  await t.rejects(client.execute('huge'), { name: 'QmpClientError', kind: 'line-too-long' });
  t.match(await closed, { kind: 'line-too-long' });
  t.notOk(client.connected);
  await t.rejects(client.execute('echo'), { name: 'QmpClientError', kind: 'closed' });
});

t.test('a command without a reply times out alone; the connection goes on', async (t) => {
  const server = await setUp(t);
  const client = newClient(t, { commandTimeoutMs: 2000 });
  await client.connect(server.path);
  await t.rejects(client.execute('never', undefined, { timeoutMs: 100 }), {
    kind: 'command-timeout',
    message: "no reply to 'never' within 100 ms",
  });
  t.same(await client.execute('echo', { ok: true }), { ok: true });
});

t.test('close() rejects what is pending', async (t) => {
  const server = await setUp(t);
  const client = newClient(t);
  await client.connect(server.path);
  const rejected = t.rejects(client.execute('never'), { name: 'QmpClientError', kind: 'closed' });
  await client.close();
  await rejected;
});

t.test('addresses', async (t) => {
  t.same(parseQmpAddress('unix:/tmp/src.qmp'), { kind: 'unix', path: '/tmp/src.qmp' });
  t.same(parseQmpAddress('/tmp/src.qmp'), { kind: 'unix', path: '/tmp/src.qmp' });
  t.same(parseQmpAddress('tcp:127.0.0.1:4444'), { kind: 'tcp', host: '127.0.0.1', port: 4444 });
  t.same(parseQmpAddress('tcp:[::1]:4444'), { kind: 'tcp', host: '::1', port: 4444 });
  for (const bad of ['tcp:host', 'tcp:host:0', 'tcp:host:70000', 'tcp::1:2', 'unix:', '']) {
    t.throws(() => parseQmpAddress(bad), { name: 'QmpClientError', kind: 'address' }, bad);
  }
});

t.test('qmp-shell line syntax', async (t) => {
  t.same(parseShellCommand('migrate uri=tcp:h:1 detach=true caps=[1,2]'), {
    execute: 'migrate',
    arguments: { uri: 'tcp:h:1', detach: true, caps: [1, 2] },
  });
  t.same(parseShellCommand('query-migrate'), { execute: 'query-migrate' }, 'no arguments member');
  t.same(parseShellCommand('  migrate-set-parameters downtime-limit=500   max-bandwidth=1048576 '), {
    execute: 'migrate-set-parameters',
    arguments: { 'downtime-limit': 500, 'max-bandwidth': 1048576 },
  });
  t.same(
    parseShellCommand('migrate-set-capabilities capabilities=[{"capability": "events", "state": true}]'),
    {
      execute: 'migrate-set-capabilities',
      arguments: { capabilities: [{ capability: 'events', state: true }] },
    },
    'a JSON value may contain blanks',
  );
  t.same(
    parseShellCommand(`x a=null b="two words" c='it is' d=1.5 e= f=True g=tcp:[::1]:4444`),
    {
      execute: 'x',
      arguments: { a: null, b: 'two words', c: 'it is', d: 1.5, e: '', f: 'True', g: 'tcp:[::1]:4444' },
    },
    'JSON when it parses, else a string',
  );
  t.same(
    parseShellCommand('x a.b=1 a.c=2'),
    { execute: 'x', arguments: { a: { b: 1, c: 2 } } },
    'dotted keys',
  );
  t.same(
    parseShellCommand('{"execute": "query-status", "id": 7}'),
    { execute: 'query-status', id: 7 },
    'raw',
  );
  t.equal(parseShellCommand(''), null, 'empty line');
  t.equal(parseShellCommand('   '), null, 'blank line');
  t.equal(parseShellCommand('# a comment'), null, 'comment');

  for (const bad of [
    'migrate =x',
    'migrate uri',
    'uri=x',
    'x a=1 a=2',
    'x a=1 a.b=2',
    'x caps=[1,2',
    'x caps=[1,}',
    'x s="open',
    'x n=9007199254740993',
    'x n=[1,{"a":1e400}]',
    '{"execute": "x", "arguments": {"n": 18446744073709551615}}',
    'x __proto__=1',
    '{"execute": ',
    '{',
  ]) {
    t.throws(() => parseShellCommand(bad), { name: 'QmpClientError', kind: 'syntax' }, bad);
  }
});

/** Runs the shell like `npm run qmp` does, stdin from a pipe; killed if it outlives the test. */
function runShell(t: Test, args: string[], input: string) {
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', 'scripts/qmp-shell.ts', ...args], {
    cwd: ROOT,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk) => {
    stdout += chunk;
  });
  child.stderr!.on('data', (chunk) => {
    stderr += chunk;
  });
  child.stdin!.on('error', () => {}); // it may exit before reading its input
  child.stdin!.end(input);
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
    child.on('close', (code) => resolve({ code, stdout, stderr })),
  );
}

t.test('the shell end to end', async (t) => {
  const server = await setUp(t);
  const [piped, stopped, usage, unreachable] = await Promise.all([
    runShell(t, [`unix:${server.path}`], 'query-status\nmigrate =x\n\nmigrate uri=tcp:127.0.0.1:4444\n'),
    runShell(t, ['-e', server.path], 'echo a=1\nbogus-command\nquery-status\n'),
    runShell(t, ['--bogus', server.path], ''),
    runShell(t, [join(server.path, '..', 'absent.sock')], 'query-status\n'),
  ]);

  t.equal(piped.code, 0, piped.stderr);
  t.equal(
    piped.stderr,
    "qmp: MIG_ERR_USAGE: line 2: expected KEY=VALUE, got '=x'\n",
    'a bad line is reported and skipped',
  );
  const status = JSON.stringify({ return: { running: true, status: 'running' } }, null, 2);
  const migrated = JSON.stringify({ return: {} }, null, 2);
  t.equal(
    piped.stdout,
    `${status}\n${migrated}\nevent MIGRATION {"status":"active"} @ 2026-12-06T19:26:05.000042Z\n`,
    'both replies pretty and without ids, then the event, in the order the server sent them',
  );
  t.notMatch(piped.stdout, /\(QEMU\)/, 'no prompt from a pipe');

  t.equal(stopped.code, 1, 'stops at the first error with -e');
  t.match(stopped.stdout, /"a": 1/);
  t.match(stopped.stdout, /"class": "CommandNotFound"/, 'the error reply is printed');
  t.notMatch(stopped.stdout, /running/, 'nothing after the error runs');

  t.equal(usage.code, 2);
  t.match(usage.stderr, /^qmp: MIG_ERR_USAGE: .*--bogus.*\n$/);

  t.equal(unreachable.code, 1);
  t.match(unreachable.stderr, /^qmp: cannot connect to \S+absent\.sock: no such socket \(ENOENT\)\n$/);
  t.equal(unreachable.stdout, '');
});
