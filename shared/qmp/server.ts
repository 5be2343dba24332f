/**
 * A QMP monitor (QEMU Machine Protocol, docs/interop/qmp-spec.rst) as QEMU serves one without
 * out-of-band support, on a unix socket or loopback TCP; the commands are the caller's.
 *
 * On the wire, as QEMU (monitor/qmp.c, qapi/qmp-dispatch.c, monitor/qmp-cmds-control.c):
 * - on connect the greeting `{"QMP": {"version": {"qemu": {"micro", "minor", "major"}, "package"},
 *   "capabilities": []}}`; every message one line of JSON written like QEMU's (json.ts), ended by
 *   CRLF;
 * - input is a JSON stream (stream.ts): values may be concatenated, split anyhow, separated by
 *   whitespace; a parse error is answered `{"error": {"class": "GenericError", "desc": ...}}`
 *   without "id";
 * - until `qmp_capabilities` succeeds only it exists: any other command is CommandNotFound
 *   "Expecting capabilities negotiation with 'qmp_capabilities'". It takes `enable` (a list of
 *   QMPCapability, of which QEMU has one, "oob"); we offer none, so enabling "oob" fails with QEMU's
 *   "Capability oob not available". A second one is CommandNotFound "Capabilities negotiation is
 *   already complete, command ignored";
 * - a request is checked as qmp_dispatch_check_obj() does, members in QEMU's (hash) order; unknown
 *   commands are CommandNotFound "The command X has not been found"; arguments are checked against
 *   the command's schema (schema.ts) before it runs; "id", whatever JSON it is, is echoed in the
 *   reply whenever the request was an object;
 * - one request of a client at a time, in order: while an async command runs, the client's next
 *   requests wait (unread: the socket is paused once 64 KiB of them are buffered, as QEMU suspends
 *   its monitor), events still go out, in the order emitted;
 * - events go to the clients that completed negotiation, with a wall-clock timestamp (µs).
 * Bounds: maxClients connections (a further one is closed at once, with one log line); a client's
 * unsent output beyond maxOutputBytes drops that client; one JSON value beyond 1 MiB, or nested
 * beyond 1024, is refused (stream.ts). Nothing a client sends can throw out of a socket callback.
 * QEMU's dispatcher runs one request at a time across all monitors; ours serialises per client only,
 * so a slow async command of one client does not stall the others.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { ErrorCode, ParameterError, SocketError } from '../errors.js';
import { QmpError, type QmpErrorClass } from './errors.js';
import { qdictOrder, qmpStringify } from './json.js';
import { type ArgSpec, checkArguments, normalizeArguments } from './schema.js';
import { type JsonItem, JsonStreamer } from './stream.js';

export interface QmpCommand {
  /** Absent: the command takes no arguments (any argument is "unexpected"). */
  args?: Record<string, ArgSpec>;
  /**
   * Return value → "return" (undefined → {}); throw a QmpError for an error reply of its class,
   * anything else thrown is GenericError with its message. May be async: the client's next request
   * waits for it.
   */
  run(args: Record<string, unknown>, client: QmpClientInfo): unknown | Promise<unknown>;
}

export interface QmpClientInfo {
  readonly id: number;
  readonly peer: string;
}

export type QmpAddress = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

export interface QmpServerOptions {
  version: { major: number; minor: number; micro: number };
  package: string;
  commands: Record<string, QmpCommand>;
  /** Clients connected at once (default 16). */
  maxClients?: number;
  /** One line per refused or dropped client and per internal error (default: stderr). */
  log?: (line: string) => void;
  /** Allow TCP on a non-loopback host (QMP has no authentication). */
  allowRemote?: boolean;
  /** A client's output not yet taken by the kernel beyond this drops the client (default 16 MiB). */
  maxOutputBytes?: number;
  /** One JSON value from a client (default 1 MiB). */
  maxMessageBytes?: number;
  /** Nesting of {} and [] (default 1024, QEMU's). */
  maxNesting?: number;
}

const BUILTIN_CAPABILITIES = 'qmp_capabilities';
const BUILTIN_QUERY_COMMANDS = 'query-commands';
const NEGOTIATION_DESC = "Expecting capabilities negotiation with 'qmp_capabilities'";
/** Input buffered while a command runs before the socket is paused. */
const PAUSE_INPUT_BYTES = 64 * 1024;
/** How long close() lets a client take its last bytes before the socket is destroyed. */
const END_GRACE_MS = 1000;

const USAGE_TEXT = (what: string, text: string) => `${what}: '${text}' is not unix:PATH or tcp:HOST:PORT`;

