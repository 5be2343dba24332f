/**
 * A chaos scenario composed on the command line: link impairments for the whole migration
 * (`--link rate=100mbit,delay=50ms,loss=2%`), guest and migration options, and optionally a fault
 * struck at a phase (`--fault kill-destination --strike switchover`). Its allowed outcomes are the
 * suite's: migrated with the image verified or failed with the source guest intact (a killed source:
 * a clean destination); anything else is a DEFECT.
 */
import { parseCommon } from '../../shared/cli/args.js';
import { MigrationError } from '../../shared/errors.js';
import type { Impairment, LinkSpec, Phase, Scenario, Trigger } from './scenarios.js';

export interface CustomOptions {
  link?: string;
  fault?: string;
  strike?: string;
  ram?: string;
  dirtyRate?: string;
  maxBandwidth?: string;
  capabilities?: string;
  downtimeLimit?: string;
  devices?: string[];
  timeoutMs?: string;
}

export const FAULTS = [
  'none',
  'kill-destination',
  'kill-source',
  'stop-destination',
  'partition-2s',
  'partition-reset',
] as const;
export type Fault = (typeof FAULTS)[number];
const STRIKES = ['setup', 'iteration', 'ack-wait', 'switchover'] as const;

/** A usage mistake in a custom scenario: one line, the option named. */
export class CustomError extends Error {}

export function parseLink(text: string): LinkSpec {
  const link: LinkSpec = {};
  for (const part of text.split(',').filter(Boolean)) {
    const [key, value = ''] = part.split('=');
    if (key === 'rate' && /^\d+(\.\d+)?[kmg]bit$/i.test(value)) link.rate = value.toLowerCase();
    else if (key === 'delay' && /^\d+(ms)?$/.test(value)) link.delayMs = Number.parseInt(value, 10);
    else if (key === 'loss' && /^\d+(\.\d+)?%?$/.test(value) && Number.parseFloat(value) <= 100)
      link.lossPercent = Number.parseFloat(value);
    else
      throw new CustomError(
        `--link: '${part}' is not rate=N{k,m,g}bit, delay=MSms or loss=P% (e.g. rate=100mbit,delay=50ms,loss=2%)`,
      );
  }
  return link;
}

function triggerFor(strike: (typeof STRIKES)[number]): Trigger {
  if (strike === 'setup') return { on: 'state', to: 'setup' };
  if (strike === 'iteration') return { on: 'progress', elapsedMs: 600 };
  if (strike === 'ack-wait') return { on: 'ack-wait', afterMs: 300 };
  return { on: 'state', to: 'device', afterMs: 50 };
}

function impairmentFor(fault: Fault): Impairment {
  switch (fault) {
    case 'none':
      return { kind: 'none' };
    case 'kill-destination':
      return { kind: 'signal', target: 'destination', signal: 'SIGKILL' };
    case 'kill-source':
      return { kind: 'signal', target: 'source', signal: 'SIGKILL' };
    case 'stop-destination':
      return { kind: 'signal', target: 'destination', signal: 'SIGSTOP', holdMs: 5000 };
    case 'partition-2s':
      return { kind: 'partition', mode: 'drop', ms: 2000 };
    case 'partition-reset':
      return { kind: 'partition', mode: 'reject', ms: 2000 };
  }
}

export function customScenario(o: CustomOptions): Scenario {
  const fault = (o.fault ?? 'none') as Fault;
  if (!FAULTS.includes(fault))
    throw new CustomError(`--fault: '${o.fault}' is not one of ${FAULTS.join(', ')}`);
  const strike = (o.strike ?? (fault === 'none' ? 'setup' : 'iteration')) as (typeof STRIKES)[number];
  if (!STRIKES.includes(strike))
    throw new CustomError(`--strike: '${o.strike}' is not one of ${STRIKES.join(', ')}`);
  if (fault === 'none' && o.strike !== undefined)
    throw new CustomError('--strike needs a --fault to strike with');
  const link = o.link === undefined ? undefined : parseLink(o.link);
  if (fault === 'none' && !link) throw new CustomError('a custom scenario needs --link or --fault (or both)');
  const timeoutMs = o.timeoutMs === undefined ? 90_000 : Number(o.timeoutMs);
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0)
    throw new CustomError(`--timeout: '${o.timeoutMs}' is not a number of ms`);
  // the guest and migration options as npm start checks them (a bad one would only fail the source)
  const asPair = [
    ...(o.ram ? ['--ram', o.ram] : []),
    ...(o.dirtyRate ? ['--dirty-rate', o.dirtyRate] : []),
    ...(o.maxBandwidth ? ['--max-bandwidth', o.maxBandwidth] : []),
    ...(o.capabilities ? ['--capabilities', o.capabilities] : []),
    ...(o.downtimeLimit ? ['--downtime-limit', o.downtimeLimit] : []),
    ...(o.devices ?? []).flatMap((d) => ['--device', d]),
  ];
  try {
    parseCommon(asPair, 'pair');
  } catch (err) {
    if (err instanceof MigrationError) throw new CustomError(err.message);
    throw err;
  }
  const phase: Phase = fault === 'none' ? 'whole' : strike;
  const sourceKilled = fault === 'kill-source';
  const name = [
    'custom',
    o.link ? o.link.replace(/[=,%]/g, (c) => (c === '=' ? '' : c === ',' ? '+' : 'pct')) : null,
    fault === 'none' ? null : `${fault}-${strike}`,
  ]
    .filter(Boolean)
    .join('-');
  return {
    name,
    phase,
    trigger: fault === 'none' ? { on: 'start' } : triggerFor(strike),
    impairment: impairmentFor(fault),
    link,
    guest: {
      ram: o.ram ?? '64M',
      dirtyRate: o.dirtyRate ?? '2M',
      maxBandwidth: o.maxBandwidth ?? '0',
      capabilities: o.capabilities ?? 'return-path,multifd',
      ...(o.downtimeLimit === undefined ? {} : { downtimeLimit: Number(o.downtimeLimit) }),
      ...(o.devices?.length ? { devices: o.devices } : {}),
    },
    stallTimeoutMs: 5000,
    timeoutMs,
    expect: {
      outcomes: sourceKilled
        ? ['source-lost-destination-clean']
        : ['migrated-verified', 'failed-source-intact'],
      retryVerified: !sourceKilled && fault !== 'none',
    },
  };
}
