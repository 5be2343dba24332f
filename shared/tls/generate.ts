/**
 * Throwaway credentials for `pair --tls`, the tests and the bench: an x509 directory with QEMU's file
 * names, made with the `openssl` command (P-256 keys, 2-day validity, SANs localhost/127.0.0.1/::1),
 * or a TLS-PSK key file made with node:crypto. Nothing here is for production credentials.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ErrorCode, MigrationError } from '../errors.js';
import { X509_FILES } from './config.js';

const run = promisify(execFile);

export interface X509GenOptions {
  /** Also write client-cert.pem and client-key.pem (default true). */
  client?: boolean;
  /** Write ca-cert.pem (default true). A destination directory without it has no verify-peer. */
  ca?: boolean;
  /** The server certificate expired yesterday. */
  expiredServer?: boolean;
  /** Common name of the CA (distinct CAs for wrong-CA tests). */
  caName?: string;
}

export async function haveOpenssl(): Promise<boolean> {
  try {
    await run('openssl', ['version']);
    return true;
  } catch {
    return false;
  }
}

/** Creates DIR with a fresh CA and certificates signed by it. Returns DIR. */
export async function generateX509(dir: string, opts: X509GenOptions = {}): Promise<string> {
  if (!(await haveOpenssl()))
    throw new MigrationError(
      ErrorCode.USAGE,
      'generating x509 credentials needs the openssl command (or use PSK)',
    );
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const work = join(dir, '.ca');
  await mkdir(work, { recursive: true, mode: 0o700 });
  const p = (name: string) => join(dir, name);
  const w = (name: string) => join(work, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  await openssl([
    'req',
    '-x509',
    ...ec,
    '-keyout',
    w('ca-key.pem'),
    '-out',
    p(X509_FILES.ca),
    '-subj',
    `/CN=${opts.caName ?? 'switchover throwaway CA'}`,
    '-days',
    '2',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  await leaf(work, dir, 'server', {
    cert: X509_FILES.serverCert,
    key: X509_FILES.serverKey,
    ext: 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\n',
    days: opts.expiredServer ? '-1' : '2',
  });
  if (opts.client ?? true) {
    await leaf(work, dir, 'client', {
      cert: X509_FILES.clientCert,
      key: X509_FILES.clientKey,
      ext: 'extendedKeyUsage=clientAuth\n',
      days: '2',
    });
  }
  await rm(work, { recursive: true, force: true });
  if (opts.ca === false) await rm(p(X509_FILES.ca), { force: true });
  return dir;
}

async function leaf(
  work: string,
  dir: string,
  cn: string,
  f: { cert: string; key: string; ext: string; days: string },
): Promise<void> {
  const csr = join(work, `${cn}.csr`);
  const ext = join(work, `${cn}.ext`);
  await writeFile(ext, f.ext);
  await openssl([
    'req',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    join(dir, f.key),
    '-out',
    csr,
    '-subj',
    `/CN=switchover-${cn}`,
  ]);
  await chmod(join(dir, f.key), 0o600);
  await openssl([
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    join(dir, X509_FILES.ca),
    '-CAkey',
    join(work, 'ca-key.pem'),
    '-CAcreateserial',
    '-CAserial',
    join(work, 'ca.srl'),
    '-out',
    join(dir, f.cert),
    '-days',
    f.days,
    '-extfile',
    ext,
  ]);
}

async function openssl(args: string[]): Promise<void> {
  try {
    await run('openssl', args);
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new MigrationError(
      ErrorCode.INTERNAL,
      `openssl ${args[0]} failed: ${(e.stderr ?? e.message).trim().split('\n')[0]}`,
    );
  }
}

/** Writes a QEMU-style keys.psk (`identity:hex-key`, 32 random bytes, mode 600). Returns FILE. */
export async function generatePsk(
  file: string,
  identity = 'switchover',
  key = randomBytes(32),
): Promise<string> {
  await writeFile(file, `${identity}:${key.toString('hex')}\n`, { mode: 0o600 });
  return file;
}
