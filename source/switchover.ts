/**
 * The switchover decision's numbers (QEMU migration_update_counters): bandwidth over the last 100 ms
 * window, threshold = bandwidth × downtime-limit, expected downtime = bytes dirty at the last sync /
 * bandwidth (+ the destination's reported load cost, which QEMU leaves out), and the switchover-ack
 * wait: from the first moment the threshold was met to the ACK.
 */
import { monotonicMs } from '../shared/guest/vcpu-control.js';
import type { Parameters } from '../shared/options.js';
import type { LoadCostBody } from '../shared/protocol/rp-bodies.js';
import { round2 } from './report.js';

const MAX_EXTRA_ROUNDS = 10;

export class ConvergenceMeter {
  /** Bytes per ms, measured over the last window. */
  bandwidth = 0;
  mbps = 0;
  /** Bytes that may remain at switchover. */
  threshold = 0;
  expectedDowntime: number;
  readonly history: { t: number; expected: number; remaining: number }[] = [];
  #dirtyBytesLastSync = 0;
  #extraRounds = 0;
  #extra: { base: number; until: number } | null = null;
  #thresholdMetAt: number | null = null;
  #ackAt: number | null = null;
  /** Destination's remaining load cost in ms (switchover-ack devices still preparing, final load). */
  #loadCostMs = 0;
  #loadCostAt = 0;
  #loadCost: LoadCostBody = { 'final-load-ms': 0, waiting: [], approvals: {} };

  /** downtime-limit now: starts at the parameter, raised by a downtime-stepping schedule. */
  #downtimeLimit: number;

  constructor(private readonly params: Parameters) {
    this.expectedDowntime = params['downtime-limit'];
    this.#downtimeLimit = params['downtime-limit'];
  }

  /** A downtime step (QEMU's migrate-set-parameters downtime-limit while migrating): next window on. */
  setDowntimeLimit(ms: number): void {
    this.#downtimeLimit = ms;
  }

  /**
   * A window in which the source sat idle (nothing to send, or waiting for the ACK) measures how
   * little there was to send, not what the link carries: it may not lower the estimate (the low
   * estimate is QEMU's known non-convergence, the reason for avail-switchover-bandwidth).
   * `endToEnd` (bytes/ms), when known, replaces the window's figure: page channels measure whole
   * rounds from start to the destination's confirmation (MultifdRamSaver.roundBandwidth).
   */
  update(
    window: { bytes: number; ms: number; idle?: boolean },
    dirtyPagesRate: number,
    remaining: number,
    endToEnd: number | null = null,
  ): void {
    const measured = window.bytes / window.ms;
    this.bandwidth = endToEnd ?? (window.idle ? Math.max(this.bandwidth, measured) : measured);
    this.mbps = round2((window.bytes * 8) / (window.ms / 1000) / 1e6);
    const avail = this.params['avail-switchover-bandwidth'];
    const expectedBw = avail > 0 ? avail / 1000 : this.bandwidth;
    this.threshold = expectedBw * this.#downtimeLimit;
    if (expectedBw > 0 && (endToEnd !== null || window.bytes > 10_000) && dirtyPagesRate !== 0) {
      this.expectedDowntime = this.#dirtyBytesLastSync / expectedBw + this.#loadCostLeft(monotonicMs());
    }
    this.history.push({
      t: round2(window.ms + this.#sinceStart()),
      expected: round2(this.expectedDowntime),
      remaining,
    });
    if (this.history.length > 10_000) this.history.shift();
  }

  #sinceStart(): number {
    return this.history.length === 0 ? 0 : this.history[this.history.length - 1]!.t;
  }

  /** Bytes pending at the last exact sync (what the next round had to send). */
  get dirtyBytesLastSync(): number {
    return this.#dirtyBytesLastSync;
  }

  noteSync(pendingBytes: number): void {
    this.#dirtyBytesLastSync = pendingBytes;
  }

