/**
 * Source migration states, as QEMU's MigrationStatus, with compare-and-swap transitions.
 *
 *   none ─▶ setup ─▶ active ─▶ [pre-switchover] ─▶ device ─▶ completed
 *             │         │              │              │
 *             └─────────┴──────────────┴──────────────┴──▶ failed
 *             └─────────┴──────────────┴──────────────┴──▶ cancelling ─▶ cancelled
 */
export const MigrationStatus = {
  NONE: 'none',
  SETUP: 'setup',
  ACTIVE: 'active',
  PRE_SWITCHOVER: 'pre-switchover',
  DEVICE: 'device',
  COMPLETED: 'completed',
  FAILED: 'failed',
  CANCELLING: 'cancelling',
  CANCELLED: 'cancelled',
} as const;
export type MigrationStatus = (typeof MigrationStatus)[keyof typeof MigrationStatus];

const S = MigrationStatus;
const RUNNING: readonly MigrationStatus[] = [S.SETUP, S.ACTIVE, S.PRE_SWITCHOVER, S.DEVICE];

export const TRANSITIONS: Readonly<Record<MigrationStatus, readonly MigrationStatus[]>> = {
  [S.NONE]: [S.SETUP],
  [S.SETUP]: [S.ACTIVE, S.FAILED, S.CANCELLING],
  [S.ACTIVE]: [S.PRE_SWITCHOVER, S.DEVICE, S.FAILED, S.CANCELLING],
  [S.PRE_SWITCHOVER]: [S.DEVICE, S.FAILED, S.CANCELLING],
  [S.DEVICE]: [S.COMPLETED, S.FAILED, S.CANCELLING],
  [S.COMPLETED]: [],
  [S.FAILED]: [],
  [S.CANCELLING]: [S.CANCELLED, S.FAILED],
  [S.CANCELLED]: [],
};

export function isRunning(s: MigrationStatus): boolean {
  return RUNNING.includes(s);
}

export function isFinal(s: MigrationStatus): boolean {
  return s === S.COMPLETED || s === S.FAILED || s === S.CANCELLED;
}

/** Holds one status; `transition(from, to)` changes it only if it is still `from` and the table allows it. */
export class StateCell {
  #status: MigrationStatus = S.NONE;
  readonly #listeners: ((from: MigrationStatus, to: MigrationStatus) => void)[] = [];

  get status(): MigrationStatus {
    return this.#status;
  }

  onChange(fn: (from: MigrationStatus, to: MigrationStatus) => void): void {
    this.#listeners.push(fn);
  }

  transition(from: MigrationStatus, to: MigrationStatus): boolean {
    if (this.#status !== from || !TRANSITIONS[from].includes(to)) return false;
    this.#status = to;
    for (const fn of this.#listeners) fn(from, to);
    return true;
  }
}
