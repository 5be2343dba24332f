/**
 * Network impairments between the two namespaces, each by the most real mechanism this kernel has,
 * detected (never assumed) and named in `mechanism`: `tc netem` is tried first; without it rate is
 * `tbf` on both veth egresses, loss is nftables `numgen random` drops, a partition is an nft drop
 * (silent) or `reject with tcp reset` rule, delay is NFQUEUE + a C helper (nfq-delay.c, built with
 * gcc into a temp dir) or, if that fails, a userspace node relay. Loss, partition and NFQUEUE delay
 * match the first destination's address, so its page channels (connections to ports the source
 * announces) are hit as much as its main channel and return path, while the retry destination (its
 * own address in the same namespace) stays clean. `page` targets the page channels alone: the
 * first destination's TCP traffic on any port but its listening port.
 */
import { buildNfqHelper, type Helper, spawnHelper, startRelayHelper, withTimeout } from './helpers.js';
import { inNs, must, sh, type Topology } from './netns.js';

/** What an impairment hits: the first destination (address, listening port), all of it or its page channels. */
export interface Target {
  ip: string;
  port: number;
  channels: 'all' | 'page';
}

/** nft match for traffic to (`out`) or from the target, as seen in the source namespace. */
function nftMatch(target: Target, dir: 'out' | 'in'): string {
  const host = `ip ${dir === 'out' ? 'daddr' : 'saddr'} ${target.ip} meta l4proto tcp`;
  if (target.channels === 'all') return host;
  return `${host} tcp ${dir === 'out' ? 'dport' : 'sport'} != ${target.port}`;
}

function describe(target: Target): string {
  return target.channels === 'all'
    ? `all TCP to and from ${target.ip}`
    : `page channels only (TCP to and from ${target.ip}, any port but ${target.port})`;
}

export interface Active {
  what: string;
  mechanism: string;
  /** Address the source must connect to instead of the destination's (relays). */
  connect?: string;
  /** Undo the impairment (idempotent). */
  heal(): Promise<void>;
  /** Counters after the run: what the mechanism actually did. */
  evidence(): Promise<string>;
}

/** Several link impairments at once (rate, loss, delay: independent mechanisms), as one. */
export async function applyLink(
  t: Topology,
  link: { rate?: string; delayMs?: number; lossPercent?: number },
  target: Target,
  dst: string,
): Promise<Active> {
  const parts: Active[] = [];
  if (link.rate) parts.push(await applyRate(t, link.rate));
  if (link.lossPercent) parts.push(await applyLoss(t, link.lossPercent, target));
  if (link.delayMs) parts.push(await applyDelay(t, link.delayMs, target, dst));
  return {
    what: parts.map((p) => p.what).join(' + ') || 'no link impairment',
    mechanism: parts.map((p) => p.mechanism).join('; ') || 'none',
    connect: parts.find((p) => p.connect)?.connect,
    heal: async () => {
      for (const p of parts) await p.heal();
    },
    evidence: async () => (await Promise.all(parts.map((p) => p.evidence()))).join('; '),
  };
}

let netemProbe: Promise<string | null> | null = null;
/** null when `tc … netem` works in this kernel, else the reason it does not. */
export function netemUnavailable(t: Topology): Promise<string | null> {
  netemProbe ??= (async () => {
    const r = await sh([
      ...inNs(t.nsSrc),
      'tc',
      'qdisc',
      'add',
      'dev',
      t.vethSrc,
      'root',
      'netem',
      'delay',
      '1ms',
    ]);
    if (r.code === 0) {
      await sh([...inNs(t.nsSrc), 'tc', 'qdisc', 'del', 'dev', t.vethSrc, 'root']);
      return null;
    }
    return `tc netem: ${(r.stderr || r.stdout).trim() || `rc=${r.code}`}`;
  })();
  return netemProbe;
}

const sides = (t: Topology) =>
  [
    [t.nsSrc, t.vethSrc],
    [t.nsDst, t.vethDst],
  ] as const;

