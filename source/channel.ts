/**
 * Source-side connections: TCP connect with a deadline, keepalive, TLS when configured (the source is
 * the TLS client: it verifies the destination), the channel hello with its auth tag (channel binding,
 * shared/tls/binding.ts), and the return-path reader (RP framing, dispatched to a callback). The main
 * socket's reverse direction may carry one ERROR frame from the destination (its reason for refusing),
 * read with the same framer. connectTimeoutMs bounds TCP connect and TLS handshake together.
 */
import net from 'node:net';
import {
  asMigrationError,
  ErrorCode,
  type MigrationError,
  ProtocolError,
  SocketError,
} from '../shared/errors.js';
import { type ChannelKind, ChannelKind as Kind } from '../shared/protocol/constants.js';
import { encodeHello } from '../shared/protocol/hello.js';
import { RpFramer, type RpMessage } from '../shared/protocol/return-path-codec.js';
import { ChannelWriter } from '../shared/socket-io.js';
import { ChannelBinding } from '../shared/tls/binding.js';
import type { TlsConfig } from '../shared/tls/config.js';
import { secureClient } from '../shared/tls/secure.js';
import { awaitAccept } from './hello-answer.js';

export interface ConnectOptions {
  host: string;
  port: number;
  migrationId: Buffer;
  connectTimeoutMs: number;
  /** TLS credentials (shared/tls/config.ts); plaintext when absent. */
  tls?: TlsConfig | null;
  /** Binding state of this migration's channels; default: one per options object (MAIN sets it). */
  binding?: ChannelBinding;
  /** Cancels the connect, handshake and ACCEPT wait: the socket is destroyed, the reason thrown. */
  signal?: AbortSignal;
}

const bindings = new WeakMap<ConnectOptions, ChannelBinding>();

/** The binding (migration key K once MAIN is connected) shared by channels opened with `opts`. */
export function bindingFor(opts: ConnectOptions): ChannelBinding {
  if (opts.binding) return opts.binding;
  let b = bindings.get(opts);
  if (!b) {
    b = new ChannelBinding();
    bindings.set(opts, b);
  }
  return b;
}

export async function connectChannel(
  opts: ConnectOptions,
  kind: ChannelKind,
  name: string,
): Promise<ChannelWriter> {
  const started = Date.now();
  opts.signal?.throwIfAborted();
  // A cancel destroys whatever socket this channel has so far; each stage below then fails at once
  // (its 'close'), and the caller sees the signal's reason rather than the stage's error.
  let current: net.Socket | null = null;
  const onAbort = () => current?.destroy();
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    return await connectStages(opts, kind, name, started, (s) => {
      current = s;
    });
  } catch (err) {
    if (opts.signal?.aborted) throw opts.signal.reason;
    throw err;
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
  }
}

async function connectStages(
  opts: ConnectOptions,
  kind: ChannelKind,
  name: string,
  started: number,
  track: (s: net.Socket) => void,
): Promise<ChannelWriter> {
  const raw = await new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect({ host: opts.host, port: opts.port, noDelay: true });
    track(s);
    // destroyed before connecting (a cancel): no 'error' follows, only 'close'
    s.once('close', () => {
      clearTimeout(timer);
      reject(new SocketError(ErrorCode.CANCELLED, `${name} channel: connect cancelled`));
    });
    const timer = setTimeout(() => {
      s.destroy();
      reject(
        new SocketError(
          ErrorCode.TIMEOUT,
          `${name} channel: no connection to ${opts.host}:${opts.port} within ${opts.connectTimeoutMs} ms`,
        ),
      );
    }, opts.connectTimeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      s.removeAllListeners('close');
      resolve(s);
    });
    s.once('error', (err) => {
      clearTimeout(timer);
      const e = asMigrationError(err, ErrorCode.CONNECT);
      reject(
        new SocketError(
          e.code,
          `${name} channel: cannot connect to ${opts.host}:${opts.port}: ${e.message}`,
          {},
          { cause: err },
        ),
      );
    });
  });
  raw.setKeepAlive(true, 1000);
  raw.on('error', () => {}); // with TLS, errors surface on the TLS socket (it owns the handle)
  const socket = opts.tls
    ? await secureClient({ socket: raw }, opts.tls, {
        host: opts.host,
        timeoutMs: Math.max(1, opts.connectTimeoutMs - (Date.now() - started)),
        what: `${name} channel to ${opts.host}:${opts.port}`,
        signal: opts.signal,
      })
    : raw;
  track(socket);
  const binding = bindingFor(opts);
  const fields = { kind, index: 0, migrationId: opts.migrationId };
  const authTag = kind === Kind.MAIN ? binding.mainTag(socket, fields) : binding.tag(socket, fields);
  const writer = new ChannelWriter(socket, name);
  await writer.write(encodeHello({ ...fields, authTag }));
  if (kind === Kind.MAIN)
    await awaitAccept(
      socket,
      `${opts.host}:${opts.port}`,
      Math.max(1, opts.connectTimeoutMs - (Date.now() - started)),
    );
  return writer;
}

/**
 * Reads RP frames from a socket (the return path, or the main socket's reverse direction) and hands
 * each message to `onMessage`; protocol errors and closes go to `onError`.
 */
/**
 * Reads a channel's destination→source direction. On the return path every message type is allowed;
 * on the main socket's reverse direction (`errorOnly`) the protocol allows exactly one ERROR frame,
 * so anything else, or a second frame, is a protocol error. A message that fails to decode, or whose
 * handler throws, fails the channel through onError: a peer's bytes never throw out of this callback.
 */
export function readReturnPath(
  writer: ChannelWriter,
  onMessage: (m: RpMessage) => void,
  onError: (e: MigrationError) => void,
  errorOnly = false,
): void {
  const framer = new RpFramer();
  let frames = 0;
  const onData = (chunk: Buffer) => {
    try {
      for (const m of framer.feed(chunk)) {
        if (errorOnly && (m.type !== 'error' || ++frames > 1))
          throw new ProtocolError(
            ErrorCode.UNKNOWN_MESSAGE,
            `the destination may send one ERROR here, got '${m.type}'${frames > 1 ? ' after it' : ''}`,
          );
        onMessage(m);
      }
    } catch (err) {
      writer.socket.off('data', onData);
      onError(asMigrationError(err, ErrorCode.MALFORMED));
      writer.socket.destroy();
    }
  };
  writer.socket.on('data', onData);
  // awaitAccept leaves the main socket paused (nothing read is lost before this listener exists)
  writer.socket.resume();
  writer.socket.on('close', () =>
    onError(
      writer.error ??
        new SocketError(ErrorCode.PEER_CLOSED, `${writer.name} channel closed by the destination`),
    ),
  );
}

export const MAIN = Kind.MAIN;
export const RETURN_PATH = Kind.RETURN_PATH;
