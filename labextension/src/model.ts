/**
 * The panel's state and the actions on it, in plain TypeScript (no DOM, no JupyterLab):
 * the widget renders it and calls its actions; the tests drive it with a fake server.
 */
import { ApiClient, ApiError, ILogs, errorMessage } from './api';
import { parseVariablesText } from './json';
import type { IPollResult } from './poller';
import type {
  IBlockRun,
  IPipelineRun,
  IPipelineSchedule,
  ISchedulerStatus,
  ScheduleStatus
} from './types';

export type ScheduleFilter = 'notebook' | 'all';

/** The pipeline uuid of a notebook path (`etl/daily.ipynb` → `etl/daily`), else null. */
export function pipelineUuidFromPath(path: string | null | undefined): string | null {
  if (!path) {
    return null;
  }
  const clean = path.replace(/^\/+/, '');
  if (!/\.ipynb$/i.test(clean)) {
    return null;
  }
  const uuid = clean.replace(/\.ipynb$/i, '');
  return uuid || null;
}

/** A run (or block run) that can still change. */
export function isInProgress(status: string | null | undefined): boolean {
  return status === 'initial' || status === 'running' || status === 'queued';
}

/** The schedule's time zone (`settings.timezone`, UTC by default). */
export function scheduleTimezone(schedule: IPipelineSchedule): string {
  const tz = schedule.settings?.timezone;
  return typeof tz === 'string' && tz ? tz : 'UTC';
}

/** `@daily`, a cron expression, or what the type means when there is no interval. */
export function describeInterval(schedule: IPipelineSchedule): string {
  if (schedule.schedule_interval) {
    return schedule.schedule_interval;
  }
  if (schedule.schedule_type === 'api') {
    return 'on API call';
  }
  if (schedule.schedule_type === 'event') {
    return 'on event';
  }
  return '—';
}

/** Seconds as `850 ms`, `12.3 s`, `4 min 5 s`, `2 h 3 min`. */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) {
    return '—';
  }
  if (seconds < 1) {
    return `${Math.round(seconds * 1000)} ms`;
  }
  if (seconds < 59.95) {
    return `${seconds.toFixed(1)} s`;
  }
  // Whole seconds first, so 119.6 s is "2 min 0 s", never "1 min 60 s".
  const whole = Math.round(seconds);
  const minutes = Math.floor(whole / 60);
  if (minutes < 60) {
    return `${minutes} min ${whole - minutes * 60} s`;
  }
  const hours = Math.floor(minutes / 60);
  return `${hours} h ${minutes - hours * 60} min`;
}

/** Seconds from start to end of a run (end: now while it runs), null if not started. */
export function runDuration(run: IPipelineRun, now: Date = new Date()): number | null {
  if (!run.started_at) {
    return null;
  }
  const start = Date.parse(run.started_at);
  const end = run.completed_at ? Date.parse(run.completed_at) : now.getTime();
  if (!isFinite(start) || !isFinite(end)) {
    return null;
  }
  return Math.max(0, (end - start) / 1000);
}

/** The traceback / error of a failed run, from its metrics. */
export function runError(run: IPipelineRun): string | null {
  const err = run.metrics?.error;
  if (err === undefined || err === null || err === '') {
    return null;
  }
  return typeof err === 'string' ? err : JSON.stringify(err, null, 2);
}

/** The SLA state of a schedule as text (null when it has no SLA). */
export function slaState(schedule: IPipelineSchedule): { text: string; breached: boolean } | null {
  if (!schedule.sla) {
    return null;
  }
  const sla = `SLA ${formatDuration(schedule.sla)}`;
  const breaches = Number(schedule.sla_breached_runs_count ?? 0);
  if (breaches > 0) {
    const runs = Math.max(breaches, schedule.pipeline_runs_count);
    return { text: `${sla} · missed by ${breaches} of ${runs} runs`, breached: true };
  }
  return {
    text: schedule.pipeline_runs_count ? `${sla} · met by every run` : sla,
    breached: false
  };
}

/** A run that needs attention: it failed, or it missed its SLA. */
export interface IAlert {
  kind: 'failure' | 'sla_breach';
  runId: number;
  scheduleId: number | null;
  pipelineUuid: string;
  /** One line to show (the schedule or notebook, the run, what happened). */
  text: string;
}

/** The key that says two alerts are the same (the server's event and a poll can both see it). */
export function alertKey(alert: Pick<IAlert, 'kind' | 'runId'>): string {
  return `${alert.kind}:${alert.runId}`;
}

