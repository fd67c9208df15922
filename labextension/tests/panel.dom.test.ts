// @vitest-environment happy-dom
/**
 * The sidebar widget in a DOM (happy-dom): what it draws, what its controls send, and what a
 * re-render keeps (nodes, focus). The panel is put in the document but not attached as a
 * Lumino widget, so its poller never starts: every refresh here is one the test (or an action's
 * `refreshSoon`) asks for.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ApiClient } from '../src/api';
import { PanelModel } from '../src/model';
import { SchedulesPanel } from '../src/panel';
import { BASE, FakeServer, blockRun, json, list, run, schedule, schedulerStatus } from './fake';

interface IHostLog {
  infos: string[];
  errors: string[];
  copied: string[];
  confirms: { title: string; body: string; action: string }[];
}

interface ISetup extends IHostLog {
  server: FakeServer;
  panel: SchedulesPanel;
  /** What `GET pipeline_schedules` answers (change it between refreshes). */
  schedules: any[];
  /** What the next confirm answers. */
  answer: { confirm: boolean };
}

let current: SchedulesPanel | null = null;

afterEach(() => {
  current?.dispose();
  current = null;
  document.body.replaceChildren();
});

/** A panel over a fake server listing `schedules`, showing all notebooks, put in the page. */
function setup(schedules: any[]): ISetup {
  const server = new FakeServer();
  const state: ISetup = {
    server,
    schedules,
    panel: null as unknown as SchedulesPanel,
    answer: { confirm: true },
    infos: [],
    errors: [],
    copied: [],
    confirms: []
  };
  server.on('GET', 'pipeline_schedules', () => list('pipeline_schedules', state.schedules));
  // A clock that moves 5 s per reading, so each refresh has its own "Updated" time.
  let tick = 0;
  const now = () => new Date(Date.UTC(2026, 11, 1, 12, 0, 5 * tick++));
  const model = new PanelModel(new ApiClient(BASE, server.request), now);
  model.setFilter('all');
  const panel = new SchedulesPanel(model, {
    notifier: {
      info: m => void state.infos.push(m),
      error: m => void state.errors.push(m)
    },
    copyText: async text => {
      state.copied.push(text);
      return true;
    },
    confirm: async (title, body, action) => {
      state.confirms.push({ title, body, action });
      return state.answer.confirm;
    }
  });
  document.body.append(panel.node);
  current = panel;
  state.panel = panel;
  return state;
}

function q<T extends Element = HTMLElement>(selector: string, root: ParentNode = document): T {
  const node = root.querySelector<T>(selector);
  if (!node) {
    throw new Error(`nothing matches ${selector}`);
  }
  return node;
}

function row(id: number): HTMLElement {
  return q(`li[data-schedule-id="${id}"]`);
}

function control(id: number, action: string): HTMLElement {
  return q(`[data-action="${action}"]`, row(id));
}

function calls(server: FakeServer, method: string, path?: string) {
  return server.calls.filter(c => c.method === method && (path === undefined || c.path === path));
}

function type(input: HTMLInputElement, text: string): void {
  input.focus();
  input.value = text;
  input.dispatchEvent(new Event('input', { bubbles: true }));
}

function key(target: Element, name: string): void {
  target.dispatchEvent(
    new KeyboardEvent('keydown', { key: name, bubbles: true, cancelable: true })
  );
}

/** Resolvable from outside: an answer the test holds back. */
function deferred<T>(): { promise: Promise<T>; resolve(value: T): void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>(r => (resolve = r));
  return { promise, resolve };
}

