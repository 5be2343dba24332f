/**
 * TLS for a channel, usable by any channel owner (main, return path, page channels in workers).
 *
 *   secureClient(target, cfg, opts)  the migration SOURCE's end: verifies the destination (x509: against
 *                                    ca-cert.pem and the host name; PSK: by the key), presents a client
 *                                    certificate when it has one.
 *   secureServer(socket, cfg, ms)    the migration DESTINATION's end: server certificate or PSK identities;
 *                                    with verify-peer, the peer must present a client certificate signed by
 *                                    ca-cert.pem (checked here, after the handshake, so the refusal can be
 *                                    sent to the peer as one ERROR frame instead of a bare TLS alert).
 *
 * TLS roles follow the migration roles, not who opened the TCP connection: a page channel the
 * destination's worker connects to the source is still secured with secureServer() on the destination's
 * end and secureClient({ socket }) on the source's, so each side keeps QEMU's credential files.
 *
 * `onread` (reading straight into a caller's buffer): Node 20 passes it only to a TLS socket that
 * tls.connect() creates itself (`secureClient({ host, port, onread })`, verified with 20.20); a TLS socket
 * wrapping an existing socket — every server end, and secureClient({ socket }) — ignores it and delivers
 * 'data' events (one copy per record). Both resolve once the handshake is done and verified.
 */
import net from 'node:net';
import tls from 'node:tls';
import { ErrorCode, MigrationError } from '../errors.js';
import type { TlsConfig, X509Config } from './config.js';

/** First byte of every TLS record of type handshake (a ClientHello starts with it). */
export const TLS_HANDSHAKE_RECORD = 0x16;

/**
 * TLS-PSK suites. TLS 1.2 only: with TLS 1.3, Node's (OpenSSL's legacy) PSK callbacks work, but an
 * unknown identity falls back to certificate authentication and fails as a generic handshake_failure,
 * and a wrong key as illegal_parameter; TLS 1.2 names both (unknown_psk_identity, bad_record_mac).
 * All three suites use ECDHE, so a leaked PSK does not decrypt recorded sessions.
 */
export const PSK_CIPHERS =
  'ECDHE-PSK-CHACHA20-POLY1305:ECDHE-PSK-AES256-CBC-SHA384:ECDHE-PSK-AES128-CBC-SHA256';

export class TlsError extends MigrationError {
  /** Set when the handshake completed but the peer was refused: the socket to send the refusal on. */
  socket?: tls.TLSSocket;
}

export type ClientTarget = { socket: net.Socket } | { host: string; port: number; onread?: net.OnReadOpts };

export interface SecureClientOptions {
  /** The host the source connected to: the name checked in the server certificate (unless tls-hostname). */
  host: string;
  timeoutMs: number;
  /** For messages, e.g. 'main channel'. */
  what?: string;
  /** Cancels the handshake: the socket is destroyed and the promise rejects with the reason. */
  signal?: AbortSignal;
}

export function secureClient(
  target: ClientTarget,
  cfg: TlsConfig,
  opts: SecureClientOptions,
): Promise<tls.TLSSocket> {
  const what = opts.what ?? 'channel';
  const { signal } = opts;
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const s = tls.connect({ ...target, ...clientOptions(cfg, opts.host) });
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    };
    // destroying the wrapped socket does not end the handshake: the TLS socket itself must go
    const onAbort = () => {
      done();
      s.destroy();
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(() => {
      done();
      s.destroy();
      reject(new TlsError(ErrorCode.TIMEOUT, `${what}: TLS handshake not done within ${opts.timeoutMs} ms`));
    }, opts.timeoutMs);
    s.once('secureConnect', () => {
      done();
      s.removeAllListeners('error');
      s.on('error', () => {}); // never unhandled: the owner's listeners and 'close' report it
      s.setNoDelay(true);
      resolve(s);
    });
    s.once('error', (err) => {
      done();
      s.destroy();
      reject(
        new TlsError(
          ErrorCode.AUTH,
          `${what}: TLS handshake failed: ${clientReason(err, cfg)}`,
          {},
          { cause: err },
        ),
      );
    });
  });
}

