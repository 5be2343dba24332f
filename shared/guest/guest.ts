/**
 * The guest as its host process sees it: memory, the vCPU worker, and the stop/resume handshake.
 * The source boots a guest (fills RAM, starts the vCPU); the destination allocates and prefaults an
 * empty one, lets the migration fill it, then resumes it.
 */
import type { Worker } from 'node:worker_threads';
import { spawnTsWorker } from '../worker/spawn.js';
import { type FillKind, fillRandom } from './fill.js';
import { GUEST_MAGIC, HB, PAGE_SIZE } from './layout.js';
import { GuestMemory } from './memory.js';
import {
  CTL,
  monotonicMs,
  readThrottleStats,
  type ThrottleStats,
  VcpuCmd,
  VcpuState,
  writeCpuThrottle,
  writeDirtyLimit,
  writeWorkload,
} from './vcpu-control.js';
import type { DirtyPattern, SelfCheckResult } from './workload.js';

export interface WorkloadOptions {
  /** Bytes of guest writes per second (page writes × page size); Infinity = max; 0 = idle. */
  dirtyRate: number;
  pattern: DirtyPattern;
  /** Bytes of data pages the workload writes, from the start of the data area. */
  dirtyRange: number;
}

export interface BootOptions {
  ramBytes: number;
  seed: number;
  fill: FillKind;
  pageSize?: number;
}

export const VCPU_ENTRY = new URL('./vcpu-worker.ts', import.meta.url);

/** How long resume() blocks the thread for the vCPU's RUNNING before it waits asynchronously. */
const SYNC_WAIT_MS = 50;

export class Guest {
  #worker: Worker | null = null;
  #selfCheck: Promise<SelfCheckResult> | null = null;
  #resumedGap: Promise<{ gapStartMs: number; gapEndMs: number }> | null = null;
  readonly #runStateListeners: ((running: boolean) => void)[] = [];

  private constructor(readonly memory: GuestMemory) {}

  /** Source: allocate, fill and stamp the control page. The vCPU is not started yet. */
  static boot(opts: BootOptions): Guest {
    const memory = GuestMemory.allocate(opts.ramBytes, opts.pageSize ?? PAGE_SIZE);
    if (opts.fill === 'random') fillRandom(memory.bytes, memory.layout, opts.seed);
    const page0 = Buffer.from(memory.shared.ram, 0, memory.pageSize);
    page0.writeUInt32LE(GUEST_MAGIC, HB.MAGIC);
    page0.writeUInt32LE(opts.seed >>> 0, HB.SEED);
    page0.writeUInt32LE(opts.seed >>> 0, HB.PRNG);
    page0.writeUInt32LE(opts.fill === 'random' ? 1 : 0, HB.FILL);
    page0.writeUInt32LE(memory.layout.dataStart, HB.DATA_START);
    return new Guest(memory);
  }

  /** Destination: an empty guest whose RAM the migration will fill. */
  static incoming(ramBytes: number, pageSize = PAGE_SIZE): Guest {
    return new Guest(GuestMemory.allocate(ramBytes, pageSize));
  }

  get running(): boolean {
    return Atomics.load(this.memory.control, CTL.STATE) === VcpuState.RUNNING;
  }

  get started(): boolean {
    return this.#worker !== null;
  }

  /** Starts the vCPU; `resumed` marks a destination start (records the gap, runs the self-check). */
  async start(workload: WorkloadOptions, resumed = false): Promise<void> {
    await this.#spawn(workload, resumed, false);
  }

