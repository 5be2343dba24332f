/**
 * The convergence policies' settings (ours; names after KubeVirt and Nova), shared by the command
 * line that parses them and the source that applies them (source/convergence/policies.ts).
 */

export const TIMEOUT_ACTIONS = ['abort', 'pause'] as const;
export type TimeoutAction = (typeof TIMEOUT_ACTIONS)[number];

export interface DowntimeSteps {
  /** The last step's downtime-limit (ms). */
  maxMs: number;
  /** How many raises from the starting downtime-limit to maxMs. */
  steps: number;
  /** Time between raises (ms). */
  delayMs: number;
}

export interface PolicyOptions {
  /** No new low of `remaining` for this long fires the action; 0 = off. */
  progressTimeoutMs: number;
  progressTimeoutAction: TimeoutAction;
  /** Not completed after this × the guest's GiB (at least 1) fires the action; 0 = off. */
  completionTimeoutPerGibMs: number;
  completionTimeoutAction: TimeoutAction;
  downtimeSteps: DowntimeSteps | null;
}

export const DEFAULT_POLICIES: PolicyOptions = {
  progressTimeoutMs: 0,
  progressTimeoutAction: 'abort',
  completionTimeoutPerGibMs: 0,
  completionTimeoutAction: 'abort',
  downtimeSteps: null,
};

/** Nova's default: one downtime step per 75 s per GiB of guest RAM (live_migration_downtime_delay). */
export const NOVA_STEP_DELAY_PER_GIB_MS = 75_000;
/** Nova's default number of steps (live_migration_downtime_steps). */
export const NOVA_DOWNTIME_STEPS = 10;
