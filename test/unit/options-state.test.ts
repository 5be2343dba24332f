import t from 'tap';
import { ErrorCode } from '../../shared/errors.js';
import {
  checkCapabilities,
  checkParameters,
  compareCapabilities,
  DEFAULT_CAPABILITIES,
  DEFAULT_PARAMETERS,
  parseCapabilityList,
} from '../../shared/options.js';
import { MigrationStatus as S, StateCell } from '../../shared/state.js';
import { parseRate, parseSize } from '../../shared/units.js';

t.test('switchover-ack without return-path is refused with QEMU message', async (t) => {
  t.throws(() => checkCapabilities({ ...DEFAULT_CAPABILITIES, 'switchover-ack': true }), {
    code: ErrorCode.CAPABILITY,
  });
  t.throws(() => parseCapabilityList('switchover-ack'), {
    message: "Capability 'switchover-ack' requires capability 'return-path'",
  });
  t.same(parseCapabilityList('return-path,switchover-ack')['switchover-ack'], true);
  t.throws(() => parseCapabilityList('return-path,bogus'), { code: ErrorCode.CAPABILITY });
});

t.test('out-of-range parameters name the parameter', async (t) => {
  t.same(checkParameters({ ...DEFAULT_PARAMETERS }), DEFAULT_PARAMETERS);
  t.throws(() => checkParameters({ ...DEFAULT_PARAMETERS, 'downtime-limit': 2_000_001 }), {
    code: ErrorCode.PARAMETER,
    field: 'downtime-limit',
  });
  t.throws(() => checkParameters({ ...DEFAULT_PARAMETERS, 'multifd-channels': 0 }), {
    code: ErrorCode.PARAMETER,
    field: 'multifd-channels',
  });
  t.equal(DEFAULT_PARAMETERS['downtime-limit'], 300);
  t.equal(DEFAULT_PARAMETERS['max-bandwidth'], 128 * 1024 * 1024);
});

t.test('a capability mismatch between the sides is refused naming both settings', async (t) => {
  const dst = parseCapabilityList('return-path');
  t.doesNotThrow(() =>
    compareCapabilities({ 'return-path': true, 'switchover-ack': false, multifd: false }, dst),
  );
  t.throws(() => compareCapabilities({ 'return-path': true, 'switchover-ack': true, multifd: false }, dst), {
    code: ErrorCode.CAPABILITY_MISMATCH,
  });
});

t.test('sizes and rates take binary suffixes', async (t) => {
  t.equal(parseSize('512M', 'x'), 512 * 1024 * 1024);
  t.equal(parseSize('4096', 'x'), 4096);
  t.equal(parseRate('32M/s', 'x'), 32 * 1024 * 1024);
  t.equal(parseRate('max', 'x', true), Number.POSITIVE_INFINITY);
  t.throws(() => parseSize('lots', '--ram'), { code: ErrorCode.USAGE });
});

t.test('state transitions are compare-and-swap against the table', async (t) => {
  const cell = new StateCell();
  const seen: string[] = [];
  cell.onChange((from, to) => seen.push(`${from}>${to}`));
  t.equal(cell.transition(S.SETUP, S.ACTIVE), false, 'not in setup yet: nothing happens');
  t.equal(cell.transition(S.NONE, S.SETUP), true);
  t.equal(cell.transition(S.SETUP, S.COMPLETED), false, 'setup cannot jump to completed');
  t.equal(cell.transition(S.SETUP, S.ACTIVE), true);
  t.equal(cell.transition(S.ACTIVE, S.DEVICE), true);
  t.equal(cell.transition(S.DEVICE, S.COMPLETED), true);
  t.equal(cell.transition(S.COMPLETED, S.FAILED), false, 'completed is final');
  t.same(seen, ['none>setup', 'setup>active', 'active>device', 'device>completed']);
});
