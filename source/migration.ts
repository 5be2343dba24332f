/**
 * The source's migration (QEMU migration.c analog): setup → active (precopy rounds with the
 * convergence rule) → device (guest stopped, final state) → completed; any error → failed, a cancel
 * → cancelling → cancelled. On failure or cancel the guest keeps (or resumes) running, untouched.
 */
import { randomBytes } from 'node:crypto';
import {
  asMigrationError,
  ErrorCode,
  MigrationError as MigErr,
  type MigrationError,
  SocketError,
} from '../shared/errors.js';
import type { Guest } from '../shared/guest/guest.js';
import { monotonicMs } from '../shared/guest/vcpu-control.js';
import type { SaveHandlers } from '../shared/handlers.js';
import { agreementSet, type Capabilities, enabledCapabilities, type Parameters } from '../shared/options.js';
import type { ProgressLine } from '../shared/progress.js';
import { encodeRp, type RpMessage } from '../shared/protocol/return-path-codec.js';
import {
  encodeConfiguration,
  encodeEof,
  encodeOpenReturnPath,
  encodePageChannels,
  encodePing,
  encodeStreamHeader,
  encodeSwitchoverStart,
} from '../shared/protocol/stream-codec.js';
import type { ChannelWriter } from '../shared/socket-io.js';
import { MigrationStatus as S, StateCell } from '../shared/state.js';
import type { TlsConfig } from '../shared/tls/config.js';
import { TraceEvent, Tracer } from '../shared/trace.js';
import { bindingFor, connectChannel, MAIN, RETURN_PATH, readReturnPath } from './channel.js';
import { ClockOffset } from './clock-offset.js';
import { ImageDigestSaver } from './image-digest.js';
import { RamSaver } from './ram-save.js';
import { MultifdRamSaver } from './ram-save-multifd.js';
import { RateLimiter } from './rate-limit.js';
import { type MigrationReport, round2 } from './report.js';
import { SaveVm } from './savevm.js';
import { ConvergenceMeter } from './switchover.js';

const PING_INTERVAL_MS = 1000;
/** While waiting for the resumed guest's self-check: one clock probe per this many ms. */
const GUEST_REPORT_PROBE_MS = 50;
const CLOCK_PROBES = 8;
const IDLE_WAIT_MS = 20;
export const DEFAULT_STALL_MS = 10_000;

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
}

/** What onProgress receives each 100 ms window (the fields of a `progress` line). */
export type Progress = ProgressLine;

export class SourceMigration {
  readonly state = new StateCell();
  readonly tracer = new Tracer('source');
  readonly ram: RamSaver | MultifdRamSaver;
  readonly #digest: ImageDigestSaver;
  readonly #meter: ConvergenceMeter;
  readonly #limiter: RateLimiter;
  #main: ChannelWriter | null = null;
  #rp: ChannelWriter | null = null;
  #error: MigrationError | null = null;
  #acked = false;
  #shut: { status: number } | null = null;
  #resumed: Record<string, unknown> | null = null;
  #wake: (() => void) | null = null;
  #t0 = 0;
  #setupTime = 0;
  #downtime: number | undefined;
  #guestStoppedHere = false;
  /** total-time is frozen here (QEMU); waiting for the guest's self-check report comes after. */
  #completedAt: number | null = null;
  #downtimeStart = 0;
  /** The destination's own reason, when it sent one: preferred over the socket error it caused. */
  #peerError: MigrationError | null = null;

