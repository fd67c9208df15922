// @vitest-environment happy-dom
/**
 * The panel's forms and chart in a DOM (happy-dom): the schedule form puts the server's error
 * under the input it names, the backfill view follows a backfill to its end, and the timeline
 * draws one labelled bar per run.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ApiClient } from '../src/api';
import type { IBackfill } from '../src/backfill';
import { BackfillView } from '../src/backfillView';
import type { ISaveResult } from '../src/scheduleForm';
import { ScheduleFormView } from '../src/scheduleFormView';
import { renderTimeline } from '../src/timeline';
import {
  BASE,
  FakeServer,
  apiError,
  backfill as backfillRecord,
  backfillProgress as progress,
  run,
  schedule
} from './fake';

afterEach(() => {
  vi.useRealTimers();
  document.body.replaceChildren();
});

function q<T extends Element = HTMLElement>(selector: string, root: ParentNode = document): T {
  const node = root.querySelector<T>(selector);
  if (!node) {
    throw new Error(`nothing matches ${selector}`);
  }
  return node;
}

/** Set a control as a person would: the value, then the events the form listens to. */
function choose(control: HTMLInputElement | HTMLSelectElement, value: string): void {
  control.value = value;
  control.dispatchEvent(new Event('input', { bubbles: true }));
  control.dispatchEvent(new Event('change', { bubbles: true }));
}

/** Let the fake server's answers (promises) go through, without moving a faked clock. */
async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) {
    await new Promise(resolve => setImmediate(resolve));
  }
}

function submit(form: HTMLFormElement): void {
  form.dispatchEvent(new Event('submit', { bubbles: true, cancelable: true }));
}

describe('ScheduleFormView', () => {
  function open(server: FakeServer) {
    const saved: ISaveResult[] = [];
    let cancelled = 0;
    const view = new ScheduleFormView({
      api: new ApiClient(BASE, server.request),
      mode: 'create',
      pipelineUuid: 'etl/daily',
      timezone: 'UTC',
      onSaved: result => void saved.push(result),
      onCancel: () => void cancelled++
    });
    document.body.append(view.node);
    return { view, saved, cancelled: () => cancelled, form: view.node as HTMLFormElement };
  }

  it('puts a schedule_interval error under the cron input when the interval is custom', async () => {
    const server = new FakeServer();
    server.on('POST', 'pipeline_schedules', () =>
      apiError(400, 'validation_error', 'minute 61 is out of range', 'schedule_interval', null)
    );
    const { form, saved, cancelled } = open(server);
    const cronRow = q('[data-field-row="cron"]', form);
    expect(cronRow.hidden).toBe(true);
    choose(q<HTMLSelectElement>('select[name="schedule_interval"]', form), 'custom');
    expect(cronRow.hidden).toBe(false);
    const cron = q<HTMLInputElement>('input[name="cron"]', form);
    choose(cron, '61 * * * *');

    submit(form);
    await vi.waitFor(() => q('.jp-MageNbSched-field-error', cronRow));
    expect(server.calls).toHaveLength(1);
    expect((server.calls[0].body as any).pipeline_schedule.schedule_interval).toBe('61 * * * *');
    const error = q('.jp-MageNbSched-field-error', cronRow);
    expect(error.getAttribute('role')).toBe('alert');
    expect(error.textContent).toContain('minute 61 is out of range');
    expect(cron.getAttribute('aria-invalid')).toBe('true');
    expect((cron.getAttribute('aria-describedby') ?? '').split(' ')).toContain(error.id);
    // Only there: not on top of the form, not under the (hidden-to-the-server) preset select.
    expect(q('.jp-MageNbSched-form-error', form).hidden).toBe(true);
    expect(form.querySelectorAll('.jp-MageNbSched-field-error')).toHaveLength(1);
    // The form stays, with the focus on the input at fault.
    expect(form.isConnected).toBe(true);
    expect(saved).toHaveLength(0);
    expect(cancelled()).toBe(0);
    expect(document.activeElement).toBe(cron);
    expect(q<HTMLButtonElement>('button[type="submit"]', form).disabled).toBe(false);
  });

  it('calls onSaved with the schedule and the token the server answered', async () => {
    const server = new FakeServer();
    const token = 'tok-' + Math.random().toString(36).slice(2);
    server.on('POST', 'pipeline_schedules', req => ({
      pipeline_schedule: schedule({
        id: 41,
        name: (req.body as any).pipeline_schedule.name,
        schedule_type: 'api',
        token
      })
    }));
    const { form, saved } = open(server);
    choose(q<HTMLInputElement>('input[name="name"]', form), 'Webhook');
    choose(q<HTMLSelectElement>('select[name="schedule_type"]', form), 'api');
    // The token input shows for an api schedule only.
    expect(q('[data-field-row="token"]', form).hidden).toBe(false);

    submit(form);
    await vi.waitFor(() => expect(saved).toHaveLength(1));
    expect(saved[0].token).toBe(token);
    expect(saved[0].schedule.id).toBe(41);
    expect(saved[0].schedule.name).toBe('Webhook');
    expect((server.calls[0].body as any).pipeline_schedule.schedule_type).toBe('api');
  });
});

