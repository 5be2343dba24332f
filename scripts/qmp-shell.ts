/**
 * `npm run qmp -- [options] ADDRESS` — a small interactive QMP client in the manner of QEMU's
 * qmp-shell, for the source's and destination's QMP monitors (or QEMU's). ADDRESS is unix:PATH,
 * tcp:HOST:PORT or a bare PATH. The protocol is scripts/lib/qmp-client.ts; the line syntax is its
 * parseShellCommand:
 *
 *   (QEMU) migrate-set-capabilities capabilities=[{"capability":"events","state":true}]
 *   (QEMU) migrate-set-parameters downtime-limit=500 max-bandwidth=1048576
 *   (QEMU) migrate uri=tcp:127.0.0.1:4444
 *   (QEMU) {"execute": "query-migrate"}
 *
 * Replies are printed as indented JSON (without the id the shell added), events as one line
 * `event NAME {DATA} @ TIME` whenever they come. On a terminal there is a prompt; from a pipe there
 * is none, each command waits for its reply before the next line is read, and the shell exits 0 at
 * the end of the input (1 at the first error with --stop-on-error). A bad line, a timed-out command
 * or an error reply is reported and the shell goes on. Exit 1 when it cannot connect or the
 * connection is lost with lines still to send (the server going away after the last one, as after
 * `quit`, is no error), 2 for bad usage; Ctrl-C ends it at once.
 */
import { clearLine, createInterface, cursorTo, type Interface } from 'node:readline';
import { parseArgs } from 'node:util';
import { runCli } from '../shared/cli/run.js';
import { ErrorCode, ParameterError } from '../shared/errors.js';
import { parseDuration } from '../shared/units.js';
import {
  DEFAULT_COMMAND_TIMEOUT_MS,
  DEFAULT_CONNECT_TIMEOUT_MS,
  parseQmpAddress,
  parseShellCommand,
  QmpClient,
  type QmpClientError,
  type QmpEvent,
  type QmpReply,
} from './lib/qmp-client.js';

const USAGE = `usage: npm run qmp -- [-e] [--timeout DURATION] [--connect-timeout DURATION] ADDRESS

A QMP client in the manner of QEMU's qmp-shell. ADDRESS is unix:PATH, tcp:HOST:PORT or a bare PATH
(a unix socket). Reads one command a line from stdin:

  COMMAND [KEY=VALUE ...]    migrate uri=tcp:127.0.0.1:4444
                             migrate-set-parameters downtime-limit=500 max-bandwidth=1048576
                             migrate-set-capabilities capabilities=[{"capability":"events","state":true}]
  {"execute": ...}           a raw JSON request, sent as it is

A VALUE that parses as JSON is JSON (500, true, null, [..], {..}, "text"), 'text' in single quotes
is that text, anything else is a string; a dotted KEY nests (a.b=1 sends {"a":{"b":1}}). Empty
lines and lines starting with # are skipped. Replies are printed as indented JSON; events as
  event NAME {DATA} @ TIME
when they come. A terminal gets a (QEMU) prompt; from a pipe each command waits for its reply and
the shell exits 0 at the end of the input.

  -e, --stop-on-error         exit 1 at the first error reply, bad line or timeout
  --timeout DURATION          how long to wait for each reply (default ${DEFAULT_COMMAND_TIMEOUT_MS / 1000}s;
                              300ms, 1.5s, a bare number is ms)
  --connect-timeout DURATION  connecting, greeting and negotiation (default ${DEFAULT_CONNECT_TIMEOUT_MS / 1000}s)
  -h, --help                  this text

Exit: 0 at the end of the input, 1 cannot connect, connection lost or (with -e) an error, 2 bad usage.`;