  /**
   * Whether to stop the guest now that the remainder fits the limit. QEMU's rule: yes. The 'floor'
   * policy (ours) first lets one more round go (as long as sending the remainder takes at the
   * measured bandwidth), then compares: if that round cut the remainder to under half, another round
   * is likely to halve it again, so it goes on; otherwise it switches. Downtime then tends to the
   * floor (final dirty data / bandwidth + device state + round trip) instead of the limit. A dirty
   * set that does not shrink (a hot range rewritten faster than it is sent) switches after one extra
   * round, so convergence is never given up; at most MAX_EXTRA_ROUNDS rounds are added.
   */
  shouldSwitchNow(policy: 'floor' | 'qemu', pendingBytes: number, pageSize: number, now: number): boolean {
    if (policy === 'qemu' || pendingBytes <= pageSize * 2) return true;
    const round = this.#extra;
    if (round && now < round.until) return false;
    if (round && (pendingBytes >= round.base * 0.5 || this.#extraRounds >= MAX_EXTRA_ROUNDS)) return true;
    const bw = this.bandwidth > 0 ? this.bandwidth : 1;
    this.#extra = {
      base: pendingBytes,
      until: now + Math.min(pendingBytes / bw, this.#downtimeLimit),
    };
    this.#extraRounds++;
    return false;
  }

  get extraRounds(): number {
    return this.#extraRounds;
  }

  /** True the first time: the remainder has fitted the limit (the ACK wait starts here). */
  noteThresholdMet(now: number): boolean {
    if (this.#thresholdMetAt !== null) return false;
    this.#thresholdMetAt = now;
    return true;
  }

  noteAck(now: number): void {
    this.#ackAt ??= now;
  }

  noteLoadCost(body: LoadCostBody, now: number): void {
    this.#loadCost = body;
    this.#loadCostMs = body['final-load-ms'];
    this.#loadCostAt = now;
    const bw =
      this.params['avail-switchover-bandwidth'] > 0
        ? this.params['avail-switchover-bandwidth'] / 1000
        : this.bandwidth;
    if (bw > 0) this.expectedDowntime = this.#dirtyBytesLastSync / bw + this.#loadCostLeft(now);
  }

  /** The destination's preparation still to run, counting down from when it was reported. */
  #loadCostLeft(now: number): number {
    return Math.max(0, this.#loadCostMs - (now - this.#loadCostAt));
  }

  /** Devices that needed the ACK and the one that approved last (held the switchover longest). */
  #ackDevices(): { devices: string[]; heldBy: string | null } {
    const { approvals, waiting } = this.#loadCost;
    const devices = [...new Set([...Object.keys(approvals), ...waiting])];
    let heldBy: string | null = waiting[0] ?? null;
    if (!heldBy)
      for (const [id, at] of Object.entries(approvals))
        if (heldBy === null || at > approvals[heldBy]!) heldBy = id;
    return { devices, heldBy };
  }

  /** ms the source waited for the ACK after the threshold was first met (0 if the ACK came first). */
  ackWaitMs(): number | null {
    if (this.#thresholdMetAt === null) return null;
    if (this.#ackAt === null) return null;
    return Math.max(0, this.#ackAt - this.#thresholdMetAt);
  }

  /** The ACK wait so far: 0 before the threshold was met, growing until the ACK, then fixed. */
  ackWaitSoFar(now: number): number {
    if (this.#thresholdMetAt === null) return 0;
    return Math.max(0, (this.#ackAt ?? now) - this.#thresholdMetAt);
  }

  reportFields(ackEnabled: boolean, acked: boolean): Record<string, unknown> {
    return {
      'switchover-ack': {
        enabled: ackEnabled,
        acked,
        'wait-ms': ackEnabled ? round2(this.ackWaitMs() ?? 0) : 0,
        devices: this.#ackDevices().devices,
        'held-by': this.#ackDevices().heldBy,
      },
      'expected-downtime-history': this.history.map((h) => h.expected),
    };
  }
}
