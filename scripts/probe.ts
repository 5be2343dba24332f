/**
 * `npm run probe -- --target HOST:PORT [--target HOST:PORT ...] [options]` — an outside observer of
 * the guest service (shared/guest/service.ts), in the spirit of mig_mon's `client` mode. It knows
 * nothing of migration: every interval it sends one datagram (u64 BE sequence number) to every target
 * and records when replies arrive. The longest silence between two consecutive replies from ANY
 * target is the service downtime (README "Measuring downtime"). Give both the source's and the destination's service
 * as targets: the gap then runs from the source's last reply to the destination's first.
 *
 * Options:
 *   --target HOST:PORT   guest service to probe (repeatable, at least one)
 *   --interval MS        send period, default 1 (fractions allowed; the achieved mean is reported)
 *   --fast-interval MS   send period while every target is silent (the handover), default --interval
 *   --duration MS        stop after MS (default: run until a signal or --until-file)
 *   --json FILE          also write the full result as JSON
 *   --until-file PATH    stop as soon as PATH exists (checked every 10 ms)
 *   --help               this text
 *
 * Stops on --duration, SIGINT/SIGTERM or --until-file; then prints ONE JSON line on stdout:
 *   {"service-downtime": ms, "interval": ms, "replies": n, "sent": n, "gap-start": t, "gap-end": t, ...}
 * `gap-start`/`gap-end` (and `start`/`end`) are monotonic ms (process.hrtime), the clock the engine's
 * trace records use, so they line up with migration checkpoints on the same host. Silence before the
 * first reply or after the last one is not a gap; it is reported as `leading-silence` /
 * `trailing-silence`. Exit 0 with at least one reply, 1 with none (service-downtime null), 2 bad usage.
 *
 * Timing: Node timers have ~1 ms granularity, so the loop schedules against absolute deadlines
 * (start + k·interval) and sends every probe that is due when it wakes (a few at most); after a long
 * event-loop stall it resynchronises instead of bursting. The downtime resolution is ~the interval.
 *
 * Cost: every probe wakes the probed service's thread, and the probe shares the CPUs with what it
 * measures. A target that is not answering (the destination before the guest moves there) is probed
 * only every COLD_MS until it does, unless every target has been silent for two intervals — the
 * handover — when all are probed at the full rate. With --fast-interval, that silence is probed
 * faster still: a run can afford a coarse period while the guest answers and still see the first
 * reply after the handover within the fast period. The report gives `resolution-ms`: how late the
 * probe can see each edge of the gap (the period in force before it, the fast one after it).
 */
import { createSocket, type Socket } from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { parseArgs } from 'node:util';
import { parseHostPort } from '../shared/cli/args.js';
import { runCli } from '../shared/cli/run.js';
import { ErrorCode, ParameterError, SocketError } from '../shared/errors.js';
import { basePeriod, longestGap } from './lib/gaps.js';

const USAGE = `usage: npm run probe -- --target HOST:PORT [--target HOST:PORT ...] [--interval MS] [--fast-interval MS] [--duration MS] [--json FILE] [--until-file PATH]

Sends a UDP probe (u64 BE sequence number) to every target each interval and reports the longest
gap between replies from any target as one JSON line on stdout.

  --target HOST:PORT   guest service to probe (repeatable, at least one)
  --interval MS        send period in ms (default 1)
  --fast-interval MS   send period while no target answers (the handover; default --interval)
  --duration MS        stop after MS (default: until SIGINT/SIGTERM or --until-file)
  --json FILE          also write the result as JSON to FILE
  --until-file PATH    stop when PATH exists
  --help               this text`;

/** Most probes sent in one wake-up when behind; beyond that the schedule resynchronises. */
const MAX_CATCH_UP = 4;
/** After stopping, replies already in flight are still counted for this long. */
const DRAIN_MS = 20;
/** Send times are kept for this many recent sequence numbers (for round-trip times). */
const RING = 1 << 16;
/** A target silent for longer than this is probed only every COLD_MS (see "Cost" above). */
const HOT_MS = 50;
const COLD_MS = 50;

interface ProbeOptions {
  targets: { host: string; port: number; text: string }[];
  interval: number;
  fastInterval: number;
  duration?: number;
  json?: string;
  untilFile?: string;
}

function positive(text: string, what: string, max: number): number {
  const n = Number(text);
  if (text.trim() === '' || !Number.isFinite(n) || n <= 0 || n > max) {
    throw new ParameterError(ErrorCode.USAGE, `${what}: '${text}' is not a number in (0, ${max}]`, {
      field: what,
    });
  }
  return n;
}