function clientOptions(cfg: TlsConfig, host: string): tls.ConnectionOptions {
  if (cfg.kind === 'psk') {
    return {
      ...pskCommon(),
      pskCallback: () => ({ identity: cfg.identity, psk: Buffer.from(cfg.keys[cfg.identity]!, 'hex') }),
      checkServerIdentity: () => undefined, // the PSK authenticates the server
    };
  }
  const name = cfg.hostname ?? host;
  return {
    ca: cfg.ca,
    cert: cfg.cert,
    key: cfg.key,
    minVersion: 'TLSv1.2',
    rejectUnauthorized: true,
    servername: net.isIP(name) ? undefined : name,
    checkServerIdentity: (_h, cert) => tls.checkServerIdentity(name, cert),
  };
}

function pskCommon(): tls.SecureContextOptions {
  return { ciphers: PSK_CIPHERS, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' };
}

/**
 * Runs the server end of the handshake on an accepted (or, for page channels, connected) socket.
 * Rejects with MIG_ERR_AUTH naming the reason, or MIG_ERR_TIMEOUT; the socket is destroyed then.
 */
export function secureServer(socket: net.Socket, cfg: TlsConfig, timeoutMs: number): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    // One (never listening) tls.Server per connection: it ties the handshake's events to this socket.
    const server = tls.createServer({ ...serverOptions(cfg), handshakeTimeout: Math.max(1, timeoutMs) });
    // handshakeTimeout is an idle timer; this one is a total deadline (a peer trickling bytes is cut off)
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new TlsError(ErrorCode.TIMEOUT, `TLS handshake not done within ${timeoutMs} ms`));
    }, timeoutMs);
    server.once('secureConnection', (s: tls.TLSSocket) => {
      clearTimeout(timer);
      // after the handshake Node drops its own error handler: a peer's RST while we write a refusal
      // must not become an uncaught exception (the owner's listeners and 'close' report errors)
      s.on('error', () => {});
      const refusal = cfg.kind === 'x509' ? peerRefusal(s, cfg) : null;
      if (refusal) {
        refusal.socket = s;
        reject(refusal);
        return;
      }
      s.setNoDelay(true);
      resolve(s);
    });
    server.once('tlsClientError', (err: Error, s: tls.TLSSocket) => {
      clearTimeout(timer);
      s.destroy();
      const code = (err as NodeJS.ErrnoException).code;
      const e =
        code === 'ERR_TLS_HANDSHAKE_TIMEOUT'
          ? new TlsError(ErrorCode.TIMEOUT, `TLS handshake not done within ${timeoutMs} ms`)
          : new TlsError(
              ErrorCode.AUTH,
              `TLS handshake failed: ${serverReason(err, cfg)}`,
              {},
              { cause: err },
            );
      reject(e);
    });
    server.emit('connection', socket);
  });
}

function serverOptions(cfg: TlsConfig): tls.TlsOptions {
  if (cfg.kind === 'psk') {
    return {
      ...pskCommon(),
      pskCallback: (_s: tls.TLSSocket, identity: string) => {
        const hex = Object.hasOwn(cfg.keys, identity) ? cfg.keys[identity] : undefined;
        return hex ? Buffer.from(hex, 'hex') : null;
      },
    };
  }
  return {
    cert: cfg.cert,
    key: cfg.key,
    ca: cfg.ca,
    minVersion: 'TLSv1.2',
    requestCert: cfg.verifyPeer,
    // checked in peerRefusal(), so the source gets a reason instead of a reset
    rejectUnauthorized: false,
  };
}

/** verify-peer: the refusal for a missing or unverifiable client certificate, or null. */
function peerRefusal(s: tls.TLSSocket, cfg: X509Config): TlsError | null {
  if (!cfg.verifyPeer || s.authorized) return null;
  const code = String(s.authorizationError ?? 'unknown');
  const noCert = Object.keys(s.getPeerCertificate() ?? {}).length === 0;
  const why = noCert
    ? 'the source presented no client certificate (verify-peer: give it client-cert.pem and client-key.pem signed by this ca-cert.pem)'
    : `client certificate rejected: ${certReason(code, "this destination's ca-cert.pem")}`;
  return new TlsError(ErrorCode.AUTH, why);
}

/** Human reason for a certificate verification code (OpenSSL X509_V_ERR names). */
export function certReason(code: string, caName: string): string {
  switch (code) {
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'UNABLE_TO_GET_ISSUER_CERT':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'CERT_SIGNATURE_FAILURE':
      return `unknown CA: the certificate is not signed by ${caName} (${code})`;
    case 'CERT_HAS_EXPIRED':
      return `expired certificate (${code})`;
    case 'CERT_NOT_YET_VALID':
      return `certificate not yet valid (${code})`;
    case 'CERT_REVOKED':
      return `revoked certificate (${code})`;
    default:
      return code;
  }
}

