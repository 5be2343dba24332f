/**
 * The QMP server over real sockets (unix in a temp dir, tcp on 127.0.0.1:0) with raw clients: the
 * bytes QEMU would send, in the order it would send them.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { ErrorCode, ParameterError } from '../../shared/errors.js';
import { QmpError } from '../../shared/qmp/errors.js';
import {
  parseQmpAddress,
  type QmpCommand,
  QmpServer,
  type QmpServerOptions,
} from '../../shared/qmp/server.js';

// biome-ignore lint/suspicious/noExplicitAny: replies are JSON of many shapes
type Json = any;

class Conn {
  readonly socket: net.Socket;
  #buf = '';
  #lines: string[] = [];
  #waiting: ((l: string | null) => void) | null = null;
  ended = false;
  badNewline = false;

  constructor(address: string) {
    const a = parseQmpAddress(address);
    this.socket =
      a.kind === 'unix' ? net.connect({ path: a.path }) : net.connect({ host: a.host, port: a.port });
    this.socket.setEncoding('utf8');
    this.socket.on('data', (d: string) => {
      this.#buf += d;
      const parts = this.#buf.split('\r\n');
      this.#buf = parts.pop()!;
      for (const p of parts) {
        if (p.includes('\n') || p === '') this.badNewline = true;
        this.#push(p);
      }
    });
    this.socket.on('error', () => {});
    this.socket.on('close', () => {
      this.ended = true;
      this.#waiting?.(null);
      this.#waiting = null;
    });
  }

  #push(line: string | null): void {
    if (this.#waiting) {
      const w = this.#waiting;
      this.#waiting = null;
      w(line);
    } else if (line !== null) this.#lines.push(line);
  }

  /** The next line (without CRLF), or null when the server closed; rejects after `ms`. */
  line(ms = 2000): Promise<string | null> {
    const queued = this.#lines.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.ended) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting = null;
        reject(new Error('no line from the server'));
      }, ms);
      this.#waiting = (l) => {
        clearTimeout(timer);
        resolve(l);
      };
    });
  }

  async json(): Promise<Json> {
    const l = await this.line();
    if (l === null) throw new Error('server closed the connection');
    return JSON.parse(l);
  }

  /** Nothing arrives within `ms`. */
  async quiet(ms = 150): Promise<boolean> {
    if (this.#lines.length > 0) return false;
    return this.line(ms).then(
      (l) => {
        if (l !== null) this.#lines.unshift(l);
        return false;
      },
      () => true,
    );
  }

  send(s: string | Buffer): void {
    this.socket.write(s);
  }

  async ready(): Promise<Json> {
    return this.json(); // the greeting
  }

  async negotiate(): Promise<void> {
    await this.ready();
    this.send('{"execute": "qmp_capabilities"}');
    const r = await this.json();
    if (JSON.stringify(r) !== '{"return":{}}') throw new Error(`negotiation failed: ${JSON.stringify(r)}`);
  }

  close(): void {
    this.socket.destroy();
  }
}

const VERSION = { major: 8, minor: 1, micro: 0 };
const GREETING =
  '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 1, "major": 8}, "package": "test pkg"}, "capabilities": []}}';

const COMMANDS: Record<string, QmpCommand> = {
  'migrate-set-capabilities': {
    args: {
      capabilities: {
        type: 'array',
        items: {
          type: 'object',
          fields: { capability: { type: 'enum', values: ['events', 'xbzrle'] }, state: { type: 'bool' } },
        },
      },
    },
    run: () => undefined,
  },
  'set-params': {
    args: {
      'cpu-throttle-initial': { type: 'uint8', optional: true },
      'downtime-limit': { type: 'uint64', optional: true },
      'x-limit': { type: 'uint32', optional: true },
    },
    run: (args) => ({ got: args }),
  },
  echo: { args: { value: { type: 'any' } }, run: (args) => args.value },
  fail: { run: () => Promise.reject(new Error('it broke')) },
  'no-device': {
    run: () => {
      throw new QmpError('DeviceNotFound', "Device 'x' not found");
    },
  },
  'big-reply': { run: () => ({ blob: 'x'.repeat(4 << 20) }) },
};

