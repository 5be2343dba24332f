/**
 * Migration timeline chart: vega-lite spec → vega → SVG in Node (no DOM, no canvas), optionally
 * converted to PNG with `rsvg-convert -b white` (librsvg2-bin) when that command exists.
 *
 * Three stacked panels share the time axis (ms since migration start): bandwidth (MB/s), remaining
 * (MiB), dirty rate (MB/s). Dashed grey rules mark every dirty sync (iteration boundary), an orange
 * rule labelled "ACK" marks the switchover ACK (an orange band before it: the time the source waited
 * for it with the remainder already small enough), a red band labelled "downtime" shades the window
 * the guest was stopped (drawn at least MIN_BAND_PX wide, so a 10 ms downtime in a 60 s chart is
 * still seen; the label gives the true value), a purple rule marks a no-progress warning, and teal
 * rules mark convergence decisions (a vCPU throttle step, a dirty limit, a downtime step, a timeout's
 * action), labelled in the dirty-rate panel, where their effect shows.
 * MB = 10^6 bytes, MiB = 2^20 bytes.
 */
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { parse, View } from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { ErrorCode, MigrationError, ParameterError } from '../errors.js';

export interface TimelineSample {
  /** ms since migration start. */
  t: number;
  /** Bytes still to send. */
  remaining: number;
  /** Bytes/s sent. */
  transferredRate: number;
  /** Bytes/s the guest dirtied. */
  dirtyRate: number;
}

export interface TimelineData {
  samples: TimelineSample[];
  /** t of each dirty sync (iteration boundary). */
  iterations: number[];
  /** t the switchover ACK arrived. */
  ackAt?: number;
  /** With switchover-ack: from the first time the remainder fitted the limit to the ACK (the wait). */
  ackWait?: { start: number; end: number };
  /** t of the progress watermark's warning (no new low in remaining). */
  noProgressAt?: number;
  /** Window the guest was stopped. */
  downtime?: { start: number; end: number };
  /** Convergence decisions: t and a short label ("throttle 30 %", "pause"). */
  decisions?: { t: number; label: string }[];
  title?: string;
}

export interface TimelineResult {
  /** Path of the SVG written (always). */
  svg: string;
  /** Path of the PNG, when a .png was asked for and rsvg-convert succeeded. */
  png?: string;
  /** Why no PNG was produced although one was asked for. */
  note?: string;
}

const MB = 1e6;
/** A band narrower than this many pixels is drawn this wide (centred on the real window). */
const MIN_BAND_PX = 4;
const MiB = 2 ** 20;
const WIDTH = 760;
const PANEL_HEIGHT = 130;
const COLORS = {
  bandwidth: '#1f77b4',
  remaining: '#2ca02c',
  dirty: '#9467bd',
  ack: '#e6550d',
  down: '#d62728',
  decision: '#17becf',
};

function finite(x: number, what: string): number {
  if (!Number.isFinite(x)) {
    throw new ParameterError(ErrorCode.PARAMETER, `timeline: ${what} is not a finite number (${x})`, {
      field: what,
    });
  }
  return x;
}

function validate(data: TimelineData): void {
  data.samples.forEach((s, i) => {
    finite(s.t, `samples[${i}].t`);
    finite(s.remaining, `samples[${i}].remaining`);
    finite(s.transferredRate, `samples[${i}].transferredRate`);
    finite(s.dirtyRate, `samples[${i}].dirtyRate`);
  });
  data.iterations.forEach((t, i) => {
    finite(t, `iterations[${i}]`);
  });
  if (data.ackAt !== undefined) finite(data.ackAt, 'ackAt');
  data.decisions?.forEach((d, i) => {
    finite(d.t, `decisions[${i}].t`);
  });
  if (data.noProgressAt !== undefined) finite(data.noProgressAt, 'noProgressAt');
  if (data.ackWait) {
    finite(data.ackWait.start, 'ackWait.start');
    finite(data.ackWait.end, 'ackWait.end');
  }
  if (data.downtime) {
    finite(data.downtime.start, 'downtime.start');
    finite(data.downtime.end, 'downtime.end');
    if (data.downtime.end < data.downtime.start) {
      throw new ParameterError(
        ErrorCode.PARAMETER,
        `timeline: downtime ends (${data.downtime.end}) before it starts (${data.downtime.start})`,
        { field: 'downtime' },
      );
    }
  }
}

const round = (x: number, d = 3): number => Math.round(x * 10 ** d) / 10 ** d;

