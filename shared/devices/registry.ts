/**
 * Which devices a guest has, from `--device` specs, and their save / load halves. The source sends
 * its specs in the configuration section so the destination builds the same devices (as both QEMU
 * sides are started with the same machine configuration).
 */
import { ErrorCode, ParameterError } from '../errors.js';
import type { Guest } from '../guest/guest.js';
import type { GuestMemory } from '../guest/memory.js';
import type { LoadHandlers, SaveHandlers } from '../handlers.js';
import type { Capabilities } from '../options.js';
import { parseDuration, parseRate, parseSize } from '../units.js';
import { CpuLoader, CpuSaver } from './cpu-device.js';
import { type PrecopyConfig, PrecopyLoader, PrecopySaver } from './precopy-device.js';

export interface DeviceSpec {
  kind: 'precopy';
  id: string;
  size: number;
  dirtyRate: number;
  /** -1 = never (the device never approves the switchover). */
  prepMs: number;
  stopCopy: number;
}

const PRECOPY_KEYS = ['size', 'dirty-rate', 'prep', 'stop-copy', 'id'];

/** `precopy:size=300M,dirty-rate=1M,prep=1480ms,stop-copy=4M` → DeviceSpec. */
export function parseDeviceSpecs(specs: string[]): DeviceSpec[] {
  return specs.map((text, i) => {
    const colon = text.indexOf(':');
    const kind = colon < 0 ? text : text.slice(0, colon);
    if (kind !== 'precopy') {
      throw new ParameterError(
        ErrorCode.USAGE,
        `--device: unknown device kind '${kind}' in '${text}' (known: precopy)`,
        { field: '--device' },
      );
    }
    const kv: Record<string, string> = {};
    for (const part of (colon < 0 ? '' : text.slice(colon + 1)).split(',').filter(Boolean)) {
      const [k, v] = part.split('=', 2);
      if (!k || v === undefined || !PRECOPY_KEYS.includes(k)) {
        throw new ParameterError(
          ErrorCode.USAGE,
          `--device: '${part}' is not one of ${PRECOPY_KEYS.join('=, ')}= in '${text}'`,
          { field: '--device' },
        );
      }
      kv[k] = v;
    }
    return {
      kind: 'precopy',
      id: kv.id ?? `precopy${i}`,
      size: parseSize(kv.size ?? '64M', '--device size'),
      dirtyRate: parseRate(kv['dirty-rate'] ?? '0', '--device dirty-rate'),
      prepMs: kv.prep === 'never' ? -1 : parseDuration(kv.prep ?? '0', '--device prep'),
      stopCopy: parseSize(kv['stop-copy'] ?? '1M', '--device stop-copy'),
    };
  });
}

function configOf(spec: DeviceSpec): PrecopyConfig {
  return {
    id: spec.id,
    size: spec.size,
    dirtyRate: spec.dirtyRate,
    prepMs: spec.prepMs < 0 ? Number.POSITIVE_INFINITY : spec.prepMs,
    stopCopy: spec.stopCopy,
  };
}

export function sourceDevices(specs: DeviceSpec[], caps: Capabilities, guest: Guest): SaveHandlers[] {
  const precopy = specs.map(
    (s) => new PrecopySaver(configOf(s), caps['switchover-ack'], () => guest.running),
  );
  return [...precopy, new CpuSaver(guest.memory)];
}

export function destinationDevices(
  specs: DeviceSpec[],
  memory: GuestMemory,
  caps: Capabilities,
  onPrepStart?: (id: string, ms: number) => void,
): LoadHandlers[] {
  const precopy = specs.map((s) => new PrecopyLoader(configOf(s), caps['switchover-ack'], onPrepStart));
  return [...precopy, new CpuLoader(memory)];
}
