/**
 * The sidebar widget: renders a PanelModel with plain DOM and forwards clicks and keys to it.
 */
import { Widget } from '@lumino/widgets';
import { errorMessage } from './api';
import {
  PanelModel,
  describeInterval,
  formatDuration,
  isInProgress,
  parseVariables,
  runDuration,
  runError,
  scheduleTimezone,
  slaState
} from './model';
import { Poller } from './poller';
import type { IPipelineSchedule } from './types';

export const PANEL_ID = 'mage-nb-sched-panel';

export interface INotifier {
  error(message: string): void;
  info(message: string): void;
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: (Node | string | null)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'class') {
      node.className = value;
    } else {
      node.setAttribute(key, value);
    }
  }
  for (const child of children) {
    if (child !== null) {
      node.append(child);
    }
  }
  return node;
}

function formatDate(value: string | null | undefined, timeZone?: string): string {
  if (!value) {
    return '—';
  }
  const d = new Date(value);
  if (isNaN(d.getTime())) {
    return value;
  }
  try {
    return d.toLocaleString(undefined, {
      timeZone,
      year: 'numeric',
      month: 'short',
      day: 'numeric',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit'
    });
  } catch {
    return d.toLocaleString();
  }
}

function statusBadge(status: string | null | undefined): HTMLElement {
  const text = status ?? 'never run';
  return el(
    'span',
    { class: `jp-MageNbSched-status jp-MageNbSched-status-${status ?? 'none'}` },
    text
  );
}

export class SchedulesPanel extends Widget {
  readonly model: PanelModel;
  readonly poller: Poller;
  private unsubscribe: () => void;
  private body: HTMLElement;
  private variablesText = new Map<number, string>();

  constructor(model: PanelModel, private readonly notifier: INotifier) {
    super();
    this.id = PANEL_ID;
    this.addClass('jp-MageNbSched-panel');
    this.title.caption = 'Notebook schedules';
    this.model = model;
    this.body = el('div', { class: 'jp-MageNbSched-body' });
    this.node.append(this.body);
    this.node.setAttribute('role', 'region');
    this.node.setAttribute('aria-label', 'Notebook schedules');
    this.poller = new Poller(() => this.model.refresh());
    this.unsubscribe = this.model.subscribe(() => this.render());
    this.render();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.poller.stop();
    this.unsubscribe();
    super.dispose();
  }

  protected onAfterShow(): void {
    this.poller.start(0);
  }

  protected onAfterAttach(): void {
    if (this.isVisible) {
      this.poller.start(0);
    }
  }

  protected onBeforeHide(): void {
    this.poller.stop();
  }

  protected onBeforeDetach(): void {
    this.poller.stop();
  }

  /** Refresh now (after an action, a filter change, the notebook in focus changing). */
  refreshSoon(): void {
    if (this.poller.isStopped) {
      this.model.refresh().catch(() => undefined);
    } else {
      this.poller.now();
    }
  }

  setNotebookPath(path: string | null): void {
    if (this.model.setNotebookPath(path)) {
      this.refreshSoon();
    }
  }

  private async act(action: () => Promise<unknown>, failure: string): Promise<void> {
    try {
      await action();
    } catch (err) {
      this.notifier.error(`${failure}: ${errorMessage(err)}`);
    }
    this.refreshSoon();
  }

  private render(): void {
    const focusKey = (document.activeElement as HTMLElement | null)?.dataset?.focusKey;
    const s = this.model.state;
    const parts: HTMLElement[] = [];

    // Header: title, filter, refresh.
    const filter = el(
      'select',
      { class: 'jp-MageNbSched-filter', 'aria-label': 'Show schedules of', 'data-focus-key': 'filter' },
      el('option', { value: 'notebook' }, 'Notebook in focus'),
      el('option', { value: 'all' }, 'All notebooks')
    );
    filter.value = s.filter;
    filter.addEventListener('change', () => {
      this.model.setFilter(filter.value === 'all' ? 'all' : 'notebook');
      this.refreshSoon();
    });
    const refresh = el(
      'button',
      { class: 'jp-MageNbSched-button', title: 'Refresh', 'data-focus-key': 'refresh' },
      'Refresh'
    );
    refresh.addEventListener('click', () => this.refreshSoon());
    parts.push(
      el(
        'div',
        { class: 'jp-MageNbSched-header' },
        el('h2', { class: 'jp-MageNbSched-title' }, 'Schedules'),
        el('div', { class: 'jp-MageNbSched-toolbar' }, filter, refresh)
      )
    );
    if (s.filter === 'notebook') {
      parts.push(
        el(
          'div',
          { class: 'jp-MageNbSched-context' },
          s.notebookUuid ? `Notebook: ${s.notebookUuid}` : 'No notebook in focus — open one, or show all.'
        )
      );
    }

    for (const [message, kind] of [
      [s.error, 'action'],
      [s.connectionError, 'connection']
    ] as const) {
      if (!message) {
        continue;
      }
      const dismiss = el(
        'button',
        { class: 'jp-MageNbSched-button', 'aria-label': 'Dismiss error', 'data-focus-key': `dismiss-${kind}` },
        '×'
      );
      dismiss.addEventListener('click', () => this.model.clearError());
      parts.push(
        el(
          'div',
          { class: 'jp-MageNbSched-error', role: 'alert', 'data-error-kind': kind },
          el('span', {}, kind === 'connection' ? `Cannot refresh: ${message}` : message),
          dismiss
        )
      );
    }

    // Schedules.
    const list = el('ul', { class: 'jp-MageNbSched-schedules', 'aria-label': 'Schedules' });
    for (const schedule of this.model.visibleSchedules) {
      list.append(this.renderSchedule(schedule));
    }
    if (s.schedulesLoaded && !this.model.visibleSchedules.length) {
      list.append(el('li', { class: 'jp-MageNbSched-empty' }, 'No schedules.'));
    } else if (!s.schedulesLoaded) {
      list.append(el('li', { class: 'jp-MageNbSched-empty' }, s.loading ? 'Loading…' : ''));
    }
    parts.push(list);

    // Run history of the selected schedule.
    const selected = this.model.selectedSchedule;
    if (selected) {
      parts.push(this.renderRuns(selected));
    }
    if (s.lastUpdated) {
      parts.push(
        el('div', { class: 'jp-MageNbSched-updated' }, `Updated ${s.lastUpdated.toLocaleTimeString()}`)
      );
    }

    this.body.replaceChildren(...parts);
    if (focusKey) {
      const target = this.body.querySelector<HTMLElement>(`[data-focus-key="${CSS.escape(focusKey)}"]`);
      target?.focus();
    }
  }