/**
 * The alerts of a refresh: runs seen in progress before that have now failed, and runs that
 * have newly breached their SLA. Runs not seen before are not alerted (they are history).
 */
export function runAlerts(
  before: IPipelineRun[],
  after: IPipelineRun[],
  names: Map<number, string> = new Map()
): IAlert[] {
  const previous = new Map(before.map(r => [r.id, r]));
  const alerts: IAlert[] = [];
  for (const run of after) {
    const old = previous.get(run.id);
    if (!old) {
      continue;
    }
    const who =
      (run.pipeline_schedule_id !== null ? names.get(run.pipeline_schedule_id) : undefined) ??
      run.pipeline_uuid;
    const base = {
      runId: run.id,
      scheduleId: run.pipeline_schedule_id,
      pipelineUuid: run.pipeline_uuid
    };
    if (run.status === 'failed' && old.status !== 'failed') {
      const error = runError(run);
      const first = error ? `: ${error.trim().split('\n').pop()}` : '';
      alerts.push({ ...base, kind: 'failure', text: `${who}: run ${run.id} failed${first}` });
    }
    if (run.sla_breached && !old.sla_breached) {
      alerts.push({ ...base, kind: 'sla_breach', text: `${who}: run ${run.id} missed its SLA` });
    }
  }
  return alerts;
}

/** Runs that had ended failed or cancelled and are in progress again (retried). */
export function restartedRunIds(before: IPipelineRun[], after: IPipelineRun[]): number[] {
  const previous = new Map(before.map(r => [r.id, r.status]));
  return after
    .filter(r => {
      const old = previous.get(r.id);
      return (old === 'failed' || old === 'cancelled') && isInProgress(r.status);
    })
    .map(r => r.id);
}

export interface IPanelState {
  filter: ScheduleFilter;
  /** The pipeline uuid of the notebook in focus (null: none). */
  notebookUuid: string | null;
  schedules: IPipelineSchedule[];
  schedulesLoaded: boolean;
  selectedScheduleId: number | null;
  /** The runs shown: the selected schedule's, or (none selected, a notebook in focus) the
   * notebook's runs, scheduled or not. */
  runs: IPipelineRun[];
  runsScope: 'schedule' | 'notebook' | null;
  selectedRunId: number | null;
  blockRuns: IBlockRun[];
  selectedBlockRunId: number | null;
  logs: ILogs | null;
  /** Why the selected block's log could not be read (null: it was, or is being, read). */
  logsError: string | null;
  /** The run list / block list is being read for a new selection (not yet answered). */
  runsLoading: boolean;
  blocksLoading: boolean;
  /** The last failed action's error, as the message to show; kept until dismissed or the next
   * action succeeds (null: none). */
  error: string | null;
  /** Why the last refresh failed (cleared by the next refresh that succeeds). */
  connectionError: string | null;
  /** Who schedules for the store (`GET status`; null until read, or when it cannot be). */
  scheduler: ISchedulerStatus | null;
  /** Ids of schedules with a request under way (toggle, run now). */
  busy: number[];
  /** API tokens seen this session (the server shows a token once: at creation or rotation). */
  tokens: Record<number, string>;
  loading: boolean;
  lastUpdated: Date | null;
}

export function initialState(): IPanelState {
  return {
    filter: 'notebook',
    notebookUuid: null,
    schedules: [],
    schedulesLoaded: false,
    selectedScheduleId: null,
    runs: [],
    runsScope: null,
    selectedRunId: null,
    blockRuns: [],
    selectedBlockRunId: null,
    logs: null,
    logsError: null,
    runsLoading: false,
    blocksLoading: false,
    error: null,
    connectionError: null,
    scheduler: null,
    busy: [],
    tokens: {},
    loading: false,
    lastUpdated: null
  };
}

export type Listener = (state: IPanelState) => void;
export type AlertListener = (alert: IAlert) => void;
/** A run that had alerted is running again (retried): its next failure must alert anew. */
export type RestartListener = (runId: number) => void;

export class PanelModel {
  private _state: IPanelState = initialState();
  private listeners = new Set<Listener>();
  private alertListeners = new Set<AlertListener>();
  private restartListeners = new Set<RestartListener>();
  /** Bumped on every filter / selection change, so a stale answer is dropped. */
  private generation = 0;
  /** Bumped by every change the user makes (toggle, cancel, new token…): a refresh that was
   * reading before it may carry the old state, so it is dropped too. */
  private mutations = 0;
  /** Bumped when the user opens or closes a log: a refresh reading a log meanwhile keeps the
   * user's choice. */
  private logSelection = 0;

