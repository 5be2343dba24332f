/**
 * The vCPU: a worker thread that runs the guest workload against shared guest RAM, keeps the heartbeat
 * in page 0 and, on a destination, checks its own memory while it runs (in this thread, so no write
 * races the check). Controlled through vcpu-control.ts words; reports the self-check by postMessage.
 * On a source it obeys the migration's throttles (CPU throttle, dirty limit; see vcpu-throttle.ts).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { PageFiller } from './fill.js';
import { HB, layoutFor } from './layout.js';
import { markDirty } from './memory.js';
import { CTL, CTL_F64, monotonicMs, readWorkload, VcpuCmd, VcpuState } from './vcpu-control.js';
import {
  affordablePages,
  bucketCapacity,
  DirtyRingEstimate,
  refillTokens,
  sleepAfterSliceMs,
  sleepForPagesMs,
  THROTTLE_SLICE_MS,
} from './vcpu-throttle.js';
import {
  checkPages,
  type DirtyPattern,
  nextPage,
  type SelfCheckResult,
  viewOf,
  writePage,
} from './workload.js';

interface VcpuConfig {
  ram: SharedArrayBuffer;
  dirty: SharedArrayBuffer;
  control: SharedArrayBuffer;
  ramBytes: number;
  pageSize: number;
  /** Page writes per second; Infinity = as fast as possible; 0 = idle (heartbeat only). */
  pagesPerSecond: number;
  pattern: DirtyPattern;
  rangePages: number;
  /** True on a destination: record the resume gap and run the self-check. */
  resumed: boolean;
  /** Start parked in STOPPED until the host says RUN (a destination boots its vCPU before RAM arrives). */
  startStopped: boolean;
}

const cfg = workerData as VcpuConfig;
const layout = layoutFor(cfg.ramBytes, cfg.pageSize);
const ctl = new Int32Array(cfg.control);
const ctlF64 = new Float64Array(cfg.control);
const { pageSize } = layout;
const view = viewOf(layout, cfg.ram, new Int32Array(cfg.dirty));
const { words, f64 } = view;
/** Read from page 0 when the vCPU first runs: on a destination the page arrives after the worker boots. */
let seed = 0;
/** The workload (rate, pattern, range) is read from the control words when the vCPU first runs. */
let rangePages = 1;
let perMs = 0;
let pattern: DirtyPattern = 'uniform';
const BURST = 256;

function heartbeat(now: number): void {
  f64[HB.TICK >>> 3]! += 1;
  f64[HB.HEARTBEAT_MS >>> 3] = now;
  markDirty(view.dirty, 0);
}

/** Incremental self-check state: CHECK_STEP pages per loop turn so the guest keeps running. */
const CHECK_STEP = 64;
let check: {
  next: number;
  bad: number[];
  badCount: number;
  t0: number;
  filler: PageFiller;
  scratch: Buffer;
} | null = null;

function startSelfCheck(): void {
  const fill = words[HB.FILL >>> 2] === 1 ? 'random' : 'zero';
  check = {
    next: layout.dataStart,
    bad: [],
    badCount: 0,
    t0: monotonicMs(),
    filler: new PageFiller(seed, layout.pageSize, fill),
    scratch: Buffer.alloc(layout.pageSize),
  };
}

function stepSelfCheck(): void {
  if (!check) return;
  const to = Math.min(layout.pageCount, check.next + CHECK_STEP);
  check.badCount += checkPages(view, seed, check.filler, check.next, to, check.scratch, check.bad);
  check.next = to;
  if (to < layout.pageCount) return;
  const magicOk = words[HB.MAGIC >>> 2] === 0x47535431;
  const result: SelfCheckResult = {
    ok: magicOk && check.badCount === 0,
    pagesChecked: layout.dataPages,
    badPages: check.badCount + (magicOk ? 0 : 1),
    firstBad: magicOk ? check.bad : [0, ...check.bad],
    ms: monotonicMs() - check.t0,
  };
  parentPort!.postMessage({ type: 'self-check', result });
  check = null;
}

