/**
 * Capabilities and parameters: QEMU's names, defaults and rules (migration/options.c), in one leaf module.
 * Both sides run `checkCapabilities`; the configuration section carries the must-agree set and the
 * destination compares it with its own (`compareCapabilities`), which QEMU does not do.
 */
import { CapabilityError, ErrorCode, ParameterError } from './errors.js';

export const CAPABILITY_NAMES = [
  'return-path',
  'switchover-ack',
  'multifd',
  'events',
  'pause-before-switchover',
  'auto-converge',
  'dirty-limit',
] as const;
export type CapabilityName = (typeof CAPABILITY_NAMES)[number];
export type Capabilities = Readonly<Record<CapabilityName, boolean>>;

/** Capabilities whose setting must be the same on both sides (checked in the configuration section). */
export const MUST_AGREE: readonly CapabilityName[] = ['return-path', 'switchover-ack', 'multifd'];

/** QEMU's defaults: every capability off (`--capabilities none`). */
export const DEFAULT_CAPABILITIES: Capabilities = {
  'return-path': false,
  'switchover-ack': false,
  multifd: false,
  events: false,
  'pause-before-switchover': false,
  'auto-converge': false,
  'dirty-limit': false,
};

/**
 * What our commands run with when --capabilities is not given: the return path and page channels
 * (multifd), because that is the fast and fully measured path (pages moved by worker threads on
 * their own connections; the destination's load and restart inside the reported downtime, as QEMU
 * does with return-path). QEMU's own default is none; `--capabilities none` gives exactly that.
 */
export const COMMAND_DEFAULT_CAPABILITIES = 'return-path,multifd';

export interface Parameters {
  /** Longest pause the source aims for, ms (QEMU default 300, range 0…2,000,000). */
  'downtime-limit': number;
  /** Bytes/s cap while the guest runs, applied per 100 ms window; 0 = unlimited (QEMU default 128 MiB/s). */
  'max-bandwidth': number;
  /** Bytes/s assumed for the switchover decision instead of the measured rate; 0 = measure. */
  'avail-switchover-bandwidth': number;
  /** Page channels when multifd is on (QEMU default 2, range 1…255). */
  'multifd-channels': number;
  /** auto-converge / dirty-limit trigger: dirtied > this % of sent in a period, twice (QEMU 50, 1…100). */
  'throttle-trigger-threshold': number;
  /** auto-converge: first vCPU throttle, % (QEMU 20, 1…99). */
  'cpu-throttle-initial': number;
  /** auto-converge: added at each later firing, % (QEMU 10, 1…99). */
  'cpu-throttle-increment': number;
  /** auto-converge: smaller steps near the throttle that would be enough (QEMU off). */
  'cpu-throttle-tailslow': boolean;
  /** auto-converge: the throttle's cap, % (QEMU 99, 1…99). */
  'max-cpu-throttle': number;
  /** dirty-limit: each vCPU's dirty page rate quota, MB/s (QEMU 1, ≥ 1). */
  'vcpu-dirty-limit': number;
  /** dirty-limit: period the quota is measured over, ms (QEMU 1000, 1…1000). */
  'x-vcpu-dirty-limit-period': number;
}

/** The parameters that are integers with a range (all but cpu-throttle-tailslow). */
type NumericParameter = Exclude<keyof Parameters, 'cpu-throttle-tailslow'>;

export const DEFAULT_PARAMETERS: Readonly<Parameters> = {
  'downtime-limit': 300,
  'max-bandwidth': 128 * 1024 * 1024,
  'avail-switchover-bandwidth': 0,
  'multifd-channels': 2,
  'throttle-trigger-threshold': 50,
  'cpu-throttle-initial': 20,
  'cpu-throttle-increment': 10,
  'cpu-throttle-tailslow': false,
  'max-cpu-throttle': 99,
  'vcpu-dirty-limit': 1,
  'x-vcpu-dirty-limit-period': 1000,
};

const PARAMETER_RANGES: Readonly<Record<NumericParameter, readonly [number, number]>> = {
  'downtime-limit': [0, 2_000_000],
  'max-bandwidth': [0, Number.MAX_SAFE_INTEGER],
  'avail-switchover-bandwidth': [0, Number.MAX_SAFE_INTEGER],
  'multifd-channels': [1, 255],
  'throttle-trigger-threshold': [1, 100],
  'cpu-throttle-initial': [1, 99],
  'cpu-throttle-increment': [1, 99],
  'max-cpu-throttle': [1, 99],
  // QEMU takes any uint64 MB/s; more than 1 TB/s per vCPU limits nothing
  'vcpu-dirty-limit': [1, 1_000_000],
  'x-vcpu-dirty-limit-period': [1, 1000],
};

