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
import { BackfillView } from './backfillView';
import { ScheduleFormView } from './scheduleFormView';
import { renderTimeline } from './timeline';
import type { IPipelineRun, IPipelineSchedule } from './types';
import { el } from './dom';

export const PANEL_ID = 'mage-nb-sched-panel';

/** What the panel asks of JupyterLab (injected, so the panel knows no application object). */
export interface INotifier {
  error(message: string): void;
  info(message: string): void;
  warning?(message: string): void;
}

export interface IPanelHost {
  notifier: INotifier;
  /** Open a run's executed notebook (read-only). */
  openNotebook?(run: IPipelineRun): void;
  /** Put text on the clipboard (resolves false when the browser refused). */
  copyText?(text: string): Promise<boolean>;
  /** Ask before something that cannot be undone. */
  confirm?(title: string, body: string, action: string): Promise<boolean>;
}

/** A form shown above the list (create / edit a schedule, a backfill). */
interface ISheet {
  readonly node: HTMLElement;
  dispose(): void;
  focus?(): void;
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
  private sheetNode: HTMLElement;
  private sheet: ISheet | null = null;
  private variablesText = new Map<number, string>();
  private readonly notifier: INotifier;

  constructor(
    model: PanelModel,
    private readonly host: IPanelHost
  ) {
    super();
    this.id = PANEL_ID;
    this.addClass('jp-MageNbSched-panel');
    this.title.caption = 'Notebook schedules';
    this.model = model;
    this.notifier = host.notifier;
    // The sheet is outside the re-rendered body, so a form keeps its inputs and focus while
    // the list below it updates.
    this.sheetNode = el('div', { class: 'jp-MageNbSched-sheet' });
    this.body = el('div', { class: 'jp-MageNbSched-body' });
    this.node.append(this.sheetNode, this.body);
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
    this.closeSheet();
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

  /** Show a form above the list (closing the one shown). */
  private showSheet(sheet: ISheet): void {
    this.closeSheet();
    this.sheet = sheet;
    this.sheetNode.replaceChildren(sheet.node);
    sheet.focus?.();
  }

  /** Close the form shown, if any. */
  closeSheet(): void {
    if (this.sheet) {
      this.sheet.dispose();
      this.sheet = null;
    }
    this.sheetNode.replaceChildren();
  }

  /** Whether a form is shown (for tests and commands). */
  get hasSheet(): boolean {
    return this.sheet !== null;
  }

  /**
   * Open the form creating a schedule for a notebook (the one in focus by default); false
   * when there is no notebook to schedule.
   */
  openCreateForm(pipelineUuid: string | null = this.model.state.notebookUuid): boolean {
    if (!pipelineUuid) {
      this.notifier.error('Open a notebook first: a schedule runs the notebook in focus.');
      return false;
    }
    const form = new ScheduleFormView({
      api: this.model.api,
      mode: 'create',
      pipelineUuid,
      onSaved: ({ schedule, token }) => {
        this.closeSheet();
        this.model.scheduleSaved(schedule, token);
        this.notifier.info(`Schedule ${schedule.name} created.`);
        void this.model.selectSchedule(schedule.id);
        this.refreshSoon();
      },
      onCancel: () => this.closeSheet()
    });
    this.showSheet(form);
    return true;
  }

  /** Open the form editing a schedule. */
  openEditForm(schedule: IPipelineSchedule): void {
    const form = new ScheduleFormView({
      api: this.model.api,
      mode: 'edit',
      pipelineUuid: schedule.pipeline_uuid,
      schedule,
      onSaved: ({ schedule: saved, token }) => {
        this.closeSheet();
        this.model.scheduleSaved(saved, token);
        this.notifier.info(`Schedule ${saved.name} saved.`);
        this.refreshSoon();
      },
      onCancel: () => this.closeSheet()
    });
    this.showSheet(form);
  }

  /** Open the backfill form of a schedule. */
  openBackfill(schedule: IPipelineSchedule): void {
    const view = new BackfillView({
      api: this.model.api,
      schedule,
      onClose: () => this.closeSheet(),
      onFinished: backfill => {
        const failed = backfill.progress?.failed ?? 0;
        const total = backfill.progress?.total ?? 0;
        const text = `Backfill ${backfill.id} of ${schedule.name} ${backfill.status}: ${total} runs`;
        if (backfill.status === 'completed' && !failed) {
          this.notifier.info(`${text}.`);
        } else {
          this.notifier.error(`${text}${failed ? `, ${failed} failed` : ''}.`);
        }
        this.refreshSoon();
      },
      notifyError: message => this.notifier.error(message)
    });
    this.showSheet(view);
    // Its runs show up in the schedule's history as they are made.
    if (this.model.state.selectedScheduleId !== schedule.id) {
      void this.model.selectSchedule(schedule.id);
    }
    this.refreshSoon();
  }

  /** Run a notebook on its own now (the notebook in focus by default). */
  async runNotebook(pipelineUuid: string | null = this.model.state.notebookUuid): Promise<IPipelineRun | null> {
    if (!pipelineUuid) {
      this.notifier.error('Open a notebook first: "run now" runs the notebook in focus.');
      return null;
    }
    try {
      const run = await this.model.runNotebook(pipelineUuid);
      this.notifier.info(`Run ${run.id} of ${pipelineUuid} started.`);
      this.refreshSoon();
      return run;
    } catch (err) {
      this.notifier.error(`Cannot run ${pipelineUuid}: ${errorMessage(err)}`);
      return null;
    }
  }

  private async copyTriggerUrl(schedule: IPipelineSchedule): Promise<void> {
    const { url, hasToken } = this.model.triggerUrl(schedule.id);
    const copied = this.host.copyText ? await this.host.copyText(url) : false;
    if (hasToken) {
      this.notifier.info(copied ? `Trigger URL of ${schedule.name} copied.` : `Trigger URL: ${url}`);
    } else {
      this.notifier.info(
        (copied ? `Trigger URL of ${schedule.name} copied` : `Trigger URL: ${url}`) +
          ' with <token> in place of the token: the server shows a token only when it is made. ' +
          'Use "New token" to make one.'
      );
    }
  }

  private async newToken(schedule: IPipelineSchedule): Promise<void> {
    const ok = this.host.confirm
      ? await this.host.confirm(
          `New API token for ${schedule.name}?`,
          'The old token stops working at once: callers using it get 403 until they use the new URL.',
          'New token'
        )
      : true;
    if (!ok) {
      return;
    }
    await this.act(async () => {
      const url = await this.model.rotateToken(schedule.id);
      const copied = this.host.copyText ? await this.host.copyText(url) : false;
      this.notifier.info(copied ? `New trigger URL of ${schedule.name} copied.` : `New trigger URL: ${url}`);
    }, `Cannot make a new token for ${schedule.name}`);
  }

  private async deleteSchedule(schedule: IPipelineSchedule): Promise<void> {
    const ok = this.host.confirm
      ? await this.host.confirm(
          `Delete ${schedule.name}?`,
          'The schedule stops; its past runs stay in the notebook\'s history.',
          'Delete'
        )
      : true;
    if (!ok) {
      return;
    }
    await this.act(async () => {
      await this.model.deleteSchedule(schedule.id);
      this.notifier.info(`Schedule ${schedule.name} deleted.`);
    }, `Cannot delete ${schedule.name}`);
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
    if (s.notebookUuid) {
      const create = el(
        'button',
        {
          class: 'jp-MageNbSched-button jp-mod-accept',
          'data-action': 'new-schedule',
          'data-focus-key': 'new-schedule',
          'aria-label': `New schedule for ${s.notebookUuid}`
        },
        'New schedule'
      );
      create.addEventListener('click', () => this.openCreateForm());
      const runNotebook = el(
        'button',
        {
          class: 'jp-MageNbSched-button',
          'data-action': 'run-notebook',
          'data-focus-key': 'run-notebook',
          'aria-label': `Run ${s.notebookUuid} now, without a schedule`
        },
        'Run notebook now'
      );
      runNotebook.addEventListener('click', () => void this.runNotebook());
      parts.push(el('div', { class: 'jp-MageNbSched-toolbar jp-MageNbSched-create' }, create, runNotebook));
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

    // Run history: the selected schedule's, else the notebook in focus's.
    const selected = this.model.selectedSchedule;
    if (selected) {
      parts.push(this.renderScheduleActions(selected));
      parts.push(this.renderRuns(`Runs of ${selected.name}`, scheduleTimezone(selected)));
    } else if (s.runsScope === 'notebook' && s.notebookUuid) {
      parts.push(this.renderRuns(`Runs of ${s.notebookUuid}`));
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

  /** The actions of the selected schedule that do not fit in its row. */
  private renderScheduleActions(schedule: IPipelineSchedule): HTMLElement {
    const busy = this.model.state.busy.includes(schedule.id);
    const button = (action: string, text: string, label: string, onClick: () => void): HTMLButtonElement => {
      const b = el(
        'button',
        {
          class: 'jp-MageNbSched-button',
          'data-action': action,
          'data-focus-key': `${action}-${schedule.id}`,
          'aria-label': label
        },
        text
      );
      b.disabled = busy;
      b.addEventListener('click', onClick);
      return b;
    };
    const buttons = [
      button('edit', 'Edit', `Edit schedule ${schedule.name}`, () => this.openEditForm(schedule))
    ];
    if (schedule.schedule_type === 'time') {
      buttons.push(
        button('backfill', 'Backfill…', `Backfill ${schedule.name} over past dates`, () => this.openBackfill(schedule))
      );
    }
    if (schedule.schedule_type === 'api') {
      buttons.push(
        button('copy-url', 'Copy trigger URL', `Copy the API trigger URL of ${schedule.name}`, () =>
          void this.copyTriggerUrl(schedule)
        ),
        button('new-token', 'New token', `Make a new API token for ${schedule.name}`, () => void this.newToken(schedule))
      );
    }
    buttons.push(
      button('delete', 'Delete', `Delete schedule ${schedule.name}`, () => void this.deleteSchedule(schedule))
    );
    const section = el(
      'div',
      { class: 'jp-MageNbSched-toolbar jp-MageNbSched-scheduleActions', 'aria-label': `Actions of ${schedule.name}` },
      ...buttons
    );
    if (schedule.schedule_type === 'api') {
      const { url, hasToken } = this.model.triggerUrl(schedule.id);
      return el(
        'div',
        {},
        section,
        el(
          'div',
          { class: 'jp-MageNbSched-trigger', 'data-trigger-url': url },
          hasToken ? url : `${url} (token ${schedule.token_hint ?? ''}…, shown once)`
        )
      );
    }
    return section;
  }

  private renderRuns(title: string, timeZone?: string): HTMLElement {
    const s = this.model.state;
    const list = el('ul', { class: 'jp-MageNbSched-runs', 'aria-label': title });
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
          el('span', { class: 'jp-MageNbSched-date' }, formatDate(run.execution_date, timeZone)),
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
    const chart = s.runs.length
      ? renderTimeline([...s.runs].reverse(), { width: 260, height: 48, now: new Date() })
      : null;
    return el(
      'section',
      { class: 'jp-MageNbSched-history', 'aria-label': title },
      el('h3', { class: 'jp-MageNbSched-subtitle' }, title),
      chart,
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
    const actions: HTMLElement[] = [];
    if (!isInProgress(run.status) && this.host.openNotebook) {
      const open = el(
        'button',
        {
          class: 'jp-MageNbSched-button',
          'data-action': 'open-notebook',
          'data-focus-key': `open-${run.id}`,
          'aria-label': `Open the notebook run ${run.id} executed`
        },
        'Open executed notebook'
      );
      open.addEventListener('click', ev => {
        ev.stopPropagation();
        this.host.openNotebook?.(run);
      });
      actions.push(open);
    }
    const change = isInProgress(run.status)
      ? (['cancel', 'Cancel run'] as const)
      : run.status === 'failed' || run.status === 'cancelled'
        ? (['retry', 'Run again'] as const)
        : null;
    if (change) {
      const [action, text] = change;
      const b = el(
        'button',
        {
          class: 'jp-MageNbSched-button',
          'data-action': `${action}-run`,
          'data-focus-key': `${action}-${run.id}`,
          'aria-label': `${text} ${run.id}`
        },
        text
      );
      b.addEventListener('click', ev => {
        ev.stopPropagation();
        void this.act(() => this.model.changeRun(run.id, action), `Cannot ${action} run ${run.id}`);
      });
      actions.push(b);
    }
    if (actions.length) {
      detail.append(el('div', { class: 'jp-MageNbSched-toolbar' }, ...actions));
    }
    const error = runError(run);
    if (error) {
      detail.append(
        el('pre', { class: 'jp-MageNbSched-traceback', role: 'log', 'aria-label': `Error of run ${run.id}` }, error)
      );
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
