/**
 * A small promise-based client of the QEMU Machine Protocol (QEMU's docs/interop/qmp-spec.rst), for
 * the shell (scripts/qmp-shell.ts), tests and tools. Dependency-free on purpose: only node: modules,
 * nothing of the engine, so it can talk to any QMP server, QEMU's included.
 *
 *   const qmp = new QmpClient({ commandTimeoutMs: 10_000 });
 *   qmp.on('event', (e) => console.log(e.event, e.data));   // attach before connect: none is missed
 *   await qmp.connect('unix:/tmp/src.qmp');                  // greeting read, qmp_capabilities done
 *   const done = qmp.waitForEvent('MIGRATION', { match: (d) => d.status === 'completed' });
 *   await qmp.execute('migrate', { uri: 'tcp:127.0.0.1:4444' });
 *   await done;
 *   await qmp.close();
 *
 * The protocol: the server speaks first, one greeting line `{"QMP": {"version", "capabilities"}}`;
 * the client must send `qmp_capabilities` before any other command (and nothing before the
 * greeting); requests carry an `id` that the server copies into its `{"return"}` or `{"error"}`
 * reply; `{"event"}` lines come at any time. Every message is one JSON line (the server ends its
 * lines with CRLF; a bare LF is accepted both ways).
 *
 * Everything is bounded: connecting, the greeting and the negotiation share one deadline (default
 * 5 s), each command has its own (default 30 s), and a server line longer than 1 MiB closes the
 * connection with an error instead of growing a buffer without end. Errors are of two kinds:
 * `QmpError` is the server refusing a command (its `class` and `desc`); `QmpClientError` is
 * everything on this side (address, connect, timeouts, protocol, closed), with a `kind`.
 */
import { EventEmitter } from 'node:events';
import { createConnection, type Socket } from 'node:net';

export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
export const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;
/** Longest server line accepted (without its line end); QEMU's own replies stay far below. */
export const MAX_LINE_BYTES = 1 << 20;

export type QmpAddress = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

export interface QmpGreeting {
  QMP: { version: unknown; capabilities: unknown[] };
}

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  /** Server time of the event; QEMU sends -1/-1 when it could not read the clock. */
  timestamp?: { seconds: number; microseconds: number };
}

/** A reply as the server sent it; `id` is the request's, copied back. */
export type QmpReply =
  | { return: unknown; id?: unknown }
  | { error: { class: string; desc: string }; id?: unknown };

/** A request: `execute` (or `exec-oob`), optional `arguments` and `id` (the client adds one if absent). */
export type QmpRequest = Record<string, unknown>;

/** The server refused a command: `errorClass` and `desc` are its error reply's `class` and `desc`. */
export class QmpError extends Error {
  readonly errorClass: string;
  readonly desc: string;
  readonly command: string;

  constructor(command: string, errorClass: string, desc: string) {
    super(desc);
    this.name = 'QmpError';
    this.command = command;
    this.errorClass = errorClass;
    this.desc = desc;
  }
}

export type QmpClientErrorKind =
  /** the address text is not unix:PATH, tcp:HOST:PORT or a path */
  | 'address'
  /** the socket could not be opened, or failed */
  | 'connect'
  /** connect + greeting + negotiation did not finish within the connect timeout */
  | 'timeout'
  /** the first line was not a QMP greeting */
  | 'greeting'
  /** the server refused qmp_capabilities */
  | 'negotiation'
  /** a line that is not a JSON object */
  | 'protocol'
  /** a line longer than the limit (the connection is closed) */
  | 'line-too-long'
  /** the connection is closed (by either side) */
  | 'closed'
  /** a command got no reply, or waitForEvent no event, in time (the connection stays usable) */
  | 'command-timeout'
  /** a call this client cannot take now (not connected, duplicate id, unserialisable request) */
  | 'state'
  /** a line of qmp-shell syntax that does not parse (parseShellCommand) */
  | 'syntax';

