/**
 * Which devices a guest has, from `--device` specs, and their save / load halves. The source sends
 * its specs in the configuration section so the destination builds the same devices (as both QEMU
 * sides are started with the same machine configuration).
 */
import { ErrorCode, ParameterError } from '../errors.js';
import type { Guest } from '../guest/guest.js';
import type { GuestMemory } from '../guest/memory.js';
import type { LoadContext, LoadHandlers, SaveHandlers } from '../handlers.js';
import type { Capabilities } from '../options.js';
import { CpuLoader, CpuSaver } from './cpu-device.js';

export interface DeviceSpec {
  kind: string;
  id: string;
  [param: string]: string | number;
}

export function parseDeviceSpecs(specs: string[]): DeviceSpec[] {
  return specs.map((text, i) => {
    const [kind, rest = ''] = text.split(':', 2) as [string, string?];
    if (kind !== 'precopy') {
      throw new ParameterError(
        ErrorCode.USAGE,
        `--device: unknown device kind '${kind}' in '${text}' (known: precopy)`,
        { field: '--device' },
      );
    }
    const spec: DeviceSpec = { kind, id: `${kind}${i}` };
    for (const kv of rest.split(',').filter(Boolean)) {
      const [k, v] = kv.split('=', 2);
      if (!k || v === undefined)
        throw new ParameterError(ErrorCode.USAGE, `--device: '${kv}' is not key=value in '${text}'`, {
          field: '--device',
        });
      spec[k] = v;
    }
    return spec;
  });
}

export function sourceDevices(specs: DeviceSpec[], _caps: Capabilities, guest: Guest): SaveHandlers[] {
  const devices: SaveHandlers[] = [];
  void specs;
  devices.push(new CpuSaver(guest.memory));
  return devices;
}

export function destinationDevices(
  specs: DeviceSpec[],
  memory: GuestMemory,
  _ctx?: LoadContext,
): LoadHandlers[] {
  void specs;
  return [new CpuLoader(memory)];
}
