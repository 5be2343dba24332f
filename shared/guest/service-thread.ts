/** Host side of the guest service thread (see service-worker.ts). */
import type { Worker } from 'node:worker_threads';
import { ErrorCode, SocketError } from '../errors.js';
import { spawnTsWorker } from '../worker/spawn.js';
import type { GuestMemory } from './memory.js';

export const SERVICE_ENTRY = new URL('./service-worker.ts', import.meta.url);

export class GuestServiceThread {
  #worker: Worker | null = null;

  /** Starts the service; resolves with the bound address. */
  start(host: string, port: number): Promise<{ host: string; port: number }> {
    const w = spawnTsWorker(SERVICE_ENTRY, { host, port });
    this.#worker = w;
    return new Promise((resolve, reject) => {
      w.once('message', (m: { type: string; host: string; port: number; message?: string }) => {
        if (m.type === 'listening') resolve({ host: m.host, port: m.port });
        else reject(new SocketError(ErrorCode.SOCKET, `guest service: ${m.message}`));
      });
      w.once('error', (err) => reject(new SocketError(ErrorCode.SOCKET, `guest service: ${err.message}`)));
    });
  }

  /** The guest whose state the service reports (the destination attaches it when it exists). */
  attach(memory: GuestMemory): void {
    this.#worker?.postMessage({ type: 'attach', control: memory.shared.control, ram: memory.shared.ram });
  }

  close(): void {
    const w = this.#worker;
    this.#worker = null;
    if (!w) return;
    w.postMessage({ type: 'close' });
    setTimeout(() => void w.terminate(), 200).unref();
  }
}