describe('SchedulesPanel rows', () => {
  it('marks rows with id and status, and the toggle is a named switch that PUTs the status', async () => {
    const s = schedule({ id: 1, name: 'Nightly', status: 'active' });
    const t = setup([s]);
    t.server.on('PUT', 'pipeline_schedules/1', req => {
      const status = (req.body as any).pipeline_schedule.status;
      t.schedules = [{ ...s, status }];
      return { pipeline_schedule: { ...s, status } };
    });
    await t.panel.model.refresh();

    expect(row(1).dataset.status).toBe('active');
    const toggle = control(1, 'toggle');
    expect(toggle.getAttribute('role')).toBe('switch');
    expect(toggle.getAttribute('aria-checked')).toBe('true');
    expect(toggle.getAttribute('aria-label')).toBe('Nightly active');

    toggle.click();
    await vi.waitFor(() => expect(row(1).dataset.status).toBe('inactive'));
    expect(calls(t.server, 'PUT').map(c => c.body)).toEqual([
      { pipeline_schedule: { status: 'inactive' } }
    ]);
    const after = control(1, 'toggle');
    expect(after.getAttribute('aria-checked')).toBe('false');
    // The name stays the same whatever the state, so a screen reader (and a test) finds it.
    expect(after.getAttribute('aria-label')).toBe('Nightly active');
  });

  it('keeps the DOM when a refresh answers the same, and redraws when a schedule changed', async () => {
    const t = setup([schedule({ id: 1, name: 'Nightly' }), schedule({ id: 2, name: 'Hourly' })]);
    await t.panel.model.refresh();
    const first = row(1);
    const updated = q('.jp-MageNbSched-updated');
    const updatedText = updated.textContent;
    expect(updatedText).toMatch(/^Updated /);

    await t.panel.model.refresh();
    expect(row(1)).toBe(first);
    expect(document.contains(first)).toBe(true);
    // Only the refresh time moved.
    expect(q('.jp-MageNbSched-updated')).toBe(updated);
    expect(updated.textContent).toMatch(/^Updated /);
    expect(updated.textContent).not.toBe(updatedText);

    t.schedules = [
      schedule({ id: 1, name: 'Nightly (renamed)' }),
      schedule({ id: 2, name: 'Hourly' })
    ];
    await t.panel.model.refresh();
    expect(document.contains(first)).toBe(false);
    expect(q('.jp-MageNbSched-name', row(1)).textContent).toBe('Nightly (renamed)');
  });

  it('keeps the focus on the same control across a re-render', async () => {
    const t = setup([schedule({ id: 1, name: 'Nightly' }), schedule({ id: 2, name: 'Hourly' })]);
    await t.panel.model.refresh();
    const disclose = control(2, 'select');
    disclose.focus();
    expect(document.activeElement).toBe(disclose);

    t.schedules = [
      schedule({ id: 1, name: 'Nightly', last_pipeline_run_status: 'failed' }),
      schedule({ id: 2, name: 'Hourly', pipeline_runs_count: 3 })
    ];
    await t.panel.model.refresh();
    expect(document.contains(disclose)).toBe(false);
    const now = document.activeElement as HTMLElement;
    expect(now).not.toBe(disclose);
    expect(now).toBe(control(2, 'select'));
    expect(now.dataset.focusKey).toBe(disclose.dataset.focusKey);
  });
});