function parse(argv: string[]): ProbeOptions | 'help' {
  let values: Record<string, unknown>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        target: { type: 'string', multiple: true },
        interval: { type: 'string' },
        'fast-interval': { type: 'string' },
        duration: { type: 'string' },
        json: { type: 'string' },
        'until-file': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new ParameterError(ErrorCode.USAGE, (err as Error).message.split('\n')[0]!, {}, { cause: err });
  }
  const v = values as {
    target?: string[];
    interval?: string;
    'fast-interval'?: string;
    duration?: string;
    json?: string;
    'until-file'?: string;
    help?: boolean;
  };
  if (v.help) return 'help';
  if (!v.target?.length) {
    throw new ParameterError(ErrorCode.USAGE, '--target HOST:PORT is required', { field: '--target' });
  }
  const targets = v.target.map((text) => {
    const hp = parseHostPort(text, '--target');
    if (hp.port === 0)
      throw new ParameterError(ErrorCode.USAGE, `--target: port 0 in '${text}'`, { field: '--target' });
    return { ...hp, text };
  });
  const interval = v.interval === undefined ? 1 : positive(v.interval, '--interval', 60_000);
  return {
    targets,
    interval,
    fastInterval:
      v['fast-interval'] === undefined ? interval : positive(v['fast-interval'], '--fast-interval', interval),
    duration: v.duration === undefined ? undefined : positive(v.duration, '--duration', 2 ** 31 - 1),
    json: v.json,
    untilFile: v['until-file'],
  };
}

const now = (): number => Number(process.hrtime.bigint()) / 1e6;
const r3 = (x: number | null): number | null => (x === null ? null : Math.round(x * 1000) / 1000);

interface Target {
  text: string;
  address: string;
  port: number;
  socket: Socket;
  sent: number;
  replies: number;
  /** Monotonic ms of its last reply (-Infinity before the first) and of the last probe sent to it. */
  lastReply: number;
  lastSent: number;
}

async function open(
  t: ProbeOptions['targets'][number],
): Promise<Omit<Target, 'sent' | 'replies' | 'lastReply' | 'lastSent'>> {
  let address = t.host;
  if (!isIP(address)) {
    try {
      address = (await lookup(t.host)).address;
    } catch (err) {
      throw new SocketError(ErrorCode.CONNECT, `cannot resolve '${t.host}' (${t.text})`, {}, { cause: err });
    }
  }
  const socket = createSocket({ type: isIP(address) === 6 ? 'udp6' : 'udp4' });
  // The target may be down (ICMP unreachable); that is what we measure, not an error.
  socket.on('error', () => {});
  await new Promise<void>((resolve) => socket.bind(0, resolve));
  return { text: t.text, address, port: t.port, socket };
}

