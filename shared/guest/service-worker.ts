/**
 * The guest's UDP echo service runs on its own thread, so that it answers exactly when the vCPU
 * runs: a busy host main thread (the migration copying pages) must not look like guest downtime.
 * It reads the vCPU state and the tick from shared memory; before a guest is attached it is silent.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { HB } from './layout.js';
import { GuestService } from './service.js';
import { CTL, VcpuState } from './vcpu-control.js';

let control: Int32Array | null = null;
let f64: Float64Array | null = null;

const service = new GuestService({
  isRunning: () => control !== null && Atomics.load(control, CTL.STATE) === VcpuState.RUNNING,
  tick: () => f64?.[HB.TICK >>> 3] ?? 0,
});

parentPort!.on(
  'message',
  (m: { type: 'attach'; control: SharedArrayBuffer; ram: SharedArrayBuffer } | { type: 'close' }) => {
    if (m.type === 'attach') {
      control = new Int32Array(m.control);
      f64 = new Float64Array(m.ram, 0, 8);
      return;
    }
    service.close();
    parentPort!.close();
  },
);

const { host, port } = workerData as { host: string; port: number };
service.start(host, port).then(
  (addr) => parentPort!.postMessage({ type: 'listening', ...addr }),
  (err: Error) => parentPort!.postMessage({ type: 'error', message: err.message }),
);
