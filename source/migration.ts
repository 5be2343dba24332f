/**
 * The source's migration (QEMU migration.c analog): setup → active (precopy rounds with the
 * convergence rule) → device (guest stopped, final state) → completed; any error → failed, a cancel
 * → cancelling → cancelled. On failure or cancel the guest keeps (or resumes) running, untouched,
 * unless the destination already said SHUT(0) (then it runs there, and must not run twice).
 *
 * Every wait ends on the first failure or a cancel: fail() aborts the migration's signal, every phase
 * is raced against it (#guard), the handlers wait on it too (SaveContext.signal), and the guest is
 * resumed only after any stop in progress has finished (#stopping). Handlers are reached only through
 * SaveVm and the SaveHandlers interface: how RAM travels is the RAM handler's business.
 */
import { randomBytes } from 'node:crypto';
import type { ProgressLine } from '../shared/cli/progress-line.js';
import {
  asMigrationError,
  ErrorCode,
  MigrationError as MigErr,
  type MigrationError,
  ProtocolError,
  SocketError,
} from '../shared/errors.js';
import type { Guest } from '../shared/guest/guest.js';
import { monotonicMs } from '../shared/guest/vcpu-control.js';
import type { SaveContext, SaveHandlers } from '../shared/handlers.js';
import { agreementSet, type Capabilities, type Parameters } from '../shared/options.js';
import { DEFAULT_POLICIES, type PolicyOptions } from '../shared/policy-options.js';
import { encodeRp, type RpMessage } from '../shared/protocol/return-path-codec.js';
import type { ResumedBody } from '../shared/protocol/rp-bodies.js';
import {
  encodeConfiguration,
  encodeEof,
  encodeOpenReturnPath,
  encodePing,
  encodeStreamHeader,
  encodeSwitchoverStart,
} from '../shared/protocol/stream-codec.js';
import type { ChannelWriter } from '../shared/socket-io.js';
import { MigrationStatus as S, StateCell } from '../shared/state.js';
import { TraceEvent, Tracer } from '../shared/trace.js';
import {
  bindingFor,
  type ConnectOptions,
  connectChannel,
  MAIN,
  RETURN_PATH,
  readReturnPath,
} from './channel.js';
import { ClockOffset } from './clock-offset.js';
import { ConvergenceController, type Decision } from './convergence/controller.js';
import { ImageDigestSaver } from './image-digest.js';
import { ProgressWatermark } from './progress-watermark.js';
import { RamSaver } from './ram/ram-save.js';
import { RateLimiter, WINDOW_MS } from './rate-limit.js';
import type { MigrationReport } from './report.js';
import { round2 } from './report.js';
import { buildReport } from './report-builder.js';
import { SaveVm } from './savevm.js';
import { ConvergenceMeter } from './switchover.js';

const PING_INTERVAL_MS = 1000;
/** While waiting for the resumed guest's self-check: one clock probe per this many ms. */
const GUEST_REPORT_PROBE_MS = 50;
/** How long the source waits for that self-check: this, plus GUEST_REPORT_PER_GIB_MS per GiB of RAM. */
const GUEST_REPORT_BASE_MS = 5000;
const GUEST_REPORT_PER_GIB_MS = 5000;
const CLOCK_PROBES = 8;
/** RESUMED messages a destination may send (two are sent; the fields of later ones replace earlier). */
const RESUMED_MAX = 4;
const IDLE_WAIT_MS = 20;
export const DEFAULT_STALL_MS = 10_000;
/**
 * pause-before-switchover: the guest is stopped while the source waits for migrate-continue, so the
 * wait is bounded (QEMU waits forever): after this long the migration fails and the guest runs on.
 * SWITCHOVER_TEST_PRE_SWITCHOVER_MS shortens it for the tests.
 */
export const PRE_SWITCHOVER_MAX_MS = Number(process.env.SWITCHOVER_TEST_PRE_SWITCHOVER_MS) || 60_000;
export const DEFAULT_PROGRESS_WARNING_MS = 30_000;

