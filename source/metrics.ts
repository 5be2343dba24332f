/**
 * `--metrics-port N`: Prometheus metrics for tools (prom-client), served on 127.0.0.1:N/metrics from
 * the process start. Names follow the report; counters end in `_total` (Prometheus naming), gauges
 * are the current value. `remaining` counts device data too, as the progress line does.
 */
import http from 'node:http';
import { Counter, Gauge, Registry } from 'prom-client';
import { ErrorCode, ParameterError } from '../shared/errors.js';
import type { MetricsFacts, Progress } from './migration.js';
import type { MigrationReport } from './report.js';

const STATES = ['none', 'setup', 'active', 'device', 'completed', 'failed', 'cancelling', 'cancelled'];

export class MetricsServer {
  readonly #registry = new Registry();
  readonly #remaining = this.#gauge('switchover_remaining_bytes', 'bytes still to send: RAM and device data');
  readonly #transferred = new Counter({
    name: 'switchover_transferred_bytes_total',
    help: 'bytes sent on all channels, all migrations of this process',
    registers: [this.#registry],
  });
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
  readonly #throttle = this.#gauge(
    'switchover_cpu_throttle_percentage',
    'auto-converge: the vCPU throttle now, % (0 = none)',
  );
  readonly #state = new Gauge({
    name: 'switchover_state',
    help: '1 for the current migration state',
    labelNames: ['state'],
    registers: [this.#registry],
  });
  readonly #ackEnabled = this.#gauge('switchover_ack_enabled', '1 when the switchover-ack capability is on');
  readonly #acked = this.#gauge('switchover_ack_received', '1 once the destination sent SWITCHOVER_ACK');
  readonly #ackWait = this.#gauge(
    'switchover_ack_wait_ms',
    'time the source has waited for the ACK with the remainder already small enough, ms',
  );
  readonly #deviceSent = new Gauge({
    name: 'switchover_device_transferred_bytes',
    help: 'bytes a device has sent in this migration',
    labelNames: ['device'],
    registers: [this.#registry],
  });
  #server: http.Server | null = null;
  /** The current migration's transferred bytes already counted (a new migration starts from 0). */
  #counted = 0;
  #facts: (() => MetricsFacts) | null = null;

  #gauge(name: string, help: string): Gauge {
    return new Gauge({ name, help, registers: [this.#registry] });
  }

  constructor() {
    this.#setState('none');
  }

  async listen(port: number, host = '127.0.0.1'): Promise<number> {
    this.#server = http.createServer(async (req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end();
        return;
      }
      this.#sampleFacts();
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

  /** A new migration (the first, or a --retry-connect): its facts, and its byte count from 0. */
  begin(facts: () => MetricsFacts): void {
    this.#facts = facts;
    this.#counted = 0;
    this.#deviceSent.reset();
  }

  update(p: Progress): void {
    this.#remaining.set(p.remaining);
    this.#count(p.transferred);
    this.#dirtyRate.set(p.dirtyPagesRate);
    this.#mbps.set(p.mbps);
    this.#expected.set(p.expectedDowntime);
    this.#iteration.set(p.iteration);
    this.#throttle.set(p.cpuThrottlePercentage ?? 0);
    this.#setState(p.status);
  }

  finish(report: MigrationReport): void {
    this.#setState(report.status);
    if (report.downtime !== undefined) this.#downtime.set(report.downtime);
    this.#count(report.ram.transferred);
    this.#remaining.set(report.ram.remaining);
    this.#sampleFacts();
  }

  #count(transferred: number): void {
    if (transferred > this.#counted) this.#transferred.inc(transferred - this.#counted);
    this.#counted = Math.max(this.#counted, transferred);
  }

  #sampleFacts(): void {
    const f = this.#facts?.();
    if (!f) return;
    this.#ackEnabled.set(f.ackEnabled ? 1 : 0);
    this.#acked.set(f.acked ? 1 : 0);
    this.#ackWait.set(f.ackWaitMs);
    for (const [device, sent] of Object.entries(f.devices)) this.#deviceSent.set({ device }, sent);
  }

  #setState(state: string): void {
    for (const s of STATES) this.#state.set({ state: s }, s === state ? 1 : 0);
  }

  close(): void {
    this.#server?.close();
  }
}
