/**
 * A small run timeline: one bar per run, placed left to right by its execution date, as tall
 * as it ran long (one scale for all bars), coloured by status in CSS. The geometry is the pure
 * `timelineBars`; `renderTimeline` only turns bars into SVG.
 */
import { formatDuration, runDuration } from './model';
import { formatShortDate } from './time';
import type { IPipelineRun, RunStatus } from './types';

const SVG_NS = 'http://www.w3.org/2000/svg';

/** Bars never get thinner or lower than this, so a 0 s run or a crowded chart still shows. */
export const MIN_BAR_SIZE = 2;
/** Nor wider than this, so three runs do not look like a wall. */
export const MAX_BAR_WIDTH = 24;
/** Statuses in the order the summary names them. */
const SUMMARY_ORDER: readonly RunStatus[] = [
  'completed',
  'failed',
  'running',
  'initial',
  'cancelled'
];

export interface ITimelineOptions {
  width: number;
  height: number;
  /** The end of a running run's bar (its duration so far). */
  now: Date;
  /**
   * The zone the tooltips' dates are in (default UTC): pass the schedule's (`scheduleTimezone`),
   * so a run of a 09:00 Berlin schedule reads 09:00, as its schedule says.
   */
  timeZone?: string;
}

export interface ITimelineBar {
  runId: number;
  x: number;
  y: number;
  width: number;
  height: number;
  status: RunStatus;
  /** The tooltip: `#12 completed 3.2 s, 2026-01-02 10:00`. */
  label: string;
  /** Seconds it ran (so far, while running); null when it has not started. */
  duration: number | null;
}

/** The instant a run stands for on the time axis: its execution date, else when it started. */
export function runTime(run: IPipelineRun): number {
  for (const value of [run.execution_date, run.started_at, run.created_at]) {
    if (typeof value === 'string' && value) {
      const ms = Date.parse(value);
      if (isFinite(ms)) {
        return ms;
      }
    }
  }
  return NaN;
}

export { formatShortDate };

/** The tooltip of one run, its date in `timeZone`. */
export function barLabel(run: IPipelineRun, now: Date, timeZone = 'UTC'): string {
  const duration = runDuration(run, now);
  const length = duration === null ? 'not started' : formatDuration(duration);
  return `#${run.id} ${run.status} ${length}, ${formatShortDate(runTime(run), timeZone)}`;
}

/**
 * One bar per run, oldest left. x is the run's execution date (else its start) across the
 * runs' range — runs all at one instant are spread evenly instead; height is its duration
 * over the longest one's (a running run's lasts until `now`); every bar fits in
 * width × height and is at least MIN_BAR_SIZE wide and high.
 */
export function timelineBars(runs: IPipelineRun[], opts: ITimelineOptions): ITimelineBar[] {
  const width = Math.max(0, opts.width);
  const height = Math.max(0, opts.height);
  const dated = runs
    .map(run => ({ run, t: runTime(run) }))
    // An undated run (never seen in practice) goes last rather than breaking the scale.
    .map(item => ({ ...item, t: isFinite(item.t) ? item.t : Infinity }))
    .sort((a, b) => a.t - b.t || a.run.id - b.run.id);
  const n = dated.length;
  if (n === 0 || width === 0 || height === 0) {
    return [];
  }
  const barWidth = Math.min(
    width,
    Math.max(MIN_BAR_SIZE, Math.min(MAX_BAR_WIDTH, (width / n) * 0.7))
  );
  const span = width - barWidth;
  const finite = dated.filter(item => isFinite(item.t)).map(item => item.t);
  const t0 = finite.length ? Math.min(...finite) : 0;
  const t1 = finite.length ? Math.max(...finite) : 0;
  const durations = dated.map(item => runDuration(item.run, opts.now));
  const longest = Math.max(0, ...durations.map(d => d ?? 0));
  const minHeight = Math.min(MIN_BAR_SIZE, height);
  return dated.map((item, i) => {
    let position: number;
    if (!isFinite(item.t)) {
      position = 1;
    } else if (t1 > t0) {
      position = (item.t - t0) / (t1 - t0);
    } else {
      // One instant for all: by order, a lone run in the middle.
      position = n === 1 ? 0.5 : i / (n - 1);
    }
    const duration = durations[i];
    const h =
      longest > 0 && duration ? Math.max(minHeight, (duration / longest) * height) : minHeight;
    return {
      runId: item.run.id,
      x: position * span,
      y: height - h,
      width: barWidth,
      height: h,
      status: item.run.status,
      label: barLabel(item.run, opts.now, opts.timeZone),
      duration
    };
  });
}

/** `12 runs: 10 completed, 2 failed` (statuses with no run left out). */
export function timelineSummary(runs: IPipelineRun[]): string {
  if (!runs.length) {
    return 'No runs to chart';
  }
  const counts = new Map<string, number>();
  for (const run of runs) {
    counts.set(run.status, (counts.get(run.status) ?? 0) + 1);
  }
  const order: string[] = [...SUMMARY_ORDER];
  // A status this list does not know yet still counts.
  for (const status of counts.keys()) {
    if (!order.includes(status)) {
      order.push(status);
    }
  }
  const parts = order
    .filter(status => counts.get(status))
    .map(status => `${counts.get(status)} ${status}`);
  return `${runs.length} run${runs.length === 1 ? '' : 's'}: ${parts.join(', ')}`;
}

function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | number>
): SVGElementTagNameMap[K] {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    node.setAttribute(key, String(value));
  }
  return node;
}

/** Round to 0.01 px: shorter attributes, and tests of the SVG read clean numbers. */
function px(n: number): string {
  return String(Math.round(n * 100) / 100);
}

/**
 * The chart as an `<svg class="jp-MageNbSched-timeline" role="img">`: a `<rect>` per run
 * (`data-bar-run-id`, class `jp-MageNbSched-bar jp-MageNbSched-bar-<status>`, a `<title>` tooltip),
 * labelled with `timelineSummary`; without runs, the text "No runs to chart".
 */
export function renderTimeline(runs: IPipelineRun[], opts: ITimelineOptions): SVGSVGElement {
  const root = svg('svg', {
    class: 'jp-MageNbSched-timeline',
    role: 'img',
    width: opts.width,
    height: opts.height,
    viewBox: `0 0 ${opts.width} ${opts.height}`,
    'aria-label': timelineSummary(runs)
  });
  if (!runs.length) {
    root.classList.add('jp-MageNbSched-timeline-empty');
    const text = svg('text', {
      class: 'jp-MageNbSched-timeline-empty-text',
      x: px(opts.width / 2),
      y: px(opts.height / 2),
      'text-anchor': 'middle',
      'dominant-baseline': 'middle'
    });
    text.textContent = 'No runs to chart';
    root.append(text);
    return root;
  }
  root.append(
    svg('line', {
      class: 'jp-MageNbSched-timeline-axis',
      x1: 0,
      y1: px(opts.height - 0.5),
      x2: opts.width,
      y2: px(opts.height - 0.5)
    })
  );
  for (const bar of timelineBars(runs, opts)) {
    const rect = svg('rect', {
      class: `jp-MageNbSched-bar jp-MageNbSched-bar-${bar.status}`,
      'data-bar-run-id': bar.runId,
      x: px(bar.x),
      y: px(bar.y),
      width: px(bar.width),
      height: px(bar.height)
    });
    const title = svg('title', {});
    title.textContent = bar.label;
    rect.append(title);
    root.append(rect);
  }
  return root;
}