export interface MigrateOptions {
  /** Extra connection options handed to connectChannel as they are (TLS credentials, auth). */
  channelOptions?: Record<string, unknown>;
  /** 'floor' (default) or 'qemu'; see ConvergenceMeter.shouldSwitchNow. */
  switchoverPolicy?: 'floor' | 'qemu';
  /** Fail when a channel makes no progress (no drain, no PONG) for this long; 0 = never. */
  stallTimeoutMs?: number;
  host: string;
  port: number;
  guest: Guest;
  capabilities: Capabilities;
  parameters: Parameters;
  /** Guest facts the destination needs to resume the same workload. */
  guestConfig: Record<string, unknown>;
  devices?: SaveHandlers[];
  signal?: AbortSignal;
  /** Give up (failed, not converging) after this many ms; 0 = never. */
  timeoutMs?: number;
  connectTimeoutMs?: number;
  /** How long SHUT may take after EOF before the migration fails. */
  completionTimeoutMs?: number;
  onProgress?: (p: Progress) => void;
  /** Operator-facing warnings (a stranger on a page port); default stderr. */
  onWarning?: (message: string) => void;
  /** Warn once when `remaining` makes no new low for this long (ms; default 30000; 0 = never). */
  progressWarningMs?: number;
  /** Progress and completion timeouts with their actions, downtime stepping (default: none). */
  policies?: PolicyOptions;
  /** Each convergence decision as it is taken (a throttle step, a timeout's action, a downtime step). */
  onDecision?: (d: Decision) => void;
  /** Each dirty sync, with its number (QMP's MIGRATION_PASS). */
  onPass?: (pass: number) => void;
}

export interface MetricsFacts {
  ackEnabled: boolean;
  acked: boolean;
  /** Threshold first met → ACK (so far, while waiting). */
  ackWaitMs: number;
  /** Bytes each device has sent, by id. */
  devices: Record<string, number>;
}

/** What onProgress receives each 100 ms window (the fields of a `progress` line). */
export type Progress = ProgressLine;

export class SourceMigration {
  readonly state = new StateCell();
  readonly tracer = new Tracer('source');
  readonly ram: RamSaver;
  readonly #digest: ImageDigestSaver;
  readonly #meter: ConvergenceMeter;
  readonly #limiter: RateLimiter;
  /** Aborted (with the first error) when the migration fails or is cancelled. */
  readonly #watermark: ProgressWatermark;
  readonly #convergence: ConvergenceController;
  /** A timeout's `pause` action fired: the guest is stopped, the migration finishes in stop-and-copy. */
  #paused = false;
  /** The guest's heartbeat ticks when the migration started: its progress during it is the difference. */
  #ticksAtStart = 0;
  /** The watermark has moved from the first pass's remainder to the dirty set at each sync. */
  #progressRebased = false;
  /** max-bandwidth now: the parameter, or what migrate-set-parameters set while migrating. */
  #maxBandwidth: number;
  /** Resolves the pre-switchover wait (migrate-continue). */
  #continue: (() => void) | null = null;
  /** A pause action fired on the watch timer: the loop stops the guest at its next turn. */
  #pauseRequested = false;
  readonly #abort = new AbortController();
  #main: ChannelWriter | null = null;
  #rp: ChannelWriter | null = null;
  #saveVm: SaveVm | null = null;
  #error: MigrationError | null = null;
  #acked = false;
  #shut: { status: number } | null = null;
  /** EOF is handed to the main socket: only after it may a SHUT(0) be true. */
  #eofSent = false;
  /** The destination's RESUMED bodies, merged (each field checked on decode; at most RESUMED_MAX). */
  #resumed: ResumedBody | null = null;
  #resumedCount = 0;
  #wake: (() => void) | null = null;
  #t0 = 0;
  #setupTime = 0;
  #downtime: number | undefined;
  #downtimeStart = 0;
  #guestStoppedHere = false;
  /** The guest's stop, while it is in progress: a resume must wait for it. */
  #stopping: Promise<unknown> | null = null;
  /** total-time is frozen here (QEMU); waiting for the guest's self-check report comes after. */
  #completedAt: number | null = null;
  /** The destination's own reason, when it sent one: preferred over the socket error it caused. */
  #peerError: MigrationError | null = null;
  readonly #migrationId = randomBytes(16);
  #sideBytesSeen = 0;
  /** The loop slept for lack of work in the current 100 ms window (see ConvergenceMeter.update). */
  #idleInWindow = false;
  readonly #clock = new ClockOffset();
  #timeSeq = 0;
  #pingSeq = 1;
  #lastPingAt = 0;
  #lastPongAt = 0;
  /** Last message of any kind from the destination (liveness while waiting for SHUT). */
  #lastHeardAt = 0;

  constructor(private readonly opts: MigrateOptions) {
    const p = opts.parameters;
    this.ram = new RamSaver(opts.guest.memory, {
      pageChannels: opts.capabilities.multifd ? p['multifd-channels'] : 0,
      maxBandwidth: p['max-bandwidth'],
    });
    this.#digest = new ImageDigestSaver(this.ram);
    this.#meter = new ConvergenceMeter(p);
    this.#watermark = new ProgressWatermark(opts.progressWarningMs ?? DEFAULT_PROGRESS_WARNING_MS);
    this.#limiter = new RateLimiter(p['max-bandwidth'], monotonicMs());
    this.#maxBandwidth = p['max-bandwidth'];
    const { memory } = opts.guest;
    this.#convergence = new ConvergenceController(
      opts.guest,
      opts.capabilities,
      p,
      opts.policies ?? DEFAULT_POLICIES,
      memory.pageCount * memory.pageSize,
      (d) => {
        this.tracer.emit(TraceEvent.CONVERGENCE, { kind: d.event, action: d.action, value: d.value });
        opts.onDecision?.(d);
      },
    );
    // QEMU checks its throttle trigger at every dirty-bitmap sync; only while the guest runs
    this.ram.tracker.onSync = (now, newlyDirty) => {
      opts.onPass?.(this.ram.tracker.syncCount);
      if (this.state.status !== S.ACTIVE || this.#paused) return;
      this.#convergence.onSync(now - this.#t0, now, newlyDirty * memory.pageSize, this.#transferred());
    };
    this.state.onChange((from, to) => this.tracer.emit(TraceEvent.STATE, { from, to }));
    opts.signal?.addEventListener('abort', () => this.cancel(), { once: true });
  }