/** Root qdisc on both veth egresses; `tc -s qdisc` stats are kept as evidence when healed. */
async function rootQdisc(t: Topology, what: string, mechanism: string, qdisc: string[]): Promise<Active> {
  for (const [ns, dev] of sides(t))
    await must([...inNs(ns), 'tc', 'qdisc', 'add', 'dev', dev, 'root', ...qdisc]);
  const stats = async () => {
    const out: string[] = [];
    for (const [ns, dev] of sides(t)) {
      const s = (await sh([...inNs(ns), 'tc', '-s', 'qdisc', 'show', 'dev', dev])).stdout;
      const m = /Sent (\d+) bytes (\d+) pkt \(dropped (\d+), overlimits (\d+)/.exec(s);
      if (m) out.push(`${dev}: sent ${m[1]} B, dropped ${m[3]}, overlimits ${m[4]}`);
    }
    return out.join('; ');
  };
  let last = '';
  return {
    what,
    mechanism,
    heal: async () => {
      if (last) return;
      last = (await stats()) || 'no stats';
      for (const [ns, dev] of sides(t)) await sh([...inNs(ns), 'tc', 'qdisc', 'del', 'dev', dev, 'root']);
    },
    evidence: async () => last || stats(),
  };
}

const BITS: Record<string, number> = { k: 1e3, m: 1e6, g: 1e9 };
export function rateBits(rate: string): number {
  const m = /^(\d+(?:\.\d+)?)([kmg])bit$/i.exec(rate);
  if (!m) throw new Error(`rate '${rate}' is not N{k,m,g}bit`);
  return Number(m[1]) * BITS[m[2]!.toLowerCase()]!;
}

export async function applyRate(t: Topology, rate: string): Promise<Active> {
  const what = `rate ${rate}`;
  const why = await netemUnavailable(t);
  if (why === null)
    return rootQdisc(t, what, `tc netem rate ${rate} on both veth egresses`, ['netem', 'rate', rate]);
  // tbf needs a bucket of at least rate/HZ: 10 ms of traffic, no less than 32 KiB
  const burst = Math.max(32 * 1024, Math.ceil(rateBits(rate) / 8 / 100));
  return rootQdisc(t, what, `tbf rate ${rate} burst ${burst}b latency 50ms on both veth egresses (${why})`, [
    'tbf',
    'rate',
    rate,
    'burst',
    String(burst),
    'latency',
    '50ms',
  ]);
}

/** An nft table in the source namespace; `verdict` applies to the target's traffic in both directions. */
async function nftTable(t: Topology, name: string, target: Target, match: string, verdict: string) {
  const ruleset = `table inet ${name} {
  chain out { type filter hook output priority 0; policy accept; ${nftMatch(target, 'out')} counter ${match} counter ${verdict}; }
  chain in { type filter hook input priority 0; policy accept; ${nftMatch(target, 'in')} counter ${match} counter ${verdict}; }
}\n`;
  await must([...inNs(t.nsSrc), 'nft', '-f', '-'], ruleset);
  let healed = false;
  return {
    heal: async () => {
      if (healed) return;
      healed = true;
      await sh([...inNs(t.nsSrc), 'nft', 'delete', 'table', 'inet', name]);
    },
    counters: async (): Promise<string> => {
      if (healed) return 'healed (counters removed with the table)';
      const s = (await sh([...inNs(t.nsSrc), 'nft', 'list', 'table', 'inet', name])).stdout;
      const c = [...s.matchAll(/counter packets (\d+)/g)].map((m) => Number(m[1]));
      return `src→dst ${c[1] ?? '?'}/${c[0] ?? '?'} packets hit, dst→src ${c[3] ?? '?'}/${c[2] ?? '?'}`;
    },
  };
}

export async function applyLoss(t: Topology, percent: number, target: Target): Promise<Active> {
  const what = `loss ${percent}% each direction`;
  const why = await netemUnavailable(t);
  if (why === null)
    return rootQdisc(t, what, `tc netem loss ${percent}% on both veth egresses`, [
      'netem',
      'loss',
      `${percent}%`,
    ]);
  // nft sees what TCP hands the stack: with segmentation offload a 64 KiB GSO super-packet, so one
  // "drop" would lose ~45 wire segments (a first run counted 68 drops in 1296 packets for 70 MB).
  // One segment per skb makes each numgen draw one wire packet; TCP reads this at connect time.
  for (const [ns, dev] of sides(t)) await must(['ip', '-n', ns, 'link', 'set', dev, 'gso_max_segs', '1']);
  const tb = await nftTable(t, 'swchaos_loss', target, `numgen random mod 100 < ${percent}`, 'drop');
  let last = '';
  return {
    what,
    mechanism: `nft 'numgen random mod 100 < ${percent} drop' on ${describe(target)}, veth gso_max_segs 1 so a drop is one wire segment (${why})`,
    heal: async () => {
      if (!last) last = await tb.counters();
      await tb.heal();
    },
    evidence: async () => `dropped: ${last || (await tb.counters())}`,
  };
}

export async function applyPartition(t: Topology, mode: 'drop' | 'reject', target: Target): Promise<Active> {
  const verdict = mode === 'drop' ? 'drop' : 'reject with tcp reset';
  // the resets nft generates carry the same port and would hit the other chain's rule (a first
  // version did exactly that and "reject" degraded to a silent drop): let RST segments through
  const tb = await nftTable(
    t,
    'swchaos_part',
    target,
    mode === 'drop' ? '' : 'tcp flags & rst == 0',
    verdict,
  );
  let last = '';
  return {
    what: `partition of ${target.channels === 'page' ? 'the page channels' : 'the link'} (${mode === 'drop' ? 'silent' : 'tcp reset'})`,
    mechanism: `nft '${verdict}' on ${describe(target)}${mode === 'drop' ? '' : ' (RST segments pass)'}`,
    heal: async () => {
      if (!last) last = await tb.counters();
      await tb.heal();
    },
    evidence: async () => `${mode === 'drop' ? 'dropped' : 'rejected'}: ${last || (await tb.counters())}`,
  };
}

export async function applyDelay(t: Topology, ms: number, target: Target, dst: string): Promise<Active> {
  const what = `delay ${ms} ms each direction (RTT +${2 * ms} ms)`;
  const why = await netemUnavailable(t);
  if (why === null)
    return rootQdisc(t, what, `tc netem delay ${ms}ms on both veth egresses`, ['netem', 'delay', `${ms}ms`]);
  let nfqFailure: string;
  // Held on INPUT of the receiving namespace, one helper per namespace: a packet held on the
  // sender's OUTPUT hook still counts against its socket's TCP Small Queues budget, which throttled
  // a 40 ms RTT flow to 2.2 Mbit/s (netem avoids that by orphaning the skb); on ingress it ran at
  // 450 Mbit/s.
  const hooks = [
    { ns: t.nsDst, match: '-d', dir: 'src→dst' },
    { ns: t.nsSrc, match: '-s', dir: 'dst→src' },
  ];
  const rule = (m: string) => [
    'INPUT',
    '-p',
    'tcp',
    m,
    target.ip,
    '-j',
    'NFQUEUE',
    '--queue-num',
    '7',
    '--queue-bypass',
  ];
  const helpers: Helper[] = [];
  try {
    const bin = await buildNfqHelper();
    for (const h of hooks) {
      const helper = spawnHelper(h.ns, [bin, '7', String(ms)]);
      helpers.push(helper);
      if ((await withTimeout(helper.firstLine, 5000, '')) !== 'ready')
        throw new Error(`nfq-delay did not start: ${helper.lines.join(' | ')}`);
      await must([...inNs(h.ns), 'iptables', '-w', '-A', ...rule(h.match)]);
    }
    let stats = '';
    return {
      what,
      mechanism: `NFQUEUE (iptables-nft INPUT, queue 7, --queue-bypass) + C helper in each namespace holding each packet ${ms} ms FIFO, ${describe(target)} (${why})`,
      heal: async () => {
        if (stats) return;
        for (const h of hooks) await sh([...inNs(h.ns), 'iptables', '-w', '-D', ...rule(h.match)]);
        for (const helper of helpers) await helper.stop();
        stats = hooks
          .map((h, i) => `${h.dir} ${helpers[i]!.lines.find((l) => l.startsWith('{')) ?? 'no stats'}`)
          .join('; ');
      },
      evidence: async () => `nfq-delay ${stats || '(still running)'}`,
    };
  } catch (err) {
    nfqFailure = (err as Error).message.split('\n')[0]!;
    for (const h of hooks) await sh([...inNs(h.ns), 'iptables', '-w', '-D', ...rule(h.match)]);
    for (const helper of helpers) await helper.stop();
  }
  const relay = await startRelayHelper(t, dst, ['--delay-ms', String(ms)]);
  return {
    ...relay,
    what,
    mechanism: `userspace TCP relay (node, in the destination namespace) holding each chunk ${ms} ms per direction; NFQUEUE failed: ${nfqFailure}`,
  };
}

export async function applyCorruption(
  t: Topology,
  dst: string,
  offset: number,
  bit: number,
): Promise<Active> {
  const relay = await startRelayHelper(t, dst, ['--flip-at', String(offset), '--bit', String(bit)]);
  return {
    ...relay,
    what: `flip bit ${bit} of main-channel byte ${offset}`,
    mechanism: 'node:net relay in the destination namespace (main channel corrupted, return path untouched)',
  };
}

/**
 * One flipped bit on a page channel: NFQUEUE on the destination's INPUT for the page channels
 * (source → first destination, any port but its listening one) with the nfq-flip helper, which
 * flips bit `bit` of the TCP payload byte `after` bytes into that traffic, once.
 */
export async function applyPageCorruption(
  t: Topology,
  target: Target,
  after: number,
  bit: number,
): Promise<Active> {
  const rule = ['INPUT', '-p', 'tcp', '-s', t.ipSrc, '-d', target.ip, '!', '--dport', String(target.port)];
  const queue = ['-j', 'NFQUEUE', '--queue-num', '8', '--queue-bypass'];
  const bin = await buildNfqHelper('nfq-flip');
  const helper = spawnHelper(t.nsDst, [bin, '8', String(after), String(bit)]);
  if ((await withTimeout(helper.firstLine, 5000, '')) !== 'ready') {
    await helper.stop();
    throw new Error(`nfq-flip did not start: ${helper.lines.join(' | ')}`);
  }
  await must([...inNs(t.nsDst), 'iptables', '-w', '-A', ...rule, ...queue]);
  let healed = false;
  return {
    what: `flip bit ${bit} of page-channel payload byte ${after}`,
    mechanism: `NFQUEUE (iptables-nft INPUT in the destination namespace, queue 8) + nfq-flip on ${describe({ ...target, channels: 'page' })}: the segment is re-injected modified, and veth does not verify checksums on receipt`,
    heal: async () => {
      if (healed) return;
      healed = true;
      await sh([...inNs(t.nsDst), 'iptables', '-w', '-D', ...rule, ...queue]);
      await helper.stop();
    },
    evidence: async () =>
      helper.lines.filter((l) => l.startsWith('{')).join(' ') || 'nfq-flip printed nothing',
  };
}