/** The backfill these views make: id 11, the last three days before the test's "now". */
function backfill(overrides: Partial<IBackfill> = {}): IBackfill {
  return backfillRecord({
    id: 11,
    start_datetime: '2026-11-28T00:00:00+00:00',
    end_datetime: '2026-11-30T00:00:00+00:00',
    ...overrides
  });
}

describe('BackfillView', () => {
  it('creates the backfill started, and follows its progress until it ends', async () => {
    // Only the timers: the fake server's answers are promises, which must still resolve.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const server = new FakeServer();
    server.on('POST', 'backfills', () => ({
      backfill: backfill({ status: 'running', progress: progress({ initial: 3 }) })
    }));
    const readings = [
      backfill({ status: 'running', progress: progress({ completed: 1, running: 1, initial: 1 }) }),
      backfill({ status: 'completed', progress: progress({ completed: 3 }) })
    ];
    server.on('GET', 'backfills/11', () => ({ backfill: readings.shift() ?? readings[0] }));
    const finished: IBackfill[] = [];
    const view = new BackfillView({
      api: new ApiClient(BASE, server.request),
      schedule: schedule({ id: 3, name: 'Nightly' }),
      now: () => new Date('2026-12-01T12:00:00Z'),
      onClose: () => undefined,
      onFinished: b => void finished.push(b)
    });
    document.body.append(view.node);
    const runArea = q('.jp-MageNbSched-backfill-run', view.node);
    const bar = q<HTMLProgressElement>('progress', view.node);
    const status = q('[data-backfill-status]', view.node);
    expect(runArea.hidden).toBe(true);

    submit(q<HTMLFormElement>('form[data-form="backfill"]', view.node));
    // (Not vi.waitFor: with fake timers it moves the clock as it polls.)
    await settle();
    expect(runArea.hidden).toBe(false);
    expect(server.calls.map(c => `${c.method} ${c.path}`)).toEqual(['POST backfills']);
    const created = (server.calls[0].body as any).backfill;
    expect(created.pipeline_schedule_id).toBe(3);
    expect(created.status).toBe('running');
    expect(q('form', view.node).hidden).toBe(true);
    expect(runArea.dataset.backfillId).toBe('11');
    expect(status.dataset.backfillStatus).toBe('running');
    expect(bar.max).toBe(3);
    expect(bar.value).toBe(0);

    // The watcher's first read is a second later.
    await vi.advanceTimersByTimeAsync(999);
    expect(server.calls).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    await settle();
    // In ended runs: 1 completed (the running one is not ended yet).
    expect(bar.value).toBe(1);
    expect(server.calls[1].path).toBe('backfills/11');
    expect(status.dataset.backfillStatus).toBe('running');
    expect(status.textContent).toContain('1 of 3');
    expect(bar.getAttribute('aria-valuetext')).toBe(status.textContent);
    expect(finished).toHaveLength(0);

    await vi.advanceTimersByTimeAsync(20000);
    await settle();
    expect(status.dataset.backfillStatus).toBe('completed');
    expect(bar.value).toBe(3);
    expect(status.textContent).toContain('3 of 3');
    expect(finished.map(b => b.status)).toEqual(['completed']);
    // Ended: no more reads, and nothing left to cancel.
    const reads = server.calls.length;
    await vi.advanceTimersByTimeAsync(60000);
    expect(server.calls).toHaveLength(reads);
    const cancel = Array.from(view.node.querySelectorAll('button')).find(
      b => b.textContent === 'Cancel backfill'
    );
    expect(cancel?.hidden).toBe(true);
    view.dispose();
  });

  it('shows a server field error under its input and sends no start', async () => {
    const server = new FakeServer();
    server.on('POST', 'backfills', () =>
      apiError(400, 'validation_error', 'end is before start', 'backfill.end_datetime', null)
    );
    const view = new BackfillView({
      api: new ApiClient(BASE, server.request),
      schedule: schedule({ id: 3, name: 'Nightly' }),
      now: () => new Date('2026-12-01T12:00:00Z'),
      onClose: () => undefined
    });
    document.body.append(view.node);
    submit(q<HTMLFormElement>('form[data-form="backfill"]', view.node));
    const endRow = q('[data-input="end"]', view.node);
    await vi.waitFor(() => q('.jp-MageNbSched-field-error', endRow));
    expect(q('.jp-MageNbSched-field-error', endRow).textContent).toContain('end is before start');
    expect(q('input[name="end"]', view.node).getAttribute('aria-invalid')).toBe('true');
    expect(server.calls.map(c => c.method)).toEqual(['POST']);
    expect(q('.jp-MageNbSched-backfill-run', view.node).hidden).toBe(true);
    view.dispose();
  });
});

