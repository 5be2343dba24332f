/** The three downtimes on one line: events from a pair report, in time order, from the source's stop. */
import t from 'tap';
import { explainDowntime } from '../../scripts/lib/downtime-explained.js';

const report = {
  status: 'completed',
  'downtime-start-t': 1000,
  'downtime-breakdown': {
    'src-downtime-start': 0,
    'src-vm-stopped': 2.84,
    'dst-loadvm-completed': 11.13,
    'dst-vm-started': 48.62,
    'src-downtime-end': 59.86,
  },
  guest: { clock: 'shared', 'resume-gap': { 'gap-start-ms': 1000.6, 'gap-end-ms': 1045.61 } },
  probe: { handover: true, 'gap-start': 993.02, 'gap-end': 1047.9 },
};

t.test('events in order; each downtime is the span between its two edges', async (t) => {
  const ev = explainDowntime(report)!;
  t.same(
    ev.map((e) => e.event),
    [
      'service-last-answer-source',
      'src-downtime-start',
      'guest-last-heartbeat-source',
      'src-vm-stopped',
      'dst-loadvm-completed',
      'guest-first-heartbeat-destination',
      'service-first-answer-destination',
      'dst-vm-started',
      'src-downtime-end',
    ],
  );
  const at = Object.fromEntries(ev.map((e) => [e.event, e.at]));
  t.equal(at['service-last-answer-source'], -6.98);
  t.equal(
    Math.round((at['guest-first-heartbeat-destination']! - at['guest-last-heartbeat-source']!) * 100) / 100,
    45.01,
  );
});

t.test('nothing to explain: not completed, two clocks, or no handover seen by the probe', async (t) => {
  t.equal(explainDowntime({ ...report, status: 'failed' }), undefined);
  t.equal(explainDowntime({ ...report, guest: { ...report.guest, clock: 'estimated' } }), undefined);
  const noProbe = explainDowntime({ ...report, probe: { handover: false } })!;
  t.notOk(
    noProbe.some((e) => e.event.startsWith('service-')),
    'no service edges without a handover',
  );
});
