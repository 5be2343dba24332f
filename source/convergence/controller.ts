/**
 * The source's convergence controller: QEMU's throttles (auto-converge, dirty-limit) fed at each
 * dirty sync, the policies (timeouts with actions, downtime stepping) fed at each progress window,
 * and one log of every decision for the progress output, the report and the timeline. It acts on
 * the guest only through its throttle controls; what a timeout's action means for the migration
 * (fail, or force the switchover) is the migration's business: it gets the event back.
 */
import type { Guest } from '../../shared/guest/guest.js';
import type { Capabilities, Parameters } from '../../shared/options.js';
import type { PolicyOptions } from '../../shared/policy-options.js';
import { formatMiB as mib } from '../../shared/units.js';
import { ConvergencePolicies, type PolicyEvent } from './policies.js';
import { type ThrottleStep, ThrottleTrigger } from './throttle-trigger.js';

/** One decision, as the report lists it (`convergence.decisions`). */
export interface Decision {
  'at-ms': number;
  event: 'auto-converge' | 'dirty-limit' | 'downtime-step' | 'progress-timeout' | 'completion-timeout';
  /** What was done: 'cpu-throttle' (value = %), 'dirty-limit' (value = MB/s), 'downtime-limit' (value = ms), 'abort', 'pause'. */
  action: string;
  value?: number;
  reason: string;
}

/** Closed trigger periods kept for the report (one per second at most: 10 minutes' worth). */
const MAX_PERIODS_KEPT = 600;

/** QEMU's vcpu-dirty-limit is in MB/s (10^6 bytes, as the dirtylimit code counts). */
const MB = 1_000_000;

export class ConvergenceController {
  readonly decisions: Decision[] = [];
  readonly #trigger: ThrottleTrigger | null;
  readonly #mode: 'auto-converge' | 'dirty-limit' | null;
  readonly #policies: ConvergencePolicies;
  #throttleMax = 0;
  readonly #periods: Record<string, number>[] = [];
  #finalStats: ReturnType<Guest['throttleStats']> | null = null;
  /** Set when the migration ends: later syncs (the final one, in the downtime) change nothing. */
  #stopped = false;

  constructor(
    private readonly guest: Guest,
    caps: Capabilities,
    private readonly params: Parameters,
    policies: PolicyOptions,
    guestBytes: number,
    private readonly onDecision: (d: Decision) => void = () => {},
  ) {
    const mode = caps['auto-converge'] ? 'auto-converge' : caps['dirty-limit'] ? 'dirty-limit' : null;
    this.#mode = mode;
    this.#trigger = mode ? new ThrottleTrigger(mode, params) : null;
    this.#policies = new ConvergencePolicies(policies, guestBytes, params['downtime-limit']);
  }

  /** A dirty sync while the guest runs: bytes newly found dirty, bytes sent so far in all. */
  onSync(atMs: number, nowMs: number, newlyDirtyBytes: number, sentTotal: number): void {
    if (this.#stopped || !this.#trigger) return;
    const closed = this.#trigger.onSync(nowMs, newlyDirtyBytes, sentTotal);
    if (!closed) return;
    if (closed.step) this.#apply(atMs, closed.step);
    // the trigger's inputs, kept for the report: why it fired, or why not
    if (this.#periods.length < MAX_PERIODS_KEPT)
      this.#periods.push({
        'at-ms': Math.round(atMs),
        'bytes-dirty': closed.period.bytesDirty,
        'bytes-sent': closed.period.bytesSent,
        'cpu-throttle-percentage': this.#trigger.throttle,
      });
  }

  /** A progress window: returns the policy events for the migration to act on (steps already applied to `decisions`). */
  onProgress(atMs: number, lowestAtMs: number, lowest: number): PolicyEvent[] {
    if (this.#stopped) return [];
    const events = this.#policies.observe(atMs, lowestAtMs, lowest);
    for (const e of events) {
      if (e.kind === 'downtime-step')
        this.#log({ 'at-ms': atMs, event: e.kind, action: 'downtime-limit', value: e.to, reason: e.reason });
      else this.#log({ 'at-ms': atMs, event: e.kind, action: e.action, reason: e.reason });
    }
    return events;
  }

  /** The migration is over (completed, failed or cancelled) or the guest stops: throttles off (QEMU cpu_throttle_stop, dirty limit cancelled). */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    if (!this.#trigger) return;
    // the vCPU resets its per-round figures when the limit changes: keep what the migration ended with
    this.#finalStats = this.guest.throttleStats();
    if (this.#trigger.throttle > 0) this.guest.setCpuThrottle(0);
    if (this.#trigger.dirtyLimitOn) this.guest.setDirtyLimit(0, this.params['x-vcpu-dirty-limit-period']);
  }

  /** QEMU's query-migrate cpu-throttle-percentage: the throttle now (0 when off). */
  get cpuThrottlePercentage(): number {
    return this.#trigger?.throttle ?? 0;
  }

  /** The report's fields: QEMU's top-level names, and ours under `convergence`. */
  reportFields(): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    const t = this.#trigger;
    const stats = this.#finalStats ?? this.guest.throttleStats();
    if (this.#mode === 'auto-converge') out['cpu-throttle-percentage'] = t?.throttle ?? 0;
    if (this.#mode === 'dirty-limit') {
      out['dirty-limit-throttle-time-per-round'] = stats.dirtyLimitThrottleUsPerRound;
      out['dirty-limit-ring-full-time'] = stats.dirtyLimitRingFullUs;
    }
    if (t || this.decisions.length > 0)
      out.convergence = {
        decisions: this.decisions,
        'cpu-throttle-max': this.#throttleMax,
        'cpu-throttled-ms': Math.round(stats.cpuThrottledMs),
        'dirty-limit-slept-ms': Math.round(stats.dirtyLimitSleptMs),
        periods: this.#periods,
      };
    return out;
  }

  #apply(atMs: number, step: ThrottleStep): void {
    const why = `dirtied ${mib(step.bytesDirty)} in the period, above ${this.params['throttle-trigger-threshold']} % of the ${mib(step.bytesSent)} sent, for the second time since the last step`;
    if (step.kind === 'cpu-throttle') {
      // at the cap QEMU sets the same value again: nothing changes, nothing to report
      if (step.to === step.from) return;
      this.guest.setCpuThrottle(step.to);
      this.#throttleMax = Math.max(this.#throttleMax, step.to);
      this.#log({
        'at-ms': atMs,
        event: 'auto-converge',
        action: 'cpu-throttle',
        value: step.to,
        reason: `${why}: vCPU throttle ${step.from === 0 ? `on at ${step.to} %` : `${step.from} % → ${step.to} %`}`,
      });
      return;
    }
    const limit = this.params['vcpu-dirty-limit'];
    this.guest.setDirtyLimit(limit * MB, this.params['x-vcpu-dirty-limit-period']);
    this.#log({
      'at-ms': atMs,
      event: 'dirty-limit',
      action: 'dirty-limit',
      value: limit,
      reason: `${why}: each vCPU's dirty rate limited to ${limit} MB/s`,
    });
  }

  #log(d: Decision): void {
    this.decisions.push({ ...d, 'at-ms': Math.round(d['at-ms']) });
    this.onDecision(d);
  }
}
