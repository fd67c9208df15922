import { describe, expect, it } from 'vitest';
import { MIN_BAR_SIZE, barLabel, runTime, timelineBars, timelineSummary } from '../src/timeline';
import type { IPipelineRun } from '../src/types';
import { run } from './fake';

const NOW = new Date('2026-01-10T12:00:00Z');
const OPTS = { width: 300, height: 60, now: NOW };

/** A run on `day` of January 2026 at 10:00 UTC that took `seconds` (null: not started). */
function runOn(
  id: number,
  day: number,
  seconds: number | null,
  status = 'completed'
): IPipelineRun {
  const date = new Date(Date.UTC(2026, 0, day, 10, 0, 0));
  const started = seconds === null ? null : new Date(date.getTime() + 1000);
  return run({
    id,
    status,
    execution_date: date.toISOString(),
    started_at: started ? started.toISOString() : null,
    completed_at:
      started && status !== 'running' && seconds !== null
        ? new Date(started.getTime() + seconds * 1000).toISOString()
        : null
  });
}

function inside(
  bar: { x: number; y: number; width: number; height: number },
  w: number,
  h: number
): boolean {
  const eps = 1e-9;
  return (
    bar.x >= -eps && bar.y >= -eps && bar.x + bar.width <= w + eps && bar.y + bar.height <= h + eps
  );
}

describe('timelineBars', () => {
  it('orders bars by execution date, left to right, whatever the list order', () => {
    // Newest first, as the API lists them.
    const runs = [runOn(3, 5, 10), runOn(1, 1, 10), runOn(2, 2, 10)];
    const bars = timelineBars(runs, OPTS);
    expect(bars.map(b => b.runId)).toEqual([1, 2, 3]);
    expect(bars[0].x).toBeLessThan(bars[1].x);
    expect(bars[1].x).toBeLessThan(bars[2].x);
    // Placed by time: day 2 is a quarter of the way from day 1 to day 5.
    const span = bars[2].x - bars[0].x;
    expect((bars[1].x - bars[0].x) / span).toBeCloseTo(1 / 4);
    // The range spans the width: first at the left edge, last at the right.
    expect(bars[0].x).toBe(0);
    expect(bars[2].x + bars[2].width).toBeCloseTo(OPTS.width);
  });

  it('falls back to started_at when a run has no execution date', () => {
    const a = run({ id: 1, execution_date: null, started_at: '2026-01-03T00:00:00Z' });
    const b = run({ id: 2, execution_date: '2026-01-02T00:00:00Z' });
    expect(runTime(a)).toBe(Date.parse('2026-01-03T00:00:00Z'));
    expect(timelineBars([a, b], OPTS).map(bar => bar.runId)).toEqual([2, 1]);
  });

  it('makes the longest run the tallest, on one scale', () => {
    const runs = [runOn(1, 1, 10), runOn(2, 2, 40), runOn(3, 3, 20)];
    const bars = timelineBars(runs, OPTS);
    const byId = new Map(bars.map(b => [b.runId, b]));
    expect(byId.get(2)?.height).toBe(OPTS.height);
    expect(byId.get(2)?.height).toBeGreaterThan(byId.get(3)?.height ?? Infinity);
    expect(byId.get(3)?.height).toBeGreaterThan(byId.get(1)?.height ?? Infinity);
    expect((byId.get(3)?.height ?? 0) / (byId.get(2)?.height ?? 1)).toBeCloseTo(0.5);
    // Bars stand on the bottom edge.
    for (const bar of bars) {
      expect(bar.y + bar.height).toBeCloseTo(OPTS.height);
    }
  });

  it('keeps every bar inside the chart, however many and however long', () => {
    const runs = Array.from({ length: 500 }, (_, i) => runOn(i + 1, 1 + (i % 28), (i * 37) % 900));
    for (const size of [
      { width: 300, height: 60 },
      { width: 40, height: 10 },
      { width: 3, height: 1 }
    ]) {
      const bars = timelineBars(runs, { ...size, now: NOW });
      expect(bars.length).toBe(runs.length);
      for (const bar of bars) {
        expect(inside(bar, size.width, size.height), JSON.stringify({ bar, size })).toBe(true);
      }
    }
  });

  it('gives a 0 s run and a run not started a visible minimum size', () => {
    const bars = timelineBars(
      [runOn(1, 1, 0), runOn(2, 2, null, 'initial'), runOn(3, 3, 60)],
      OPTS
    );
    for (const bar of bars.slice(0, 2)) {
      expect(bar.height).toBe(MIN_BAR_SIZE);
      expect(bar.width).toBeGreaterThanOrEqual(MIN_BAR_SIZE);
    }
    expect(bars[1].duration).toBeNull();
  });

  it('measures a running run until now', () => {
    // Started 10:00:01 on January 10, still running at 12:00:00: 7199 s, the longest.
    const running = runOn(9, 10, 0, 'running');
    const done = runOn(8, 9, 3600);
    const bars = timelineBars([running, done], OPTS);
    const live = bars.find(b => b.runId === 9);
    expect(live?.duration).toBe(7199);
    expect(live?.height).toBe(OPTS.height);
    expect(bars.find(b => b.runId === 8)?.height).toBeCloseTo((OPTS.height * 3600) / 7199);
    // Later, it is longer.
    const later = timelineBars([running], { ...OPTS, now: new Date(NOW.getTime() + 1000) });
    expect(later[0].duration).toBe(7200);
  });

  it('spreads runs at one instant instead of stacking them, and centres a lone one', () => {
    const same = [1, 2, 3].map(id => run({ id, execution_date: '2026-01-01T00:00:00Z' }));
    const xs = timelineBars(same, OPTS).map(b => b.x);
    expect(new Set(xs).size).toBe(3);
    const [lone] = timelineBars([runOn(1, 1, 5)], OPTS);
    expect(lone.x + lone.width / 2).toBeCloseTo(OPTS.width / 2);
  });

  it('charts nothing for no runs', () => {
    expect(timelineBars([], OPTS)).toEqual([]);
  });
});