  constructor(
    readonly api: ApiClient,
    private readonly now: () => Date = () => new Date()
  ) {}

  get state(): IPanelState {
    return this._state;
  }

  /** The schedules shown (the server filters by notebook; this is what it answered). */
  get visibleSchedules(): IPipelineSchedule[] {
    return this._state.schedules;
  }

  get selectedSchedule(): IPipelineSchedule | null {
    const id = this._state.selectedScheduleId;
    return this._state.schedules.find(s => s.id === id) ?? null;
  }

  get selectedRun(): IPipelineRun | null {
    const id = this._state.selectedRunId;
    return this._state.runs.find(r => r.id === id) ?? null;
  }

  /** Something is initial or running (poll fast). */
  get active(): boolean {
    const s = this._state;
    return (
      s.schedules.some(x => x.pipeline_in_progress_runs_count > 0) ||
      s.runs.some(r => isInProgress(r.status)) ||
      s.blockRuns.some(b => isInProgress(b.status))
    );
  }

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Be told of runs that fail or miss their SLA while they are shown. */
  onAlert(listener: AlertListener): () => void {
    this.alertListeners.add(listener);
    return () => this.alertListeners.delete(listener);
  }

  /** Be told of runs that start again after they failed or were cancelled (a retry). */
  onRestart(listener: RestartListener): () => void {
    this.restartListeners.add(listener);
    return () => this.restartListeners.delete(listener);
  }

  private restarted(runId: number): void {
    for (const listener of [...this.restartListeners]) {
      listener(runId);
    }
  }

  /** Where the run list comes from for a selection (see IPanelState.runs). */
  private runsScopeFor(selectedScheduleId: number | null): 'schedule' | 'notebook' | null {
    if (selectedScheduleId !== null) {
      return 'schedule';
    }
    return this._state.filter === 'notebook' && this._state.notebookUuid ? 'notebook' : null;
  }

  private async readRuns(
    scope: 'schedule' | 'notebook' | null,
    scheduleId: number | null
  ): Promise<IPipelineRun[]> {
    if (scope === 'schedule' && scheduleId !== null) {
      return this.api.listScheduleRuns(scheduleId);
    }
    if (scope === 'notebook' && this._state.notebookUuid) {
      return this.api.listNotebookRuns(this._state.notebookUuid);
    }
    return [];
  }

  private set(changes: Partial<IPanelState>): void {
    this._state = { ...this._state, ...changes };
    for (const listener of [...this.listeners]) {
      listener(this._state);
    }
  }

  /** The notebook in focus changed (its path; null or a non-notebook: none). */
  setNotebookPath(path: string | null): boolean {
    const uuid = pipelineUuidFromPath(path);
    if (uuid === this._state.notebookUuid) {
      return false;
    }
    // Only the "notebook in focus" view depends on it: a refresh or selection under way in
    // the "all" view stays valid.
    const matters = this._state.filter === 'notebook';
    if (!matters) {
      this.set({ notebookUuid: uuid });
      return false;
    }
    this.generation++;
    // Nothing of the previous notebook may show (or be acted on) under the new one's name.
    this.set({
      notebookUuid: uuid,
      schedules: [],
      schedulesLoaded: false,
      selectedScheduleId: null,
      runs: [],
      runsScope: null,
      selectedRunId: null,
      blockRuns: [],
      selectedBlockRunId: null,
      logs: null,
      logsError: null,
      runsLoading: false,
      blocksLoading: false
    });
    return true;
  }

  setFilter(filter: ScheduleFilter): void {
    if (filter === this._state.filter) {
      return;
    }
    this.generation++;
    this.set({ filter, runsLoading: false, blocksLoading: false });
  }

  clearError(): void {
    this.set({ error: null, connectionError: null });
  }