function markResumed(now: number): void {
  f64[HB.GAP_START_MS >>> 3] = f64[HB.HEARTBEAT_MS >>> 3]!;
  f64[HB.GAP_END_MS >>> 3] = now;
  words[HB.RESUMES >>> 2]! += 1;
  parentPort!.postMessage({ type: 'resumed', gapStartMs: f64[HB.GAP_START_MS >>> 3], gapEndMs: now });
}

function waitWhileStopped(): void {
  Atomics.store(ctl, CTL.STATE, VcpuState.STOPPED);
  Atomics.notify(ctl, CTL.STATE);
  // a throttle change notifies CMD too: only a new command ends the stop
  while (Atomics.load(ctl, CTL.CMD) === VcpuCmd.STOP) Atomics.wait(ctl, CTL.CMD, VcpuCmd.STOP);
}

/** When the current CPU-throttle slice began; slept time (and a stop) starts a new one. */
let sliceStartMs = 0;
/** Throttle sleep not yet taken off the workload's clock: a throttled vCPU does not catch up afterwards. */
let lostMs = 0;
/** The dirty limit as last read (the host bumps the epoch after writing it), and its token bucket. */
let limitEpoch = 0;
let limitBytesPerSecond = 0;
let bucketBytes = 0;
let tokens = 0;
let tokensAtMs = 0;
const round = new DirtyRingEstimate(0, 1000);

function asleep(ms: number, byLimit: boolean): void {
  lostMs += ms;
  round.paused(ms, byLimit);
  ctlF64[byLimit ? CTL_F64.DIRTY_LIMIT_SLEPT_MS : CTL_F64.CPU_THROTTLED_MS]! += ms;
}

/**
 * QEMU's CPU throttle: once the vCPU has run a slice, it sleeps as the percentage asks. The sleep
 * waits on CMD, so a STOP or EXIT ends it at once, and re-reads the percentage whenever woken (the
 * host notifies CMD when it changes it), so a lower setting or off applies at once. True when it slept.
 */
function cpuThrottle(now: number): boolean {
  if (Atomics.load(ctl, CTL.CPU_THROTTLE) === 0) {
    sliceStartMs = now;
    return false;
  }
  if (now - sliceStartMs < THROTTLE_SLICE_MS) return false;
  for (;;) {
    const left = sleepAfterSliceMs(Atomics.load(ctl, CTL.CPU_THROTTLE)) - (monotonicMs() - now);
    if (left <= 0 || Atomics.wait(ctl, CTL.CMD, VcpuCmd.RUN, left) !== 'ok') break;
  }
  sliceStartMs = monotonicMs();
  asleep(sliceStartMs - now, false);
  return true;
}

function refill(now: number): void {
  tokens = refillTokens(tokens, tokensAtMs, now, limitBytesPerSecond, bucketBytes);
  tokensAtMs = now;
}

/** Picks up a new dirty limit with a full bucket and a fresh round (the old figures describe the old limit). */
function followDirtyLimit(now: number): void {
  const epoch = Atomics.load(ctl, CTL.DIRTY_LIMIT_EPOCH);
  if (epoch === limitEpoch) {
    if (limitBytesPerSecond > 0) refill(now);
    return;
  }
  limitEpoch = epoch;
  limitBytesPerSecond = ctlF64[CTL_F64.DIRTY_LIMIT]!;
  bucketBytes = bucketCapacity(limitBytesPerSecond, Atomics.load(ctl, CTL.DIRTY_LIMIT_PERIOD_MS), pageSize);
  tokens = bucketBytes;
  tokensAtMs = now;
  // QEMU's dirtylimit measures each vCPU's dirty rate once per period: the figures follow it
  round.reset(now, Atomics.load(ctl, CTL.DIRTY_LIMIT_PERIOD_MS) || 1000);
  ctlF64[CTL_F64.DIRTY_LIMIT_THROTTLE_US_PER_ROUND] = 0;
  ctlF64[CTL_F64.DIRTY_LIMIT_RING_FULL_US] = 0;
}

/**
 * Sleeps, at most a slice at a time, until the bucket pays for `pages` writes (or is full). False
 * when a wake cut it short: a command, or a throttle change the caller must read first.
 */