async function probe(opts: ProbeOptions): Promise<number> {
  const targets: Target[] = [];
  for (const t of opts.targets)
    targets.push({
      ...(await open(t)),
      sent: 0,
      replies: 0,
      lastReply: Number.NEGATIVE_INFINITY,
      lastSent: 0,
    });
  let lastReplyAny = Number.NEGATIVE_INFINITY;

  const sendTimes = new Float64Array(RING);
  const replyTimes: number[] = [];
  const replyTarget: number[] = [];
  const replyTick: number[] = [];
  const rtts: number[] = [];
  const roundTimes: number[] = [];
  let seq = 0n;

  targets.forEach((tg, i) => {
    tg.socket.on('message', (msg, rinfo) => {
      const at = now();
      if (msg.length < 16 || rinfo.port !== tg.port) return;
      const s = msg.readBigUInt64BE(0);
      if (s >= seq) return; // never sent: not ours
      tg.replies++;
      tg.lastReply = at;
      lastReplyAny = at;
      replyTimes.push(at);
      replyTarget.push(i);
      replyTick.push(msg.readDoubleBE(8));
      if (seq - s < BigInt(RING)) rtts.push(at - sendTimes[Number(s % BigInt(RING))]!);
    });
  });

  const buf = Buffer.alloc(8);
  /** No target answered the last probes: the handover (or a start); probe everyone, fast. */
  const silent = (at: number) => at - lastReplyAny > opts.interval + opts.fastInterval;
  const sendRound = (at: number): void => {
    buf.writeBigUInt64BE(seq, 0);
    sendTimes[Number(seq % BigInt(RING))] = at;
    seq++;
    const handover = silent(at);
    if (!handover) roundTimes.push(at); // the achieved base period is measured on these
    for (const tg of targets) {
      const hot = handover || targets.length === 1 || at - tg.lastReply <= HOT_MS;
      if (!hot && at - tg.lastSent < COLD_MS) continue;
      tg.sent++;
      tg.lastSent = at;
      tg.socket.send(buf, tg.port, tg.address, () => {});
    }
  };

  const start = now();
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let untilTimer: NodeJS.Timeout | undefined;
  let durationTimer: NodeJS.Timeout | undefined;
  let stopReason = 'duration';
  let resolveStop!: () => void;
  const stoppedP = new Promise<void>((r) => {
    resolveStop = r;
  });
  const stop = (reason: string): void => {
    if (stopped) return;
    stopped = true;
    stopReason = reason;
    clearTimeout(timer);
    clearInterval(untilTimer);
    clearTimeout(durationTimer);
    resolveStop();
  };

  let next = start;
  const loop = (): void => {
    if (stopped) return;
    const n = now();
    let k = 0;
    const step = silent(n) ? opts.fastInterval : opts.interval;
    if (next - n > step) next = n + step; // just fell silent: the fast period starts now
    while (n >= next && k < MAX_CATCH_UP) {
      sendRound(n);
      next += step;
      k++;
    }
    if (n - next >= step) next = n + step; // stalled: resync, don't burst
    timer = setTimeout(loop, Math.max(0, next - now()));
  };

  const onSignal = (sig: NodeJS.Signals) => stop(sig);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  if (opts.untilFile) {
    const path = opts.untilFile;
    if (existsSync(path)) stop('until-file');
    else untilTimer = setInterval(() => existsSync(path) && stop('until-file'), 10);
  }
  if (opts.duration !== undefined) durationTimer = setTimeout(() => stop('duration'), opts.duration);
  if (!stopped) {
    loop();
    // the pair waits for this line before it starts the source, so the probe sees the whole migration
    process.stderr.write(
      `probe: sending to ${targets.map((t) => t.text).join(', ')} every ${opts.interval} ms${opts.fastInterval < opts.interval ? ` (${opts.fastInterval} ms while none answers)` : ''}\n`,
    );
  }

  await stoppedP;
  const end = now();
  await new Promise((r) => setTimeout(r, DRAIN_MS));
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  await Promise.all(targets.map((tg) => new Promise<void>((r) => tg.socket.close(() => r()))));

  // With several targets, the gap that matters is the handover: the silence between the last reply
  // from one address and the first from another (the guest moved). Other silences, e.g. a host too
  // busy to schedule the service for a while, are reported as longest-gap.
  const longest = longestGap(replyTimes);
  const handover = handoverGap(replyTimes, replyTarget);
  const g = handover ?? longest;
  const gi = g.gap > 0 ? replyTimes.indexOf(g.end!) : -1;
  const sortedRtt = [...rtts].sort((a, b) => a - b);
  const replies = replyTimes.length;
  const sent = targets.reduce((a, tg) => a + tg.sent, 0);
  const result = {
    'service-downtime': replies ? r3(g.gap) : null,
    'longest-gap': replies ? r3(longest.gap) : null,
    handover: handover !== null,
    interval: r3(basePeriod(roundTimes, opts.interval)),
    replies,
    sent,
    'gap-start': r3(g.start),
    'gap-end': r3(g.end),
    'gap-start-target': gi > 0 ? targets[replyTarget[gi - 1]!]!.text : null,
    'gap-end-target': gi > 0 ? targets[replyTarget[gi]!]!.text : null,
    'tick-before-gap': gi > 0 ? replyTick[gi - 1]! : null,
    'tick-after-gap': gi > 0 ? replyTick[gi]! : null,
    'requested-interval': opts.interval,
    'fast-interval': opts.fastInterval,
    'resolution-ms': { 'gap-start': opts.interval, 'gap-end': opts.fastInterval },
    start: r3(start),
    end: r3(end),
    duration: r3(end - start),
    'leading-silence': replies ? r3(replyTimes[0]! - start) : null,
    'trailing-silence': replies ? r3(Math.max(0, end - replyTimes[replies - 1]!)) : null,
    'rtt-p50': sortedRtt.length ? r3(sortedRtt[Math.floor(sortedRtt.length / 2)]!) : null,
    'rtt-max': sortedRtt.length ? r3(sortedRtt[sortedRtt.length - 1]!) : null,
    'stop-reason': stopReason,
    targets: targets.map((tg) => ({ target: tg.text, sent: tg.sent, replies: tg.replies })),
  };
  const line = JSON.stringify(result);
  process.stdout.write(`${line}\n`);
  if (opts.json) await writeFile(opts.json, `${JSON.stringify(result, null, 2)}\n`);
  if (!replies) process.stderr.write(`probe: no replies from ${targets.map((t) => t.text).join(', ')}\n`);
  return replies ? 0 : 1;
}

runCli('probe', "see 'npm run probe -- --help'", async () => {
  const opts = parse(process.argv.slice(2));
  if (opts === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  return probe(opts);
});

/** The longest silence between consecutive replies from different targets, or null if none changed. */
function handoverGap(times: number[], target: number[]): { gap: number; start: number; end: number } | null {
  let best: { gap: number; start: number; end: number } | null = null;
  for (let i = 1; i < times.length; i++) {
    if (target[i] === target[i - 1]) continue;
    const gap = times[i]! - times[i - 1]!;
    if (!best || gap > best.gap) best = { gap, start: times[i - 1]!, end: times[i]! };
  }
  return best;
}