  /**
   * Read the schedules, the selected schedule's runs and the selected run's block runs.
   * Answers whether anything is in progress and whether anything changed (for the poller);
   * a failure is put in `error` and thrown again (the poller backs off).
   */
  async refresh(): Promise<IPollResult> {
    const generation = this.generation;
    const mutations = this.mutations;
    const stale = () => generation !== this.generation || mutations !== this.mutations;
    const before = this.signature();
    this.set({ loading: true });
    try {
      const s = this._state;
      // Whether a scheduler serves the store, read beside the schedules: runs only wait when
      // none does, and the panel says so. A server that cannot tell is not an error here.
      const scheduler = this.api.status().catch(() => null);
      let schedules: IPipelineSchedule[];
      if (s.filter === 'notebook' && !s.notebookUuid) {
        schedules = [];
      } else {
        schedules = await this.api.listSchedules({
          pipelineUuid: s.filter === 'notebook' ? s.notebookUuid : null
        });
      }
      const schedulerStatus = await scheduler;
      if (stale()) {
        // Something changed while this refresh was reading (a selection, an action): its
        // answer may be older than that; the poller reads again at once (see Poller.now).
        this.set({ loading: false });
        return { active: this.active, changed: true };
      }
      let selectedScheduleId = this._state.selectedScheduleId;
      if (selectedScheduleId !== null && !schedules.some(x => x.id === selectedScheduleId)) {
        selectedScheduleId = null;
      }
      let runsScope = this.runsScopeFor(selectedScheduleId);
      let runs: IPipelineRun[];
      try {
        runs = await this.readRuns(runsScope, selectedScheduleId);
      } catch (err) {
        // Deleted elsewhere between the list and this read: not a failure to refresh, the
        // schedule is simply gone (the next list will not have it either).
        if (!(err instanceof ApiError && err.status === 404 && selectedScheduleId !== null)) {
          throw err;
        }
        schedules = schedules.filter(x => x.id !== selectedScheduleId);
        selectedScheduleId = null;
        runsScope = this.runsScopeFor(null);
        runs = await this.readRuns(runsScope, null);
      }
      const sameScope =
        runsScope === this._state.runsScope &&
        selectedScheduleId === this._state.selectedScheduleId;
      let selectedRunId = runsScope === null || !sameScope ? null : this._state.selectedRunId;
      if (selectedRunId !== null && !runs.some(r => r.id === selectedRunId)) {
        selectedRunId = null;
      }
      let blockRuns: IBlockRun[] = [];
      if (selectedRunId !== null) {
        try {
          blockRuns = await this.api.listBlockRuns(selectedRunId);
        } catch (err) {
          // The run was deleted (with its schedule, or by retention) after the list: gone.
          if (!(err instanceof ApiError && err.status === 404)) {
            throw err;
          }
          runs = runs.filter(r => r.id !== selectedRunId);
          selectedRunId = null;
        }
      }
      if (stale()) {
        // Something changed while this refresh was reading (a selection, an action): its
        // answer may be older than that; the poller reads again at once (see Poller.now).
        this.set({ loading: false });
        return { active: this.active, changed: true };
      }
      let selectedBlockRunId = this._state.selectedBlockRunId;
      let logs = this._state.logs;
      let logsError = this._state.logsError;
      const shownBlock = blockRuns.find(b => b.id === selectedBlockRunId);
      if (selectedBlockRunId !== null && !shownBlock) {
        selectedBlockRunId = null;
        logs = null;
        logsError = null;
      } else if (shownBlock) {
        // The runner writes a log when its block ends: read it again while the block runs,
        // when its status changed, and after a failed read.
        const before = this._state.blockRuns.find(b => b.id === shownBlock.id);
        if (isInProgress(shownBlock.status) || before?.status !== shownBlock.status || logsError) {
          const chosen = this.logSelection;
          let read: ILogs | null = logs;
          let readError: string | null = null;
          try {
            read = await this.api.blockRunLogs(shownBlock.id);
          } catch (err) {
            readError = errorMessage(err);
          }
          if (stale()) {
            this.set({ loading: false });
            return { active: this.active, changed: true };
          }
          if (chosen === this.logSelection) {
            logs = read;
            logsError = readError;
          } else {
            // The user opened another log (or closed it) while this one was read: theirs wins.
            selectedBlockRunId = this._state.selectedBlockRunId;
            logs = this._state.logs;
            logsError = this._state.logsError;
          }
        }
      }
      const alerts = sameScope
        ? runAlerts(this._state.runs, runs, this.scheduleNames(schedules))
        : [];
      const restartedRuns = sameScope ? restartedRunIds(this._state.runs, runs) : [];
      this.set({
        schedules,
        schedulesLoaded: true,
        selectedScheduleId,
        runs,
        runsScope,
        selectedRunId,
        blockRuns,
        selectedBlockRunId,
        logs,
        logsError,
        runsLoading: false,
        blocksLoading: false,
        scheduler: schedulerStatus,
        loading: false,
        connectionError: null,
        lastUpdated: this.now()
      });
      for (const alert of alerts) {
        for (const listener of [...this.alertListeners]) {
          listener(alert);
        }
      }
      for (const runId of restartedRuns) {
        this.restarted(runId);
      }
      return { active: this.active, changed: this.signature() !== before };
    } catch (err) {
      this.set({ loading: false, connectionError: errorMessage(err) });
      throw err;
    }
  }