/** Something went wrong on this side of the connection, or with it; `kind` says what. */
export class QmpClientError extends Error {
  readonly kind: QmpClientErrorKind;

  constructor(kind: QmpClientErrorKind, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'QmpClientError';
    this.kind = kind;
  }
}

/**
 * `unix:PATH`, `tcp:HOST:PORT` (`tcp:[::1]:4444` for IPv6) or a bare PATH (a unix socket), the forms
 * QEMU's `-qmp` option takes.
 */
export function parseQmpAddress(text: string): QmpAddress {
  if (text.startsWith('tcp:')) {
    const rest = text.slice(4);
    const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d+)$/.exec(rest);
    const port = m ? Number(m[3]) : Number.NaN;
    if (!m || port < 1 || port > 65535) {
      throw new QmpClientError('address', `'${text}' is not tcp:HOST:PORT (port 1-65535)`);
    }
    return { kind: 'tcp', host: (m[1] ?? m[2])!, port };
  }
  const path = text.startsWith('unix:') ? text.slice(5) : text;
  if (path === '') throw new QmpClientError('address', `'${text}' has no socket path`);
  return { kind: 'unix', path };
}

export function formatQmpAddress(address: QmpAddress): string {
  if (address.kind === 'unix') return `unix:${address.path}`;
  return `tcp:${address.host.includes(':') ? `[${address.host}]` : address.host}:${address.port}`;
}

export interface QmpClientOptions {
  /** Default per-command timeout (execute/request can override it per call). */
  commandTimeoutMs?: number;
  /** Longest server line accepted; a longer one closes the connection. */
  maxLineBytes?: number;
}

export interface QmpConnectOptions {
  /** Deadline for connecting, the greeting and qmp_capabilities together. */
  timeoutMs?: number;
}

export interface QmpCallOptions {
  timeoutMs?: number;
}

interface PendingRequest {
  command: string;
  resolve: (reply: QmpReply) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

type Stage = 'idle' | 'connecting' | 'greeting' | 'negotiating' | 'ready' | 'closed';

/**
 * One QMP connection. Events: `event` (a QmpEvent) and `close` (the QmpClientError that ended the
 * connection, or undefined after close()). There is no `error` event: failures reject the pending
 * calls and end the connection with `close`.
 */
export class QmpClient extends EventEmitter<{ event: [QmpEvent]; close: [QmpClientError | undefined] }> {
  /** The server's greeting, once connected. */
  greeting: QmpGreeting | undefined;

  private readonly commandTimeoutMs: number;
  private readonly maxLineBytes: number;
  private stage: Stage = 'idle';
  private socket: Socket | undefined;
  private socketClosed: Promise<void> = Promise.resolve();
  private nextId = 1;
  /** Keyed by the JSON of the request id; Map order is request order (see settle). */
  private readonly pending = new Map<string, PendingRequest>();
  private partialLine: Buffer[] = [];
  private partialBytes = 0;
  private connectTimer: NodeJS.Timeout | undefined;
  private connectWaiter: { resolve: (g: QmpGreeting) => void; reject: (err: Error) => void } | undefined;

  constructor(options: QmpClientOptions = {}) {
    super();
    this.commandTimeoutMs = options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    this.maxLineBytes = options.maxLineBytes ?? MAX_LINE_BYTES;
  }

  /** True between a finished negotiation and the end of the connection. */
  get connected(): boolean {
    return this.stage === 'ready';
  }