  private renderSchedule(schedule: IPipelineSchedule): HTMLElement {
    const s = this.model.state;
    const busy = s.busy.includes(schedule.id);
    const selected = s.selectedScheduleId === schedule.id;
    const tz = scheduleTimezone(schedule);
    const active = schedule.status === 'active';

    const toggle = el(
      'button',
      {
        class: 'jp-MageNbSched-button jp-MageNbSched-toggle',
        role: 'switch',
        'aria-checked': String(active),
        'aria-label': `${active ? 'Pause' : 'Activate'} schedule ${schedule.name}`,
        'data-focus-key': `toggle-${schedule.id}`,
        'data-action': 'toggle'
      },
      active ? 'Pause' : 'Activate'
    );
    toggle.disabled = busy;
    toggle.addEventListener('click', ev => {
      ev.stopPropagation();
      void this.act(() => this.model.toggleStatus(schedule.id), `Cannot change ${schedule.name}`);
    });

    const variables = el('input', {
      class: 'jp-MageNbSched-variables',
      type: 'text',
      placeholder: 'variables as JSON (optional)',
      'aria-label': `Variables for running ${schedule.name} now`,
      'data-focus-key': `vars-${schedule.id}`
    });
    variables.value = this.variablesText.get(schedule.id) ?? '';
    variables.addEventListener('input', () => this.variablesText.set(schedule.id, variables.value));
    variables.addEventListener('click', ev => ev.stopPropagation());
    variables.addEventListener('keydown', ev => ev.stopPropagation());

    const runNow = el(
      'button',
      {
        class: 'jp-MageNbSched-button jp-MageNbSched-runnow',
        'aria-label': `Run ${schedule.name} now`,
        'data-focus-key': `run-${schedule.id}`,
        'data-action': 'run-now'
      },
      'Run now'
    );
    runNow.disabled = busy;
    runNow.addEventListener('click', ev => {
      ev.stopPropagation();
      let vars: Record<string, unknown> | null;
      try {
        vars = parseVariables(variables.value);
      } catch (err) {
        this.notifier.error(errorMessage(err));
        return;
      }
      void this.act(async () => {
        const run = await this.model.runNow(schedule.id, vars);
        this.notifier.info(`Run ${run.id} of ${schedule.name} created.`);
      }, `Cannot run ${schedule.name}`);
    });

    const sla = slaState(schedule, selected ? s.runs : []);
    const row = el(
      'li',
      {
        class: `jp-MageNbSched-schedule${selected ? ' jp-mod-selected' : ''}`,
        'data-schedule-id': String(schedule.id),
        'data-status': schedule.status,
        tabindex: '0',
        role: 'button',
        'aria-expanded': String(selected),
        'aria-label': `Schedule ${schedule.name}, ${schedule.status}; show its runs`,
        'data-focus-key': `schedule-${schedule.id}`
      },
      el(
        'div',
        { class: 'jp-MageNbSched-row' },
        el('span', { class: 'jp-MageNbSched-name' }, schedule.name),
        el(
          'span',
          { class: `jp-MageNbSched-state jp-MageNbSched-state-${schedule.status}` },
          schedule.status
        )
      ),
      el(
        'div',
        { class: 'jp-MageNbSched-meta' },
        el('span', { class: 'jp-MageNbSched-pipeline' }, schedule.pipeline_uuid),
        el('span', { class: 'jp-MageNbSched-interval' }, `${describeInterval(schedule)} · ${tz}`)
      ),
      el(
        'div',
        { class: 'jp-MageNbSched-meta' },
        el(
          'span',
          { class: 'jp-MageNbSched-next' },
          `Next: ${formatDate(schedule.next_pipeline_run_date, tz)}`
        ),
        el('span', { class: 'jp-MageNbSched-last' }, 'Last: ', statusBadge(schedule.last_pipeline_run_status))
      ),
      sla ? el('div', { class: 'jp-MageNbSched-sla' }, sla) : null,
      el('div', { class: 'jp-MageNbSched-actions' }, toggle, variables, runNow)
    );
    const select = () => void this.model.selectSchedule(schedule.id);
    row.addEventListener('click', select);
    row.addEventListener('keydown', ev => {
      if ((ev.key === 'Enter' || ev.key === ' ') && ev.target === row) {
        ev.preventDefault();
        select();
      }
    });
    return row;
  }