  constructor(private readonly opts: MigrateOptions) {
    this.ram = opts.capabilities.multifd
      ? new MultifdRamSaver(opts.guest.memory, opts.parameters['multifd-channels'], (e) =>
          this.#onPageChannelError(e),
        )
      : new RamSaver(opts.guest.memory);
    this.#digest = new ImageDigestSaver(this.ram);
    this.#meter = new ConvergenceMeter(opts.parameters);
    this.#limiter = new RateLimiter(opts.parameters['max-bandwidth'], monotonicMs());
    this.state.onChange((from, to) => this.tracer.emit(TraceEvent.STATE, { from, to }));
    opts.signal?.addEventListener('abort', () => this.cancel(), { once: true });
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
      this.#rp.writeTracked(encodeRp({ type: 'time', body: { value } })).accepted.catch(() => {});
    }
  }

  /** Records the first error (sticky) and wakes the loop. */
  fail(err: MigrationError): void {
    this.#error ??= err;
    this.tracer.emit(TraceEvent.ERROR, { code: err.code, message: err.message });
    this.#wake?.();
  }

  cancel(): void {
    const s = this.state.status;
    if (this.state.transition(s, S.CANCELLING))
      this.fail(new MigErr(ErrorCode.CANCELLED, 'migration cancelled by the user'));
  }

  async run(): Promise<MigrationReport> {
    this.#t0 = monotonicMs();
    this.state.transition(S.NONE, S.SETUP);
    try {
      await this.#setup();
      this.#setupTime = monotonicMs() - this.#t0;
      if (!this.state.transition(S.SETUP, S.ACTIVE)) this.#check();
      await this.#iterate();
      await this.#complete();
      this.state.transition(S.DEVICE, S.COMPLETED);
      await this.#waitGuestReport();
    } catch (err) {
      if (this.#shut?.status === 0 && this.state.status === S.DEVICE) {
        // SHUT(0): the guest already runs on the destination. Whatever failed after that, the source
        // guest must not run too (split brain): the migration is complete.
        this.tracer.emit(TraceEvent.ERROR, {
          code: asMigrationError(err).code,
          after: 'shut',
          message: String(err),
        });
        this.#completedAt ??= monotonicMs();
        this.#downtime ??= this.#completedAt - this.#downtimeStart;
        this.state.transition(S.DEVICE, S.COMPLETED);
        return this.#report();
      }
      await this.#abort(asMigrationError(err));
    } finally {
      this.#closeChannels();
    }
    return this.#report();
  }

  async #setup(): Promise<void> {
    const { opts } = this;
    const conn = {
      ...opts.channelOptions,
      host: opts.host,
      port: opts.port,
      migrationId: this.#migrationId,
      connectTimeoutMs: opts.connectTimeoutMs ?? 5000,
    };
    this.#main = await connectChannel(conn, MAIN, 'main');
    this.#main.stallTimeoutMs = opts.stallTimeoutMs ?? DEFAULT_STALL_MS;
    readReturnPath(
      this.#main,
      (m) => this.#onRp(m),
      (e) => this.#onChannelDown('main', e),
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
    if (this.ram instanceof MultifdRamSaver) {
      // page workers listen on the address the destination already reaches us from
      const host = this.#main.socket.localAddress ?? opts.host;
      const security = {
        tls: (conn as { tls?: TlsConfig | null }).tls ?? null,
        key: bindingFor(conn).key!,
        host: opts.host,
      };
      const ports = await this.ram.listen(host, this.#migrationId, security);
      await this.#main.write(encodePageChannels({ host, ports }));
      await this.ram.waitConnected(opts.stallTimeoutMs || DEFAULT_STALL_MS);
    }
    this.#saveVm = new SaveVm(this.#main, this.#limiter, this.tracer, [
      this.ram,
      ...(opts.devices ?? []),
      this.#digest,
    ]);
    await this.#saveVm.setup();
    this.#check();
  }

  #saveVm: SaveVm | null = null;
  readonly #migrationId = randomBytes(16);
  #pageBytesSeen = 0;
  /** The loop slept for lack of work in the current 100 ms window (see ConvergenceMeter.update). */
  #idleInWindow = false;
  readonly #clock = new ClockOffset();
  #timeSeq = 0;
  #pingSeq = 1;
  #lastPingAt = 0;
  #lastPongAt = 0;

  /**
   * Keepalive: a PING on the main channel every second. With a return path, a destination that stops
   * answering (frozen, partitioned) is detected after stall-timeout without a PONG.
   */
  async #keepalive(): Promise<void> {
    const now = monotonicMs();
    if (this.#lastPongAt === 0) this.#lastPongAt = now;
    if (now - this.#lastPingAt >= PING_INTERVAL_MS) {
      this.#lastPingAt = now;
      const { accepted } = this.#main!.writeTracked(encodePing(++this.#pingSeq));
      accepted.catch(() => {});
      this.#timeProbes(1);
    }
    const stall = this.opts.stallTimeoutMs ?? DEFAULT_STALL_MS;
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
    if (this.ram instanceof MultifdRamSaver) this.ram.refill(this.opts.parameters['max-bandwidth'] / 10);
    for (;;) {
      this.#check();
      let idle = false;
      if (!this.#limiter.exhausted()) {
        if (this.#tryComplete()) return;
        // nothing left to send right now (everything iterated, or waiting for the ACK): don't spin
        idle = await saveVm.iterate();
      }
      await this.#keepalive();
      this.#updateCounters();
      const timeout = this.opts.timeoutMs ?? 0;
      if (timeout > 0 && monotonicMs() - started > timeout) {
        throw new MigErr(
          ErrorCode.NOT_CONVERGING,
          `not converging after ${timeout} ms: ${this.ram.tracker.pending * this.opts.guest.memory.pageSize} bytes pending, threshold ${Math.round(this.#meter.threshold)} bytes (bandwidth ${round2((this.#meter.bandwidth * 1000) / 1048576)} MiB/s, dirty ${this.ram.tracker.dirtyPagesRate} pages/s)`,
        );
      }
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
    // page channels: decide between rounds, never with one on its way (it would land in the downtime)
    if (this.ram instanceof MultifdRamSaver && this.ram.roundInFlight) return false;
    let pending = saveVm.pendingEstimate();
    if (pending > threshold) return false;
    pending = saveVm.pendingExact();
    this.#meter.noteSync(pending);
    this.tracer.emit(TraceEvent.DIRTY_SYNC, { pending, threshold, sync: this.ram.tracker.syncCount });
    if (pending > threshold) return false;
    this.#meter.noteThresholdMet(monotonicMs());
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
    const downtimeStart = monotonicMs();
    this.#downtimeStart = downtimeStart;
    t.emit(TraceEvent.CHECKPOINT, { name: 'src-downtime-start' });
    this.#guestStoppedHere = this.opts.guest.running;
    await this.opts.guest.stop();
    t.emit(TraceEvent.CHECKPOINT, { name: 'src-vm-stopped' });
    if (!this.state.transition(S.ACTIVE, S.DEVICE)) this.#check();
    this.#limiter.setLimit(0);
    await main.write(encodeSwitchoverStart());
    await saveVm.completeIterable();
    t.emit(TraceEvent.CHECKPOINT, { name: 'src-iterable-saved' });
    await saveVm.completeNonIterable();
    t.emit(TraceEvent.CHECKPOINT, { name: 'src-non-iterable-saved' });
    await main.write(encodeEof());
    await main.flush();
    if (this.#rp) await this.#waitShut();
    this.#check();
    this.#completedAt = monotonicMs();
    this.#downtime = this.#completedAt - downtimeStart;
    t.emit(TraceEvent.CHECKPOINT, { name: 'src-downtime-end' });
  }

  /** After SHUT the destination's guest checks its own memory and reports on the return path. */
  async #waitGuestReport(): Promise<void> {
    if (!this.#rp) return;
    const deadline = monotonicMs() + 60_000;
    let nextProbe = 0;
    while (
      !(this.#resumed?.guest as Record<string, unknown> | undefined)?.['self-check'] &&
      monotonicMs() < deadline
    ) {
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

  async #waitShut(): Promise<void> {
    const deadline = monotonicMs() + (this.opts.completionTimeoutMs ?? 30_000);
    while (!this.#shut) {
      this.#check();
      const left = deadline - monotonicMs();
      if (left <= 0)
        throw new SocketError(
          ErrorCode.TIMEOUT,
          'destination did not confirm the guest started (no SHUT) in time',
        );
      await this.#sleep(Math.min(left, 1000));
    }
    if (this.#shut.status !== 0)
      throw new MigErr(ErrorCode.PEER_FAILED, `destination indicated error ${this.#shut.status}`);
  }

  #onRp(m: RpMessage): void {
    this.tracer.emit(TraceEvent.RP_RECV, { type: m.type });
    switch (m.type) {
      case 'switchover-ack':
        this.#acked = true;
        this.#meter.noteAck(monotonicMs());
        this.tracer.emit(TraceEvent.SWITCHOVER_ACK, {});
        break;
      case 'round-done':
        if (this.ram instanceof MultifdRamSaver) this.ram.noteRoundDone(m.round);
        break;
      case 'pong':
        this.#lastPongAt = monotonicMs();
        break;
      case 'time':
        this.#clock.noteAnswer(Number(m.body.value), Number(m.body.t), monotonicMs(), m.body.boot);
        break;
      case 'shut':
        this.#shut = { status: m.status };
        break;
      case 'resumed':
        this.#resumed = {
          ...this.#resumed,
          ...m.body,
          guest: { ...(this.#resumed?.guest as object), ...(m.body.guest as object) },
        };
        break;
      case 'error':
        this.#peerError ??= new MigErr(ErrorCode.PEER_FAILED, `destination failed: ${m.code}: ${m.message}`);
        this.fail(this.#peerError);
        break;
      case 'load-cost':
        this.#meter.noteLoadCost(m.body, monotonicMs());
        break;
      default:
        break;
    }
    this.#wake?.();
  }

  #onChannelDown(name: string, e: MigrationError): void {
    if (this.#endedCleanly()) return;
    this.fail(new SocketError(e.code, `${name} channel: ${e.message}`));
  }

  /** Page workers report their channel's close as an error (their message names the channel). */
  #onPageChannelError(e: MigrationError): void {
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
    const pages = this.ram instanceof MultifdRamSaver ? this.ram.sentBytesLive() : 0;
    return (this.#main?.bytesWritten ?? 0) + pages;
  }

  #updateCounters(): void {
    const now = monotonicMs();
    if (this.ram instanceof MultifdRamSaver) {
      // page workers send beside the main channel: count their bytes in the window, refill their allowance
      const live = this.ram.sentBytesLive();
      this.#limiter.account(live - this.#pageBytesSeen);
      this.#pageBytesSeen = live;
    }
    const window = this.#limiter.roll(now);
    if (!window) return;
    const idleInWindow = this.#idleInWindow;
    this.#idleInWindow = false;
    if (this.ram instanceof MultifdRamSaver) this.ram.refill(this.opts.parameters['max-bandwidth'] / 10);
    this.#meter.update(
      { ...window, idle: idleInWindow },
      this.ram.tracker.dirtyPagesRate,
      this.ram.tracker.pending * this.opts.guest.memory.pageSize,
      this.ram instanceof MultifdRamSaver ? this.ram.roundBandwidth : null,
    );
    this.tracer.emit(TraceEvent.ITERATION, {
      remaining: this.ram.pendingEstimate().mustPrecopy,
      transferred: this.#transferred(),
      mbps: this.#meter.mbps,
      expectedDowntime: this.#meter.expectedDowntime,
      sync: this.ram.tracker.syncCount,
      dirtyPagesRate: this.ram.tracker.dirtyPagesRate,
    });
    this.opts.onProgress?.(this.#progress(now));
  }

  #progress(now: number): Progress {
    return {
      status: this.state.status,
      remaining: this.ram.pendingEstimate().mustPrecopy,
      transferred: this.#transferred(),
      mbps: this.#meter.mbps,
      dirtyPagesRate: this.ram.tracker.dirtyPagesRate,
      iteration: this.ram.tracker.syncCount,
      expectedDowntime: this.#meter.expectedDowntime,
      elapsedMs: now - this.#t0,
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

  async #abort(err: MigrationError): Promise<void> {
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
    if (this.#guestStoppedHere && !this.opts.guest.running) await this.opts.guest.resume();
    this.#saveVm?.cleanup();
  }

  #closeChannels(): void {
    this.#main?.socket.destroy();
    this.#rp?.socket.destroy();
  }

  #report(): MigrationReport {
    const status = this.state.status;
    const mem = this.opts.guest.memory;
    const c = this.ram.counters;
    const end = this.#completedAt ?? monotonicMs();
    const total = end - this.#t0;
    const transferred = this.#transferred();
    const ok = status === S.COMPLETED;
    const dst = this.#resumed ?? {};
    const report: MigrationReport = {
      status,
      'total-time': round2(total),
      'setup-time': round2(this.#setupTime),
      'expected-downtime': round2(this.#meter.expectedDowntime),
      ram: {
        transferred,
        remaining: ok ? 0 : this.ram.tracker.pending * mem.pageSize,
        total: mem.pageCount * mem.pageSize,
        duplicate: c.duplicate,
        normal: c.normal,
        'normal-bytes': c.normal * mem.pageSize,
        mbps: round2(ok ? (transferred * 8) / ((total - this.#setupTime) / 1000) / 1e6 : this.#meter.mbps),
        'dirty-pages-rate': ok ? 0 : this.ram.tracker.dirtyPagesRate,
        'dirty-sync-count': this.ram.tracker.syncCount,
        'precopy-bytes': c.precopyBytes,
        'downtime-bytes': c.downtimeBytes,
      },
      iterations: this.ram.tracker.syncCount,
      capabilities: enabledCapabilities(this.opts.capabilities),
      parameters: { ...this.opts.parameters, 'switchover-policy': this.opts.switchoverPolicy ?? 'floor' },
      guest: {
        ticks: this.opts.guest.heartbeat().tick,
        ...(dst.guest as object | undefined),
        ...this.#observed(dst.gap),
      },
      integrity: {
        'digest-source': this.#digest.digest || null,
        ...(dst.integrity as object | undefined),
      },
    };
    if (ok) report.downtime = round2(this.#downtime ?? 0);
    const dstDigest = (dst.integrity as { 'digest-destination'?: string } | undefined)?.[
      'digest-destination'
    ];
    if (dstDigest) report.integrity.match = dstDigest === this.#digest.digest;
    if (this.#error && !ok) {
      report['error-desc'] = this.#error.message;
      report['error-code'] = this.#error.code;
    }
    Object.assign(report, this.#meter.reportFields(this.opts.capabilities['switchover-ack'], this.#acked));
    report['downtime-breakdown'] = this.#breakdown(dst.checkpoints as Record<string, number> | undefined);
    report['downtime-start-t'] = this.tracer.records.find((r) => r.name === 'src-downtime-start')?.t;
    report['peak-rss'] = process.resourceUsage().maxRSS * 1024;
    report.devices = this.#deviceReport(dst.devices as Record<string, Record<string, unknown>> | undefined);
    report['downtime-expected-vs-actual'] = ok
      ? {
          expected: report['expected-downtime'],
          actual: report.downtime,
          error: round2((report.downtime ?? 0) - report['expected-downtime']),
        }
      : undefined;
    return report;
  }

  /**
   * Checkpoints named as QEMU's vmstate_downtime_checkpoint trace points, in ms from
   * src-downtime-start. Destination times are on the same monotonic clock when both run on one host.
   */
  #breakdown(dst: Record<string, number> | undefined): Record<string, number> | undefined {
    const src = Object.fromEntries(
      this.tracer.records.filter((r) => r.event === TraceEvent.CHECKPOINT).map((r) => [String(r.name), r.t]),
    );
    const start = src['src-downtime-start'];
    if (start === undefined) return undefined;
    const offset = this.#clock.estimate()?.offset ?? 0; // destination times onto the source clock
    const all: [string, number][] = [
      ...Object.entries(src),
      ...Object.entries(dst ?? {}).map(([k, t]): [string, number] => [k, t - offset]),
    ];
    all.sort((a, b) => a[1] - b[1]);
    return Object.fromEntries(all.map(([k, t]) => [k, round2(t - start)]));
  }

  /**
   * guest.observed-downtime: the guest's own gap, from its last heartbeat on the source (source clock)
   * to its first on the destination (destination clock, corrected by the measured offset).
   */
  #observed(gap: unknown): Record<string, number | string> {
    const g = gap as { gapStartMs?: number; gapEndMs?: number } | undefined;
    const clock = this.#clock.estimate();
    if (!g?.gapStartMs || !g.gapEndMs || !clock) return {};
    return {
      'observed-downtime': round2(g.gapEndMs - clock.offset - g.gapStartMs),
      clock: clock.kind,
      'clock-offset': round2(clock.offset),
      'clock-uncertainty': round2(clock.uncertainty),
    };
  }

  /** devices.<id>.{transferred, initial-bytes, prep-ms}: source counters plus the destination's measurements. */
  #deviceReport(dst: Record<string, Record<string, unknown>> | undefined): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const h of this.opts.devices ?? []) {
      const d = h as { transferred?: number; config?: { size: number } };
      if (d.transferred === undefined) continue;
      const remote = dst?.[h.idstr];
      out[h.idstr] = {
        transferred: d.transferred,
        'initial-bytes': d.config?.size ?? 0,
        'prep-ms': typeof remote?.['prep-ms'] === 'number' ? round2(remote['prep-ms'] as number) : null,
      };
    }
    return out;
  }
}