  /**
   * Connects, reads and checks the greeting, and negotiates (`qmp_capabilities`); resolves with the
   * greeting. Once per client. Rejects with a QmpClientError (kind address, connect, timeout,
   * greeting, negotiation, protocol, line-too-long or closed) and leaves the client closed.
   */
  connect(address: string | QmpAddress, options: QmpConnectOptions = {}): Promise<QmpGreeting> {
    if (this.stage !== 'idle') {
      return Promise.reject(new QmpClientError('state', 'connect() can be called once per client'));
    }
    let target: QmpAddress;
    try {
      target = typeof address === 'string' ? parseQmpAddress(address) : address;
    } catch (err) {
      this.stage = 'closed';
      return Promise.reject(err);
    }
    const timeoutMs = options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    this.stage = 'connecting';
    return new Promise<QmpGreeting>((resolve, reject) => {
      this.connectWaiter = { resolve, reject };
      this.connectTimer = setTimeout(() => {
        const what =
          this.stage === 'connecting'
            ? 'could not connect'
            : this.stage === 'greeting'
              ? 'no QMP greeting'
              : 'no reply to qmp_capabilities';
        this.fail(new QmpClientError('timeout', `${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      const socket =
        target.kind === 'unix'
          ? createConnection({ path: target.path })
          : createConnection({ host: target.host, port: target.port });
      this.socket = socket;
      this.socketClosed = new Promise((r) => socket.once('close', () => r()));
      socket.once('connect', () => {
        if (this.stage === 'connecting') this.stage = 'greeting';
      });
      socket.on('data', (chunk: Buffer) => this.onData(chunk));
      socket.on('error', (err: NodeJS.ErrnoException) =>
        this.fail(
          new QmpClientError(this.stage === 'connecting' ? 'connect' : 'closed', describeSocketError(err), {
            cause: err,
          }),
        ),
      );
      socket.on('close', () =>
        this.fail(
          new QmpClientError(
            'closed',
            this.stage === 'ready'
              ? 'the server closed the connection'
              : 'the server closed the connection early',
          ),
        ),
      );
    });
  }

  /**
   * Runs a command; resolves with its `return` value. Rejects with a QmpError for an error reply,
   * or a QmpClientError (command-timeout, closed, state).
   */
  async execute(
    name: string,
    args?: Record<string, unknown>,
    options: QmpCallOptions = {},
  ): Promise<unknown> {
    const reply = await this.request(
      args === undefined ? { execute: name } : { execute: name, arguments: args },
      options,
    );
    if ('error' in reply) throw new QmpError(name, reply.error.class, reply.error.desc);
    return reply.return;
  }

  /**
   * Sends any request object (the shell's raw `{...}` lines) and resolves with the whole reply,
   * `return` or `error` alike; rejects only for this side's failures. An `id` is added when the
   * request has none; a request's own id is kept and must not be one still pending.
   */
  request(request: QmpRequest, options: QmpCallOptions = {}): Promise<QmpReply> {
    if (this.stage !== 'ready' && !(this.stage === 'negotiating' && request.execute === 'qmp_capabilities')) {
      return Promise.reject(
        new QmpClientError(
          this.stage === 'closed' ? 'closed' : 'state',
          this.stage === 'closed' ? 'the connection is closed' : 'not connected yet',
        ),
      );
    }
    const message = request.id === undefined ? { ...request, id: this.nextId++ } : request;
    let line: string;
    let key: string;
    try {
      line = JSON.stringify(message);
      key = JSON.stringify(message.id);
    } catch (err) {
      return Promise.reject(new QmpClientError('state', `request is not JSON: ${(err as Error).message}`));
    }
    if (this.pending.has(key)) {
      return Promise.reject(new QmpClientError('state', `id ${key} is already used by a pending request`));
    }
    const command =
      typeof message.execute === 'string' ? message.execute : String(message['exec-oob'] ?? '?');
    const timeoutMs = options.timeoutMs ?? this.commandTimeoutMs;
    return new Promise<QmpReply>((resolve, reject) => {
      const timer = setTimeout(() => {
        // a late reply then finds no pending entry and is dropped (see settle)
        this.pending.delete(key);
        reject(new QmpClientError('command-timeout', `no reply to '${command}' within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(key, { command, resolve, reject, timer });
      this.socket!.write(`${line}\n`);
    });
  }

  /**
   * Resolves with the next event NAME (whose data `match` accepts, if given); rejects on timeout
   * (default: the command timeout) or when the connection ends. Call it before the command that
   * causes the event: an event that came in with the command's reply is already gone afterwards.
   */
  waitForEvent(
    name: string,
    options: { timeoutMs?: number; match?: (data: Record<string, unknown>) => boolean } = {},
  ): Promise<QmpEvent> {
    const timeoutMs = options.timeoutMs ?? this.commandTimeoutMs;
    return new Promise<QmpEvent>((resolve, reject) => {
      const cleanUp = () => {
        clearTimeout(timer);
        this.off('event', onEvent);
        this.off('close', onClose);
      };
      const onEvent = (event: QmpEvent) => {
        if (event.event !== name || (options.match && !options.match(event.data ?? {}))) return;
        cleanUp();
        resolve(event);
      };
      const onClose = (err: QmpClientError | undefined) => {
        cleanUp();
        reject(err ?? new QmpClientError('closed', `closed while waiting for event ${name}`));
      };
      const timer = setTimeout(() => {
        cleanUp();
        reject(new QmpClientError('command-timeout', `no event ${name} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.on('event', onEvent);
      this.on('close', onClose);
    });
  }

  /** Ends the connection; pending calls reject (kind closed). Resolves once the socket is closed. */
  close(): Promise<void> {
    this.shutDown(undefined, new QmpClientError('closed', 'the client closed the connection'));
    return this.socketClosed;
  }

  private onData(chunk: Buffer): void {
    let start = 0;
    while (this.stage !== 'closed') {
      const newline = chunk.indexOf(0x0a, start);
      if (newline < 0) {
        // +1: the CR of a CRLF may be the last byte of this chunk
        if (this.partialBytes + chunk.length - start > this.maxLineBytes + 1) {
          this.failLineTooLong();
          return;
        }
        if (start < chunk.length) {
          this.partialLine.push(chunk.subarray(start));
          this.partialBytes += chunk.length - start;
        }
        return;
      }
      const tail = chunk.subarray(start, newline);
      let line = this.partialBytes === 0 ? tail : Buffer.concat([...this.partialLine, tail]);
      this.partialLine = [];
      this.partialBytes = 0;
      start = newline + 1;
      if (line.length > 0 && line[line.length - 1] === 0x0d) line = line.subarray(0, line.length - 1);
      if (line.length > this.maxLineBytes) {
        this.failLineTooLong();
        return;
      }
      this.onLine(line.toString('utf8'));
    }
  }

  private failLineTooLong(): void {
    this.fail(
      new QmpClientError('line-too-long', `the server sent a line longer than ${this.maxLineBytes} bytes`),
    );
  }

  private onLine(text: string): void {
    if (text.trim() === '') return;
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch {
      this.fail(new QmpClientError('protocol', `the server sent a line that is not JSON: ${preview(text)}`));
      return;
    }
    if (typeof message !== 'object' || message === null || Array.isArray(message)) {
      this.fail(
        new QmpClientError('protocol', `the server sent a line that is not an object: ${preview(text)}`),
      );
      return;
    }
    const msg = message as Record<string, unknown>;
    if (this.stage === 'greeting') {
      this.onGreeting(msg, text);
      return;
    }
    if (typeof msg.event === 'string') {
      this.emit('event', msg as unknown as QmpEvent);
    } else if ('return' in msg || isErrorBody(msg.error)) {
      this.settle(msg as QmpReply);
    }
    // anything else is ignored: the spec lets servers add message kinds, clients skip what they don't know
  }

  private onGreeting(msg: Record<string, unknown>, text: string): void {
    const qmp = msg.QMP as Record<string, unknown> | undefined;
    if (typeof qmp !== 'object' || qmp === null || !Array.isArray(qmp.capabilities)) {
      this.fail(new QmpClientError('greeting', `not a QMP server: its first line is ${preview(text)}`));
      return;
    }
    this.greeting = msg as unknown as QmpGreeting;
    this.stage = 'negotiating';
    // the connect deadline covers this too: request() gets a longer timer that never fires first
    this.request({ execute: 'qmp_capabilities' }, { timeoutMs: 2 ** 31 - 1 }).then(
      (reply) => {
        if ('error' in reply) {
          this.fail(
            new QmpClientError(
              'negotiation',
              `qmp_capabilities refused: ${reply.error.class}: ${reply.error.desc}`,
            ),
          );
          return;
        }
        if (this.stage !== 'negotiating') return;
        this.stage = 'ready';
        clearTimeout(this.connectTimer);
        const waiter = this.connectWaiter;
        this.connectWaiter = undefined;
        waiter?.resolve(this.greeting!);
      },
      () => {}, // the failure that rejected it has already rejected connect()
    );
  }

  /** Matches a reply to its request by id. */
  private settle(reply: QmpReply): void {
    let key: string | undefined;
    if (reply.id !== undefined) {
      key = JSON.stringify(reply.id);
    } else {
      // QEMU leaves the id out only when it could not read the request at all; without OOB (never
      // enabled here) it answers in order, so the reply belongs to the oldest request
      key = this.pending.keys().next().value;
    }
    const entry = key === undefined ? undefined : this.pending.get(key);
    if (!entry) return; // the reply to a request that already timed out
    this.pending.delete(key!);
    clearTimeout(entry.timer);
    entry.resolve(reply);
  }

  private fail(err: QmpClientError): void {
    this.shutDown(err, err);
  }

  /** The one way a connection ends: `reason` goes to `close` listeners, `rejection` to pending calls. */
  private shutDown(reason: QmpClientError | undefined, rejection: QmpClientError): void {
    if (this.stage === 'closed') return;
    this.stage = 'closed';
    clearTimeout(this.connectTimer);
    this.socket?.destroy();
    this.partialLine = [];
    this.partialBytes = 0;
    const waiter = this.connectWaiter;
    this.connectWaiter = undefined;
    waiter?.reject(rejection);
    for (const entry of this.pending.values()) {
      clearTimeout(entry.timer);
      entry.reject(rejection);
    }
    this.pending.clear();
    this.emit('close', reason);
  }
}

function isErrorBody(value: unknown): value is { class: string; desc: string } {
  return typeof value === 'object' && value !== null && 'class' in value && 'desc' in value;
}

function preview(text: string): string {
  return JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}...` : text);
}

function describeSocketError(err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case 'ENOENT':
      return 'no such socket (ENOENT)';
    case 'ECONNREFUSED':
      return 'connection refused (ECONNREFUSED)';
    case 'EACCES':
      return 'permission denied (EACCES)';
    case 'ECONNRESET':
      return 'connection reset by the server (ECONNRESET)';
    default:
      return err.message;
  }
}

// ---- qmp-shell syntax ------------------------------------------------------------------------------

/**
 * One line of qmp-shell syntax as a request, or null for a line with nothing to send (empty, or a
 * `#` comment). Throws a QmpClientError (kind syntax) for a line that does not parse.
 *
 *   COMMAND [KEY=VALUE ...]     e.g. `migrate uri=tcp:127.0.0.1:4444 detach=true`
 *   {"execute": ...}            a line starting with `{` is a raw JSON request, sent as it is
 *
 * A VALUE that parses as JSON is JSON (numbers, true/false, null, [..], {..}, "a string"); one in
 * single quotes is the text between them; anything else is a string (`uri=tcp:h:1`). JSON values
 * may contain spaces (`caps=[1, 2]`): words are split on blanks outside quotes and brackets. A
 * dotted KEY nests, as in qmp-shell: `a.b=1 a.c=2` is `{"a": {"b": 1, "c": 2}}`.
 */
export function parseShellCommand(line: string): QmpRequest | null {
  const text = line.trim();
  if (text === '' || text.startsWith('#')) return null;
  if (text.startsWith('{')) {
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new QmpClientError('syntax', `raw request is not valid JSON: ${(err as Error).message}`);
    }
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
      throw new QmpClientError('syntax', 'a raw request must be a JSON object');
    }
    assertExact(raw, 'request');
    return raw as QmpRequest;
  }
  const [name, ...pairs] = splitWords(text);
  if (!/^[A-Za-z_][\w.+-]*$/.test(name!)) {
    throw new QmpClientError('syntax', `expected a command name first, got '${name}'`);
  }
  if (pairs.length === 0) return { execute: name };
  const args: Record<string, unknown> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new QmpClientError('syntax', `expected KEY=VALUE, got '${pair}'`);
    setPath(args, pair.slice(0, eq), parseValue(pair.slice(0, eq), pair.slice(eq + 1)));
  }
  return { execute: name, arguments: args };
}

/** Splits on blanks that are outside quotes and brackets, so a JSON value stays one word. */
function splitWords(text: string): string[] {
  const words: string[] = [];
  let word = '';
  let quote: string | null = null;
  let escaped = false;
  const brackets: string[] = [];
  for (const ch of text) {
    if (quote) {
      word += ch;
      // backslash escapes only inside JSON strings; single quotes are literal (like a shell)
      if (escaped) escaped = false;
      else if (ch === '\\' && quote === '"') escaped = true;
      else if (ch === quote) quote = null;
      continue;
    }
    if (ch === '"' || ch === "'") {
      quote = ch;
    } else if (ch === '[' || ch === '{') {
      brackets.push(ch === '[' ? ']' : '}');
    } else if (ch === ']' || ch === '}') {
      if (brackets.pop() !== ch) throw new QmpClientError('syntax', `unbalanced '${ch}' in '${word}${ch}'`);
    } else if (/\s/.test(ch) && brackets.length === 0) {
      if (word !== '') words.push(word);
      word = '';
      continue;
    }
    word += ch;
  }
  if (quote) throw new QmpClientError('syntax', `unterminated ${quote} in '${word}'`);
  if (brackets.length > 0) throw new QmpClientError('syntax', `missing '${brackets.pop()}' in '${word}'`);
  if (word !== '') words.push(word);
  return words;
}

function parseValue(key: string, text: string): unknown {
  if (text.length >= 2 && text.startsWith("'") && text.endsWith("'")) return text.slice(1, -1);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    // text that starts like JSON but is not is a typo, not a string the user meant to send
    if (/^["[{]/.test(text)) {
      throw new QmpClientError('syntax', `${key}: not valid JSON: ${(err as Error).message}`);
    }
    return text;
  }
  assertExact(value, key);
  return value;
}

/**
 * JSON.parse rounds an integer beyond 2^53 (QMP has uint64 members) and makes 1e400 Infinity, which
 * would go out as null: refuse what would not be sent as it was typed.
 */
function assertExact(value: unknown, where: string): void {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) && (Number.isInteger(value) || !Number.isFinite(value))) {
      throw new QmpClientError(
        'syntax',
        `${where}: a number this large cannot be sent exactly (JSON numbers here are exact up to 2^53-1)`,
      );
    }
  } else if (typeof value === 'object' && value !== null) {
    for (const member of Object.values(value)) assertExact(member, where);
  }
}

function setPath(args: Record<string, unknown>, key: string, value: unknown): void {
  const path = key.split('.');
  // __proto__ would set the object's prototype instead of adding a member
  if (path.some((part) => part === '' || part === '__proto__')) {
    throw new QmpClientError('syntax', `bad key '${key}'`);
  }
  let node = args;
  for (const [i, part] of path.entries()) {
    const existing = Object.hasOwn(node, part) ? node[part] : undefined;
    if (i === path.length - 1) {
      if (existing !== undefined) throw new QmpClientError('syntax', `'${key}' is given twice`);
      node[part] = value;
      return;
    }
    if (existing === undefined) node[part] = {};
    else if (typeof existing !== 'object' || existing === null || Array.isArray(existing)) {
      throw new QmpClientError('syntax', `'${path.slice(0, i + 1).join('.')}' is both a value and a parent`);
    }
    node = node[part] as Record<string, unknown>;
  }
}