describe('SchedulesPanel run-now variables', () => {
  it('refuses invalid JSON on Enter (no request, error shown) and sends valid JSON', async () => {
    const t = setup([schedule({ id: 1, name: 'Nightly' })]);
    t.server.on('POST', 'pipeline_runs', () => ({
      pipeline_run: run({ id: 50, pipeline_schedule_id: 1, status: 'initial' })
    }));
    t.server.on('GET', 'pipeline_schedules/1/pipeline_runs', () =>
      list('pipeline_runs', [run({ id: 50, pipeline_schedule_id: 1, status: 'initial' })])
    );
    t.server.on('GET', 'pipeline_runs/50/block_runs', () => list('block_runs', []));
    await t.panel.model.refresh();

    const field = () => q<HTMLInputElement>('input[data-focus-key="vars-1"]');
    type(field(), '{oops');
    key(field(), 'Enter');
    await Promise.resolve();
    expect(calls(t.server, 'POST')).toHaveLength(0);
    expect(field().getAttribute('aria-invalid')).toBe('true');
    const alertId = field().getAttribute('aria-describedby') ?? '';
    const alert = document.getElementById(alertId);
    expect(alert?.getAttribute('role')).toBe('alert');
    expect(alert?.textContent).toMatch(/JSON object/);
    // What was typed, and the focus, are still there after the redraw that showed the error.
    expect(field().value).toBe('{oops');
    expect(document.activeElement).toBe(field());

    type(field(), '{"date": "2024-01-15", "n": 2}');
    // Typing clears the error at once.
    expect(field().hasAttribute('aria-invalid')).toBe(false);
    expect(document.getElementById(alertId)).toBeNull();
    key(field(), 'Enter');
    await vi.waitFor(() => expect(calls(t.server, 'POST', 'pipeline_runs')).toHaveLength(1));
    expect(calls(t.server, 'POST')[0].body).toEqual({
      pipeline_run: { pipeline_schedule_id: 1, variables: { date: '2024-01-15', n: 2 } }
    });
    await vi.waitFor(() => expect(t.infos.some(m => m.includes('Run 50'))).toBe(true));
  });

  it('shows busy buttons as aria-disabled (still focusable) and ignores their clicks', async () => {
    const s = schedule({ id: 1, name: 'Nightly', status: 'active' });
    const t = setup([s]);
    const held = deferred<unknown>();
    t.server.on('PUT', 'pipeline_schedules/1', () => held.promise);
    t.server.on('POST', 'pipeline_runs', () => ({ pipeline_run: run({ id: 51 }) }));
    await t.panel.model.refresh();

    control(1, 'toggle').click();
    await vi.waitFor(() => expect(control(1, 'toggle').getAttribute('aria-disabled')).toBe('true'));
    for (const action of ['toggle', 'run-now']) {
      const b = control(1, action) as HTMLButtonElement;
      expect(b.getAttribute('aria-disabled'), action).toBe('true');
      expect(b.disabled, action).toBe(false);
      expect(b.hasAttribute('disabled'), action).toBe(false);
      b.click();
    }
    await new Promise(r => setTimeout(r, 10));
    expect(calls(t.server, 'PUT')).toHaveLength(1);
    expect(calls(t.server, 'POST')).toHaveLength(0);

    held.resolve({ pipeline_schedule: { ...s, status: 'inactive' } });
    await vi.waitFor(() => expect(control(1, 'toggle').hasAttribute('aria-disabled')).toBe(false));
  });
});

