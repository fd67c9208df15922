/**
 * The sidebar widget: renders a PanelModel with plain DOM and forwards clicks and keys to it.
 *
 * The body is re-rendered from the model's state, but only when something a person can see
 * changed (not on every poll), and a render keeps what the user was doing: the focused control
 * (by its `data-focus-key`, falling back to its row), the caret in a text field, the scroll
 * position of logs and tracebacks (`data-scroll-key`), and a text selection (no render while
 * text in the panel is selected). Forms live in the "sheet" above the body, which renders never
 * touch.
 */
import { Widget } from '@lumino/widgets';
import { errorMessage } from './api';
import { BackfillView } from './backfillView';
import { el } from './dom';
import {
  IPanelState,
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
import { ScheduleFormView } from './scheduleFormView';
import { renderTimeline } from './timeline';
import type { IPipelineRun, IPipelineSchedule } from './types';

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

/** The browser's own time zone (what a notebook's mixed runs are shown in). */
function localZone(): string {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  } catch {
    return 'UTC';
  }
}

/** A button that stays focusable while it cannot be used (`aria-disabled`, with the reason as
 * its tooltip): a disabled button would drop the keyboard focus to the page. */
function button(
  attrs: Record<string, string>,
  text: string,
  onClick: (ev: MouseEvent) => void,
  unavailable: string | null = null
): HTMLButtonElement {
  const b = el('button', { type: 'button', class: 'jp-MageNbSched-button', ...attrs }, text);
  if (unavailable) {
    b.setAttribute('aria-disabled', 'true');
    b.title = unavailable;
  }
  b.addEventListener('click', ev => {
    ev.stopPropagation();
    if (b.getAttribute('aria-disabled') !== 'true') {
      onClick(ev);
    }
  });
  return b;
}

/** What of the state is drawn: everything but the loading flag and the refresh time — and,
 * while something runs, the second (its duration and the timeline move with the clock). */
function drawn(s: IPanelState, active: boolean, now: number): string {
  const { loading: _loading, lastUpdated: _updated, ...rest } = s;
  void _loading;
  void _updated;
  return JSON.stringify([rest, active ? Math.floor(now / 1000) : null]);
}

