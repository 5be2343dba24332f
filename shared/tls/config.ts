/**
 * TLS credentials, loaded the way QEMU's `tls-creds-x509` and `tls-creds-psk` objects load them.
 *
 * `--tls-creds DIR` (x509), QEMU's file names:
 *   destination  DIR/server-cert.pem + DIR/server-key.pem (required); DIR/ca-cert.pem when present turns
 *                on verify-peer: the source must present a client certificate signed by that CA.
 *   source       DIR/ca-cert.pem (required: the destination's certificate must chain to it);
 *                DIR/client-cert.pem + DIR/client-key.pem when present are presented to the destination.
 * `--tls-psk FILE` (TLS-PSK, QEMU's keys.psk): lines `identity:hex-key`; the source uses the first line,
 *   the destination accepts every identity in its file. Blank lines and `#` comments are skipped.
 *
 * A TlsConfig holds only strings and booleans, so it crosses into worker threads as workerData.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCode, ParameterError } from '../errors.js';

export type TlsRole = 'client' | 'server';

export interface X509Config {
  kind: 'x509';
  /** Where the files came from (for messages). */
  dir: string;
  /** PEM text. client: the CA that must sign the server; server: the CA for client certs (verify-peer). */
  ca?: string;
  /** PEM text of this side's certificate and key (server: required; client: optional). */
  cert?: string;
  key?: string;
  /** Path of the key file (for the permission warning). */
  keyFile?: string;
  /** Server: request and require a client certificate signed by `ca`. */
  verifyPeer: boolean;
  /** Client: the name the server certificate must carry (QEMU tls-hostname); default the connect host. */
  hostname?: string;
}

export interface PskConfig {
  kind: 'psk';
  file: string;
  /** Client: the identity sent (first line of the file). */
  identity: string;
  /** identity → key as hex. */
  keys: Record<string, string>;
}

export type TlsConfig = X509Config | PskConfig;

/** QEMU file names inside a --tls-creds directory. */
export const X509_FILES = {
  ca: 'ca-cert.pem',
  serverCert: 'server-cert.pem',
  serverKey: 'server-key.pem',
  clientCert: 'client-cert.pem',
  clientKey: 'client-key.pem',
} as const;

/** Shortest and longest PSK accepted (bytes): 128 bits minimum; OpenSSL's PSK_MAX_PSK_LEN. */
export const PSK_MIN_BYTES = 16;
export const PSK_MAX_BYTES = 256;
/** RFC 4279: identities up to 128 bytes must be supported; OpenSSL's limit is 128. */
export const PSK_MAX_IDENTITY = 128;

export interface TlsOptionValues {
  tlsCreds?: string;
  tlsPsk?: string;
  tlsHostname?: string;
}

/** Loads the credentials named by the options for one role; null when TLS is off. */
export function loadTlsConfig(o: TlsOptionValues, role: TlsRole): TlsConfig | null {
  if (o.tlsCreds && o.tlsPsk) throw usage('--tls-creds and --tls-psk are exclusive: give one of them');
  if (o.tlsHostname && !o.tlsCreds) throw usage('--tls-hostname needs --tls-creds (x509)');
  if (o.tlsCreds) return loadX509(o.tlsCreds, role, o.tlsHostname);
  if (o.tlsPsk) return loadPsk(o.tlsPsk);
  return null;
}