/** 'unix:PATH', 'tcp:HOST:PORT' or 'tcp:[IPv6]:PORT' (port 0 lets the system choose). */
export function parseQmpAddress(text: string, what = '--qmp'): QmpAddress {
  const bad = () => new ParameterError(ErrorCode.USAGE, USAGE_TEXT(what, text), { field: what });
  if (text.startsWith('unix:')) {
    const p = text.slice('unix:'.length);
    if (p === '' || p.includes('\0')) throw bad();
    return { kind: 'unix', path: p };
  }
  if (!text.startsWith('tcp:')) throw bad();
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text.slice('tcp:'.length));
  if (!m) throw bad();
  const host = m[1] ?? m[2]!;
  if (m[1] !== undefined && !net.isIPv6(host)) throw bad();
  const port = Number(m[3]);
  if (port > 65535) throw bad();
  return { kind: 'tcp', host, port };
}

export function formatQmpAddress(a: QmpAddress): string {
  if (a.kind === 'unix') return `unix:${a.path}`;
  return `tcp:${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`;
}

const loopback = new net.BlockList();
loopback.addSubnet('127.0.0.0', 8, 'ipv4');
loopback.addAddress('::1', 'ipv6');

/** 127.0.0.0/8, ::1 (any spelling), ::ffff:127.x.x.x, localhost. */
export function isLoopbackHost(host: string): boolean {
  if (host.toLowerCase() === 'localhost') return true;
  if (net.isIPv4(host)) return loopback.check(host, 'ipv4');
  if (!net.isIPv6(host)) return false;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(host);
  if (mapped) return loopback.check(mapped[1]!, 'ipv4');
  return loopback.check(host, 'ipv6');
}

type Reply =
  | { return: unknown; id?: unknown }
  | { error: { class: QmpErrorClass; desc: string }; id?: unknown };

class Client implements QmpClientInfo {
  negotiated = false;
  busy = false;
  closed = false;
  paused = false;
  readonly info: QmpClientInfo;

  constructor(
    readonly id: number,
    readonly peer: string,
    readonly socket: net.Socket,
    readonly streamer: JsonStreamer,
  ) {
    this.info = Object.freeze({ id, peer });
  }
}

interface Listener {
  server: net.Server;
  address: QmpAddress;
  /** The unix socket we created (removed on close if it is still ours). */
  unix?: { path: string; dev: number; ino: number };
}

export class QmpServer {
  readonly #version: { major: number; minor: number; micro: number };
  readonly #package: string;
  readonly #commands = new Map<string, QmpCommand>();
  readonly #negotiation = new Map<string, QmpCommand>();
  readonly #maxClients: number;
  readonly #log: (line: string) => void;
  readonly #allowRemote: boolean;
  readonly #maxOutputBytes: number;
  readonly #maxMessageBytes: number;
  readonly #maxNesting: number;
  readonly #listeners: Listener[] = [];
  readonly #clients = new Set<Client>();
  readonly #byInfo = new WeakMap<QmpClientInfo, Client>();
  #nextClientId = 1;
  #closing: Promise<void> | null = null;
  #lastEventUs = 0;