  /**
   * Destination: boots the vCPU worker now, parked, so that starting the guest after the migration
   * is one handshake (booting a worker costs hundreds of ms, which would land in the downtime).
   */
  async prepare(workload: WorkloadOptions): Promise<void> {
    if (this.#worker) return this.setWorkload(workload);
    await this.#spawn(workload, true, true);
  }

  /** Sets what the vCPU will run (before it runs: a parked destination vCPU reads it on resume). */
  setWorkload(workload: WorkloadOptions): void {
    writeWorkload(this.memory.shared.control, {
      pagesPerSecond: workload.dirtyRate / this.memory.pageSize,
      pattern: workload.pattern,
      rangePages: Math.floor(workload.dirtyRange / this.memory.pageSize),
    });
  }

  /**
   * QEMU's cpu-throttle (auto-converge): the vCPU runs 10 ms slices and sleeps pct/(100-pct) slices
   * after each, so it runs (100-pct) % of the time. 0 turns it off, at once (a sleeping vCPU is woken).
   */
  setCpuThrottle(percent: number): void {
    if (!Number.isInteger(percent) || percent < 0 || percent > 99)
      throw new RangeError(`CPU throttle must be an integer percentage 0..99, got ${percent}`);
    writeCpuThrottle(this.memory.shared.control, percent);
  }

  /**
   * QEMU's dirty-limit: the vCPU's page writes may dirty at most `bytesPerSecond` (0 = off), with
   * bursts of up to one `periodMs` (1..1000) worth; a vCPU that does not write is not slowed.
   */
  setDirtyLimit(bytesPerSecond: number, periodMs: number): void {
    if (!Number.isFinite(bytesPerSecond) || bytesPerSecond < 0)
      throw new RangeError(`dirty limit must be a finite number of bytes/s ≥ 0, got ${bytesPerSecond}`);
    if (!Number.isInteger(periodMs) || periodMs < 1 || periodMs > 1000)
      throw new RangeError(`dirty-limit period must be an integer 1..1000 ms, got ${periodMs}`);
    writeDirtyLimit(this.memory.shared.control, bytesPerSecond, periodMs);
  }

  /** What the throttles did, as the vCPU last published it (pagesWritten gives the write rate). */
  throttleStats(): ThrottleStats {
    return readThrottleStats(this.memory.shared.control);
  }

  async #spawn(workload: WorkloadOptions, resumed: boolean, startStopped: boolean): Promise<void> {
    const { memory } = this;
    Atomics.store(memory.control, CTL.CMD, startStopped ? VcpuCmd.STOP : VcpuCmd.RUN);
    this.setWorkload(workload);
    const worker = spawnTsWorker(VCPU_ENTRY, {
      ...memory.shared,
      resumed,
      startStopped,
    });
    this.#worker = worker;
    const failed = new Promise<never>((_, reject) => {
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new Error(`vCPU worker exited with code ${code}`)));
    });
    failed.catch(() => {});
    if (resumed) {
      this.#selfCheck = Promise.race([
        waitMessage<{ result: SelfCheckResult }>(worker, 'self-check'),
        failed,
      ]).then((m) => m.result);
      this.#resumedGap = Promise.race([
        waitMessage<{ gapStartMs: number; gapEndMs: number }>(worker, 'resumed'),
        failed,
      ]).then(({ gapStartMs, gapEndMs }) => ({ gapStartMs, gapEndMs }));
      // a guest shut down before it resumed never reports: not an unhandled rejection
      this.#selfCheck.catch(() => {});
      this.#resumedGap.catch(() => {});
    }
    await Promise.race([this.#waitState(startStopped ? VcpuState.STOPPED : VcpuState.RUNNING), failed]);
  }

  /** Stops the vCPU and waits for its acknowledgement. Returns the monotonic ms when it acknowledged. */
  async stop(): Promise<number> {
    Atomics.store(this.memory.control, CTL.CMD, VcpuCmd.STOP);
    Atomics.notify(this.memory.control, CTL.CMD);
    await this.#waitState(VcpuState.STOPPED);
    const at = monotonicMs();
    this.#notifyRunState(false);
    return at;
  }

  /** Tells `fn` each time the vCPU stops or runs again (QMP's STOP and RESUME events). */
  onRunState(fn: (running: boolean) => void): () => void {
    this.#runStateListeners.push(fn);
    return () => {
      const i = this.#runStateListeners.indexOf(fn);
      if (i >= 0) this.#runStateListeners.splice(i, 1);
    };
  }

  #notifyRunState(running: boolean): void {
    // a listener's failure is its own: it must not turn a guest stop into a failed stop
    for (const fn of [...this.#runStateListeners]) {
      try {
        fn(running);
      } catch {}
    }
  }

  /**
   * Lets a stopped vCPU run (a migrated guest, or a failed or cancelled migration). The vCPU says
   * RUNNING within microseconds; waiting for it on the event loop (waitAsync) added 1-5 ms whenever
   * the loop was busy, inside the downtime, so this first blocks for it, bounded by SYNC_WAIT_MS.
   */
  async resume(): Promise<void> {
    const ctl = this.memory.control;
    Atomics.store(ctl, CTL.CMD, VcpuCmd.RUN);
    Atomics.notify(ctl, CTL.CMD);
    const deadline = performance.now() + SYNC_WAIT_MS;
    for (;;) {
      const cur = Atomics.load(ctl, CTL.STATE);
      if (cur === VcpuState.RUNNING) {
        this.#notifyRunState(true);
        return;
      }
      const left = deadline - performance.now();
      if (cur === VcpuState.EXITED || left <= 0 || !this.#worker) break;
      Atomics.wait(ctl, CTL.STATE, cur, left);
    }
    await this.#waitState(VcpuState.RUNNING);
    this.#notifyRunState(true);
  }

  async shutdown(): Promise<void> {
    const w = this.#worker;
    if (!w) return;
    Atomics.store(this.memory.control, CTL.CMD, VcpuCmd.EXIT);
    Atomics.notify(this.memory.control, CTL.CMD);
    this.#worker = null;
    await w.terminate();
  }

  heartbeat(): { tick: number; ms: number } {
    const f64 = new Float64Array(this.memory.shared.ram, 0, 8);
    return { tick: f64[HB.TICK >>> 3]!, ms: f64[HB.HEARTBEAT_MS >>> 3]! };
  }

  /** Destination only: resolves with the vCPU's own check of its memory. */
  selfCheck(): Promise<SelfCheckResult> {
    if (!this.#selfCheck) throw new Error('self-check runs only on a resumed guest');
    return this.#selfCheck;
  }

  /** Destination only: last source heartbeat and first destination heartbeat (monotonic ms). */
  resumedGap(): Promise<{ gapStartMs: number; gapEndMs: number }> {
    if (!this.#resumedGap) throw new Error('resume gap exists only on a resumed guest');
    return this.#resumedGap;
  }

  async #waitState(want: number): Promise<void> {
    const ctl = this.memory.control;
    for (;;) {
      const cur = Atomics.load(ctl, CTL.STATE);
      if (cur === want) return;
      if (cur === VcpuState.EXITED) throw new Error('vCPU exited');
      const r = Atomics.waitAsync(ctl, CTL.STATE, cur, 1000);
      await r.value;
      if (!this.#worker) throw new Error('vCPU is gone');
    }
  }
}

function waitMessage<T>(worker: Worker, type: string): Promise<T> {
  return new Promise((resolve) => {
    const onMessage = (m: { type: string } & T) => {
      if (m.type !== type) return;
      worker.off('message', onMessage);
      resolve(m);
    };
    worker.on('message', onMessage);
  });
}