/** Builds the vega-lite spec (exported for tests and for embedding in an HTML report). */
export function timelineSpec(data: TimelineData): TopLevelSpec {
  validate(data);
  const rows = data.samples.map((s) => ({
    t: s.t,
    mbps: round(s.transferredRate / MB),
    remainingMiB: round(s.remaining / MiB),
    dirtyMBps: round(s.dirtyRate / MB),
  }));
  const ends = [
    ...data.samples.map((s) => s.t),
    ...data.iterations,
    data.ackAt ?? 0,
    data.downtime?.end ?? 0,
  ];
  const tMax = Math.max(1, ...ends);
  const tMin = Math.min(0, ...ends);
  const x = {
    field: 't',
    type: 'quantitative' as const,
    scale: { domain: [tMin, tMax], nice: false, zero: false },
  };
  const iterRows = data.iterations.map((t, i) => ({ t, label: `#${i + 1}` }));
  // Label iteration boundaries only where there is room (about 22 px from the previous label).
  const minGap = (22 / WIDTH) * (tMax - tMin);
  const iterLabels: { t: number; label: string }[] = [];
  for (const r of [...iterRows].sort((a, b) => a.t - b.t)) {
    const prev = iterLabels[iterLabels.length - 1];
    if (!prev || r.t - prev.t >= minGap) iterLabels.push(r);
  }
  const labelIterations = iterLabels.length > 0;
  const dt = data.downtime;
  const minBand = (MIN_BAND_PX / WIDTH) * (tMax - tMin);
  const widen = (b: { start: number; end: number }) => {
    const mid = (b.start + b.end) / 2;
    return b.end - b.start >= minBand ? b : { start: mid - minBand / 2, end: mid + minBand / 2 };
  };

  const panel = (field: string, title: string, color: string, top: boolean, bottom: boolean) => {
    // biome-ignore lint/suspicious/noExplicitAny: vega-lite's layer unit types are too deep to spell out here
    const layer: any[] = [];
    if (data.ackWait) {
      layer.push({
        data: { values: [widen(data.ackWait)] },
        mark: { type: 'rect', color: COLORS.ack, opacity: 0.12 },
        encoding: { x: { ...x, field: 'start' }, x2: { field: 'end' } },
      });
    }
    if (data.noProgressAt !== undefined) {
      layer.push({
        data: { values: [{ t: data.noProgressAt }] },
        mark: { type: 'rule', color: COLORS.dirty, strokeWidth: 2, strokeDash: [2, 2] },
        encoding: { x },
      });
      if (top)
        layer.push({
          data: { values: [{ t: data.noProgressAt, label: 'no progress' }] },
          mark: {
            type: 'text',
            color: COLORS.dirty,
            fontSize: 10,
            align: 'left',
            baseline: 'top',
            dx: 3,
            dy: 3,
          },
          encoding: { x, y: { value: 0 }, text: { field: 'label' } },
        });
    }
    if (data.decisions && data.decisions.length > 0) {
      layer.push({
        data: { values: data.decisions },
        mark: { type: 'rule', color: COLORS.decision, strokeWidth: 1.5 },
        encoding: { x },
      });
      if (bottom)
        layer.push({
          // alternate heights so that decisions close together stay readable
          data: { values: data.decisions.map((d, i) => ({ ...d, dy: 3 + (i % 3) * 11 })) },
          mark: { type: 'text', color: COLORS.decision, fontSize: 9, align: 'left', baseline: 'top', dx: 2 },
          encoding: { x, y: { field: 'dy', type: 'quantitative', scale: null }, text: { field: 'label' } },
        });
    }
    if (dt) {
      layer.push({
        data: { values: [widen(dt)] },
        mark: { type: 'rect', color: COLORS.down, opacity: 0.18 },
        encoding: { x: { ...x, field: 'start' }, x2: { field: 'end' } },
      });
      if (top) {
        // Centred over the band, or right-aligned to its end / left-aligned to its start near the edges.
        const label = `downtime ${round(dt.end - dt.start, 1)} ms`;
        const span = tMax - tMin;
        const mid = (dt.start + dt.end) / 2;
        const half = ((label.length * 7) / 2 / WIDTH) * span;
        const [at, align] =
          mid + half > tMax ? [dt.end, 'right'] : mid - half < tMin ? [dt.start, 'left'] : [mid, 'center'];
        layer.push({
          data: { values: [{ at, label }] },
          mark: {
            type: 'text',
            color: COLORS.down,
            fontWeight: 'bold',
            fontSize: 11,
            baseline: 'bottom',
            align,
            dy: -2,
          },
          encoding: { x: { ...x, field: 'at' }, y: { value: 0 }, text: { field: 'label' } },
        });
      }
    }
    if (iterRows.length) {
      layer.push({
        data: { values: iterRows },
        mark: { type: 'rule', color: '#999', strokeDash: [4, 3], strokeWidth: 1 },
        encoding: { x },
      });
      if (bottom && labelIterations) {
        layer.push({
          data: { values: iterLabels },
          mark: { type: 'text', color: '#777', fontSize: 9, baseline: 'top', dy: 2 },
          encoding: { x, y: { value: PANEL_HEIGHT }, text: { field: 'label' } },
        });
      }
    }
    if (data.ackAt !== undefined) {
      layer.push({
        data: { values: [{ t: data.ackAt, label: 'ACK' }] },
        mark: { type: 'rule', color: COLORS.ack, strokeWidth: 2 },
        encoding: { x },
      });
      if (top) {
        layer.push({
          data: {
            values: [
              {
                t: data.ackAt,
                label: data.ackWait
                  ? `ACK (waited ${round(data.ackWait.end - data.ackWait.start, 0)} ms)`
                  : 'ACK',
              },
            ],
          },
          mark: {
            type: 'text',
            color: COLORS.ack,
            fontWeight: 'bold',
            fontSize: 11,
            align: 'right',
            baseline: 'top',
            dx: -3,
            dy: 3,
          },
          encoding: { x, y: { value: 0 }, text: { field: 'label' } },
        });
      }
    }
    layer.push({
      data: { values: rows },
      mark: {
        type: 'line',
        color,
        strokeWidth: 1.8,
        interpolate: 'linear',
        point: rows.length <= 60 ? { color, size: 18 } : false,
      },
      encoding: {
        x: {
          ...x,
          axis: {
            title: bottom ? 'time since migration start (ms)' : null,
            labels: bottom,
            grid: false,
            titlePadding: labelIterations ? 14 : 4,
            labelPadding: labelIterations ? 14 : 2,
          },
        },
        y: { field, type: 'quantitative', axis: { title, titleFontSize: 11, grid: true, gridOpacity: 0.4 } },
        tooltip: [
          { field: 't', type: 'quantitative', title: 't (ms)' },
          { field, type: 'quantitative', title },
        ],
      },
    });
    return { width: WIDTH, height: PANEL_HEIGHT, layer };
  };

  // Short lines: without a canvas vega estimates text width generously and would widen the image.
  const legend = [
    'dashed grey: dirty sync (iteration boundary)',
    [
      data.ackAt !== undefined
        ? `orange: switchover ACK${data.ackWait ? ' (band: waiting for it)' : ''}`
        : '',
      dt ? 'red band: downtime (guest stopped)' : '',
      data.noProgressAt !== undefined ? 'purple dashed: no-progress warning' : '',
      data.decisions && data.decisions.length > 0 ? 'teal: convergence decision' : '',
    ]
      .filter(Boolean)
      .join('  ·  '),
  ].filter(Boolean);

  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: {
      text: data.title ?? 'Migration timeline',
      subtitle: legend,
      anchor: 'start',
      fontSize: 15,
      subtitleColor: '#555',
      subtitlePadding: 6,
      offset: 18,
    },
    background: 'white',
    padding: { left: 10, right: 20, top: 10, bottom: 10 },
    config: { font: 'DejaVu Sans, sans-serif', view: { stroke: '#ccc' }, axis: { labelFontSize: 10 } },
    vconcat: [
      panel('mbps', 'bandwidth (MB/s)', COLORS.bandwidth, true, false),
      panel('remainingMiB', 'remaining (MiB)', COLORS.remaining, false, false),
      panel('dirtyMBps', 'dirty rate (MB/s)', COLORS.dirty, false, true),
    ],
    spacing: 14,
    resolve: { scale: { x: 'shared' } },
  } as TopLevelSpec;
}