function waitForTokens(pages: number): boolean {
  const want = Math.min(pages, affordablePages(bucketBytes, pageSize));
  for (;;) {
    const from = monotonicMs();
    refill(from);
    const ms = sleepForPagesMs(tokens, want, pageSize, limitBytesPerSecond);
    if (ms <= 0) return true;
    const woke = Atomics.wait(ctl, CTL.CMD, VcpuCmd.RUN, Math.min(ms, THROTTLE_SLICE_MS));
    const slept = monotonicMs() - from;
    asleep(slept, true);
    // the CPU throttle's slice counts time run, not time asleep here
    sliceStartMs += slept;
    if (woke !== 'timed-out') return false;
  }
}

function countWrites(pages: number): void {
  ctlF64[CTL_F64.PAGES_WRITTEN]! += pages;
  const figures = round.wrote(pages, monotonicMs());
  if (!figures || limitBytesPerSecond <= 0) return;
  ctlF64[CTL_F64.DIRTY_LIMIT_THROTTLE_US_PER_ROUND] = figures.throttleUs;
  ctlF64[CTL_F64.DIRTY_LIMIT_RING_FULL_US] = figures.ringFullUs;
}

/** Writes up to `due` pages within the dirty limit; returns how many (fewer when a wake cut a wait short). */
function writePages(due: number): number {
  let done = 0;
  while (done < due) {
    const limited = limitBytesPerSecond > 0;
    const n = limited ? Math.min(due - done, affordablePages(tokens, pageSize)) : due - done;
    for (let i = 0; i < n; i++) writePage(view, seed, nextPage(view, pattern, rangePages));
    done += n;
    if (n > 0) countWrites(n);
    if (!limited) break;
    // the data page is what the limit counts, not the version-table page
    tokens -= n * pageSize;
    if (done < due && !waitForTokens(due - done)) break;
  }
  return done;
}

function run(): void {
  if (cfg.startStopped) {
    waitWhileStopped();
    if (Atomics.load(ctl, CTL.CMD) === VcpuCmd.EXIT) return;
  }
  seed = words[HB.SEED >>> 2]!;
  const w = readWorkload(cfg.control);
  rangePages = Math.max(1, Math.min(w.rangePages, layout.dataPages));
  perMs = w.pagesPerSecond / 1000;
  pattern = w.pattern;
  let now = monotonicMs();
  if (cfg.resumed) {
    markResumed(now);
    startSelfCheck();
  }
  heartbeat(now);
  Atomics.store(ctl, CTL.STATE, VcpuState.RUNNING);
  Atomics.notify(ctl, CTL.STATE);
  let t0 = now;
  let written = 0;
  sliceStartMs = now;
  round.reset(now);
  for (;;) {
    const cmd = Atomics.load(ctl, CTL.CMD);
    if (cmd === VcpuCmd.EXIT) break;
    if (cmd === VcpuCmd.STOP) {
      const stoppedAt = monotonicMs();
      heartbeat(stoppedAt);
      waitWhileStopped();
      Atomics.store(ctl, CTL.STATE, VcpuState.RUNNING);
      Atomics.notify(ctl, CTL.STATE);
      t0 = monotonicMs();
      written = 0;
      lostMs = 0;
      sliceStartMs = t0;
      round.paused(t0 - stoppedAt, false);
      continue;
    }
    now = monotonicMs();
    // the tick is the guest's progress: it does not advance while the throttle keeps the vCPU asleep
    if (cpuThrottle(now)) continue;
    heartbeat(now);
    followDirtyLimit(now);
    t0 += lostMs;
    lostMs = 0;
    const due = Number.isFinite(perMs)
      ? Math.min(BURST * 4, Math.floor((now - t0) * perMs) - written)
      : BURST;
    written += due > 0 ? writePages(due) : 0;
    stepSelfCheck();
    if (due <= 0 && !check) Atomics.wait(ctl, CTL.CMD, VcpuCmd.RUN, 0.5);
  }
  Atomics.store(ctl, CTL.STATE, VcpuState.EXITED);
  Atomics.notify(ctl, CTL.STATE);
}

run();
