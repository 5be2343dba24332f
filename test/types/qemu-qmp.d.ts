/** The npm package qemu-qmp 0.5.0 (third party, untyped): the part the QMP test uses. */
declare module 'qemu-qmp' {
  import { Socket } from 'node:net';
  export default class QMP extends Socket {
    connect(path: string, callback: (err: Error | null) => void): this;
    execute(
      command: string,
      args: Record<string, unknown> | null,
      callback: (err: Error | null, ret: unknown) => void,
    ): void;
  }
}