/** Renders the timeline to an SVG string (no file I/O). */
export async function timelineSvg(data: TimelineData): Promise<string> {
  const spec = compile(timelineSpec(data)).spec;
  const view = new View(parse(spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

function rsvgConvert(svgPath: string, pngPath: string): Promise<'ok' | 'missing'> {
  return new Promise((resolve, reject) => {
    execFile(
      'rsvg-convert',
      ['-b', 'white', '-o', pngPath, svgPath],
      { timeout: 60_000 },
      (err, _o, stderr) => {
        if (!err) return resolve('ok');
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return resolve('missing');
        reject(
          new MigrationError(
            ErrorCode.INTERNAL,
            `rsvg-convert failed on ${svgPath}: ${String(stderr).trim() || err.message}`,
            {},
            { cause: err },
          ),
        );
      },
    );
  });
}

/**
 * Writes the timeline. `outPath` ending in `.png`: the SVG goes next to it (same name, `.svg`) and
 * is converted with `rsvg-convert -b white`; without that command only the SVG is written and
 * `note` says so. Any other `outPath` is written as SVG.
 */
export async function renderTimeline(data: TimelineData, outPath: string): Promise<TimelineResult> {
  const svgText = await timelineSvg(data);
  const wantPng = /\.png$/i.test(outPath);
  const svgPath = wantPng ? outPath.replace(/\.png$/i, '.svg') : outPath;
  await mkdir(dirname(svgPath), { recursive: true });
  await writeFile(svgPath, svgText);
  if (!wantPng) return { svg: svgPath };
  const r = await rsvgConvert(svgPath, outPath);
  if (r === 'missing') {
    return { svg: svgPath, note: 'rsvg-convert not found (install librsvg2-bin); wrote SVG only' };
  }
  return { svg: svgPath, png: outPath };
}