const NOT_TLS = new Set([
  'ERR_SSL_WRONG_VERSION_NUMBER',
  'ERR_SSL_PACKET_LENGTH_TOO_LONG',
  'ERR_SSL_RECORD_LAYER_FAILURE',
  'ERR_SSL_UNEXPECTED_MESSAGE',
]);

function clientReason(err: Error, cfg: TlsConfig): string {
  const e = err as NodeJS.ErrnoException;
  const code = e.code ?? '';
  if (NOT_TLS.has(code))
    return `no TLS on the other side: the destination answered in plaintext (start it with ${flag(cfg)} too) (${code})`;
  if (code === 'ECONNRESET' || /disconnected before secure TLS/.test(e.message))
    return 'the destination closed the connection during the handshake (no TLS on the other side, or it refused these credentials)';
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID')
    return `the destination's certificate is not for this host: ${e.message} (set --tls-hostname NAME)`;
  if (code === 'ERR_SSL_TLSV1_ALERT_UNKNOWN_PSK_IDENTITY' && cfg.kind === 'psk')
    return `wrong PSK: the destination does not know identity '${cfg.identity}'`;
  if (/BAD_RECORD_MAC|DECRYPT_ERROR|DECRYPTION_FAILED/.test(code) && cfg.kind === 'psk')
    return `wrong PSK: the key for identity '${cfg.identity}' differs from the destination's (${code})`;
  if (/HANDSHAKE_FAILURE|NO_SHARED_CIPHER|NO_CIPHERS/.test(code))
    return `no common TLS parameters: does the destination use ${flag(cfg)} too, with the same kind of credentials? (${code})`;
  if (/^[A-Z_]+$/.test(code) && !code.startsWith('ERR_'))
    return `the destination's certificate: ${certReason(code, caOf(cfg))}`;
  return firstLine(e.message);
}

function serverReason(err: Error, cfg: TlsConfig): string {
  const e = err as NodeJS.ErrnoException;
  const code = e.code ?? '';
  if (code === 'ERR_SSL_PSK_IDENTITY_NOT_FOUND')
    return 'wrong PSK: the source sent an identity this destination does not know';
  if (cfg.kind === 'psk' && /BAD_RECORD_MAC|DECRYPT|CIPHER_OPERATION_FAILED|BINDER/.test(code))
    return `wrong PSK: the source's key for its identity differs from this destination's, or the handshake was replayed or tampered with (${code})`;
  if (/ALERT_(UNKNOWN_CA|BAD_CERTIFICATE|CERTIFICATE_UNKNOWN|DECRYPT_ERROR)/.test(code))
    return `the source rejected this destination's certificate (${code})`;
  if (code === 'ECONNRESET' || /socket hang up|disconnected/.test(e.message))
    return "the source closed the connection during the handshake (did it reject this destination's certificate or key?)";
  if (/NO_SHARED_CIPHER|HANDSHAKE_FAILURE|NO_SUITABLE/.test(code))
    return `no common TLS parameters: does the source use ${flag(cfg)} too, with the same kind of credentials? (${code})`;
  if (NOT_TLS.has(code)) return `the source did not continue in TLS (${code})`;
  return firstLine(e.message);
}

function flag(cfg: TlsConfig): string {
  return cfg.kind === 'psk' ? '--tls-psk' : '--tls-creds';
}

function caOf(cfg: TlsConfig): string {
  return cfg.kind === 'x509' ? `${cfg.dir}/ca-cert.pem` : 'the CA';
}

function firstLine(s: string): string {
  return s
    .split('\n')[0]!
    .replace(/^[0-9A-F]+:error:[0-9A-F]+:/, '')
    .trim();
}

/** The certificate subject of a TLS peer (for logs), or the PSK identity line. */
export function describePeer(s: tls.TLSSocket): string {
  const proto = `${s.getProtocol() ?? '?'} ${s.getCipher()?.name ?? '?'}`;
  const cert = s.getPeerCertificate?.();
  const cn = cert && Object.keys(cert).length > 0 ? `, peer CN=${cert.subject?.CN ?? '?'}` : '';
  return `${proto}${cn}`;
}
