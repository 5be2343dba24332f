/**
 * Source migration states, as QEMU's MigrationStatus, with compare-and-swap transitions.
 *
 *   none ─▶ setup ─▶ active ─────────────────────▶ device ─▶ completed
 *             │         │ └─▶ pre-switchover ─┘  │
 *             └─────────┴──────────┴─────────────┴──▶ failed
 *             └─────────┴──────────┴─────────────┴──▶ cancelling ─▶ cancelled
 *
 * pre-switchover: with the pause-before-switchover capability the source stops there, guest
 * stopped, until QMP's migrate-continue (QEMU migration_maybe_pause).
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

export const TRANSITIONS: Readonly<Record<MigrationStatus, readonly MigrationStatus[]>> = {
  [S.NONE]: [S.SETUP],
  [S.SETUP]: [S.ACTIVE, S.FAILED, S.CANCELLING],
  [S.ACTIVE]: [S.DEVICE, S.PRE_SWITCHOVER, S.FAILED, S.CANCELLING],
  [S.PRE_SWITCHOVER]: [S.DEVICE, S.FAILED, S.CANCELLING],
  [S.DEVICE]: [S.COMPLETED, S.FAILED, S.CANCELLING],
  [S.COMPLETED]: [],
  [S.FAILED]: [],
  [S.CANCELLING]: [S.CANCELLED, S.FAILED],
  [S.CANCELLED]: [],
};

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
