/**
 * Page channels carry TLS too: the source page worker is the TLS client on the connection the
 * destination's worker opened, and each page-channel hello carries a tag keyed by the migration key
 * and bound to its own TLS session. A migration with multifd over TLS (PSK and x509) completes with
 * the guest verified byte for byte.
 */
import { join } from 'node:path';
import t from 'tap';
import { generatePsk, generateX509, haveOpenssl } from '../../shared/tls/generate.js';
import { runMigration, tempDir } from '../helpers/pair.js';

for (const mode of ['psk', 'x509'] as const) {
  t.test(`multifd over TLS ${mode}: page channels encrypted, guest verified`, async (t) => {
    t.setTimeout(90_000);
    if (mode === 'x509' && !(await haveOpenssl())) {
      t.comment('no openssl command to make certificates: x509 case not run');
      return;
    }
    const dir = await tempDir(t);
    const creds =
      mode === 'psk'
        ? ['--tls-psk', await generatePsk(join(dir, 'keys.psk'))]
        : ['--tls-creds', await generateX509(join(dir, 'x509'))];
    const r = await runMigration(t, {
      ram: '64M',
      capabilities: 'return-path,multifd',
      source: [...creds, '--dirty-rate', '8M', '--multifd-channels', '2'],
      destination: creds,
      timeoutMs: 60_000,
    });
    t.equal(r.srcCode, 0, `source exits 0 (${r.srcStderr.filter((l) => l.includes('MIG_ERR')).join(' | ')})`);
    t.equal(
      r.dstCode,
      0,
      `destination exits 0 (${r.dstStderr.filter((l) => l.includes('MIG_ERR')).join(' | ')})`,
    );
    t.equal(r.dumpsEqual, true, 'RAM byte-identical');
    t.equal(r.srcReport?.integrity?.match, true);
    t.equal(r.dstReport?.guest?.['self-check']?.ok, true);
  });
}
