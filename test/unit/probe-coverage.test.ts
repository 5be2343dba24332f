/**
 * A pair run's service downtime must be the handover gap. A probe that never saw the source guest
 * answer and then the destination guest (it started too late, or the migration failed or was
 * cancelled) reports no service-downtime at all, and says why.
 */
import t from 'tap';
import { probeCoverage } from '../../scripts/lib/service-probe.js';

const seen = { 'service-downtime': 12.5, handover: true, 'first-reply': 100 };
const missed = { 'service-downtime': 9.7, handover: false, 'first-reply': 700 };

t.same(probeCoverage(seen, 'completed', 500), seen, 'a handover is the service downtime, untouched');
const noFigure = (r: Record<string, unknown>) => !('service-downtime' in r);
t.ok(noFigure(probeCoverage(missed, 'completed', 500)), 'no handover: no service-downtime field');
t.match(
  probeCoverage(missed, 'completed', 500),
  { 'not-covered': /first reply after the downtime had begun/ },
  'a probe that started after the downtime reports no figure and says why',
);
t.match(
  probeCoverage({ ...missed, 'first-reply': 100 }, 'completed', 500),
  { 'not-covered': /no handover/ },
  'a probe that ran but saw no handover reports no figure',
);
t.ok(noFigure(probeCoverage(missed, 'cancelled', 500)), 'a cancelled run: no service-downtime');
t.match(
  probeCoverage(missed, 'cancelled', 500),
  { 'not-covered': /ended cancelled: there was no handover/ },
  'a cancelled migration has no handover: no figure, and it says why (it used to report the longest silence)',
);