  private scheduleNames(schedules: IPipelineSchedule[]): Map<number, string> {
    return new Map(schedules.map(x => [x.id, x.name]));
  }

  private signature(): string {
    const s = this._state;
    return JSON.stringify([
      s.schedules,
      s.runs,
      s.blockRuns,
      s.logs?.text ?? null,
      s.scheduler?.active ?? null
    ]);
  }

  /** Select a schedule (its run history is read); the same id again unselects it. */
  async selectSchedule(id: number | null): Promise<void> {
    const next = id === this._state.selectedScheduleId ? null : id;
    this.generation++;
    const generation = this.generation;
    const runsScope = this.runsScopeFor(next);
    this.set({
      selectedScheduleId: next,
      runs: [],
      runsScope,
      selectedRunId: null,
      blockRuns: [],
      selectedBlockRunId: null,
      logs: null,
      logsError: null,
      runsLoading: runsScope !== null,
      blocksLoading: false
    });
    if (runsScope === null) {
      return;
    }
    try {
      const runs = await this.readRuns(runsScope, next);
      if (generation === this.generation) {
        this.set({ runs, runsLoading: false });
      }
    } catch (err) {
      if (generation === this.generation) {
        this.set({ error: errorMessage(err), runsLoading: false });
      }
    }
  }

  /** Select a run (its block runs are read); the same id again unselects it. */
  async selectRun(id: number | null): Promise<void> {
    const next = id === this._state.selectedRunId ? null : id;
    this.generation++;
    const generation = this.generation;
    this.set({
      selectedRunId: next,
      blockRuns: [],
      selectedBlockRunId: null,
      logs: null,
      logsError: null,
      blocksLoading: next !== null
    });
    if (next === null) {
      return;
    }
    try {
      const blockRuns = await this.api.listBlockRuns(next);
      if (generation === this.generation) {
        this.set({ blockRuns, blocksLoading: false });
      }
    } catch (err) {
      if (generation === this.generation) {
        this.set({ error: errorMessage(err), blocksLoading: false });
      }
    }
  }

  /** Show a block run's log; the same id again hides it. */
  async showLogs(blockRunId: number | null): Promise<void> {
    const next = blockRunId === this._state.selectedBlockRunId ? null : blockRunId;
    this.logSelection++;
    this.set({ selectedBlockRunId: next, logs: null, logsError: null });
    if (next === null) {
      return;
    }
    try {
      const logs = await this.api.blockRunLogs(next);
      if (this._state.selectedBlockRunId === next) {
        this.set({ logs });
      }
    } catch (err) {
      // Shown where the log would be (and read again by the next refresh).
      if (this._state.selectedBlockRunId === next) {
        this.set({ logsError: errorMessage(err) });
      }
    }
  }

  private markBusy(id: number, busy: boolean): void {
    const others = this._state.busy.filter(x => x !== id);
    this.set({ busy: busy ? [...others, id] : others });
  }

  /**
   * One change the user asks of the server: `busyId`'s controls are busy meanwhile; on success
   * the change counts as a mutation (a refresh reading before it is dropped) and `apply`'s
   * state goes in with the error cleared; a failure is put in `error` and thrown again.
   */
  private async write<T>(
    busyId: number | null,
    request: () => Promise<T>,
    apply: (result: T) => Partial<IPanelState>
  ): Promise<T> {
    if (busyId !== null) {
      this.markBusy(busyId, true);
    }
    try {
      const result = await request();
      this.mutations++;
      this.set({ ...apply(result), error: null });
      return result;
    } catch (err) {
      this.set({ error: errorMessage(err) });
      throw err;
    } finally {
      if (busyId !== null) {
        this.markBusy(busyId, false);
      }
    }
  }

  /** The state that shows a new run, selected (nothing of the previous selection left). */
  private showNewRun(run: IPipelineRun, runs: IPipelineRun[]): Partial<IPanelState> {
    this.generation++;
    return {
      runs: [run, ...runs.filter(r => r.id !== run.id)],
      runsLoading: false,
      blocksLoading: false,
      selectedRunId: run.id,
      blockRuns: [],
      selectedBlockRunId: null,
      logs: null,
      logsError: null
    };
  }