describe('SchedulesPanel selection', () => {
  it('shows the actions and runs of the selected schedule, a run’s blocks and a failed run’s error', async () => {
    const t = setup([
      schedule({ id: 1, name: 'Nightly', schedule_type: 'time' }),
      schedule({ id: 2, name: 'Hook', schedule_type: 'api', schedule_interval: null })
    ]);
    const runs = [
      run({
        id: 12,
        pipeline_schedule_id: 1,
        status: 'failed',
        metrics: { error: 'Traceback: boom' }
      }),
      run({ id: 11, pipeline_schedule_id: 1, status: 'completed' })
    ];
    t.server.on('GET', 'pipeline_schedules/1/pipeline_runs', () => ({ pipeline_runs: runs }));
    t.server.on('GET', 'pipeline_schedules/2/pipeline_runs', () => ({ pipeline_runs: [] }));
    t.server.on('GET', 'pipeline_runs/11/block_runs', () =>
      list('block_runs', [
        blockRun({ id: 101, pipeline_run_id: 11, block_uuid: 'load' }),
        blockRun({ id: 102, pipeline_run_id: 11, block_uuid: 'train', status: 'failed' })
      ])
    );
    t.server.on('GET', 'pipeline_runs/12/block_runs', () => list('block_runs', []));
    await t.panel.model.refresh();
    expect(document.querySelector('[data-action="edit"]')).toBeNull();

    const disclose = control(1, 'select');
    expect(disclose.getAttribute('aria-expanded')).toBe('false');
    disclose.click();
    await vi.waitFor(() => q('li[data-run-id="11"]'));
    expect(control(1, 'select').getAttribute('aria-expanded')).toBe('true');
    expect(row(1).querySelector('[data-action="edit"]')).not.toBeNull();
    expect(row(1).querySelector('[data-action="backfill"]')).not.toBeNull();
    expect(row(1).querySelector('[data-action="copy-url"]')).toBeNull();
    expect(row(1).querySelector('[data-action="new-token"]')).toBeNull();
    for (const r of runs) {
      const item = q(`li[data-run-id="${r.id}"]`);
      expect(item.dataset.status).toBe(r.status);
      expect(q('.jp-MageNbSched-status', item).textContent).toBe(r.status);
    }
    // Each run is a bar of the timeline too.
    expect(document.querySelectorAll('svg rect[data-bar-run-id]')).toHaveLength(runs.length);

    q('li[data-run-id="11"]').click();
    await vi.waitFor(() => q('li[data-block-run-id="101"]'));
    const blocks = Array.from(document.querySelectorAll<HTMLElement>('li[data-block-run-id]'));
    expect(blocks.map(b => q('.jp-MageNbSched-blockname', b).textContent)).toEqual([
      'load',
      'train'
    ]);
    expect(blocks.map(b => b.dataset.status)).toEqual(['completed', 'failed']);
    expect(document.querySelector('.jp-MageNbSched-traceback')).toBeNull();

    // The keyboard opens a run as the mouse does.
    key(q('li[data-run-id="12"]'), 'Enter');
    await vi.waitFor(() =>
      expect(q('.jp-MageNbSched-traceback').textContent).toBe('Traceback: boom')
    );
    expect(document.querySelector('li[data-block-run-id]')).toBeNull();

    control(2, 'select').click();
    await vi.waitFor(() => q('[data-action="copy-url"]', row(2)));
    expect(row(2).querySelector('[data-action="new-token"]')).not.toBeNull();
    expect(row(2).querySelector('[data-action="backfill"]')).toBeNull();
    expect(row(1).querySelector('[data-action="edit"]')).toBeNull();
  });

  it('asks before deleting, naming the run count, and deletes nothing when the answer is no', async () => {
    const t = setup([schedule({ id: 1, name: 'Nightly', pipeline_runs_count: 7 })]);
    t.server.on('GET', 'pipeline_schedules/1/pipeline_runs', () => ({ pipeline_runs: [] }));
    t.server.on('DELETE', 'pipeline_schedules/1', () => {
      t.schedules = [];
      return new Response(null, { status: 204 });
    });
    await t.panel.model.refresh();
    control(1, 'select').click();
    await vi.waitFor(() => q('[data-action="delete"]', row(1)));

    t.answer.confirm = false;
    control(1, 'delete').click();
    await vi.waitFor(() => expect(t.confirms).toHaveLength(1));
    expect(t.confirms[0].title).toContain('Nightly');
    expect(t.confirms[0].body).toMatch(/\b7 runs\b/);
    await new Promise(r => setTimeout(r, 10));
    expect(calls(t.server, 'DELETE')).toHaveLength(0);
    expect(document.querySelector('li[data-schedule-id="1"]')).not.toBeNull();

    t.answer.confirm = true;
    control(1, 'delete').click();
    await vi.waitFor(() => expect(document.querySelector('li[data-schedule-id="1"]')).toBeNull());
    expect(calls(t.server, 'DELETE').map(c => c.path)).toEqual(['pipeline_schedules/1']);
  });

  it('copies a URL template without a token, and the real URL after New token', async () => {
    const s = schedule({ id: 2, name: 'Hook', schedule_type: 'api', schedule_interval: null });
    const t = setup([s]);
    const token = 'fresh-token-' + Math.random().toString(36).slice(2);
    t.server.on('GET', 'pipeline_schedules/2/pipeline_runs', () => ({ pipeline_runs: [] }));
    t.server.on('PUT', 'pipeline_schedules/2', () => ({
      pipeline_schedule: { ...s, token, token_hint: token.slice(0, 4) }
    }));
    await t.panel.model.refresh();
    control(2, 'select').click();
    await vi.waitFor(() => q('[data-action="copy-url"]', row(2)));

    const copy = control(2, 'copy-url');
    expect(copy.textContent).toBe('Copy URL template');
    copy.click();
    await vi.waitFor(() => expect(t.copied).toHaveLength(1));
    expect(t.copied[0]).toContain('<token>');
    expect(t.copied[0].startsWith(BASE)).toBe(true);
    expect(t.copied[0]).toContain('pipeline_schedules/2/');

    control(2, 'new-token').click();
    await vi.waitFor(() => expect(t.copied).toHaveLength(2));
    expect(t.confirms).toHaveLength(1);
    expect(calls(t.server, 'PUT', 'pipeline_schedules/2').map(c => c.body)).toEqual([
      { pipeline_schedule: { rotate_token: true } }
    ]);
    expect(t.copied[1]).toContain(token);
    expect(t.copied[1]).not.toContain('<token>');

    await vi.waitFor(() =>
      expect(control(2, 'copy-url').textContent).not.toBe('Copy URL template')
    );
    control(2, 'copy-url').click();
    await vi.waitFor(() => expect(t.copied).toHaveLength(3));
    expect(t.copied[2]).toBe(t.copied[1]);
  });

  it('makes no new token when the confirm answers no', async () => {
    const s = schedule({ id: 2, name: 'Hook', schedule_type: 'api', schedule_interval: null });
    const t = setup([s]);
    t.server.on('GET', 'pipeline_schedules/2/pipeline_runs', () => ({ pipeline_runs: [] }));
    t.server.on('PUT', 'pipeline_schedules/2', () => json({ pipeline_schedule: s }));
    await t.panel.model.refresh();
    control(2, 'select').click();
    await vi.waitFor(() => q('[data-action="new-token"]', row(2)));
    t.answer.confirm = false;
    control(2, 'new-token').click();
    await vi.waitFor(() => expect(t.confirms).toHaveLength(1));
    await new Promise(r => setTimeout(r, 10));
    expect(calls(t.server, 'PUT')).toHaveLength(0);
    expect(t.copied).toHaveLength(0);
  });
});

