/**
 * A pair run's service downtime must be the handover gap. A probe that never saw the source guest
 * answer and then the destination guest (it started too late) must not report its longest silence
 * as the migration's service downtime.
 */
import t from 'tap';
import { probeCoverage } from '../../scripts/lib/service-probe.js';

const seen = { 'service-downtime': 12.5, handover: true, 'first-reply': 100 };
const missed = { 'service-downtime': 9.7, handover: false, 'first-reply': 700 };

t.same(probeCoverage(seen, 'completed', 500), seen, 'a handover is the service downtime, untouched');
t.match(
  probeCoverage(missed, 'completed', 500),
  { 'service-downtime': null, 'not-covered': /first reply after the downtime had begun/ },
  'a probe that started after the downtime reports no figure and says why',
);
t.match(
  probeCoverage({ ...missed, 'first-reply': 100 }, 'completed', 500),
  { 'service-downtime': null, 'not-covered': /no handover/ },
  'a probe that ran but saw no handover reports no figure',
);
t.same(
  probeCoverage(missed, 'failed', 500),
  missed,
  'a failed migration has no handover: the longest gap stays the figure (the source guest ran on)',
);