  get #stall(): number {
    return this.opts.stallTimeoutMs ?? DEFAULT_STALL_MS;
  }

  /** Records the first error (sticky), aborts every wait and wakes the loop. */
  fail(err: MigrationError): void {
    this.#error ??= err;
    this.tracer.emit(TraceEvent.ERROR, { code: err.code, message: err.message });
    this.#abort.abort(this.#error);
    this.#wake?.();
  }

  /** User cancel: ignored once the destination runs the guest (SHUT(0)): it must not run twice. */
  cancel(): void {
    if (this.#shut?.status === 0) return;
    const s = this.state.status;
    if (this.state.transition(s, S.CANCELLING))
      this.fail(new MigErr(ErrorCode.CANCELLED, 'migration cancelled by the user'));
  }

  async run(): Promise<MigrationReport> {
    this.#t0 = monotonicMs();
    this.#ticksAtStart = this.opts.guest.heartbeat().tick;
    this.state.transition(S.NONE, S.SETUP);
    // cancelled before it started (a Ctrl-C while the guest booted): the abort listener never fires
    if (this.opts.signal?.aborted) this.cancel();
    try {
      await this.#guard(this.#setup());
      this.#setupTime = monotonicMs() - this.#t0;
      if (!this.state.transition(S.SETUP, S.ACTIVE)) this.#check();
      await this.#iterate();
      await this.#complete();
      this.state.transition(S.DEVICE, S.COMPLETED);
      await this.#waitGuestReport();
    } catch (err) {
      if (this.#shut?.status === 0) {
        // SHUT(0): the guest already runs on the destination. Whatever failed after that, the source
        // guest must not run too (split brain): the migration is complete.
        this.tracer.emit(TraceEvent.ERROR, {
          code: asMigrationError(err).code,
          after: 'shut',
          message: String(err),
        });
        this.#completedAt ??= monotonicMs();
        this.#downtime ??= this.#completedAt - this.#downtimeStart;
        this.state.transition(this.state.status, S.COMPLETED);
        return this.#report();
      }
      await this.#abortMigration(asMigrationError(err));
    } finally {
      // QEMU's migration_cleanup: the throttles end with the migration, whatever its outcome
      this.#convergence.stop();
      this.#closeChannels();
    }
    return this.#report();
  }

  /**
   * `work`, unless the migration fails or is cancelled first: then its error, at once. `work` may
   * go on in the background; whatever it does next fails on the closed channels.
   */
  #guard<T>(work: Promise<T>): Promise<T> {
    work.catch(() => {});
    const signal = this.#abort.signal;
    if (signal.aborted) return Promise.reject(signal.reason);
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => reject(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      work.then(
        (v) => {
          signal.removeEventListener('abort', onAbort);
          resolve(v);
        },
        (e) => {
          signal.removeEventListener('abort', onAbort);
          reject(e);
        },
      );
    });
  }

  async #setup(): Promise<void> {
    const { opts } = this;
    const conn = {
      ...opts.channelOptions,
      host: opts.host,
      port: opts.port,
      migrationId: this.#migrationId,
      connectTimeoutMs: opts.connectTimeoutMs ?? 5000,
      signal: this.#abort.signal,
    };
    this.#main = await connectChannel(conn, MAIN, 'main');
    this.#main.stallTimeoutMs = this.#stall;
    readReturnPath(
      this.#main,
      (m) => this.#onRp(m),
      (e) => this.#onChannelDown('main', e),
      true,
    );
    if (opts.capabilities['return-path']) {
      this.#rp = await connectChannel(conn, RETURN_PATH, 'return-path');
      readReturnPath(
        this.#rp,
        (m) => this.#onRp(m),
        (e) => this.#onChannelDown('return-path', e),
      );
    }
    const { memory } = opts.guest;
    await this.#main.write(encodeStreamHeader());
    await this.#main.write(
      encodeConfiguration({
        machine: 'switchover-guest',
        pageSize: memory.pageSize,
        ramSize: memory.pageCount * memory.pageSize,
        capabilities: agreementSet(opts.capabilities),
        multifdChannels: opts.parameters['multifd-channels'],
        guest: opts.guestConfig,
      }),
    );
    if (this.#rp) {
      await this.#main.write(encodeOpenReturnPath());
      await this.#main.write(encodePing(1));
      this.#timeProbes(CLOCK_PROBES);
    }
    this.#saveVm = new SaveVm(this.#main, this.#limiter, this.tracer, [
      this.ram,
      ...(opts.devices ?? []),
      this.#digest,
    ]);
    await this.#saveVm.setup(this.#saveContext(conn));
    this.#check();
  }

  /** What handlers get to open and guard side channels of their own. */
  #saveContext(conn: ConnectOptions): SaveContext {
    const socket = this.#main!.socket;
    return {
      link: {
        localAddress: socket.localAddress ?? this.opts.host,
        peerAddress: socket.remoteAddress ?? this.opts.host,
        migrationId: this.#migrationId,
        security: { tls: conn.tls ?? null, key: bindingFor(conn).key!, host: this.opts.host },
      },
      signal: this.#abort.signal,
      stallTimeoutMs: this.#stall,
      fail: (e) => this.#onHandlerError(e),
      tracer: this.tracer,
      warn: (m) => this.#warn(m),
    };
  }

  /** What the metrics endpoint shows beside the progress line: the ACK and each device's bytes. */
  metricsFacts(): MetricsFacts {
    const ackEnabled = this.opts.capabilities['switchover-ack'] === true;
    const devices: Record<string, number> = {};
    for (const h of this.opts.devices ?? []) {
      const sent = (h as { transferred?: number }).transferred;
      if (typeof sent === 'number') devices[h.idstr] = sent;
    }
    return { ackEnabled, acked: this.#acked, ackWaitMs: this.#meter.ackWaitSoFar(monotonicMs()), devices };
  }

  #warn(message: string): void {
    (this.opts.onWarning ?? ((l) => process.stderr.write(`switchover-source: warning: ${l}\n`)))(message);
  }

  /**
   * `remaining` for the progress watermark. The estimate saw-tooths within every round down to 0 at
   * its end, even while the guest keeps dirtying (nothing is pending until the log is harvested), so
   * its lows were noise: one sample at a round's end made every later one "no progress", and a
   * migration still converging tripped the progress timeout. So: during the first pass the estimate
   * (it falls steadily, nothing has been sent twice yet); from the first sync on, what each sync found
   * — the dirty set each round starts with, which shrinks while a migration converges and stays put
   * while it does not — starting the watermark over at the first sync.
   */
  #progressRemaining(atMs: number): number {
    if (this.ram.tracker.syncCount <= 1) return this.#saveVm!.pendingEstimate();
    const atSync = this.#meter.dirtyBytesLastSync;
    if (!this.#progressRebased) {
      this.#progressRebased = true;
      this.#watermark.rebase(atMs, atSync);
    }
    return atSync;
  }

  /** The progress watermark's one warning: the migration is not getting closer to done. */
  #watchProgress(now: number, remaining: number): void {
    const w = this.#watermark;
    if (!w.observe(now - this.#t0, remaining)) return;
    const afterMs = this.opts.progressWarningMs ?? DEFAULT_PROGRESS_WARNING_MS;
    this.tracer.emit(TraceEvent.NO_PROGRESS, { lowest: w.lowest, lowestAtMs: w.lowestAtMs, afterMs });
    this.#warn(
      `no progress for ${round2(afterMs / 1000)} s: remaining has not gone below ${round2(w.lowest / 1048576)} MiB (reached ${round2(w.lowestAtMs / 1000)} s in); the guest dirties memory about as fast as it is sent: raise --max-bandwidth or --downtime-limit, turn on auto-converge or dirty-limit, or choose an end with --progress-timeout`,
    );
  }

  /**
   * Keepalive: a PING on the main channel every second. With a return path, a destination that stops
   * answering (frozen, partitioned) is detected after stall-timeout without a PONG.
   */
  #keepalive(): void {
    const now = monotonicMs();
    if (this.#lastPongAt === 0) this.#lastPongAt = now;
    if (now - this.#lastPingAt >= PING_INTERVAL_MS) {
      this.#lastPingAt = now;
      // behind the bulk data on purpose (a PONG proves the destination reads the stream); one a second
      this.#main!.writeTracked(encodePing(++this.#pingSeq)).accepted.catch(() => {});
      this.#timeProbes(1);
    }
    const stall = this.#stall;
    if (this.#rp && stall > 0 && now - this.#lastPongAt > stall) {
      throw new SocketError(
        ErrorCode.TIMEOUT,
        `destination did not answer PING for ${Math.round(now - this.#lastPongAt)} ms (stall-timeout ${stall} ms)`,
      );
    }
  }

  async #iterate(): Promise<void> {
    const saveVm = this.#saveVm!;
    const started = monotonicMs();
    this.#limiter.restart(started);
    saveVm.refillSideChannels(this.#windowBudget());
    // on a timer, not in the loop: a loop blocked on a dying link must still see its timeouts fire
    const watch = setInterval(() => this.#watchConvergence(started), WINDOW_MS);
    try {
      await this.#iterateLoop();
    } finally {
      clearInterval(watch);
    }
  }

  async #iterateLoop(): Promise<void> {
    const saveVm = this.#saveVm!;
    for (;;) {
      this.#check();
      if (this.#pauseRequested && !this.#paused) {
        this.#paused = true;
        await this.#guard(this.#stopGuest());
      }
      let idle = false;
      if (!this.#limiter.exhausted()) {
        if (this.#tryComplete()) return;
        // nothing left to send right now (everything iterated, or waiting for the ACK): don't spin
        idle = await this.#guard(saveVm.iterate());
      }
      this.#keepalive();
      this.#updateCounters();
      if (idle) this.#idleInWindow = true;
      const wait = this.#limiter.exhausted()
        ? this.#limiter.remainingMs(monotonicMs())
        : idle
          ? IDLE_WAIT_MS
          : 0;
      await this.#sleep(wait);
    }
  }

  /** QEMU migration_iteration_run: estimate, exact only under the threshold, then the gate. */
  #tryComplete(): boolean {
    const saveVm = this.#saveVm!;
    const threshold = this.#meter.threshold;
    // decide between rounds, never with one on its way (it would land in the downtime)
    if (!saveVm.settled()) return false;
    // a timeout's pause action: the guest is stopped, whatever remains goes in stop-and-copy now
    if (this.#paused) return true;
    let pending = saveVm.pendingEstimate();
    if (pending > threshold) return false;
    pending = saveVm.pendingExact();
    this.#meter.noteSync(pending);
    this.tracer.emit(TraceEvent.DIRTY_SYNC, { pending, threshold, sync: this.ram.tracker.syncCount });
    if (pending > threshold) return false;
    if (this.#meter.noteThresholdMet(monotonicMs()))
      this.tracer.emit(TraceEvent.THRESHOLD_MET, { pending, threshold });
    if (!this.#canSwitchover()) return false;
    const policy = this.opts.switchoverPolicy ?? 'floor';
    return this.#meter.shouldSwitchNow(policy, pending, this.opts.guest.memory.pageSize, monotonicMs());
  }

  /** QEMU migration_can_switchover: capability off, guest not running, or ACK received. */
  #canSwitchover(): boolean {
    return !this.opts.capabilities['switchover-ack'] || !this.opts.guest.running || this.#acked;
  }

  async #complete(): Promise<void> {
    const main = this.#main!;
    const saveVm = this.#saveVm!;
    const t = this.tracer;
    if (!this.#paused) await this.#stopGuest();
    if (this.opts.capabilities['pause-before-switchover']) await this.#preSwitchover();
    if (!this.state.transition(S.ACTIVE, S.DEVICE) && !this.state.transition(S.PRE_SWITCHOVER, S.DEVICE))
      this.#check();
    this.#limiter.setLimit(0);
    await this.#guard(main.write(encodeSwitchoverStart()));
    await this.#guard(saveVm.completeIterable());
    t.emit(TraceEvent.CHECKPOINT, { name: 'src-iterable-saved' });
    await this.#guard(saveVm.completeNonIterable());
    t.emit(TraceEvent.CHECKPOINT, { name: 'src-non-iterable-saved' });
    const eof = main.write(encodeEof());
    this.#eofSent = true;
    await this.#guard(eof);
    await this.#guard(main.flush());
    if (this.#rp) await this.#waitShut();
    this.#check();
    // the checkpoint's own time is the end: the report's downtime and its breakdown agree exactly
    this.#completedAt = t.emit(TraceEvent.CHECKPOINT, { name: 'src-downtime-end' }).t;
    this.#downtime = this.#completedAt - this.#downtimeStart;
  }

  /**
   * QEMU's migration_maybe_pause: guest stopped, nothing of the final state sent yet, the source waits
   * in pre-switchover for migrate-continue (continueSwitchover), a cancel, or PRE_SWITCHOVER_MAX_MS.
   */
  async #preSwitchover(): Promise<void> {
    if (!this.state.transition(S.ACTIVE, S.PRE_SWITCHOVER)) this.#check();
    let timer: NodeJS.Timeout | undefined;
    const continued = new Promise<void>((resolve, reject) => {
      this.#continue = resolve;
      timer = setTimeout(
        () =>
          reject(
            new MigErr(
              ErrorCode.TIMEOUT,
              `no migrate-continue within ${PRE_SWITCHOVER_MAX_MS / 1000} s in pre-switchover (the guest was stopped all along)`,
            ),
          ),
        PRE_SWITCHOVER_MAX_MS,
      );
    });
    try {
      await this.#guard(continued);
    } finally {
      clearTimeout(timer);
      this.#continue = null;
    }
  }

  /**
   * QMP migrate-continue: leaves pre-switchover. Throws, with QEMU's text, when the migration is in
   * another state than `expected`.
   */
  continueSwitchover(expected: string): void {
    const now = this.state.status;
    if (now !== expected || !this.#continue) throw new Error(`Migration not in expected state: ${now}`);
    this.#continue();
  }

  /**
   * QMP migrate-set-parameters while migrating: downtime-limit and max-bandwidth take effect at the
   * next window (as in QEMU); the others apply to the next migration.
   */
  setLiveParameters(p: Partial<Parameters>): void {
    if (p['downtime-limit'] !== undefined) this.#meter.setDowntimeLimit(p['downtime-limit']);
    if (p['max-bandwidth'] !== undefined && this.state.status === S.ACTIVE) {
      this.#maxBandwidth = p['max-bandwidth'];
      this.#limiter.setLimit(p['max-bandwidth']);
    }
  }

  /** The report as it stands (QMP query-migrate polls it while the migration runs). */
  snapshot(): MigrationReport {
    return this.#report();
  }

  /** The downtime starts here: at the switchover, or earlier when a timeout's pause action fires. */
  async #stopGuest(): Promise<void> {
    const t = this.tracer;
    this.#downtimeStart = t.emit(TraceEvent.CHECKPOINT, { name: 'src-downtime-start' }).t;
    this.#guestStoppedHere = this.opts.guest.running;
    this.#stopping = this.opts.guest.stop();
    await this.#stopping;
    t.emit(TraceEvent.CHECKPOINT, { name: 'src-vm-stopped' });
  }

  /**
   * Every window while precopy runs: the progress watermark, the policies (a downtime step raises the
   * limit; a timeout aborts, or asks the loop to pause) and --timeout. A failure goes through fail(),
   * which ends whatever the loop waits on.
   */
  #watchConvergence(started: number): void {
    if (this.#error || this.#paused || this.state.status !== S.ACTIVE || !this.#saveVm) return;
    const now = monotonicMs();
    const remaining = this.#progressRemaining(now - this.#t0);
    this.#watchProgress(now, remaining);
    const w = this.#watermark;
    for (const e of this.#convergence.onProgress(now - this.#t0, w.lowestAtMs, w.lowest)) {
      if (e.kind === 'downtime-step') this.#meter.setDowntimeLimit(e.to);
      else if (e.action === 'pause') this.#pauseRequested = true;
      else
        this.fail(
          new MigErr(
            e.kind === 'progress-timeout' ? ErrorCode.PROGRESS_TIMEOUT : ErrorCode.COMPLETION_TIMEOUT,
            `${e.kind} (action abort): ${e.reason}`,
          ),
        );
    }
    const timeout = this.opts.timeoutMs ?? 0;
    if (timeout > 0 && now - started > timeout)
      this.fail(
        new MigErr(
          ErrorCode.NOT_CONVERGING,
          `not converging after ${timeout} ms: ${remaining} bytes pending, threshold ${Math.round(this.#meter.threshold)} bytes (bandwidth ${round2((this.#meter.bandwidth * 1000) / 1048576)} MiB/s, dirty ${this.ram.tracker.dirtyPagesRate} pages/s)`,
        ),
      );
    if (this.#pauseRequested) this.#wake?.();
  }

  /** After SHUT the destination's guest checks its own memory and reports on the return path. */
  async #waitGuestReport(): Promise<void> {
    if (!this.#rp) return;
    // the migration is complete: this only adds the destination's view to the report, so it waits
    // what a self-check takes (~1 s per GiB here) with a wide margin, not a fixed minute — a
    // destination that answers probes but never reports kept the source alive 60 s
    const { memory } = this.opts.guest;
    // the margin scales with the RAM the self-check reads (a 32 MiB guest checks in ~30 ms)
    const gib = (memory.pageCount * memory.pageSize) / 2 ** 30;
    const deadline =
      monotonicMs() + Math.max(this.#stall, GUEST_REPORT_BASE_MS) + GUEST_REPORT_PER_GIB_MS * gib;
    let nextProbe = 0;
    while (!this.#resumed?.guest?.['self-check'] && monotonicMs() < deadline) {
      if (this.#rp.socket.destroyed || this.#rp.error) return;
      // the destination is idle now (no stream to load): its answers give the tightest clock samples.
      // One every 50 ms, not one per wake-up: every answer wakes this sleep, and probing on each wake
      // was a ping-pong of ~4000 exchanges a second that took CPU from the resumed guest's self-check.
      const now = monotonicMs();
      if (now >= nextProbe) {
        this.#timeProbes(1);
        nextProbe = now + GUEST_REPORT_PROBE_MS;
      }
      await this.#sleep(Math.max(0, nextProbe - monotonicMs()));
    }
  }

  /**
   * EOF is out: the destination verifies, loads and starts the guest, then says SHUT. Bounded twice:
   * completionTimeoutMs in all, and the destination must stay audible (a clock probe each second
   * answers on its return-path thread even while it loads) — silence for the stall timeout is a
   * frozen or cut-off destination.
   */
  async #waitShut(): Promise<void> {
    const deadline = monotonicMs() + (this.opts.completionTimeoutMs ?? 30_000);
    this.#lastHeardAt = monotonicMs();
    let nextProbe = 0;
    while (!this.#shut) {
      this.#check();
      const now = monotonicMs();
      if (now >= deadline)
        throw new SocketError(
          ErrorCode.TIMEOUT,
          'destination did not confirm the guest started (no SHUT) in time',
        );
      const stall = this.#stall;
      if (stall > 0 && now - this.#lastHeardAt > stall)
        throw new SocketError(
          ErrorCode.TIMEOUT,
          `destination silent for ${Math.round(now - this.#lastHeardAt)} ms after EOF (stall-timeout ${stall} ms)`,
        );
      if (now >= nextProbe) {
        this.#timeProbes(1);
        nextProbe = now + PING_INTERVAL_MS;
      }
      await this.#sleep(Math.min(deadline - now, nextProbe - now));
    }
    if (this.#shut.status !== 0)
      throw new MigErr(ErrorCode.PEER_FAILED, `destination indicated error ${this.#shut.status}`);
  }

  /**
   * Clock-offset probes travel on the return-path socket's idle source→destination direction, not
   * behind the bulk data on the main channel, so their round trips stay short.
   */
  #timeProbes(n: number): void {
    if (!this.#rp) return;
    for (let i = 0; i < n; i++) {
      const value = ++this.#timeSeq;
      this.#clock.noteSent(value, monotonicMs());
      // a probe the destination has not read yet is pointless: skipped, never queued without bound
      if (!this.#rp.post(encodeRp({ type: 'time', body: { value } }), true)) return;
    }
  }

  #onRp(m: RpMessage): void {
    this.#lastHeardAt = monotonicMs();
    this.tracer.emit(TraceEvent.RP_RECV, { type: m.type });
    switch (m.type) {
      case 'switchover-ack':
        this.#acked = true;
        this.#meter.noteAck(monotonicMs());
        this.tracer.emit(TraceEvent.SWITCHOVER_ACK, {});
        break;
      case 'pong':
        this.#lastPongAt = monotonicMs();
        break;
      case 'time':
        if (m.body.t !== undefined)
          this.#clock.noteAnswer(m.body.value, m.body.t, monotonicMs(), m.body.boot);
        break;
      case 'shut':
        // SHUT(0) means "the guest runs here": before the whole stream is out that is a lie, and
        // believing it would leave no guest running anywhere
        if (m.status === 0 && !this.#eofSent)
          throw new ProtocolError(
            ErrorCode.STATE,
            'destination sent SHUT(0) before the source had sent EOF (the stream is not complete)',
          );
        this.#shut ??= { status: m.status };
        break;
      case 'resumed':
        // a destination sends two (after the start, after the self-check): more is a broken peer
        if (++this.#resumedCount > RESUMED_MAX)
          throw new MigErr(ErrorCode.MALFORMED, `destination sent more than ${RESUMED_MAX} RESUMED messages`);
        this.#resumed = { ...this.#resumed, ...m.body };
        break;
      case 'accept':
        throw new ProtocolError(ErrorCode.UNKNOWN_MESSAGE, 'destination sent ACCEPT on the return path');
      case 'error':
        this.#peerError ??= new MigErr(ErrorCode.PEER_FAILED, `destination failed: ${m.code}: ${m.message}`);
        this.fail(this.#peerError);
        break;
      case 'load-cost':
        this.#meter.noteLoadCost(m.body, monotonicMs());
        break;
      default:
        // handler business (a page-channel round confirmed, ...)
        this.#saveVm?.deliver(m);
        break;
    }
    this.#wake?.();
  }

  #onChannelDown(name: string, e: MigrationError): void {
    if (this.#endedCleanly()) return;
    this.fail(new SocketError(e.code, `${name} channel: ${e.message}`));
  }

  /** A handler's own failure (its message names the side channel). */
  #onHandlerError(e: MigrationError): void {
    if (this.#endedCleanly()) return;
    this.fail(e);
  }

  /** After a clean SHUT the destination closes its channels: that is the normal end, not a failure. */
  #endedCleanly(): boolean {
    return this.#shut?.status === 0 || this.state.status === S.COMPLETED;
  }

  #check(): void {
    if (this.#error) throw this.#error;
    const w = this.#main?.error;
    if (w && !(this.#shut?.status === 0)) throw w;
  }

  #transferred(): number {
    return (this.#main?.bytesWritten ?? 0) + (this.#saveVm?.sideChannelBytes() ?? 0);
  }

  /** max-bandwidth's share of one window (0 = unlimited). */
  #windowBudget(): number {
    return this.#maxBandwidth / (1000 / WINDOW_MS);
  }

  #updateCounters(): void {
    const saveVm = this.#saveVm!;
    const now = monotonicMs();
    // side channels send beside the main channel: count their bytes in the window
    const side = saveVm.sideChannelBytes();
    this.#limiter.account(side - this.#sideBytesSeen);
    this.#sideBytesSeen = side;
    const window = this.#limiter.roll(now);
    if (!window) return;
    const idleInWindow = this.#idleInWindow;
    this.#idleInWindow = false;
    saveVm.refillSideChannels(this.#windowBudget());
    const remaining = saveVm.pendingEstimate();
    this.#meter.update(
      { ...window, idle: idleInWindow },
      this.ram.tracker.dirtyPagesRate,
      remaining,
      saveVm.measuredBandwidth(),
    );
    const p = this.#progress(now, remaining);
    this.tracer.emit(TraceEvent.ITERATION, {
      remaining,
      transferred: p.transferred,
      mbps: p.mbps,
      expectedDowntime: p.expectedDowntime,
      sync: p.iteration,
      dirtyPagesRate: p.dirtyPagesRate,
    });
    this.opts.onProgress?.(p);
  }

  #progress(now: number, remaining: number): Progress {
    return {
      status: this.state.status,
      remaining,
      transferred: this.#transferred(),
      mbps: this.#meter.mbps,
      dirtyPagesRate: this.ram.tracker.dirtyPagesRate,
      iteration: this.ram.tracker.syncCount,
      expectedDowntime: this.#meter.expectedDowntime,
      elapsedMs: now - this.#t0,
      cpuThrottlePercentage: this.#convergence.cpuThrottlePercentage,
    };
  }

  /** Sleeps up to `ms`; a return-path message or an error wakes it early (this.#wake). */
  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      let immediate: NodeJS.Immediate | undefined;
      const done = () => {
        clearTimeout(timer);
        if (immediate) clearImmediate(immediate);
        // only clear the waker if it is still ours: a stale wake must not disarm a later sleep
        if (this.#wake === done) this.#wake = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#wake = done;
      if (ms === 0) immediate = setImmediate(done);
    });
  }

  async #abortMigration(err: MigrationError): Promise<void> {
    this.fail(err);
    if (!this.#peerError && err instanceof SocketError) {
      // a closed socket is usually the consequence of a refusal: give its ERROR frame a moment to arrive
      const deadline = monotonicMs() + 300;
      while (!this.#peerError && monotonicMs() < deadline) await new Promise((r) => setTimeout(r, 20));
    }
    if (this.#peerError && this.state.status !== S.CANCELLING) this.#error = this.#peerError;
    const s = this.state.status;
    if (s === S.CANCELLING)
      this.state.transition(S.CANCELLING, err.code === ErrorCode.CANCELLED ? S.CANCELLED : S.FAILED);
    else this.state.transition(s, S.FAILED);
    // a stop may still be in progress (the failure raced it): let it finish, then resume, unthrottled
    await this.#stopping?.catch(() => {});
    this.#convergence.stop();
    if (this.#guestStoppedHere && !this.opts.guest.running) await this.opts.guest.resume();
    this.#saveVm?.cleanup();
  }

  #closeChannels(): void {
    this.#main?.socket.destroy();
    this.#rp?.socket.destroy();
  }

  #report(): MigrationReport {
    const end = this.#completedAt ?? monotonicMs();
    return buildReport({
      status: this.state.status,
      error: this.#error,
      setupTime: this.#setupTime,
      totalTime: end - this.#t0,
      downtime: this.#downtime,
      transferred: this.#transferred(),
      ram: this.ram,
      pageSize: this.opts.guest.memory.pageSize,
      capabilities: this.opts.capabilities,
      parameters: { ...this.opts.parameters, 'switchover-policy': this.opts.switchoverPolicy ?? 'floor' },
      meter: this.#meter,
      acked: this.#acked,
      guestTicks: this.opts.guest.heartbeat().tick,
      guestTicksAtStart: this.#ticksAtStart,
      digestSource: this.#digest.digest,
      clock: this.#clock.estimate(),
      records: this.tracer.records,
      devices: this.opts.devices ?? [],
      destination: this.#resumed ?? {},
      progress: this.#watermark.report(),
      convergence: this.#convergence.reportFields(),
    });
  }
}