const OPTIONS = {
  'stop-on-error': { type: 'boolean', short: 'e' },
  timeout: { type: 'string' },
  'connect-timeout': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

interface ShellOptions {
  /** As the user wrote it, for messages. */
  address: string;
  stopOnError: boolean;
  commandTimeoutMs: number;
  connectTimeoutMs: number;
}

function usageError(message: string, cause?: unknown): ParameterError {
  return new ParameterError(ErrorCode.USAGE, message, {}, cause === undefined ? undefined : { cause });
}

function positiveDuration(text: string | undefined, what: string, fallback: number): number {
  if (text === undefined) return fallback;
  const ms = parseDuration(text, what);
  if (ms <= 0 || ms > 2 ** 31 - 1) throw usageError(`${what}: '${text}' must be above 0 and below 24 days`);
  return ms;
}

function parseOptions(argv: string[]): ShellOptions | 'help' {
  let parsed: ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true; strict: true }>>;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (err) {
    throw usageError((err as Error).message.split('\n')[0]!, err);
  }
  const { values, positionals } = parsed;
  if (values.help) return 'help';
  if (positionals.length !== 1) {
    throw usageError(
      positionals.length === 0
        ? 'an ADDRESS is required (unix:PATH, tcp:HOST:PORT or PATH)'
        : `one ADDRESS expected, got ${positionals.length}: ${positionals.join(' ')}`,
    );
  }
  const address = positionals[0]!;
  try {
    parseQmpAddress(address);
  } catch (err) {
    throw usageError((err as Error).message, err);
  }
  return {
    address,
    stopOnError: values['stop-on-error'] === true,
    commandTimeoutMs: positiveDuration(values.timeout, '--timeout', DEFAULT_COMMAND_TIMEOUT_MS),
    connectTimeoutMs: positiveDuration(
      values['connect-timeout'],
      '--connect-timeout',
      DEFAULT_CONNECT_TIMEOUT_MS,
    ),
  };
}

/** `event MIGRATION {"status":"active"} @ 2026-12-06T19:26:05.123456Z` (the server's clock). */
function formatEvent(event: QmpEvent): string {
  const data = event.data === undefined ? '' : ` ${JSON.stringify(event.data)}`;
  return `event ${event.event}${data} @ ${formatTimestamp(event.timestamp)}`;
}

function formatTimestamp(timestamp: QmpEvent['timestamp']): string {
  const { seconds, microseconds } = timestamp ?? {};
  if (typeof seconds !== 'number' || typeof microseconds !== 'number' || seconds < 0 || microseconds < 0) {
    // QEMU sends -1/-1 when it could not read its clock: the time it arrived is the next best thing
    return new Date().toISOString();
  }
  const micros = String(Math.floor(microseconds)).padStart(6, '0');
  return new Date(Math.floor(seconds) * 1000).toISOString().replace(/\.\d{3}Z$/, `.${micros}Z`);
}

async function connect(options: ShellOptions): Promise<QmpClient | undefined> {
  const client = new QmpClient({ commandTimeoutMs: options.commandTimeoutMs });
  try {
    await client.connect(options.address, { timeoutMs: options.connectTimeoutMs });
    return client;
  } catch (err) {
    let reason = (err as Error).message;
    // a bare PATH is a unix socket, unlike qmp-shell's HOST:PORT: say so when that is the likely mix-up
    if (/^[^/:]+:\d+$/.test(options.address) && (err as QmpClientError).kind === 'connect') {
      reason += ` (a bare ADDRESS is a unix socket path; for TCP write tcp:${options.address})`;
    }
    process.stderr.write(`qmp: cannot connect to ${options.address}: ${reason}\n`);
    return undefined;
  }
}

/** What became of one input line. */
type LineOutcome = 'ok' | 'failed' | { lost: string };

/**
 * Reads the lines into a queue of its own rather than with `for await`: when the server goes away
 * between two commands, the shell must know whether a line is still to be sent (an error) or the
 * input is done (no error: the last command may well have been `quit`).
 */
