/**
 * The vCPU: a worker thread that runs the guest workload against shared guest RAM, keeps the heartbeat
 * in page 0 and, on a destination, checks its own memory while it runs (in this thread, so no write
 * races the check). Controlled through vcpu-control.ts words; reports the self-check by postMessage.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { PageFiller } from './fill.js';
import { HB, layoutFor } from './layout.js';
import { markDirty } from './memory.js';
import { CTL, monotonicMs, readWorkload, VcpuCmd, VcpuState } from './vcpu-control.js';
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
  Atomics.wait(ctl, CTL.CMD, VcpuCmd.STOP);
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
  for (;;) {
    const cmd = Atomics.load(ctl, CTL.CMD);
    if (cmd === VcpuCmd.EXIT) break;
    if (cmd === VcpuCmd.STOP) {
      heartbeat(monotonicMs());
      waitWhileStopped();
      Atomics.store(ctl, CTL.STATE, VcpuState.RUNNING);
      Atomics.notify(ctl, CTL.STATE);
      t0 = monotonicMs();
      written = 0;
      continue;
    }
    now = monotonicMs();
    heartbeat(now);
    const due = Number.isFinite(perMs)
      ? Math.min(BURST * 4, Math.floor((now - t0) * perMs) - written)
      : BURST;
    for (let i = 0; i < due; i++) writePage(view, seed, nextPage(view, pattern, rangePages));
    written += Math.max(0, due);
    stepSelfCheck();
    if (due <= 0 && !check) Atomics.wait(ctl, CTL.CMD, VcpuCmd.RUN, 0.5);
  }
  Atomics.store(ctl, CTL.STATE, VcpuState.EXITED);
  Atomics.notify(ctl, CTL.STATE);
}

run();