  constructor(opts: QmpServerOptions) {
    this.#version = { major: opts.version.major, minor: opts.version.minor, micro: opts.version.micro };
    this.#package = opts.package;
    this.#maxClients = opts.maxClients ?? 16;
    this.#log = opts.log ?? ((line) => process.stderr.write(`${line}\n`));
    this.#allowRemote = opts.allowRemote ?? false;
    this.#maxOutputBytes = opts.maxOutputBytes ?? 16 * 1024 * 1024;
    this.#maxMessageBytes = opts.maxMessageBytes ?? 1024 * 1024;
    this.#maxNesting = opts.maxNesting ?? 1024;

    const capabilities: QmpCommand = {
      args: { enable: { type: 'array', optional: true, items: { type: 'enum', values: ['oob'] } } },
      run: (args, info) => this.#qmpCapabilities(args, info),
    };
    const queryCommands: QmpCommand = {
      // QEMU lists its command table backwards (QAPI_LIST_PREPEND over registration order)
      run: () => [...this.#commands.keys()].reverse().map((name) => ({ name })),
    };
    this.#commands.set(BUILTIN_CAPABILITIES, capabilities);
    this.#commands.set(BUILTIN_QUERY_COMMANDS, queryCommands);
    this.#negotiation.set(BUILTIN_CAPABILITIES, capabilities);
    for (const [name, command] of Object.entries(opts.commands)) {
      if (this.#commands.has(name)) throw new Error(`QmpServer: command '${name}' is built in`);
      if (typeof command?.run !== 'function') throw new Error(`QmpServer: command '${name}' has no run()`);
      this.#commands.set(name, command);
    }
  }

  get clientCount(): number {
    return this.#clients.size;
  }

  /** Starts listening; resolves to the address bound ('unix:PATH', 'tcp:HOST:PORT' with the real port). May be called for several addresses. */
  async listen(address: QmpAddress): Promise<string> {
    if (this.#closing) throw new SocketError(ErrorCode.SOCKET, 'QMP server is closed');
    if (address.kind === 'tcp' && !this.#allowRemote && !isLoopbackHost(address.host)) {
      throw new ParameterError(
        ErrorCode.USAGE,
        `--qmp: refusing ${formatQmpAddress(address)}: QMP has no authentication, so only a loopback host (127.0.0.0/8, ::1, localhost) may listen`,
        { field: '--qmp' },
      );
    }
    const listener: Listener = { server: net.createServer(), address };
    listener.server.on('connection', (socket) => this.#guard(null, () => this.#accept(socket, listener)));
    listener.server.on('error', (err) =>
      this.#log(`qmp: listener ${formatQmpAddress(address)}: ${err.message}`),
    );
    try {
      if (address.kind === 'unix') {
        listener.unix = await bindUnix(listener.server, address.path);
        this.#listeners.push(listener);
        return formatQmpAddress(address);
      }
      await listenOn(listener.server, { host: address.host, port: address.port });
    } catch (err) {
      listener.server.close();
      if (err instanceof ParameterError || err instanceof SocketError) throw err;
      throw new SocketError(
        ErrorCode.SOCKET,
        `--qmp: cannot listen on ${formatQmpAddress(address)}: ${(err as Error).message}`,
        {},
        { cause: err },
      );
    }
    this.#listeners.push(listener);
    const bound = listener.server.address() as net.AddressInfo;
    return formatQmpAddress({ kind: 'tcp', host: bound.address, port: bound.port });
  }

  /** Sends an event to every client that completed negotiation; `data` is left out when empty. */
  emit(event: string, data?: Record<string, unknown>): void {
    const message: Record<string, unknown> = { event, timestamp: this.#timestamp() };
    if (data !== undefined && Object.keys(data).length > 0) message.data = data;
    let line: string;
    try {
      line = `${qmpStringify(message)}\r\n`;
    } catch (err) {
      this.#log(`qmp: event ${event} not sent: ${(err as Error).message}`);
      return;
    }
    for (const client of this.#clients) if (client.negotiated) this.#write(client, line);
  }

  /** Ends every client, stops listening, removes the unix sockets it made; resolves when all are closed. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    const closed = this.#listeners.map(
      (l) => new Promise<void>((resolve) => l.server.close(() => resolve())),
    );
    for (const l of this.#listeners) if (l.unix) removeOurSocket(l.unix);
    for (const client of this.#clients) {
      client.closed = true;
      endSoon(client.socket);
    }
    await Promise.all(closed);
  }

  #timestamp(): { seconds: number; microseconds: number } {
    // wall clock with µs resolution; never backwards between two events
    let us = Math.floor((performance.timeOrigin + performance.now()) * 1000);
    if (us <= this.#lastEventUs) us = this.#lastEventUs + 1;
    this.#lastEventUs = us;
    return { seconds: Math.floor(us / 1e6), microseconds: us % 1e6 };
  }

  #accept(socket: net.Socket, listener: Listener): void {
    const peer = peerName(socket, listener.address);
    socket.on('error', () => {}); // a reset peer is a closed client; 'close' follows
    if (this.#closing) {
      socket.destroy();
      return;
    }
    if (this.#clients.size >= this.#maxClients) {
      this.#log(`qmp: refusing client from ${peer}: ${this.#maxClients} clients already connected`);
      endSoon(socket);
      return;
    }
    const client = new Client(
      this.#nextClientId++,
      peer,
      socket,
      new JsonStreamer({ maxTokenSize: this.#maxMessageBytes, maxNesting: this.#maxNesting }),
    );
    this.#clients.add(client);
    this.#byInfo.set(client.info, client);
    if (listener.address.kind === 'tcp') socket.setNoDelay(true);
    socket.on('close', () => {
      client.closed = true;
      this.#clients.delete(client);
    });
    socket.on('data', (chunk: Buffer) =>
      this.#guard(client, () => {
        if (client.closed) return;
        client.streamer.feed(chunk);
        this.#pump(client);
      }),
    );
    this.#send(client, {
      QMP: {
        version: {
          qemu: { major: this.#version.major, minor: this.#version.minor, micro: this.#version.micro },
          package: this.#package,
        },
        capabilities: [],
      },
    });
  }

  /** Runs a callback of a socket; whatever it throws is logged and ends that client, never the process. */
  #guard(client: Client | null, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.#log(
        `qmp: internal error${client ? ` (client ${client.id}, ${client.peer})` : ''}: ${(err as Error)?.stack ?? err}`,
      );
      if (client) this.#drop(client);
    }
  }

  /** Handles the client's queued input, one request at a time. */
  #pump(client: Client): void {
    while (!client.busy && !client.closed) {
      const item = client.streamer.next();
      if (!item) break;
      const pending = this.#handle(client, item);
      if (pending) {
        client.busy = true;
        pending.then(
          () => {
            client.busy = false;
            this.#guard(client, () => this.#pump(client));
          },
          (err) =>
            this.#guard(client, () => {
              throw err;
            }),
        );
      }
    }
    if (client.closed) return;
    if (client.busy && client.streamer.pendingBytes >= PAUSE_INPUT_BYTES && !client.paused) {
      client.paused = true;
      client.socket.pause();
    } else if (!client.busy && client.paused) {
      client.paused = false;
      client.socket.resume();
    }
  }