async function setup(
  t: Test,
  extra: Partial<QmpServerOptions> = {},
): Promise<{
  server: QmpServer;
  unix: string;
  tcp: string;
  logs: string[];
  open: (address: string) => Conn;
}> {
  t.setTimeout(5000);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmp-test-'));
  const logs: string[] = [];
  const server = new QmpServer({
    version: VERSION,
    package: 'test pkg',
    commands: COMMANDS,
    log: (l) => logs.push(l),
    ...extra,
  });
  const conns: Conn[] = [];
  t.teardown(async () => {
    for (const c of conns) c.close();
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const unix = await server.listen({ kind: 'unix', path: path.join(dir, 'qmp.sock') });
  const tcp = await server.listen({ kind: 'tcp', host: '127.0.0.1', port: 0 });
  const open = (address: string) => {
    const c = new Conn(address);
    conns.push(c);
    return c;
  };
  return { server, unix, tcp, logs, open };
}

t.test('greeting, negotiation and the errors around it, exact bytes', async (t) => {
  const { unix, tcp, open } = await setup(t);
  t.match(unix, /^unix:.*qmp\.sock$/);
  t.match(tcp, /^tcp:127\.0\.0\.1:\d+$/);
  t.not(tcp, 'tcp:127.0.0.1:0', 'the bound port');
  for (const address of [unix, tcp]) {
    const c = open(address);
    const greeting = await c.line();
    t.equal(greeting, GREETING, `${address}: greeting as QEMU writes it`);
    // the checks QEMU's Python qemu.qmp makes of it
    const g = JSON.parse(greeting!);
    t.same(Object.keys(g), ['QMP']);
    t.same(Object.keys(g.QMP).sort(), ['capabilities', 'version']);
    t.same(Object.keys(g.QMP.version).sort(), ['package', 'qemu']);
    t.ok(['major', 'minor', 'micro'].every((k) => Number.isInteger(g.QMP.version.qemu[k])));
    t.ok(Array.isArray(g.QMP.capabilities));

    c.send('{"execute": "query-commands", "id": 1}');
    t.equal(
      await c.line(),
      `{"id": 1, "error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}`,
    );
    c.send('{"execute": "no-such-command"}');
    t.same(await c.json(), {
      error: { class: 'CommandNotFound', desc: "Expecting capabilities negotiation with 'qmp_capabilities'" },
    });
    c.send('{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}');
    t.same(await c.json(), { error: { class: 'GenericError', desc: 'Capability oob not available' } });
    c.send('{"execute": "qmp_capabilities", "arguments": {"enable": ["bogus"]}}');
    t.same(await c.json(), {
      error: { class: 'GenericError', desc: "Parameter 'null' does not accept value 'bogus'" },
    });
    c.send('{"execute": "qmp_capabilities"}');
    t.equal(await c.line(), '{"return": {}}', 'negotiated, no arguments');
    c.send('{"execute": "qmp_capabilities", "id": "again"}');
    t.equal(
      await c.line(),
      '{"id": "again", "error": {"class": "CommandNotFound", "desc": "Capabilities negotiation is already complete, command ignored"}}',
    );
    c.send('{"execute": "nope"}');
    t.same(await c.json(), {
      error: { class: 'CommandNotFound', desc: 'The command nope has not been found' },
    });
    c.send('{"execute": "query-commands"}');
    const names = (await c.json()).return.map((x: { name: string }) => x.name);
    t.same([...names].sort(), ['qmp_capabilities', 'query-commands', ...Object.keys(COMMANDS)].sort());
    t.notOk(c.badNewline, 'every line ends in CRLF, none is empty');
  }
});

t.test('a JSON stream: concatenated, split, and ids of any type', async (t) => {
  const { unix, open } = await setup(t);
  const c = open(unix);
  await c.negotiate();
  // what the npm client qemu-qmp writes: JSON.stringify(cmd), no separator
  c.send(
    [
      JSON.stringify({ execute: 'echo', arguments: { value: 1 }, id: 1 }),
      JSON.stringify({ execute: 'echo', arguments: { value: 'two' }, id: 'b' }),
      JSON.stringify({ execute: 'echo', arguments: { value: [3] }, id: { tag: [1, 2] } }),
    ].join(''),
  );
  t.equal(await c.line(), '{"return": 1, "id": 1}');
  t.equal(await c.line(), '{"return": "two", "id": "b"}');
  t.equal(await c.line(), '{"return": [3], "id": {"tag": [1, 2]}}');

  const req = '{"execute": "echo", "arguments": {"value": {"k": "v"}}, "id": 18446744073709551615}';
  c.send(req.slice(0, 7));
  await new Promise((r) => setTimeout(r, 20));
  c.send(req.slice(7, 40));
  await new Promise((r) => setTimeout(r, 20));
  t.ok(await c.quiet(50), 'no reply to half a request');
  c.send(`${req.slice(40)}\n\n  `);
  t.equal(
    await c.line(),
    '{"return": {"k": "v"}, "id": 18446744073709551615}',
    'split over 3 writes; uint64 id exact',
  );
  c.send('{"execute": "echo", "arguments": {"value": 1.0}, "id": null}');
  t.equal(await c.line(), '{"return": 1, "id": null}');
  c.send("{'execute': 'echo', 'arguments': {'value': 'single quotes'}}");
  t.same(await c.json(), { return: 'single quotes' }, "QEMU's single-quoted strings");
});

t.test('malformed requests: qmp-dispatch.c texts, id echoed when readable', async (t) => {
  const { tcp, open } = await setup(t);
  const c = open(tcp);
  await c.negotiate();
  const cases: [string, Json][] = [
    ['[1, 2]', { error: { class: 'GenericError', desc: 'QMP input must be a JSON object' } }],
    ['"str"', { error: { class: 'GenericError', desc: 'QMP input must be a JSON object' } }],
    ['{"id": 7}', { id: 7, error: { class: 'GenericError', desc: "QMP input lacks member 'execute'" } }],
    [
      '{"execute": 5, "id": 8}',
      { id: 8, error: { class: 'GenericError', desc: "QMP input member 'execute' must be a string" } },
    ],
    [
      '{"execute": "echo", "arguments": [1], "id": 9}',
      { id: 9, error: { class: 'GenericError', desc: "QMP input member 'arguments' must be an object" } },
    ],
    [
      '{"execute": "echo", "foo": 1, "id": 10}',
      { id: 10, error: { class: 'GenericError', desc: "QMP input member 'foo' is unexpected" } },
    ],
    [
      '{"exec-oob": "echo"}',
      { error: { class: 'GenericError', desc: "QMP input member 'exec-oob' is unexpected" } },
    ],
    ['}', { error: { class: 'GenericError', desc: 'JSON parse error, expecting value' } }],
    ['{"execute": "fail", "id": 11}', { id: 11, error: { class: 'GenericError', desc: 'it broke' } }],
    ['{"execute": "no-device"}', { error: { class: 'DeviceNotFound', desc: "Device 'x' not found" } }],
  ];
  for (const [input, reply] of cases) {
    c.send(input);
    t.same(await c.json(), reply, input);
  }
  c.send('}');
  t.equal(
    await c.line(),
    '{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}',
    'a parse error has no id',
  );
});

t.test('arguments are checked before the command runs, with full paths', async (t) => {
  const { unix, open } = await setup(t);
  const c = open(unix);
  await c.negotiate();
  const err = (desc: string) => ({ error: { class: 'GenericError', desc } });
  const cases: [unknown, Json][] = [
    [{}, err("Parameter 'capabilities' is missing")],
    [{ capabilities: [], x: 1 }, err("Parameter 'x' is unexpected")],
    [{ capabilities: 'no' }, err("Invalid parameter type for 'capabilities', expected: array")],
    [{ capabilities: [{ capability: 'events' }] }, err("Parameter 'capabilities[0].state' is missing")],
    [
      { capabilities: [{ capability: 'events', state: true, extra: 0 }] },
      err("Parameter 'capabilities[0].extra' is unexpected"),
    ],
    [
      { capabilities: [{ capability: 'events', state: 1 }] },
      err("Invalid parameter type for 'capabilities[0].state', expected: boolean"),
    ],
    [
      { capabilities: [{ capability: 'nope', state: true }] },
      err("Parameter 'capability' does not accept value 'nope'"),
    ],
    [{ capabilities: [{ capability: 'events', state: true }] }, { return: {} }],
  ];
  for (const [args, reply] of cases) {
    c.send(JSON.stringify({ execute: 'migrate-set-capabilities', arguments: args }));
    t.same(await c.json(), reply, JSON.stringify(args));
  }
  const params: [string, Json][] = [
    ['{"cpu-throttle-initial": 256}', err("Parameter 'cpu-throttle-initial' expects uint8_t")],
    ['{"cpu-throttle-initial": 1.5}', err("Parameter 'cpu-throttle-initial' expects uint64")],
    ['{"x-limit": 4294967296}', err("Parameter 'x-limit' expects uint32_t")],
    ['{"downtime-limit": 18446744073709551616}', err("Parameter 'downtime-limit' expects uint64")],
    ['{"downtime-limit": "5"}', err("Parameter 'downtime-limit' expects uint64")],
    [
      '{"downtime-limit": 300, "cpu-throttle-initial": 20}',
      { return: { got: { 'downtime-limit': 300, 'cpu-throttle-initial': 20 } } },
    ],
  ];
  for (const [args, reply] of params) {
    c.send(`{"execute": "set-params", "arguments": ${args}}`);
    t.same(await c.json(), reply, args);
  }
  c.send('{"execute": "query-commands", "arguments": {"x": 1}}');
  t.same(await c.json(), err("Parameter 'x' is unexpected"), 'a command without arguments');
});

t.test('an async command holds back the next reply; events keep their place', async (t) => {
  const order: string[] = [];
  let server: QmpServer | null = null;
  const {
    server: s,
    unix,
    open,
  } = await setup(t, {
    commands: {
      ...COMMANDS,
      slow: {
        run: async () => {
          order.push('slow start');
          server!.emit('SLOW_STARTED');
          await new Promise((r) => setTimeout(r, 150));
          order.push('slow end');
          return { n: 1 };
        },
      },
      fast: {
        run: () => {
          order.push('fast');
          return { n: 2 };
        },
      },
    },
  });
  server = s;
  const c = open(unix);
  await c.negotiate();
  c.send('{"execute": "slow", "id": 1}{"execute": "fast", "id": 2}');
  const first = await c.json();
  t.equal(first.event, 'SLOW_STARTED', 'the event emitted while the command runs comes first');
  t.notOk('data' in first, 'no data member for an event without data');
  t.same(await c.json(), { return: { n: 1 }, id: 1 });
  t.same(await c.json(), { return: { n: 2 }, id: 2 });
  t.same(order, ['slow start', 'slow end', 'fast'], 'the second request waited for the first');

  // a flood behind a slow command: input waits (the socket is paused), nothing is lost or reordered
  const flood = Array.from({ length: 5000 }, (_, i) => `{"execute": "echo", "arguments": {"value": ${i}}}`);
  c.send(`{"execute": "slow"}${flood.join('')}`);
  t.equal((await c.json()).event, 'SLOW_STARTED');
  t.same(await c.json(), { return: { n: 1 } });
  let inOrder = true;
  for (let i = 0; i < flood.length; i++) if ((await c.json()).return !== i) inOrder = false;
  t.ok(inOrder, 'every request of the flood answered, in order');
});

t.test('events reach negotiated clients only, timestamped', async (t) => {
  const { server, unix, tcp, open } = await setup(t);
  const a = open(unix);
  const b = open(tcp);
  await a.negotiate();
  await b.ready();
  await new Promise((r) => setTimeout(r, 20));
  t.equal(server.clientCount, 2);
  const before = Date.now();
  server.emit('STOP');
  server.emit('MIGRATION', { status: 'setup' });
  server.emit('EMPTY', {});
  const stop = await a.line();
  t.match(stop, /^\{"timestamp": \{"seconds": \d+, "microseconds": \d+\}, "event": "STOP"\}$/);
  const ts = JSON.parse(stop!).timestamp;
  const ms = ts.seconds * 1000 + ts.microseconds / 1000;
  t.ok(Math.abs(ms - before) < 5000, 'wall clock');
  t.ok(ts.microseconds >= 0 && ts.microseconds < 1e6);
  const mig = await a.json();
  t.same([mig.event, mig.data], ['MIGRATION', { status: 'setup' }]);
  t.ok(
    mig.timestamp.seconds * 1e6 + mig.timestamp.microseconds > ts.seconds * 1e6 + ts.microseconds,
    'in order',
  );
  t.notOk('data' in (await a.json()), 'empty data left out');
  b.send('{"execute": "qmp_capabilities", "id": "b"}');
  t.same(await b.json(), { return: {}, id: 'b' }, 'the unnegotiated client got no event');
  server.emit('RESUME');
  t.equal((await b.json()).event, 'RESUME', 'and gets them once negotiated');
});

t.test('more than 1 MiB of garbage: one parse error, the connection still works', async (t) => {
  const { unix, open } = await setup(t);
  const c = open(unix);
  await c.negotiate();
  c.send(`{"execute": "echo", "arguments": {"value": "${'z'.repeat((1 << 20) + 1000)}"}, "id": 1}`);
  c.send(`[${'[1, {"a": "b"}], '.repeat(80_000)}`); // and a flood of small tokens, unterminated...
  c.send(']]'); // ...until here
  c.send('{"execute": "echo", "arguments": {"value": "after"}, "id": 2}');
  t.same(await c.json(), { error: { class: 'GenericError', desc: 'JSON token size limit exceeded' } });
  t.same(await c.json(), { error: { class: 'GenericError', desc: 'JSON token size limit exceeded' } });
  t.same(
    await c.json(),
    { error: { class: 'GenericError', desc: 'JSON parse error, expecting value' } },
    'the extra ]',
  );
  t.same(await c.json(), { return: 'after', id: 2 });
  c.send(`${'['.repeat(1100)}${']'.repeat(1100)}{"execute": "echo", "arguments": {"value": 3}}`);
  t.same(await c.json(), { error: { class: 'GenericError', desc: 'JSON nesting depth limit exceeded' } });
  t.same(await c.json(), { return: 3 });
});

t.test('bounds: clients, unread output', async (t) => {
  const { server, unix, tcp, logs, open } = await setup(t, { maxClients: 2, maxOutputBytes: 1 << 20 });
  const a = open(unix);
  const b = open(tcp);
  await a.ready();
  await b.ready();
  const c = open(unix);
  t.equal(await c.line(), null, 'the third client is closed without a greeting');
  t.equal(logs.filter((l) => l.includes('refusing client')).length, 1, 'one log line');
  t.equal(server.clientCount, 2);

  a.socket.pause(); // a client that does not read
  await new Promise((r) => setTimeout(r, 20));
  a.send('{"execute": "qmp_capabilities"}{"execute": "big-reply"}');
  const deadline = Date.now() + 3000;
  while (server.clientCount > 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  t.equal(server.clientCount, 1, 'dropped once its unread output passed the bound');
  t.ok(logs.some((l) => l.includes('dropping client')));
  b.send('{"execute": "qmp_capabilities"}');
  t.same(await b.json(), { return: {} }, 'the other client is unaffected');
  const d = open(tcp);
  t.ok(await d.ready(), 'a place is free again');
});

t.test('unix socket: mode 0600, stale socket replaced, other files refused, removed on close', async (t) => {
  t.setTimeout(5000);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmp-unix-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const opts = { version: VERSION, package: 'p', commands: {}, log: () => {} };
  const sock = path.join(dir, 'm.sock');

  // a stale socket (its server gone, the file left)
  const stale = net.createServer();
  await new Promise<void>((r) => stale.listen(sock, r));
  fs.linkSync(sock, `${sock}.keep`);
  await new Promise<void>((r) => stale.close(() => r()));
  fs.renameSync(`${sock}.keep`, sock);
  t.ok(fs.lstatSync(sock).isSocket(), 'a stale socket is there');

  const server = new QmpServer(opts);
  t.equal(await server.listen({ kind: 'unix', path: sock }), `unix:${sock}`);
  t.equal(fs.lstatSync(sock).mode & 0o777, 0o600, 'mode 0600');
  t.same(fs.readdirSync(dir), ['m.sock'], 'no temporary left behind');
  const c = new Conn(`unix:${sock}`);
  t.equal(
    await c.line(),
    '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 1, "major": 8}, "package": "p"}, "capabilities": []}}',
  );

  const second = new QmpServer(opts);
  await t.rejects(
    second.listen({ kind: 'unix', path: sock }),
    { code: ErrorCode.USAGE },
    'a live server is not displaced',
  );
  await second.close();

  await server.close();
  t.equal(await c.line(), null, 'close() ends the client');
  t.notOk(fs.existsSync(sock), 'close() removes the socket');

  const file = path.join(dir, 'plain');
  fs.writeFileSync(file, 'data');
  const third = new QmpServer(opts);
  await t.rejects(third.listen({ kind: 'unix', path: file }), {
    code: ErrorCode.USAGE,
    message: /not a socket/,
  });
  t.equal(fs.readFileSync(file, 'utf8'), 'data', 'the file is untouched');
  await third.close();
});

t.test('tcp: loopback only unless allowRemote; address parsing', async (t) => {
  const server = new QmpServer({ version: VERSION, package: 'p', commands: {}, log: () => {} });
  t.teardown(() => server.close());
  for (const host of ['0.0.0.0', '192.0.2.1', '::', 'example.com']) {
    const err = await server.listen({ kind: 'tcp', host, port: 0 }).catch((e) => e);
    t.ok(err instanceof ParameterError, `${host} refused`);
    t.equal(err.code, ErrorCode.USAGE);
    t.match(err.message, /^--qmp: /);
  }
  t.match(
    await server.listen({ kind: 'tcp', host: 'localhost', port: 0 }),
    /^tcp:(127\.0\.0\.1|\[::1\]):\d+$/,
  );
  const remote = new QmpServer({
    version: VERSION,
    package: 'p',
    commands: {},
    allowRemote: true,
    log: () => {},
  });
  t.teardown(() => remote.close());
  t.match(
    await remote.listen({ kind: 'tcp', host: '0.0.0.0', port: 0 }),
    /^tcp:0\.0\.0\.0:\d+$/,
    'allowRemote',
  );

  t.same(parseQmpAddress('unix:/tmp/x.sock'), { kind: 'unix', path: '/tmp/x.sock' });
  t.same(parseQmpAddress('tcp:127.0.0.1:4444'), { kind: 'tcp', host: '127.0.0.1', port: 4444 });
  t.same(parseQmpAddress('tcp:[::1]:0'), { kind: 'tcp', host: '::1', port: 0 });
  t.same(parseQmpAddress('tcp:localhost:1'), { kind: 'tcp', host: 'localhost', port: 1 });
  for (const bad of [
    'x',
    'unix:',
    'tcp:1.2.3.4',
    'tcp::1:5',
    'tcp:host:70000',
    'tcp:[nope]:1',
    'tcp:h:p',
    'udp:a:1',
  ]) {
    t.throws(
      () => parseQmpAddress(bad),
      { code: ErrorCode.USAGE, message: `--qmp: '${bad}' is not unix:PATH or tcp:HOST:PORT` },
      bad,
    );
  }
  t.throws(() => parseQmpAddress('x', '--qmp-dest'), {
    message: "--qmp-dest: 'x' is not unix:PATH or tcp:HOST:PORT",
  });
  t.throws(
    () => new QmpServer({ version: VERSION, package: 'p', commands: { 'query-commands': { run: () => 1 } } }),
  );
});