describe('renderTimeline', () => {
  const now = new Date('2026-12-05T12:00:00Z');
  const runs = [
    run({
      id: 1,
      status: 'completed',
      execution_date: '2026-12-01T08:00:00Z',
      started_at: '2026-12-01T08:00:01Z',
      completed_at: '2026-12-01T08:00:31Z'
    }),
    run({
      id: 2,
      status: 'failed',
      execution_date: '2026-12-02T08:00:00Z',
      started_at: '2026-12-02T08:00:01Z',
      completed_at: '2026-12-02T08:00:06Z'
    }),
    run({
      id: 3,
      status: 'running',
      execution_date: '2026-12-05T11:59:00Z',
      started_at: '2026-12-05T11:59:50Z',
      completed_at: null
    })
  ];

  it('draws one titled rect per run, classed by status, in a labelled img', () => {
    const svg = renderTimeline(runs, { width: 260, height: 48, now });
    document.body.append(svg);
    expect(svg.namespaceURI).toBe('http://www.w3.org/2000/svg');
    expect(svg.getAttribute('role')).toBe('img');
    const label = svg.getAttribute('aria-label') ?? '';
    expect(label).toMatch(/^3 runs: /);
    for (const part of ['1 completed', '1 failed', '1 running']) {
      expect(label).toContain(part);
    }
    const rects = Array.from(svg.querySelectorAll('rect'));
    expect(rects).toHaveLength(runs.length);
    expect(rects.map(r => r.getAttribute('data-bar-run-id')).sort()).toEqual(['1', '2', '3']);
    for (const r of runs) {
      const rect = q(`rect[data-bar-run-id="${r.id}"]`, svg);
      expect(rect.classList.contains('jp-MageNbSched-bar')).toBe(true);
      expect(rect.classList.contains(`jp-MageNbSched-bar-${r.status}`)).toBe(true);
      const title = rect.querySelector('title');
      expect(title?.textContent?.startsWith(`#${r.id} ${r.status} `)).toBe(true);
      // Inside the chart.
      const x = Number(rect.getAttribute('x'));
      const w = Number(rect.getAttribute('width'));
      const y = Number(rect.getAttribute('y'));
      const h = Number(rect.getAttribute('height'));
      expect(x).toBeGreaterThanOrEqual(0);
      expect(x + w).toBeLessThanOrEqual(260.01);
      expect(y).toBeGreaterThanOrEqual(0);
      expect(y + h).toBeLessThanOrEqual(48.01);
    }
    // The 30 s run is the tallest; oldest left.
    const height = (id: number) =>
      Number(q(`rect[data-bar-run-id="${id}"]`, svg).getAttribute('height'));
    const x = (id: number) => Number(q(`rect[data-bar-run-id="${id}"]`, svg).getAttribute('x'));
    expect(height(1)).toBeGreaterThan(height(2));
    expect(x(1)).toBeLessThan(x(2));
    expect(x(2)).toBeLessThan(x(3));
    expect(q('rect[data-bar-run-id="1"] title', svg).textContent).toContain('30.0 s');
  });

  it('dates tooltips in the zone it is given', () => {
    const svg = renderTimeline([runs[0]], { width: 100, height: 20, now, timeZone: 'Asia/Tokyo' });
    // 08:00 UTC is 17:00 in Tokyo.
    expect(q('title', svg).textContent).toContain('17:00');
    expect(q('title', svg).textContent).not.toContain('08:00');
  });

  it('says so when there is no run', () => {
    const svg = renderTimeline([], { width: 100, height: 20, now });
    expect(svg.querySelectorAll('rect')).toHaveLength(0);
    expect(svg.getAttribute('aria-label')).toBe(svg.textContent);
    expect(svg.textContent).toMatch(/no runs/i);
  });
});
