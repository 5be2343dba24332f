// Worker entry under tsx: `new Worker('x.ts')` fails with ERR_UNKNOWN_FILE_EXTENSION, so every worker
// starts here, registers tsx's loader, then imports the real TypeScript entry named in workerData.
import { register } from 'tsx/esm/api';

register();
const { workerData } = await import('node:worker_threads');
await import(workerData.entry);