  /** One parsed value (or parse error): its reply is sent now, or when the returned promise settles. */
  #handle(client: Client, item: JsonItem): Promise<void> | undefined {
    if (!item.ok) {
      this.#send(client, { error: { class: 'GenericError', desc: item.error } });
      return undefined;
    }
    const req = item.value;
    if (typeof req !== 'object' || req === null || Array.isArray(req) || !isPlainRecord(req)) {
      this.#send(client, { error: { class: 'GenericError', desc: 'QMP input must be a JSON object' } });
      return undefined;
    }
    const hasId = Object.hasOwn(req, 'id');
    const reply = (r: Reply) => {
      if (hasId) r.id = req.id;
      if ('error' in r && r.error.class === 'CommandNotFound' && !client.negotiated)
        r.error.desc = NEGOTIATION_DESC;
      this.#send(client, r);
    };
    const fail = (desc: string, errorClass: QmpErrorClass = 'GenericError') =>
      reply({ error: { class: errorClass, desc } });

    // qmp_dispatch_check_obj(): members in QEMU's iteration order
    let execute: string | undefined;
    for (const key of qdictOrder(Object.keys(req))) {
      const value = req[key];
      if (key === 'execute') {
        if (typeof value !== 'string') return void fail("QMP input member 'execute' must be a string");
        execute = value;
      } else if (key === 'arguments') {
        if (!isPlainRecord(value)) return void fail("QMP input member 'arguments' must be an object");
      } else if (key !== 'id') {
        return void fail(`QMP input member '${key}' is unexpected`);
      }
    }
    if (execute === undefined) return void fail("QMP input lacks member 'execute'");
    const table = client.negotiated ? this.#commands : this.#negotiation;
    const command = table.get(execute);
    if (!command) return void fail(`The command ${execute} has not been found`, 'CommandNotFound');

    const spec = command.args ?? {};
    const raw = (req.arguments ?? {}) as Record<string, unknown>;
    let result: unknown;
    try {
      checkArguments(spec, raw);
      result = command.run(normalizeArguments(spec, raw), client.info);
    } catch (err) {
      reply(errorReply(err));
      return undefined;
    }
    if (!isThenable(result)) {
      reply({ return: result === undefined ? {} : result });
      return undefined;
    }
    return Promise.resolve(result).then(
      (value) => {
        if (!client.closed) reply({ return: value === undefined ? {} : value });
      },
      (err) => {
        if (!client.closed) reply(errorReply(err));
      },
    );
  }

  #qmpCapabilities(args: Record<string, unknown>, info: QmpClientInfo): unknown {
    const client = this.#byInfo.get(info);
    if (!client) throw new QmpError('GenericError', 'unknown client');
    if (client.negotiated) {
      throw new QmpError('CommandNotFound', 'Capabilities negotiation is already complete, command ignored');
    }
    const enable = (args.enable ?? []) as string[];
    // qmp_caps_accept(): every capability asked for is refused, since none is offered
    if (enable.length > 0)
      throw new QmpError('GenericError', `Capability ${enable.join(', ')} not available`);
    client.negotiated = true;
    return {};
  }

  #send(client: Client, message: unknown): void {
    if (client.closed) return;
    let line: string;
    try {
      line = `${qmpStringify(message)}\r\n`;
    } catch (err) {
      const id = (message as { id?: unknown }).id;
      const r: Reply = {
        error: { class: 'GenericError', desc: `reply not sent: ${(err as Error).message}` },
      };
      if (id !== undefined) r.id = id;
      line = `${qmpStringify(r)}\r\n`;
    }
    this.#write(client, line);
  }

  #write(client: Client, line: string): void {
    if (client.closed || client.socket.destroyed) return;
    client.socket.write(line);
    if (client.socket.writableLength > this.#maxOutputBytes) {
      this.#log(
        `qmp: dropping client ${client.id} (${client.peer}): more than ${this.#maxOutputBytes} bytes of replies and events left unread`,
      );
      this.#drop(client);
    }
  }

  #drop(client: Client): void {
    client.closed = true;
    this.#clients.delete(client);
    client.socket.destroy();
  }
}