/** The accessible name as the brief allows it: aria-label(ledby), a <label>, or text. */
function accessibleName(node: HTMLElement): string {
  const aria = node.getAttribute('aria-label');
  if (aria?.trim()) {
    return aria.trim();
  }
  const by = node.getAttribute('aria-labelledby');
  if (by) {
    const text = by
      .split(/\s+/)
      .map(id => document.getElementById(id)?.textContent ?? '')
      .join(' ')
      .trim();
    if (text) {
      return text;
    }
  }
  if (node.id) {
    const label = document.querySelector(`label[for="${CSS.escape(node.id)}"]`);
    if (label?.textContent?.trim()) {
      return label.textContent.trim();
    }
  }
  const wrapping = node.closest('label');
  if (wrapping?.textContent?.trim()) {
    return wrapping.textContent.trim();
  }
  if (node instanceof HTMLButtonElement) {
    return node.textContent?.trim() ?? '';
  }
  return '';
}

describe('SchedulesPanel accessibility and keys', () => {
  it('names every visible control, with the create form open', async () => {
    const t = setup([
      schedule({ id: 1, name: 'Nightly', pipeline_uuid: 'etl/daily' }),
      schedule({ id: 2, name: 'Hook', schedule_type: 'api', schedule_interval: null })
    ]);
    t.server.on('GET', 'pipeline_schedules/1/pipeline_runs', () => ({
      pipeline_runs: [run({ id: 21, pipeline_schedule_id: 1, status: 'failed' })]
    }));
    t.server.on('GET', 'pipeline_runs/21/block_runs', () =>
      list('block_runs', [blockRun({ id: 201, pipeline_run_id: 21, error: 'boom' })])
    );
    // A notebook in focus adds its own buttons and variables field.
    t.panel.model.setNotebookPath('etl/daily.ipynb');
    await t.panel.model.refresh();
    control(1, 'select').click();
    await vi.waitFor(() => q('li[data-run-id="21"]'));
    q('li[data-run-id="21"]').click();
    await vi.waitFor(() => q('li[data-block-run-id="201"]'));
    expect(t.panel.openCreateForm('etl/daily')).toBe(true);

    const controls = Array.from(
      t.panel.node.querySelectorAll<HTMLElement>('button, input, select, textarea')
    ).filter(node => !node.closest('[hidden]'));
    const unnamed = controls.filter(node => !accessibleName(node)).map(node => node.outerHTML);
    expect(unnamed).toEqual([]);
    // The check saw the parts it is meant to: the list, the run detail and the form.
    const form = q('form[data-form="schedule"]', t.panel.node);
    expect(controls.filter(node => form.contains(node)).length).toBeGreaterThan(5);
    expect(controls).toContain(control(1, 'toggle'));
    expect(controls.some(node => node.dataset.focusKey === 'logs-201')).toBe(true);
    expect(controls.some(node => node.dataset.action === 'run-notebook')).toBe(true);
    // Labels and aria references point at one element each.
    const ids = Array.from(t.panel.node.querySelectorAll('[id]')).map(node => node.id);
    expect(ids.filter((id, i) => ids.indexOf(id) !== i)).toEqual([]);
  });

  it('closes the create form on Escape', async () => {
    const t = setup([]);
    await t.panel.model.refresh();
    expect(t.panel.hasSheet).toBe(false);
    expect(t.panel.openCreateForm('etl/daily')).toBe(true);
    expect(t.panel.hasSheet).toBe(true);
    const form = q('form[data-form="schedule"]');
    // The form takes the focus when it opens.
    expect(form.contains(document.activeElement)).toBe(true);
    key(form, 'Escape');
    expect(t.panel.hasSheet).toBe(false);
    expect(document.querySelector('form[data-form="schedule"]')).toBeNull();
  });

  it('refuses to open the create form without a notebook', () => {
    const t = setup([]);
    expect(t.panel.openCreateForm(null)).toBe(false);
    expect(t.panel.hasSheet).toBe(false);
    expect(t.errors).toHaveLength(1);
  });
});

