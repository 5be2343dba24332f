/**
 * `stranger.ts --target HOST:PORT [--target ...] [--hold-ms MS]` — the chaos suite's stranger on
 * the source's page ports: to each target it opens three connections (56 junk bytes, an idle one, and
 * a TLS ClientHello), holds them MS ms (default 3000), then closes them. Run inside the destination's
 * namespace (the address the source accepts page channels from), so only the hello can tell it
 * apart. Prints "ready" when all are open and one JSON line {"opened":N,"closed-by-peer":M} at the end.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { parseArgs } from 'node:util';
import { parseHostPort } from '../../shared/cli/args.js';

const { values } = parseArgs({
  options: { target: { type: 'string', multiple: true }, 'hold-ms': { type: 'string', default: '3000' } },
});
const targets = (values.target ?? []).map((t) => parseHostPort(t, '--target'));
const sockets: net.Socket[] = [];
let closedByPeer = 0;
const open = (host: string, port: number, then: (s: net.Socket) => void) =>
  new Promise<void>((resolve) => {
    const s = net.connect({ host, port });
    sockets.push(s);
    s.on('error', () => {});
    s.on('close', () => closedByPeer++);
    s.on('connect', () => {
      then(s);
      resolve();
    });
    s.on('error', () => resolve());
  });
await Promise.all(
  targets.flatMap(({ host, port }) => [
    open(host, port, (s) => s.write(randomBytes(56))),
    open(host, port, () => {}),
    open(host, port, (s) => tls.connect({ socket: s, rejectUnauthorized: false }).on('error', () => {})),
  ]),
);
process.stdout.write('ready\n');
await new Promise((r) => setTimeout(r, Number(values['hold-ms'])));
const closedBefore = closedByPeer;
for (const s of sockets) s.destroy();
process.stdout.write(`${JSON.stringify({ opened: sockets.length, 'closed-by-peer': closedBefore })}\n`);