function errorReply(err: unknown): Reply {
  if (err instanceof QmpError) return { error: { class: err.errorClass, desc: err.message } };
  if (err instanceof Error) return { error: { class: 'GenericError', desc: err.message } };
  return { error: { class: 'GenericError', desc: String(err) } };
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return (
    (typeof v === 'object' || typeof v === 'function') &&
    v !== null &&
    typeof (v as { then?: unknown }).then === 'function'
  );
}

/** A JSON object as the parser makes them (not an array, not a wrapped number). */
function isPlainRecord(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function peerName(socket: net.Socket, address: QmpAddress): string {
  if (address.kind === 'unix') return `unix:${address.path}`;
  const host = socket.remoteAddress ?? '?';
  return `tcp:${host.includes(':') ? `[${host}]` : host}:${socket.remotePort ?? '?'}`;
}

/** end() so the client gets what was written, destroy() once flushed or after a grace period. */
function endSoon(socket: net.Socket): void {
  if (socket.destroyed) return;
  const timer = setTimeout(() => socket.destroy(), END_GRACE_MS);
  timer.unref();
  socket.end(() => {
    clearTimeout(timer);
    socket.destroy();
  });
}

function listenOn(server: net.Server, opts: net.ListenOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    server.listen(opts, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/** Whether something accepts connections on the unix socket at `p` (a live server, not a stale file). */
function unixSocketLive(p: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.connect({ path: p });
    const done = (live: boolean) => {
      probe.destroy();
      resolve(live);
    };
    probe.setTimeout(1000, () => done(true));
    probe.once('connect', () => done(true));
    probe.once('error', () => done(false));
  });
}

const SUN_PATH_MAX = 107;

/**
 * Binds `server` to the unix socket `p`, mode 0600 from the start: bound in a fresh private directory
 * (mode 0700), chmod'ed, then hard-linked into place (link(2) never replaces an existing file, so a
 * file that appeared meanwhile is not clobbered). A stale socket at `p` is removed; anything else at
 * `p`, or a live server there, is refused. Returns the identity of the file to remove on close.
 */
async function bindUnix(server: net.Server, p: string): Promise<{ path: string; dev: number; ino: number }> {
  const usage = (why: string) => new ParameterError(ErrorCode.USAGE, `--qmp: ${why}`, { field: '--qmp' });
  let existing: fs.Stats | undefined;
  try {
    existing = fs.lstatSync(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (existing) {
    if (!existing.isSocket()) throw usage(`'${p}' exists and is not a socket`);
    if (await unixSocketLive(p)) throw usage(`'${p}' is in use: another server is listening there`);
    fs.unlinkSync(p);
  }
  const dir = fs.mkdtempSync(path.join(path.dirname(p), '.qmp-'));
  const tmp = path.join(dir, 's');
  try {
    if (Buffer.byteLength(tmp) > SUN_PATH_MAX) {
      // no room for the private directory in sun_path: bind in place, then chmod at once
      fs.rmdirSync(dir);
      await listenOn(server, { path: p });
      fs.chmodSync(p, 0o600);
    } else {
      await listenOn(server, { path: tmp });
      fs.chmodSync(tmp, 0o600);
      try {
        fs.linkSync(tmp, p);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw usage(`'${p}' appeared while binding`);
        throw err;
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const st = fs.lstatSync(p);
  return { path: p, dev: st.dev, ino: st.ino };
}

function removeOurSocket(u: { path: string; dev: number; ino: number }): void {
  try {
    const st = fs.lstatSync(u.path);
    if (st.dev === u.dev && st.ino === u.ino) fs.unlinkSync(u.path);
  } catch {
    // already gone
  }
}
