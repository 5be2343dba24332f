/**
 * Safe defaults for the command line: without TLS a destination listens on loopback only; another
 * address needs --insecure and gets a warning. Warnings are printed as
 * `switchover-<side>: warning: ...` (never a MIG_ERR line, so they do not count as failures).
 */
import { isLoopback } from '../cli/args.js';
import { ErrorCode, ParameterError } from '../errors.js';
import { keyFileWarning, loadTlsConfig, type TlsConfig, type TlsOptionValues } from './config.js';

export interface SecurityOptions extends TlsOptionValues {
  insecure: boolean;
}

/** Loads credentials and applies the listen policy; returns the config and the warnings to print. */
export function destinationSecurity(
  o: SecurityOptions,
  listenHost: string,
): { tls: TlsConfig | null; warnings: string[] } {
  const tls = loadTlsConfig(o, 'server');
  const warnings = commonWarnings(tls);
  if (!tls && !isLoopback(listenHost)) {
    if (!o.insecure) {
      throw new ParameterError(
        ErrorCode.USAGE,
        `refusing to listen on ${listenHost} without TLS: anyone who reaches it could overwrite the guest; use --tls-creds DIR or --tls-psk FILE (or --insecure on a network you trust)`,
      );
    }
    warnings.push(
      `listening on ${listenHost} WITHOUT TLS (--insecure): anyone who reaches this port can read the guest's memory or send this destination a guest of their own`,
    );
  }
  if (tls?.kind === 'x509' && !tls.verifyPeer) {
    warnings.push(
      `x509 without ca-cert.pem in ${tls.dir}: the source is not authenticated (no verify-peer); the first source to connect migrates into this destination`,
    );
  }
  return { tls, warnings };
}

export function sourceSecurity(
  o: SecurityOptions,
  connectHost: string,
): { tls: TlsConfig | null; warnings: string[] } {
  const tls = loadTlsConfig(o, 'client');
  const warnings = commonWarnings(tls);
  if (!tls && !isLoopback(connectHost))
    warnings.push(`migrating to ${connectHost} WITHOUT TLS: guest memory crosses the network in plaintext`);
  return { tls, warnings };
}

function commonWarnings(tls: TlsConfig | null): string[] {
  const w = tls ? keyFileWarning(tls) : null;
  return w ? [w] : [];
}