/** QEMU's migrate_caps_check: one rule per guard. */
export function checkCapabilities(caps: Capabilities): Capabilities {
  if (caps['switchover-ack'] && !caps['return-path']) {
    throw new CapabilityError(
      ErrorCode.CAPABILITY,
      "Capability 'switchover-ack' requires capability 'return-path'",
      {
        field: 'switchover-ack',
      },
    );
  }
  if (caps['dirty-limit'] && caps['auto-converge']) {
    // QEMU's text, its typo included ("either of then"): tools match on it
    throw new CapabilityError(
      ErrorCode.CAPABILITY,
      'dirty-limit conflicts with auto-converge either of then available currently',
      { field: 'dirty-limit' },
    );
  }
  if (caps.multifd && !caps['return-path']) {
    // ours, not QEMU's: page-channel rounds are confirmed on the return path (ROUND_DONE)
    throw new CapabilityError(
      ErrorCode.CAPABILITY,
      "Capability 'multifd' requires capability 'return-path'",
      {
        field: 'multifd',
      },
    );
  }
  return caps;
}

export function checkParameters(params: Parameters): Parameters {
  for (const name of Object.keys(PARAMETER_RANGES) as NumericParameter[]) {
    const [min, max] = PARAMETER_RANGES[name];
    const value = params[name];
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new ParameterError(
        ErrorCode.PARAMETER,
        `Parameter '${name}' expects an integer in ${min}…${max}, got ${value}`,
        { field: name },
      );
    }
  }
  if (typeof params['cpu-throttle-tailslow'] !== 'boolean')
    throw new ParameterError(ErrorCode.PARAMETER, "Parameter 'cpu-throttle-tailslow' expects a boolean", {
      field: 'cpu-throttle-tailslow',
    });
  return params;
}

/**
 * Capabilities that mean something only to a QMP client (MIGRATION events; a pause until
 * migrate-continue): refused without a monitor rather than accepted and ignored.
 */
const NEEDS_QMP: Partial<Record<CapabilityName, string>> = {
  events: 'MIGRATION events go to QMP clients: give --qmp',
  'pause-before-switchover': 'it pauses until QMP migrate-continue: give --qmp',
};

/**
 * Parses `return-path,switchover-ack` into a full capability set (unknown names are refused).
 * `withQmp`: a QMP monitor runs, so events and pause-before-switchover are accepted.
 */
export function parseCapabilityList(list: string, withQmp = false): Capabilities {
  const caps: Record<CapabilityName, boolean> = { ...DEFAULT_CAPABILITIES };
  for (const raw of list.split(',')) {
    const name = raw.trim();
    if (name === '' || name === 'none') continue;
    if (!(CAPABILITY_NAMES as readonly string[]).includes(name)) {
      throw new CapabilityError(
        ErrorCode.CAPABILITY,
        `unknown capability '${name}' (known: ${CAPABILITY_NAMES.join(', ')})`,
        { field: name },
      );
    }
    const missing = NEEDS_QMP[name as CapabilityName];
    if (missing && !withQmp)
      throw new CapabilityError(
        ErrorCode.CAPABILITY,
        `capability '${name}' needs a QMP monitor: ${missing}`,
        {
          field: name,
        },
      );
    caps[name as CapabilityName] = true;
  }
  return checkCapabilities(caps);
}

export function enabledCapabilities(caps: Capabilities): CapabilityName[] {
  return CAPABILITY_NAMES.filter((n) => caps[n]);
}

/** The must-agree subset, as carried in the configuration section. */
export function agreementSet(caps: Capabilities): Record<string, boolean> {
  return Object.fromEntries(MUST_AGREE.map((n) => [n, caps[n]]));
}

/**
 * Destination side: compares the source's must-agree capabilities with ours. A mismatch names both
 * settings of every capability that differs.
 */
export function compareCapabilities(source: Record<string, unknown>, destination: Capabilities): void {
  const diffs: string[] = [];
  for (const name of MUST_AGREE) {
    const src = source[name] === true;
    if (src !== destination[name])
      diffs.push(
        `'${name}' is ${onOff(src)} on the source but ${onOff(destination[name])} on the destination`,
      );
  }
  if (diffs.length > 0) {
    throw new CapabilityError(ErrorCode.CAPABILITY_MISMATCH, `capability mismatch: ${diffs.join('; ')}`, {
      field: 'capabilities',
    });
  }
}

function onOff(v: boolean): string {
  return v ? 'on' : 'off';
}
