/**
 * How a hard migration ends, as the tools that drive QEMU decide it (ours; names after KubeVirt and
 * Nova): a progress timeout (no new low of `remaining` for a while: KubeVirt progressTimeout), a
 * completion timeout per GiB of guest RAM (KubeVirt completionTimeoutPerGiB, Nova
 * live_migration_completion_timeout), each with an action — `abort` (fail; the guest runs on here) or
 * `pause` (stop the guest and finish in stop-and-copy: KubeVirt's suspend, Nova's force_complete
 * without postcopy) — and downtime stepping (Nova live_migration_downtime_steps/_delay): the
 * downtime limit raised in equal steps on a fixed schedule up to a maximum.
 *
 * Pure: the migration feeds it times and the progress watermark, applies what it returns.
 */

import type { PolicyOptions, TimeoutAction } from '../../shared/policy-options.js';
import { formatMiB as mib } from '../../shared/units.js';

export type PolicyEvent =
  | { kind: 'progress-timeout' | 'completion-timeout'; action: TimeoutAction; reason: string }
  | { kind: 'downtime-step'; step: number; from: number; to: number; reason: string };

export class ConvergencePolicies {
  readonly completionTimeoutMs: number;
  #progressFired = false;
  #completionFired = false;
  #step = 0;
  #limit: number;

  constructor(
    private readonly opts: PolicyOptions,
    guestBytes: number,
    private readonly startLimitMs: number,
  ) {
    const gib = Math.max(1, guestBytes / 2 ** 30);
    this.completionTimeoutMs = Math.round(opts.completionTimeoutPerGibMs * gib);
    this.#limit = startLimitMs;
  }

  /**
   * One progress sample: `atMs` since the migration started; `lowestAtMs` when `remaining` last
   * reached a new low (the progress watermark). Returns what fired, in the order to apply it: steps
   * first (a raised limit may be all it takes), then the timeouts (each fires once).
   */
  observe(atMs: number, lowestAtMs: number, lowest: number): PolicyEvent[] {
    const events: PolicyEvent[] = [];
    const s = this.opts.downtimeSteps;
    while (s && this.#step < s.steps && atMs >= s.delayMs * (this.#step + 1)) {
      this.#step++;
      const to = Math.round(this.startLimitMs + ((s.maxMs - this.startLimitMs) * this.#step) / s.steps);
      events.push({
        kind: 'downtime-step',
        step: this.#step,
        from: this.#limit,
        to,
        reason: `step ${this.#step} of ${s.steps}, one every ${seconds(s.delayMs)}`,
      });
      this.#limit = to;
    }
    const p = this.opts.progressTimeoutMs;
    if (p > 0 && !this.#progressFired && atMs - lowestAtMs >= p) {
      this.#progressFired = true;
      events.push({
        kind: 'progress-timeout',
        action: this.opts.progressTimeoutAction,
        reason: `remaining has made no new low (${mib(lowest)}, reached at ${seconds(lowestAtMs)}) for ${seconds(atMs - lowestAtMs)} (progress timeout ${seconds(p)})`,
      });
    }
    const c = this.completionTimeoutMs;
    if (c > 0 && !this.#completionFired && atMs >= c) {
      this.#completionFired = true;
      events.push({
        kind: 'completion-timeout',
        action: this.opts.completionTimeoutAction,
        reason: `not completed after ${seconds(atMs)} (completion timeout ${seconds(this.opts.completionTimeoutPerGibMs)} per GiB = ${seconds(c)})`,
      });
    }
    return events;
  }

  /** The downtime-limit the schedule has reached. */
  get downtimeLimit(): number {
    return this.#limit;
  }
}

function seconds(ms: number): string {
  return `${Math.round(ms / 100) / 10} s`;
}