describe('scheduler status', () => {
  it('says, with the server’s words, when no scheduler serves the store', async () => {
    const t = setup([schedule({ id: 1, name: 'nightly' })]);
    const message =
      'No scheduler is active for this store: this server runs none (scheduler_enabled is False)';
    t.server.on('GET', 'status', () => ({ status: schedulerStatus({ active: false, message }) }));
    await t.panel.model.refresh();
    const banner = q('[data-scheduler="inactive"]', t.panel.node);
    expect(banner.getAttribute('role')).toBe('status');
    expect(banner.textContent).toBe(message);
    t.server.on('GET', 'status', () => ({ status: schedulerStatus() }));
    await t.panel.model.refresh();
    expect(t.panel.node.querySelector('[data-scheduler="inactive"]')).toBeNull();
  });
});

describe('notices', () => {
  it('keeps an alert node while its words stand, so it is not announced again at each render', async () => {
    const t = setup([schedule({ id: 1, name: 'nightly', status: 'active' })]);
    await t.panel.model.refresh();
    t.server.on('PUT', 'pipeline_schedules/1', () =>
      json({ error: { type: 'conflict', message: 'schedule busy', field: null, fix: null } }, 409)
    );
    q<HTMLButtonElement>('[data-action="toggle"]', t.panel.node).click();
    await new Promise(r => setTimeout(r, 0));
    await new Promise(r => setTimeout(r, 0));
    const alert = q('[data-error-kind="action"]', t.panel.node);
    expect(alert.textContent).toContain('schedule busy');
    // Another render (the list changed), the same words: the same node.
    t.schedules = [schedule({ id: 1, name: 'nightly renamed', status: 'active' })];
    await t.panel.model.refresh();
    expect(t.panel.node.textContent).toContain('nightly renamed');
    expect(q('[data-error-kind="action"]', t.panel.node)).toBe(alert);
    // Dismissed: gone.
    q<HTMLButtonElement>('[aria-label="Dismiss error"]', t.panel.node).click();
    expect(t.panel.node.querySelector('[data-error-kind="action"]')).toBeNull();
  });
});
