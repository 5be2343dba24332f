/**
 * A small FULL-section device: the vCPU's "registers" (tick, PRNG and sweep state) captured when the
 * guest stops. Both halves live here, as QEMU keeps a device's save and load sides together. The load
 * side checks the registers against the control page that arrived in RAM: the two travel separately,
 * so a disagreement means a stale or lost page 0.
 */
import { ErrorCode, ProtocolError } from '../errors.js';
import { HB } from '../guest/layout.js';
import type { GuestMemory } from '../guest/memory.js';
import type { LoadHandlers, SaveHandlers, SectionSink } from '../handlers.js';
import { decodePayload, encodePayload } from '../protocol/payload.js';
import type { SectionPayload } from '../protocol/section-payload.js';

interface CpuRegisters {
  tick: number;
  prng: number;
  sweep: number;
}

function readRegisters(memory: GuestMemory): CpuRegisters {
  const page0 = Buffer.from(memory.shared.ram, 0, memory.pageSize);
  return {
    tick: page0.readDoubleLE(HB.TICK),
    prng: page0.readUInt32LE(HB.PRNG),
    sweep: page0.readUInt32LE(HB.SWEEP),
  };
}

export class CpuSaver implements SaveHandlers {
  readonly idstr = 'cpu';
  readonly instanceId = 0;
  readonly version = 1;
  readonly iterative = false;
  constructor(private readonly memory: GuestMemory) {}

  async saveComplete(sink: SectionSink): Promise<void> {
    await sink.emit(encodePayload({ ...readRegisters(this.memory) }));
  }
}

export class CpuLoader implements LoadHandlers {
  readonly idstr = 'cpu';
  readonly instanceId = 0;
  readonly version = 1;
  readonly minVersion = 1;
  registers: CpuRegisters | null = null;
  constructor(private readonly memory: GuestMemory) {}

  loadState(_kind: string, payload: SectionPayload): void {
    const body = decodePayload(payload.bytes(), 'cpu');
    const regs = { tick: Number(body.tick), prng: Number(body.prng), sweep: Number(body.sweep) };
    this.registers = regs;
    const ram = readRegisters(this.memory);
    if (ram.tick !== regs.tick || ram.prng !== regs.prng || ram.sweep !== regs.sweep) {
      throw new ProtocolError(
        ErrorCode.CONFIG_MISMATCH,
        `cpu: registers (tick ${regs.tick}) disagree with guest page 0 (tick ${ram.tick}): stale control page`,
        { section: 'cpu' },
      );
    }
  }
}