export class SchedulesPanel extends Widget {
  readonly model: PanelModel;
  readonly poller: Poller;
  private unsubscribe: () => void;
  private body: HTMLElement;
  private sheetNode: HTMLElement;
  private sheet: ISheet | null = null;
  /** The focus key of the control that opened the sheet (focused again when it closes). */
  private sheetOpener: string | null = null;
  private variablesText = new Map<string, string>();
  private variablesError = new Map<string, string>();
  private readonly notifier: INotifier;
  private lastDrawn = '';
  private updatedLine: HTMLElement | null = null;
  private renderDeferred = false;
  private headNode: HTMLElement;
  private noticesNode: HTMLElement;
  private listsNode: HTMLElement;
  private noticesShown = '';
  private hiddenRefresh: Promise<void> | null = null;
  private hiddenRefreshAgain = false;
  private readonly onSelectionChange = (): void => {
    if (this.renderDeferred && !this.selectingText()) {
      this.render();
    }
  };

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
    // Three parts of the body: notices (alerts, the scheduler banner) are only replaced when
    // what they say changes — a live region redrawn on every poll would be announced again
    // and again; the head and the lists are redrawn from the state.
    this.headNode = el('div', { class: 'jp-MageNbSched-head' });
    this.noticesNode = el('div', { class: 'jp-MageNbSched-notices' });
    this.listsNode = el('div', { class: 'jp-MageNbSched-lists' });
    this.body.append(this.headNode, this.noticesNode, this.listsNode);
    this.node.append(this.sheetNode, this.body);
    // A text selection defers renders (so it is not lost); but a click on a control, or a
    // key pressed on one, is the user moving on: drop the selection so their action shows.
    const moveOn = (ev: Event): void => {
      const target = ev.target as HTMLElement | null;
      if (target?.closest('button, [role=button], select, input') && this.selectingText()) {
        document.getSelection()?.removeAllRanges();
      }
    };
    this.body.addEventListener('pointerdown', moveOn, true);
    this.body.addEventListener('keydown', moveOn, true);
    this.node.setAttribute('role', 'region');
    this.node.setAttribute('aria-label', 'Notebook schedules');
    this.poller = new Poller(() => this.model.refresh());
    this.unsubscribe = this.model.subscribe(() => this.render());
    document.addEventListener('selectionchange', this.onSelectionChange);
    this.render();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    document.removeEventListener('selectionchange', this.onSelectionChange);
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
    if (!this.poller.isStopped) {
      this.poller.now();
      return;
    }
    // Hidden: one refresh at a time, and one more after it when asked meanwhile (a burst of
    // server events costs two reads, not one each).
    if (this.hiddenRefresh) {
      this.hiddenRefreshAgain = true;
      return;
    }
    this.hiddenRefresh = this.model
      .refresh()
      .catch(() => undefined)
      .then(() => {
        this.hiddenRefresh = null;
        if (this.hiddenRefreshAgain) {
          this.hiddenRefreshAgain = false;
          this.refreshSoon();
        }
      });
  }

  /** Tell about a failure: a toast when the panel is hidden (its banner would go unseen). */
  private failed(message: string): void {
    if (!this.isVisible) {
      this.notifier.error(message);
    }
  }

  /** Show a form above the list (closing the one shown). */
  private showSheet(sheet: ISheet): void {
    const opener = (document.activeElement as HTMLElement | null)?.dataset?.focusKey ?? null;
    this.closeSheet();
    this.sheet = sheet;
    this.sheetOpener = this.node.contains(document.activeElement) ? opener : null;
    this.sheetNode.replaceChildren(sheet.node);
    sheet.focus?.();
  }

  /** Close the form shown, if any, and give the focus back to what opened it. */
  closeSheet(): void {
    const hadFocus = this.sheetNode.contains(document.activeElement);
    if (this.sheet) {
      this.sheet.dispose();
      this.sheet = null;
    }
    this.sheetNode.replaceChildren();
    const opener = this.sheetOpener;
    this.sheetOpener = null;
    if (hadFocus && opener) {
      this.focusKey(opener);
    }
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
        this.notifier.info(
          schedule.status === 'active'
            ? `Schedule ${schedule.name} created and active.`
            : `Schedule ${schedule.name} created, paused: Activate it to start.`
        );
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
      onSaved: result => {
        this.closeSheet();
        if (result.changed) {
          this.model.scheduleSaved(result.schedule, result.token);
          this.notifier.info(`Schedule ${result.schedule.name} saved.`);
          this.refreshSoon();
        } else {
          this.notifier.info(`No changes to save in ${schedule.name}.`);
        }
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
      notifyError: message => this.failed(message)
    });
    this.showSheet(view);
    // Its runs show up in the schedule's history as they are made.
    if (this.model.state.selectedScheduleId !== schedule.id) {
      void this.model.selectSchedule(schedule.id);
    }
    this.refreshSoon();
  }

  /** Run a notebook on its own now (the notebook in focus by default). */
  async runNotebook(
    pipelineUuid: string | null = this.model.state.notebookUuid,
    variables: Record<string, unknown> | null = null
  ): Promise<IPipelineRun | null> {
    if (!pipelineUuid) {
      this.notifier.error('Open a notebook first: "run now" runs the notebook in focus.');
      return null;
    }
    try {
      const run = await this.model.runNotebook(pipelineUuid, variables);
      this.notifier.info(`Run ${run.id} of ${pipelineUuid} started.`);
      this.refreshSoon();
      return run;
    } catch (err) {
      this.notifier.error(`Cannot run ${pipelineUuid}: ${errorMessage(err)}`);
      return null;
    }
  }

  /** Show one run (a toast's "Show"): its schedule selected (all notebooks if need be), the
   * run opened. */
  async showRun(scheduleId: number | null, runId: number): Promise<void> {
    const s = this.model.state;
    if (scheduleId !== null) {
      if (!s.schedules.some(x => x.id === scheduleId)) {
        this.model.setFilter('all');
        await this.model.refresh().catch(() => undefined);
      }
      if (this.model.state.selectedScheduleId !== scheduleId) {
        await this.model.selectSchedule(scheduleId);
      }
    }
    if (!this.model.state.runs.some(r => r.id === runId)) {
      // Not in any list the panel can show (a notebook's own run, that notebook not in
      // focus): its executed notebook shows what happened, traceback included.
      try {
        const answer = await this.model.api.json<{ pipeline_run: IPipelineRun }>(
          'GET',
          `pipeline_runs/${runId}`
        );
        const run = answer.pipeline_run;
        if (this.host.openNotebook && !isInProgress(run.status)) {
          this.host.openNotebook(run);
        } else {
          this.notifier.info(
            `Run ${runId} is of ${run.pipeline_uuid}: open that notebook to see its runs here.`
          );
        }
      } catch (err) {
        this.notifier.error(`Cannot show run ${runId}: ${errorMessage(err)}`);
      }
      return;
    }
    if (this.model.state.selectedRunId !== runId) {
      await this.model.selectRun(runId);
    }
    this.focusKey(`run-row-${runId}`);
  }

  private async copyTriggerUrl(schedule: IPipelineSchedule): Promise<void> {
    const { url, hasToken } = this.model.triggerUrl(schedule.id);
    const copied = this.host.copyText ? await this.host.copyText(url) : false;
    if (hasToken) {
      this.notifier.info(
        copied ? `Trigger URL of ${schedule.name} copied.` : `Trigger URL: ${url}`
      );
    } else {
      this.notifier.info(
        `${copied ? 'URL template copied' : `URL template: ${url}`}: put the schedule's token in ` +
          'place of <token>. The server shows a token only when it is made; "New token" makes one.'
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
      this.notifier.info(
        copied ? `New trigger URL of ${schedule.name} copied.` : `New trigger URL: ${url}`
      );
    }, `Cannot make a new token for ${schedule.name}`);
  }

  private async deleteSchedule(schedule: IPipelineSchedule): Promise<void> {
    const runs = schedule.pipeline_runs_count;
    const ok = this.host.confirm
      ? await this.host.confirm(
          `Delete ${schedule.name}?`,
          runs
            ? `This deletes the schedule and its ${runs} run${runs === 1 ? '' : 's'}, with their ` +
                'block runs, logs and backfills. It cannot be undone.'
            : 'This deletes the schedule (it has no runs). It cannot be undone.',
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

  /** Do an action; its failure is in the model's error banner (and a toast when hidden). */
  private async act(action: () => Promise<unknown>, failure: string): Promise<void> {
    try {
      await action();
    } catch (err) {
      this.failed(`${failure}: ${errorMessage(err)}`);
    }
    this.refreshSoon();
  }

  /** Focus the control with this key, else its row's (`…-<id>` keys belong to a row). */
  private focusKey(key: string, rowKey: string | null = null): boolean {
    for (const candidate of [key, rowKey]) {
      if (!candidate) {
        continue;
      }
      const target = this.node.querySelector<HTMLElement>(
        `[data-focus-key="${CSS.escape(candidate)}"]`
      );
      if (target) {
        target.focus();
        return true;
      }
    }
    return false;
  }

  /** Text in the body is selected (a render would lose the selection). */
  private selectingText(): boolean {
    const selection = document.getSelection();
    return (
      !!selection &&
      !selection.isCollapsed &&
      !!selection.anchorNode &&
      this.body.contains(selection.anchorNode)
    );
  }

  private render(): void {
    const s = this.model.state;
    const picture = drawn(s, this.model.active, Date.now());
    if (picture === this.lastDrawn && this.updatedLine) {
      // Only the refresh time moved: no new DOM, nothing the user is doing is disturbed.
      this.updatedLine.textContent = s.lastUpdated
        ? `Updated ${s.lastUpdated.toLocaleTimeString()}`
        : '';
      return;
    }
    if (this.selectingText()) {
      this.renderDeferred = true;
      return;
    }
    this.renderDeferred = false;
    this.lastDrawn = picture;

    // What the user is doing, to put back after the new DOM is in.
    const active = document.activeElement as HTMLElement | null;
    const hadFocus = !!active && this.body.contains(active);
    const focusKey = hadFocus ? (active?.dataset?.focusKey ?? null) : null;
    const rowKey = hadFocus
      ? ((active?.closest('[data-row-key]') as HTMLElement | null)?.dataset.rowKey ?? null)
      : null;
    const caret =
      hadFocus && active instanceof HTMLInputElement
        ? [active.selectionStart, active.selectionEnd]
        : null;
    const scrolls = new Map<string, number>();
    this.body.querySelectorAll<HTMLElement>('[data-scroll-key]').forEach(node => {
      scrolls.set(node.dataset.scrollKey as string, node.scrollTop);
    });

    const drawnParts = this.renderParts();
    this.headNode.replaceChildren(...drawnParts.head);
    if (drawnParts.noticesKey !== this.noticesShown) {
      this.noticesShown = drawnParts.noticesKey;
      this.noticesNode.replaceChildren(...drawnParts.notices);
    }
    this.listsNode.replaceChildren(...drawnParts.lists);

    this.body.querySelectorAll<HTMLElement>('[data-scroll-key]').forEach(node => {
      const top = scrolls.get(node.dataset.scrollKey as string);
      if (top !== undefined) {
        node.scrollTop = top;
      }
    });
    if (hadFocus && (focusKey || rowKey)) {
      this.focusKey(focusKey ?? '', rowKey);
      const now = document.activeElement;
      if (caret && now instanceof HTMLInputElement && caret[0] !== null) {
        now.setSelectionRange(caret[0], caret[1]);
      }
    }
  }

  private renderParts(): {
    head: HTMLElement[];
    notices: HTMLElement[];
    noticesKey: string;
    lists: HTMLElement[];
  } {
    const s = this.model.state;
    const head: HTMLElement[] = [];
    const notices: HTMLElement[] = [];
    let parts = head;

    // Header: title, filter, refresh.
    const filter = el(
      'select',
      {
        class: 'jp-MageNbSched-filter',
        'aria-label': 'Show schedules of',
        'data-focus-key': 'filter'
      },
      el('option', { value: 'notebook' }, 'Notebook in focus'),
      el('option', { value: 'all' }, 'All notebooks')
    );
    filter.value = s.filter;
    filter.addEventListener('change', () => {
      this.model.setFilter(filter.value === 'all' ? 'all' : 'notebook');
      this.refreshSoon();
    });
    const refresh = button(
      { title: 'Read the schedules and runs again now', 'data-focus-key': 'refresh' },
      'Refresh',
      () => this.refreshSoon()
    );
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
          s.notebookUuid
            ? `Notebook: ${s.notebookUuid}`
            : 'No notebook in focus — open one, or show all.'
        )
      );
    }
    if (s.notebookUuid) {
      parts.push(this.renderNotebookActions(s.notebookUuid));
    }

    parts = notices;
    if (s.scheduler && !s.scheduler.active) {
      // Runs are made and started by a scheduler: without one they only wait. The server's
      // message says whether this server runs none and how to start one.
      parts.push(
        el(
          'div',
          {
            class: 'jp-MageNbSched-warning',
            role: 'status',
            'data-scheduler': 'inactive'
          },
          s.scheduler.message
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
      const dismiss = button(
        { 'aria-label': 'Dismiss error', 'data-focus-key': `dismiss-${kind}` },
        '×',
        () => this.model.clearError()
      );
      parts.push(
        el(
          'div',
          { class: 'jp-MageNbSched-error', role: 'alert', 'data-error-kind': kind },
          el('span', {}, kind === 'connection' ? `Cannot refresh: ${message}` : message),
          dismiss
        )
      );
    }

    const lists: HTMLElement[] = [];
    parts = lists;
    // Schedules.
    const list = el('ul', { class: 'jp-MageNbSched-schedules', 'aria-label': 'Schedules' });
    for (const schedule of this.model.visibleSchedules) {
      list.append(this.renderSchedule(schedule));
    }
    if (s.schedulesLoaded && !this.model.visibleSchedules.length) {
      list.append(
        el(
          'li',
          { class: 'jp-MageNbSched-empty' },
          s.filter === 'notebook' && s.notebookUuid
            ? 'No schedules for this notebook yet: "New schedule" makes one.'
            : 'No schedules.'
        )
      );
    } else if (!s.schedulesLoaded) {
      list.append(el('li', { class: 'jp-MageNbSched-empty' }, 'Loading…'));
    }
    parts.push(list);

    // Run history: the selected schedule's, else the notebook in focus's.
    const selected = this.model.selectedSchedule;
    if (selected) {
      const zone = scheduleTimezone(selected);
      parts.push(this.renderRuns(`Runs of ${selected.name}`, zone));
    } else if (s.runsScope === 'notebook' && s.notebookUuid) {
      parts.push(this.renderRuns(`Runs of ${s.notebookUuid}`, localZone()));
    }
    this.updatedLine = el(
      'div',
      { class: 'jp-MageNbSched-updated', 'aria-live': 'off' },
      s.lastUpdated ? `Updated ${s.lastUpdated.toLocaleTimeString()}` : ''
    );
    parts.push(this.updatedLine);
    const noticesKey = JSON.stringify([
      s.scheduler && !s.scheduler.active ? s.scheduler.message : null,
      s.error,
      s.connectionError
    ]);
    return { head, notices, noticesKey, lists };
  }

  /** A JSON variables field whose error is shown under it (`key`: whose field it is). */
  private variablesField(key: string, label: string, onEnter: () => void): HTMLElement {
    const errorId = `jp-MageNbSched-vars-error-${key}`;
    const input = el('input', {
      class: 'jp-MageNbSched-variables',
      type: 'text',
      placeholder: 'variables as JSON (optional)',
      'aria-label': label,
      'data-focus-key': `vars-${key}`
    });
    input.value = this.variablesText.get(key) ?? '';
    const error = this.variablesError.get(key);
    if (error) {
      input.setAttribute('aria-invalid', 'true');
      input.setAttribute('aria-describedby', errorId);
    }
    input.addEventListener('input', () => {
      this.variablesText.set(key, input.value);
      if (this.variablesError.delete(key)) {
        input.removeAttribute('aria-invalid');
        document.getElementById(errorId)?.remove();
      }
    });
    input.addEventListener('click', ev => ev.stopPropagation());
    input.addEventListener('keydown', ev => {
      // The row's own Enter / Space handler must not see keys typed here.
      ev.stopPropagation();
      if (ev.key === 'Enter' && !ev.isComposing) {
        ev.preventDefault();
        onEnter();
      }
    });
    const wrap = el('div', { class: 'jp-MageNbSched-varsField' }, input);
    if (error) {
      wrap.append(
        el('div', { class: 'jp-MageNbSched-field-error', role: 'alert', id: errorId }, error)
      );
    }
    return wrap;
  }

  /** The variables typed for `key`, or null (and the error shown) when they are not JSON. */
  private readVariables(key: string): { ok: boolean; value: Record<string, unknown> | null } {
    try {
      const value = parseVariables(this.variablesText.get(key) ?? '');
      this.variablesError.delete(key);
      return { ok: true, value };
    } catch (err) {
      this.variablesError.set(key, errorMessage(err));
      this.lastDrawn = '';
      this.render();
      return { ok: false, value: null };
    }
  }

  private renderNotebookActions(uuid: string): HTMLElement {
    const create = button(
      {
        class: 'jp-MageNbSched-button jp-mod-accept',
        'data-action': 'new-schedule',
        'data-focus-key': 'new-schedule',
        'aria-label': `New schedule for ${uuid}`
      },
      'New schedule',
      () => this.openCreateForm()
    );
    const run = () => {
      const vars = this.readVariables('notebook');
      if (vars.ok) {
        void this.runNotebook(uuid, vars.value);
      }
    };
    const runNotebook = button(
      {
        'data-action': 'run-notebook',
        'data-focus-key': 'run-notebook',
        'aria-label': `Run ${uuid} now, without a schedule`
      },
      'Run notebook now',
      run
    );
    return el(
      'div',
      { class: 'jp-MageNbSched-create' },
      el('div', { class: 'jp-MageNbSched-toolbar' }, create, runNotebook),
      this.variablesField('notebook', `Variables for running ${uuid} now`, run)
    );
  }

  private renderSchedule(schedule: IPipelineSchedule): HTMLElement {
    const s = this.model.state;
    const busy = s.busy.includes(schedule.id) ? 'Working…' : null;
    const selected = s.selectedScheduleId === schedule.id;
    const tz = scheduleTimezone(schedule);
    const active = schedule.status === 'active';
    const key = `schedule-${schedule.id}`;

    const toggle = button(
      {
        class: 'jp-MageNbSched-button jp-MageNbSched-toggle',
        role: 'switch',
        'aria-checked': String(active),
        'aria-label': `${schedule.name} active`,
        'data-focus-key': `toggle-${schedule.id}`,
        'data-action': 'toggle'
      },
      active ? 'Pause' : 'Activate',
      () =>
        void this.act(() => this.model.toggleStatus(schedule.id), `Cannot change ${schedule.name}`),
      busy
    );
    const varsKey = String(schedule.id);
    const run = () => {
      const vars = this.readVariables(varsKey);
      if (!vars.ok) {
        return;
      }
      void this.act(async () => {
        const created = await this.model.runNow(schedule.id, vars.value);
        this.notifier.info(`Run ${created.id} of ${schedule.name} created.`);
      }, `Cannot run ${schedule.name}`);
    };
    const runNow = button(
      {
        class: 'jp-MageNbSched-button jp-MageNbSched-runnow',
        'aria-label': `Run ${schedule.name} now`,
        'data-focus-key': `run-${schedule.id}`,
        'data-action': 'run-now'
      },
      'Run now',
      run,
      busy
    );
    const runsId = `jp-MageNbSched-runs-of-${schedule.id}`;
    const disclose = button(
      {
        class: 'jp-MageNbSched-button jp-MageNbSched-disclose',
        'aria-expanded': String(selected),
        'aria-controls': runsId,
        'aria-label': `${selected ? 'Hide' : 'Show'} the runs and actions of ${schedule.name}`,
        'data-focus-key': `disclose-${schedule.id}`,
        'data-action': 'select'
      },
      selected ? 'Hide runs' : 'Runs',
      () => void this.model.selectSchedule(schedule.id)
    );

    const sla = slaState(schedule);
    const row = el(
      'li',
      {
        class: `jp-MageNbSched-schedule${selected ? ' jp-mod-selected' : ''}`,
        'data-schedule-id': String(schedule.id),
        'data-status': schedule.status,
        'data-row-key': key,
        'aria-current': selected ? 'true' : 'false'
      },
      el(
        'div',
        { class: 'jp-MageNbSched-row' },
        el('span', { class: 'jp-MageNbSched-name' }, schedule.name),
        el(
          'span',
          { class: `jp-MageNbSched-state jp-MageNbSched-state-${schedule.status}` },
          active ? 'active' : 'paused'
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
        el(
          'span',
          { class: 'jp-MageNbSched-last' },
          'Last: ',
          statusBadge(schedule.last_pipeline_run_status)
        )
      ),
      sla
        ? el(
            'div',
            { class: `jp-MageNbSched-sla${sla.breached ? ' jp-mod-breached' : ''}` },
            sla.text
          )
        : null,
      el('div', { class: 'jp-MageNbSched-actions' }, toggle, runNow, disclose),
      this.variablesField(varsKey, `Variables for running ${schedule.name} now`, run),
      selected ? this.renderScheduleActions(schedule) : null
    );
    // A click anywhere on the row (not on a control) opens it too: the mouse's shortcut for
    // the "Runs" button.
    row.addEventListener('click', ev => {
      if (!(ev.target as HTMLElement).closest('button, input, select, textarea, a')) {
        void this.model.selectSchedule(schedule.id);
      }
    });
    return row;
  }

  /** The actions of the selected schedule, in its row. */
  private renderScheduleActions(schedule: IPipelineSchedule): HTMLElement {
    const busy = this.model.state.busy.includes(schedule.id) ? 'Working…' : null;
    const action = (
      name: string,
      text: string,
      label: string,
      onClick: () => void
    ): HTMLButtonElement =>
      button(
        { 'data-action': name, 'data-focus-key': `${name}-${schedule.id}`, 'aria-label': label },
        text,
        onClick,
        busy
      );
    const buttons = [
      action('edit', 'Edit', `Edit schedule ${schedule.name}`, () => this.openEditForm(schedule))
    ];
    if (schedule.schedule_type === 'time') {
      buttons.push(
        action('backfill', 'Backfill…', `Backfill ${schedule.name} over past dates`, () =>
          this.openBackfill(schedule)
        )
      );
    }
    const { url, hasToken } = this.model.triggerUrl(schedule.id);
    if (schedule.schedule_type === 'api') {
      buttons.push(
        action(
          'copy-url',
          hasToken ? 'Copy trigger URL' : 'Copy URL template',
          hasToken
            ? `Copy the API trigger URL of ${schedule.name}`
            : `Copy the API trigger URL of ${schedule.name}, with <token> in place of its token`,
          () => void this.copyTriggerUrl(schedule)
        ),
        action(
          'new-token',
          'New token',
          `Make a new API token for ${schedule.name}`,
          () => void this.newToken(schedule)
        )
      );
    }
    buttons.push(
      action(
        'delete',
        'Delete',
        `Delete schedule ${schedule.name}`,
        () => void this.deleteSchedule(schedule)
      )
    );
    const section = el(
      'div',
      {
        class: 'jp-MageNbSched-toolbar jp-MageNbSched-scheduleActions',
        role: 'group',
        'aria-label': `Actions of ${schedule.name}`
      },
      ...buttons
    );
    if (schedule.schedule_type !== 'api') {
      return section;
    }
    const hint = schedule.token_hint
      ? ` — the token starting ${schedule.token_hint}… was shown only when it was made`
      : '';
    return el(
      'div',
      {},
      section,
      el(
        'div',
        { class: 'jp-MageNbSched-trigger', 'data-trigger-url': url },
        hasToken ? url : `${url}${hint}`
      )
    );
  }

  private renderRuns(title: string, timeZone: string): HTMLElement {
    const s = this.model.state;
    const listId =
      s.selectedScheduleId !== null
        ? `jp-MageNbSched-runs-of-${s.selectedScheduleId}`
        : 'jp-MageNbSched-runs-of-notebook';
    const list = el('ul', { class: 'jp-MageNbSched-runs', 'aria-label': title, id: listId });
    for (const run of s.runs) {
      const selected = s.selectedRunId === run.id;
      const key = `run-row-${run.id}`;
      const row = el(
        'li',
        {
          class: `jp-MageNbSched-run${selected ? ' jp-mod-selected' : ''}`,
          'data-run-id': String(run.id),
          'data-status': run.status,
          'data-row-key': key,
          tabindex: '0',
          role: 'button',
          'aria-expanded': String(selected),
          'aria-label': `Run ${run.id}, ${run.status}${run.sla_breached ? ', SLA breached' : ''}; ${selected ? 'hide' : 'show'} its blocks`,
          'data-focus-key': key
        },
        el(
          'div',
          { class: 'jp-MageNbSched-row' },
          el('span', { class: 'jp-MageNbSched-runid' }, `#${run.id}`),
          el(
            'span',
            { class: 'jp-MageNbSched-date', title: timeZone },
            formatDate(run.execution_date, timeZone)
          ),
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
      list.append(
        el(
          'li',
          { class: 'jp-MageNbSched-empty' },
          s.runsLoading ? 'Loading runs…' : 'No runs yet.'
        )
      );
    }
    const chart = s.runs.length
      ? renderTimeline([...s.runs].reverse(), { width: 260, height: 48, now: new Date(), timeZone })
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
    // The detail belongs to its run row: focus lost in it (a button that became another)
    // goes back to the row.
    const detail = el('li', {
      class: 'jp-MageNbSched-detail',
      'data-row-key': `run-row-${this.model.state.selectedRunId}`
    });
    if (!run) {
      return detail;
    }
    const actions: HTMLElement[] = [];
    if (this.host.openNotebook) {
      const running = isInProgress(run.status);
      actions.push(
        button(
          {
            'data-action': 'open-notebook',
            'data-focus-key': `open-${run.id}`,
            'aria-label': `Open the notebook run ${run.id} executed`
          },
          'Open executed notebook',
          () => this.host.openNotebook?.(run),
          running ? 'Available when the run ends: the executed notebook is written then.' : null
        )
      );
    }
    const change = isInProgress(run.status)
      ? (['cancel', 'Cancel run'] as const)
      : run.status === 'failed' || run.status === 'cancelled'
        ? (['retry', 'Run again'] as const)
        : null;
    if (change) {
      const [action, text] = change;
      actions.push(
        button(
          {
            'data-action': `${action}-run`,
            'data-focus-key': `${action}-${run.id}`,
            'aria-label': `${text} ${run.id}`
          },
          text,
          () =>
            void this.act(
              () => this.model.changeRun(run.id, action),
              `Cannot ${action} run ${run.id}`
            )
        )
      );
    }
    if (actions.length) {
      detail.append(el('div', { class: 'jp-MageNbSched-toolbar' }, ...actions));
    }
    const error = runError(run);
    if (error) {
      detail.append(
        el(
          'pre',
          {
            class: 'jp-MageNbSched-traceback',
            role: 'log',
            tabindex: '0',
            'aria-label': `Error of run ${run.id}`,
            'data-scroll-key': `run-error-${run.id}`,
            'data-focus-key': `run-error-${run.id}`
          },
          error
        )
      );
    }
    const blocks = el('ul', {
      class: 'jp-MageNbSched-blocks',
      'aria-label': `Blocks of run ${run.id}`
    });
    for (const block of s.blockRuns) {
      const open = s.selectedBlockRunId === block.id;
      const logsButton = button(
        {
          'aria-expanded': String(open),
          'aria-label': `${open ? 'Hide' : 'Show'} the log of block ${block.block_uuid}`,
          'data-focus-key': `logs-${block.id}`
        },
        open ? 'Hide log' : 'Log',
        () => void this.model.showLogs(block.id)
      );
      const item = el(
        'li',
        {
          class: 'jp-MageNbSched-block',
          'data-block-run-id': String(block.id),
          'data-status': block.status
        },
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
        item.append(
          el(
            'pre',
            {
              class: 'jp-MageNbSched-traceback',
              tabindex: '0',
              'aria-label': `Error of block ${block.block_uuid}`,
              'data-scroll-key': `block-error-${block.id}`,
              'data-focus-key': `block-error-${block.id}`
            },
            block.error
          )
        );
      }
      if (open) {
        let text: string;
        if (s.logsError) {
          text = `Cannot read the log: ${s.logsError}`;
        } else if (!s.logs) {
          text = 'Loading…';
        } else if (!s.logs.text) {
          text = isInProgress(block.status)
            ? 'The log appears when the block ends.'
            : '(empty log)';
        } else {
          const dropped = s.logs.dropped > 0 ? `… ${s.logs.dropped} bytes before\n` : '';
          text = dropped + s.logs.text;
        }
        item.append(
          el(
            'pre',
            {
              class: 'jp-MageNbSched-log',
              tabindex: '0',
              'aria-label': `Log of block ${block.block_uuid}`,
              'data-scroll-key': `log-${block.id}`,
              'data-focus-key': `log-${block.id}`
            },
            text
          )
        );
      }
      blocks.append(item);
    }
    if (!s.blockRuns.length) {
      blocks.append(
        el(
          'li',
          { class: 'jp-MageNbSched-empty' },
          s.blocksLoading
            ? 'Loading blocks…'
            : isInProgress(run.status)
              ? 'Waiting for blocks…'
              : 'No blocks.'
        )
      );
    }
    detail.append(blocks);
    return detail;
  }
}