  /** Activate an inactive schedule or pause an active one. Throws the server's error. */
  toggleStatus(id: number): Promise<IPipelineSchedule> {
    const schedule = this._state.schedules.find(s => s.id === id);
    const status: ScheduleStatus = schedule?.status === 'active' ? 'inactive' : 'active';
    return this.write(
      id,
      () => this.api.setScheduleStatus(id, status),
      updated => ({
        schedules: this._state.schedules.map(s => (s.id === id ? { ...s, ...updated } : s))
      })
    );
  }

  /** Run the schedule's notebook now; the new run is selected. Throws the server's error. */
  runNow(id: number, variables?: Record<string, unknown> | null): Promise<IPipelineRun> {
    return this.write(
      id,
      () => this.api.runNow(id, { variables }),
      run => ({
        ...this.showNewRun(run, this._state.selectedScheduleId === id ? this._state.runs : []),
        schedules: this._state.schedules.map(s =>
          s.id === id
            ? {
                ...s,
                pipeline_in_progress_runs_count: s.pipeline_in_progress_runs_count + 1,
                pipeline_runs_count: s.pipeline_runs_count + 1
              }
            : s
        ),
        selectedScheduleId: id,
        runsScope: 'schedule'
      })
    );
  }

  /**
   * Run a notebook on its own (no schedule); its runs are shown and the new one selected when
   * it is the notebook in focus. Throws the server's error.
   */
  runNotebook(
    pipelineUuid: string,
    variables?: Record<string, unknown> | null
  ): Promise<IPipelineRun> {
    return this.write(
      null,
      () => this.api.runNotebook(pipelineUuid, variables),
      run =>
        this._state.filter === 'notebook' && this._state.notebookUuid === pipelineUuid
          ? {
              ...this.showNewRun(run, this._state.runsScope === 'notebook' ? this._state.runs : []),
              selectedScheduleId: null,
              runsScope: 'notebook'
            }
          : {}
    );
  }

  /** Cancel a run that has not finished, or run a failed / cancelled one again. */
  changeRun(id: number, action: 'cancel' | 'retry'): Promise<IPipelineRun> {
    return this.write(
      null,
      () => this.api.changeRun(id, action),
      updated => {
        if (action === 'retry') {
          this.restarted(id);
        }
        return { runs: this._state.runs.map(r => (r.id === id ? { ...r, ...updated } : r)) };
      }
    );
  }

  /** The schedule's trigger URL, with its token when this session has seen it. */
  triggerUrl(id: number): { url: string; hasToken: boolean } {
    const token = this._state.tokens[id] ?? null;
    return { url: this.api.triggerUrl(id, token), hasToken: token !== null };
  }

  /** Give the schedule a new API token (the old one stops working); its trigger URL. */
  async rotateToken(id: number): Promise<string> {
    const { token } = await this.write(
      id,
      () => this.api.rotateToken(id),
      ({ schedule, token }) => ({
        schedules: this._state.schedules.map(s => (s.id === id ? { ...s, ...schedule } : s)),
        tokens: { ...this._state.tokens, [id]: token }
      })
    );
    return this.api.triggerUrl(id, token);
  }

  /** Delete a schedule, with its runs and backfills (the server deletes them too). */
  async deleteSchedule(id: number): Promise<void> {
    await this.write(
      id,
      () => this.api.deleteSchedule(id),
      () => {
        this.generation++;
        const wasSelected = this._state.selectedScheduleId === id;
        return {
          schedules: this._state.schedules.filter(s => s.id !== id),
          ...(wasSelected
            ? {
                selectedScheduleId: null,
                runs: [],
                runsScope: null,
                selectedRunId: null,
                blockRuns: [],
                logs: null
              }
            : {})
        };
      }
    );
  }

  /** A schedule was created or saved elsewhere (the form): show it, selected. */
  scheduleSaved(schedule: IPipelineSchedule, token: string | null): void {
    this.generation++;
    this.mutations++;
    const exists = this._state.schedules.some(s => s.id === schedule.id);
    const schedules = exists
      ? this._state.schedules.map(s => (s.id === schedule.id ? { ...s, ...schedule } : s))
      : [...this._state.schedules, schedule];
    this.set({
      schedules,
      tokens: token ? { ...this._state.tokens, [schedule.id]: token } : this._state.tokens,
      error: null
    });
  }
}

/** Parse the "run now" variables field: empty → none; else a JSON object (the forms' rule). */
export const parseVariables = parseVariablesText;