describe('labels', () => {
  it('tells the run, its status, its duration and its date', () => {
    const r = runOn(12, 2, 3.2);
    expect(barLabel(r, NOW)).toBe('#12 completed 3.2 s, 2026-01-02 10:00');
    expect(barLabel(r, NOW, 'Europe/Paris')).toBe('#12 completed 3.2 s, 2026-01-02 11:00');
    expect(barLabel(runOn(13, 3, null, 'initial'), NOW)).toBe(
      '#13 initial not started, 2026-01-03 10:00'
    );
    expect(timelineBars([r], OPTS)[0].label).toBe(barLabel(r, NOW));
  });

  it('dates the tooltips in the zone given (the schedule’s), UTC without one', () => {
    const r = runOn(12, 2, 3.2);
    const [berlin] = timelineBars([r], { ...OPTS, timeZone: 'Europe/Berlin' });
    expect(berlin.label).toBe('#12 completed 3.2 s, 2026-01-02 11:00');
    const [ny] = timelineBars([r], { ...OPTS, timeZone: 'America/New_York' });
    expect(ny.label).toBe('#12 completed 3.2 s, 2026-01-02 05:00');
    expect(timelineBars([r], OPTS)[0].label).toBe('#12 completed 3.2 s, 2026-01-02 10:00');
  });

  it('summarises the runs by status', () => {
    const runs = [
      ...Array.from({ length: 10 }, (_, i) => runOn(i + 1, i + 1, 1)),
      runOn(11, 11, 1, 'failed'),
      runOn(12, 12, 1, 'failed')
    ];
    expect(timelineSummary(runs)).toBe('12 runs: 10 completed, 2 failed');
    expect(timelineSummary([runOn(1, 1, null, 'running')])).toBe('1 run: 1 running');
    expect(timelineSummary([])).toBe('No runs to chart');
  });
});