  private renderRuns(schedule: IPipelineSchedule): HTMLElement {
    const s = this.model.state;
    const list = el('ul', { class: 'jp-MageNbSched-runs', 'aria-label': `Runs of ${schedule.name}` });
    for (const run of s.runs) {
      const selected = s.selectedRunId === run.id;
      const row = el(
        'li',
        {
          class: `jp-MageNbSched-run${selected ? ' jp-mod-selected' : ''}`,
          'data-run-id': String(run.id),
          'data-status': run.status,
          tabindex: '0',
          role: 'button',
          'aria-expanded': String(selected),
          'aria-label': `Run ${run.id}, ${run.status}; show its blocks`,
          'data-focus-key': `run-row-${run.id}`
        },
        el(
          'div',
          { class: 'jp-MageNbSched-row' },
          el('span', { class: 'jp-MageNbSched-runid' }, `#${run.id}`),
          el('span', { class: 'jp-MageNbSched-date' }, formatDate(run.execution_date)),
          statusBadge(run.status),
          el('span', { class: 'jp-MageNbSched-duration' }, formatDuration(runDuration(run)))
        )
      );
      if (run.sla_breached) {
        row.append(el('div', { class: 'jp-MageNbSched-sla jp-mod-breached' }, 'SLA breached'));
      }
      const select = () => void this.model.selectRun(run.id);
      row.addEventListener('click', select);
      row.addEventListener('keydown', ev => {
        if ((ev.key === 'Enter' || ev.key === ' ') && ev.target === row) {
          ev.preventDefault();
          select();
        }
      });
      list.append(row);
      if (selected) {
        list.append(this.renderRunDetail());
      }
    }
    if (!s.runs.length) {
      list.append(el('li', { class: 'jp-MageNbSched-empty' }, 'No runs yet.'));
    }
    return el(
      'section',
      { class: 'jp-MageNbSched-history', 'aria-label': `Run history of ${schedule.name}` },
      el('h3', { class: 'jp-MageNbSched-subtitle' }, `Runs of ${schedule.name}`),
      list
    );
  }

  private renderRunDetail(): HTMLElement {
    const s = this.model.state;
    const run = this.model.selectedRun;
    const detail = el('li', { class: 'jp-MageNbSched-detail' });
    if (!run) {
      return detail;
    }
    const error = runError(run);
    if (error) {
      detail.append(el('pre', { class: 'jp-MageNbSched-traceback' }, error));
    }
    const blocks = el('ul', { class: 'jp-MageNbSched-blocks', 'aria-label': `Blocks of run ${run.id}` });
    for (const block of s.blockRuns) {
      const open = s.selectedBlockRunId === block.id;
      const logsButton = el(
        'button',
        {
          class: 'jp-MageNbSched-button',
          'aria-expanded': String(open),
          'aria-label': `${open ? 'Hide' : 'Show'} the log of block ${block.block_uuid}`,
          'data-focus-key': `logs-${block.id}`
        },
        open ? 'Hide log' : 'Log'
      );
      logsButton.addEventListener('click', ev => {
        ev.stopPropagation();
        void this.model.showLogs(block.id);
      });
      const item = el(
        'li',
        { class: 'jp-MageNbSched-block', 'data-block-run-id': String(block.id), 'data-status': block.status },
        el(
          'div',
          { class: 'jp-MageNbSched-row' },
          el('span', { class: 'jp-MageNbSched-blockname' }, block.block_uuid),
          statusBadge(block.status),
          el('span', { class: 'jp-MageNbSched-duration' }, formatDuration(block.duration)),
          logsButton
        )
      );
      if (block.error) {
        item.append(el('pre', { class: 'jp-MageNbSched-traceback' }, block.error));
      }
      if (open) {
        const text = s.logs ? s.logs.text || '(empty log)' : 'Loading…';
        const dropped = s.logs && s.logs.dropped > 0 ? `… ${s.logs.dropped} bytes before\n` : '';
        item.append(el('pre', { class: 'jp-MageNbSched-log', 'aria-label': 'Log' }, dropped + text));
      }
      blocks.append(item);
    }
    if (!s.blockRuns.length) {
      blocks.append(
        el('li', { class: 'jp-MageNbSched-empty' }, isInProgress(run.status) ? 'Waiting for blocks…' : 'No blocks.')
      );
    }
    detail.append(blocks);
    return detail;
  }
}
