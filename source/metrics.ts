/**
 * `--metrics-port N`: Prometheus metrics for tools (prom-client), served on 127.0.0.1:N/metrics.
 * Names follow the report: remaining and transferred bytes, dirty rate, state, downtimes.
 */
import http from 'node:http';
import { Gauge, Registry } from 'prom-client';
import { ErrorCode, ParameterError } from '../shared/errors.js';
import type { Progress } from './migration.js';
import type { MigrationReport } from './report.js';

const STATES = [
  'none',
  'setup',
  'active',
  'pre-switchover',
  'device',
  'completed',
  'failed',
  'cancelling',
  'cancelled',
];

export class MetricsServer {
  readonly #registry = new Registry();
  readonly #remaining = this.#gauge('switchover_ram_remaining_bytes', 'RAM bytes still dirty');
  readonly #transferred = this.#gauge('switchover_transferred_bytes', 'bytes sent on all channels');
  readonly #dirtyRate = this.#gauge(
    'switchover_dirty_pages_rate',
    'pages per second the guest dirtied (last period)',
  );
  readonly #mbps = this.#gauge(
    'switchover_bandwidth_mbps',
    'bandwidth over the last 100 ms window, megabits/s',
  );
  readonly #expected = this.#gauge('switchover_expected_downtime_ms', 'expected downtime, ms');
  readonly #downtime = this.#gauge(
    'switchover_last_downtime_ms',
    'downtime of the last completed migration, ms',
  );
  readonly #iteration = this.#gauge('switchover_iterations', 'dirty-log syncs so far');
  readonly #state = new Gauge({
    name: 'switchover_state',
    help: '1 for the current migration state',
    labelNames: ['state'],
    registers: [this.#registry],
  });
  #server: http.Server | null = null;

  #gauge(name: string, help: string): Gauge {
    return new Gauge({ name, help, registers: [this.#registry] });
  }

  async listen(port: number, host = '127.0.0.1'): Promise<number> {
    this.#server = http.createServer(async (req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': this.#registry.contentType });
      res.end(await this.#registry.metrics());
    });
    const server = this.#server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(
          new ParameterError(
            ErrorCode.USAGE,
            `--metrics-port: cannot listen on ${host}:${port}: ${err.code ?? err.message}`,
            { field: '--metrics-port' },
          ),
        ),
      );
      server.listen(port, host, resolve);
    });
    return (this.#server.address() as { port: number }).port;
  }

  update(p: Progress): void {
    this.#remaining.set(p.remaining);
    this.#transferred.set(p.transferred);
    this.#dirtyRate.set(p.dirtyPagesRate);
    this.#mbps.set(p.mbps);
    this.#expected.set(p.expectedDowntime);
    this.#iteration.set(p.iteration);
    this.#setState(p.status);
  }

  finish(report: MigrationReport): void {
    this.#setState(report.status);
    if (report.downtime !== undefined) this.#downtime.set(report.downtime);
    this.#transferred.set(report.ram.transferred);
    this.#remaining.set(report.ram.remaining);
  }

  #setState(state: string): void {
    for (const s of STATES) this.#state.set({ state: s }, s === state ? 1 : 0);
  }

  close(): void {
    this.#server?.close();
  }
}