export function loadX509(dir: string, role: TlsRole, hostname?: string): X509Config {
  if (!isDir(dir)) throw usage(`--tls-creds: '${dir}' is not a directory`);
  const file = (name: string) => join(dir, name);
  const read = (name: string) => {
    try {
      return readFileSync(file(name), 'utf8');
    } catch (err) {
      throw usage(`--tls-creds: cannot read ${file(name)}: ${(err as NodeJS.ErrnoException).code ?? err}`);
    }
  };
  const has = (name: string) => existsSync(file(name));
  if (role === 'server') {
    for (const name of [X509_FILES.serverCert, X509_FILES.serverKey])
      if (!has(name)) throw usage(`--tls-creds: ${file(name)} is missing (the destination needs it)`);
    const verifyPeer = has(X509_FILES.ca);
    return {
      kind: 'x509',
      dir,
      cert: read(X509_FILES.serverCert),
      key: read(X509_FILES.serverKey),
      keyFile: file(X509_FILES.serverKey),
      ca: verifyPeer ? read(X509_FILES.ca) : undefined,
      verifyPeer,
    };
  }
  if (!has(X509_FILES.ca))
    throw usage(
      `--tls-creds: ${file(X509_FILES.ca)} is missing (the source verifies the destination with it)`,
    );
  const withCert = has(X509_FILES.clientCert);
  if (withCert !== has(X509_FILES.clientKey))
    throw usage(
      `--tls-creds: give both ${X509_FILES.clientCert} and ${X509_FILES.clientKey} in ${dir}, or neither`,
    );
  return {
    kind: 'x509',
    dir,
    ca: read(X509_FILES.ca),
    cert: withCert ? read(X509_FILES.clientCert) : undefined,
    key: withCert ? read(X509_FILES.clientKey) : undefined,
    keyFile: withCert ? file(X509_FILES.clientKey) : undefined,
    verifyPeer: false,
    hostname,
  };
}

export function loadPsk(path: string): PskConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw usage(`--tls-psk: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
  const { identity, keys } = parsePskFile(text, path);
  return { kind: 'psk', file: path, identity, keys };
}

/** Parses `identity:hex-key` lines (QEMU keys.psk). Throws a usage error naming the line. */
export function parsePskFile(
  text: string,
  name = 'psk file',
): { identity: string; keys: Record<string, string> } {
  const keys: Record<string, string> = Object.create(null);
  let identity: string | undefined;
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const where = `--tls-psk: ${name} line ${i + 1}`;
    const colon = line.indexOf(':');
    if (colon <= 0) throw usage(`${where}: expected identity:hex-key`);
    const id = line.slice(0, colon);
    const hex = line.slice(colon + 1).toLowerCase();
    if (Buffer.byteLength(id) > PSK_MAX_IDENTITY)
      throw usage(`${where}: identity longer than ${PSK_MAX_IDENTITY} bytes`);
    if (!/^([0-9a-f]{2})+$/.test(hex)) throw usage(`${where}: the key is not an even number of hex digits`);
    const bytes = hex.length / 2;
    if (bytes < PSK_MIN_BYTES || bytes > PSK_MAX_BYTES)
      throw usage(`${where}: a key of ${bytes} bytes (${PSK_MIN_BYTES}..${PSK_MAX_BYTES} accepted)`);
    if (id in keys) throw usage(`${where}: identity '${id}' appears twice`);
    keys[id] = hex;
    identity ??= id;
  });
  if (identity === undefined) throw usage(`--tls-psk: ${name} holds no identity:hex-key line`);
  return { identity, keys };
}

/** A warning (or null) when a key file can be read by group or others, as ssh warns. */
export function keyFileWarning(cfg: TlsConfig): string | null {
  const path = cfg.kind === 'psk' ? cfg.file : cfg.keyFile;
  if (!path) return null;
  try {
    const mode = statSync(path).mode & 0o777;
    return mode & 0o077 ? `${path} is readable by others (mode ${mode.toString(8)}); chmod 600 it` : null;
  } catch {
    return null;
  }
}

/** One line describing the credentials, for logs. */
export function describeTls(cfg: TlsConfig | null, role: TlsRole): string {
  if (!cfg) return 'plaintext (no TLS)';
  if (cfg.kind === 'psk')
    return role === 'client'
      ? `TLS-PSK, identity '${cfg.identity}'`
      : `TLS-PSK, ${Object.keys(cfg.keys).length} identit${Object.keys(cfg.keys).length === 1 ? 'y' : 'ies'}`;
  if (role === 'server')
    return `TLS x509, ${cfg.verifyPeer ? 'verify-peer (client certificate required)' : 'no client authentication'}`;
  return `TLS x509, ${cfg.cert ? 'with a client certificate' : 'no client certificate'}`;
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function usage(message: string): ParameterError {
  return new ParameterError(ErrorCode.USAGE, message);
}