function runShell(client: QmpClient, options: ShellOptions): Promise<number> {
  const interactive = process.stdin.isTTY === true;
  const rl: Interface = createInterface({
    input: process.stdin,
    output: interactive ? process.stdout : undefined,
    terminal: interactive,
    prompt: '(QEMU) ',
  });
  /** The prompt is on screen: output that comes now must not end up after it. */
  let prompting = false;
  const print = (text: string) => {
    if (!prompting) {
      process.stdout.write(`${text}\n`);
      return;
    }
    clearLine(process.stdout, 0);
    cursorTo(process.stdout, 0);
    process.stdout.write(`${text}\n`);
    rl.prompt(true); // redraws the prompt and what the user had typed
  };
  const prompt = () => {
    if (!interactive) return;
    prompting = true;
    rl.prompt();
  };

  let lineNumber = 0;
  /** One line on stderr, in the form of the project's other errors; from a pipe, with the line number. */
  const report = (code: ErrorCode, message: string) => {
    process.stderr.write(`qmp: ${code}: ${interactive ? '' : `line ${lineNumber}: `}${message}\n`);
  };

  return new Promise<number>((resolve) => {
    const queue: string[] = [];
    let inputEnded = false;
    let busy = false;
    let finished = false;

    const finish = async (code: number) => {
      if (finished) return;
      finished = true;
      rl.close();
      if (interactive && code === 0) process.stdout.write('\n'); // Ctrl-D left the cursor after the prompt
      await new Promise((r) => setImmediate(r)); // print the events that came with the last reply
      await client.close();
      resolve(code);
    };
    const lost = (reason: string) => {
      if (prompting) process.stdout.write('\n');
      process.stderr.write(`qmp: connection to ${options.address} lost: ${reason}\n`);
      void finish(1);
    };

    const pump = async () => {
      if (busy || finished) return;
      busy = true;
      while (queue.length > 0 && !finished) {
        lineNumber++;
        const outcome = await runLine(client, queue.shift()!, print, report);
        if (typeof outcome === 'object') return lost(outcome.lost);
        if (outcome === 'failed' && options.stopOnError) return finish(1);
      }
      busy = false;
      if (inputEnded) return finish(0);
      prompt();
    };

    // the client emits an event at once, while the reply that came before it in the same read only
    // resolves its promise (microtasks): waiting for the next turn prints them in the order they came
    client.on('event', (event) => setImmediate(() => print(formatEvent(event))));
    client.on('close', (err) => {
      // our own close(); a command in flight (runLine sees it); or nothing left to send
      if (!err || finished || busy || (inputEnded && queue.length === 0)) return;
      lost(err.message);
    });
    rl.on('line', (line) => {
      prompting = false;
      queue.push(line);
      void pump();
    });
    rl.on('close', () => {
      inputEnded = true;
      void pump();
    });
    // with a terminal, readline takes Ctrl-C as a key; from a pipe SIGINT ends the process by default
    rl.on('SIGINT', () => {
      process.stdout.write('\n');
      process.exit(130);
    });
    prompt();
  });
}

/** Sends one line's request and prints the reply. */
async function runLine(
  client: QmpClient,
  line: string,
  print: (text: string) => void,
  report: (code: ErrorCode, message: string) => void,
): Promise<LineOutcome> {
  let request: ReturnType<typeof parseShellCommand>;
  try {
    request = parseShellCommand(line);
  } catch (err) {
    report(ErrorCode.USAGE, (err as Error).message);
    return 'failed';
  }
  if (request === null) return 'ok';
  const userGaveId = request.id !== undefined;
  let reply: QmpReply;
  try {
    reply = await client.request(request);
  } catch (err) {
    const kind = (err as QmpClientError).kind;
    if (kind === 'closed') return { lost: (err as Error).message };
    report(kind === 'command-timeout' ? ErrorCode.TIMEOUT : ErrorCode.INTERNAL, (err as Error).message);
    return 'failed';
  }
  const { id: _addedId, ...withoutId } = reply;
  print(JSON.stringify(userGaveId ? reply : withoutId, null, 2));
  return 'error' in reply ? 'failed' : 'ok';
}

runCli('qmp', "see 'npm run qmp -- --help'", async () => {
  const options = parseOptions(process.argv.slice(2));
  if (options === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  // a reader that went away (`| head`) is no error of ours
  process.stdout.on('error', () => process.exit(0));
  const client = await connect(options);
  if (!client) return 1;
  return runShell(client, options);
});
