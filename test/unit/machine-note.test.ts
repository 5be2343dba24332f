import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { activeDamon, machineNote } from '../../scripts/bench/machine.js';

t.test('reads the kdamonds that are on from a DAMON admin tree', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'damon-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const put = (path: string, text: string) => {
    mkdirSync(join(root, path, '..'), { recursive: true });
    writeFileSync(join(root, path), `${text}\n`);
  };
  put('nr_kdamonds', '2');
  put('0/state', 'on');
  put('0/contexts/0/operations', 'paddr');
  put('0/contexts/0/schemes/nr_schemes', '1');
  put('0/contexts/0/schemes/0/action', 'pageout');
  put('1/state', 'off');
  const facts = activeDamon(root);
  t.same(facts, [{ kdamond: '0', state: 'on', operations: 'paddr', actions: ['pageout'] }]);
  t.match(machineNote(facts), /DAMON is on here — kdamond 0 \(paddr, pageout\)/);
});

t.test('no DAMON, nothing to say', async (t) => {
  t.same(activeDamon('/nonexistent/damon'), []);
  t.equal(machineNote([]), null);
});
