/**
 * Backfills of a schedule: the form's values and their checks, the REST calls that create and
 * start one, its progress as text and as a fraction, and a watcher that follows it until it
 * ends. No DOM here (backfillView.ts renders), so all of it is unit-tested.
 *
 * Times typed in the form are wall-clock times in the schedule's time zone (its
 * `settings.timezone`, else UTC): a backfill of a Paris schedule from "2024-01-01T00:00" starts
 * at midnight in Paris, as the schedule's own runs would.
 */
import { ApiClient, ApiError } from './api';
import { FieldError, errorTexts } from './errors';
import { parseJsonObject } from './json';
import { scheduleTimezone } from './model';
import { DEFAULT_BACKOFF, IBackoffOptions, ITimer, Poller } from './poller';
import { IWall, addDays, formatWall, safeTimeZone, wallInZone, wallToIso, wallToMs } from './time';
import type { IPipelineSchedule, RunStatus } from './types';

export type IntervalType = 'second' | 'minute' | 'hour' | 'day' | 'week' | 'month' | 'year';

/** In the order the form offers them. */
export const INTERVAL_TYPES: readonly IntervalType[] = [
  'second',
  'minute',
  'hour',
  'day',
  'week',
  'month',
  'year'
];

/** The server's bound on `interval_units` (service/fields.py MAX_INTERVAL_UNITS). */
export const MAX_INTERVAL_UNITS = 1000;

export type BackfillStatus = RunStatus;

/** `progress` of a backfill: its runs counted by status, `total`, and `done` (= completed). */
export interface IBackfillProgress {
  initial: number;
  running: number;
  completed: number;
  failed: number;
  cancelled: number;
  total: number;
  done: number;
}

/** A backfill as `GET backfills/{id}` answers it (backfills.yaml `Backfill`). */
export interface IBackfill {
  id: number;
  name: string;
  pipeline_uuid: string;
  pipeline_schedule_id: number | null;
  start_datetime: string;
  end_datetime: string;
  interval_type: IntervalType;
  interval_units: number;
  status: BackfillStatus;
  started_at: string | null;
  completed_at: string | null;
  failed_at?: string | null;
  variables: Record<string, unknown> | null;
  settings?: Record<string, unknown> | null;
  progress: IBackfillProgress;
  [key: string]: unknown;
}

/** What the form holds, as typed (every value text, checked by `validateBackfill`). */
export interface IBackfillFormValues {
  /** `YYYY-MM-DDTHH:MM` (a datetime-local input), in the schedule's time zone. */
  start: string;
  end: string;
  interval_type: IntervalType;
  interval_units: string;
  /** A JSON object, or empty for none. */
  variables: string;
}

/** The body of `POST backfills` (backfills.yaml `BackfillCreate`). */
export interface IBackfillCreateBody {
  backfill: {
    pipeline_schedule_id: number;
    start_datetime: string;
    end_datetime: string;
    interval_type: IntervalType;
    interval_units: number;
    variables?: Record<string, unknown>;
  };
}

/** One problem with one field, named as the server names it (`start_datetime`, `variables`). */
export interface IFieldError {
  field: string;
  message: string;
  fix: string;
}

/** Thrown by `backfillBody` (and so `startBackfill`) before any request when the form is wrong. */
export class BackfillFormError extends Error {
  constructor(readonly errors: IFieldError[]) {
    super(errors.map(e => `${e.message} (field: ${e.field}) — fix: ${e.fix}`).join('; '));
    this.name = 'BackfillFormError';
  }
}

/** The form input (`name=`) that shows an error of a server field, or null for the form itself. */
export function inputForField(field: string | null | undefined): keyof IBackfillFormValues | null {
  if (!field) {
    return null;
  }
  // The server may name the envelope (`backfill.start_datetime`) or a key inside a value
  // (`variables.x`); the first segment after the envelope says which input it is about.
  const path = field.replace(/^backfill\./, '');
  const head = path.split(/[.[]/)[0];
  switch (head) {
    case 'start_datetime':
      return 'start';
    case 'end_datetime':
      return 'end';
    case 'interval_type':
      return 'interval_type';
    case 'interval_units':
      return 'interval_units';
    case 'variables':
      return 'variables';
    default:
      return null;
  }
}

// Wall-clock times (time.ts, shared with the schedule form), re-exported for the view.
export { formatWall, parseWall, safeTimeZone, wallInZone, wallToIso, wallToMs } from './time';

// ---------------------------------------------------------------------------------------------
// The form

/** The interval type a schedule's preset suggests (`@hourly` → hour); day otherwise. */
export function suggestedIntervalType(schedule: IPipelineSchedule): IntervalType {
  switch (schedule.schedule_interval) {
    case '@hourly':
      return 'hour';
    case '@weekly':
      return 'week';
    case '@monthly':
      return 'month';
    case '@yearly':
    case '@annually':
      return 'year';
    default:
      return 'day';
  }
}

/**
 * The form's first values: the three whole days before today (in the schedule's time zone),
 * one run a day — `start` is midnight three days ago, `end` midnight yesterday (inclusive), so
 * three runs. An `@hourly` schedule gets hourly steps over the same days.
 */
export function defaultBackfillValues(schedule: IPipelineSchedule, now: Date): IBackfillFormValues {
  const today = wallInZone(now.getTime(), scheduleTimezone(schedule));
  const midnight: IWall = { ...today, hour: 0, minute: 0, second: 0 };
  const kind = suggestedIntervalType(schedule);
  const start = addDays(midnight, -3);
  const end = kind === 'hour' ? { ...addDays(midnight, -1), hour: 23 } : addDays(midnight, -1);
  return {
    start: formatWall(start),
    end: formatWall(end),
    interval_type: kind === 'hour' ? 'hour' : 'day',
    interval_units: '1',
    variables: ''
  };
}

function parseUnits(text: string): number | null {
  const trimmed = text.trim();
  return /^\d+$/.test(trimmed) ? Number(trimmed) : null;
}

/** The form's problems (empty when it can be sent), each naming the server's field. */
export function validateBackfill(
  values: IBackfillFormValues,
  schedule: IPipelineSchedule
): IFieldError[] {
  const zone = safeTimeZone(scheduleTimezone(schedule));
  const errors: IFieldError[] = [];
  const times: Record<'start' | 'end', number> = { start: NaN, end: NaN };
  for (const [key, field] of [
    ['start', 'start_datetime'],
    ['end', 'end_datetime']
  ] as const) {
    const text = values[key].trim();
    if (!text) {
      errors.push({
        field,
        message: `${key === 'start' ? 'Start' : 'End'} is required`,
        fix: `Pick a date and time (in ${zone}), e.g. 2024-01-01T00:00.`
      });
      continue;
    }
    times[key] = wallToMs(text, zone);
    if (isNaN(times[key])) {
      errors.push({
        field,
        message: `${JSON.stringify(text)} is not a date and time`,
        fix: 'Use the form YYYY-MM-DDTHH:MM, e.g. 2024-01-01T00:00.'
      });
    }
  }
  if (!isNaN(times.start) && !isNaN(times.end) && times.end < times.start) {
    errors.push({
      field: 'end_datetime',
      message: 'End is before start',
      fix: 'Give an end at or after the start; the range is inclusive.'
    });
  }
  if (!INTERVAL_TYPES.includes(values.interval_type)) {
    errors.push({
      field: 'interval_type',
      message: `Unknown interval type ${JSON.stringify(values.interval_type)}`,
      fix: `Use one of ${INTERVAL_TYPES.join(', ')}.`
    });
  }
  const units = parseUnits(values.interval_units);
  if (units === null || units < 1 || units > MAX_INTERVAL_UNITS) {
    errors.push({
      field: 'interval_units',
      message:
        units !== null && units > MAX_INTERVAL_UNITS
          ? `Above the maximum of ${MAX_INTERVAL_UNITS} steps`
          : 'The step must be a whole number of at least 1',
      fix: `Use a whole number from 1 to ${MAX_INTERVAL_UNITS}, e.g. 1 for every ${values.interval_type || 'day'}.`
    });
  }
  try {
    parseJsonObject(values.variables, 'variables');
  } catch (err) {
    if (!(err instanceof FieldError)) {
      throw err;
    }
    errors.push({ field: err.field, message: err.message, fix: err.fix });
  }
  return errors;
}

/**
 * The body of `POST backfills` for the schedule; throws a BackfillFormError listing every
 * problem when the form is wrong. Variables are sent only when some are given (the schedule's
 * own apply anyway).
 */
export function backfillBody(
  values: IBackfillFormValues,
  schedule: IPipelineSchedule
): IBackfillCreateBody {
  const errors = validateBackfill(values, schedule);
  if (errors.length) {
    throw new BackfillFormError(errors);
  }
  const zone = safeTimeZone(scheduleTimezone(schedule));
  const body: IBackfillCreateBody['backfill'] = {
    pipeline_schedule_id: schedule.id,
    start_datetime: wallToIso(values.start, zone) as string,
    end_datetime: wallToIso(values.end, zone) as string,
    interval_type: values.interval_type,
    interval_units: parseUnits(values.interval_units) as number
  };
  const variables = parseJsonObject(values.variables, 'variables');
  if (variables && Object.keys(variables).length) {
    body.variables = variables;
  }
  return { backfill: body };
}

// ---------------------------------------------------------------------------------------------
// REST

/**
 * `POST backfills` with `"status": "running"`: the server creates the backfill and its runs
 * in one transaction, so a failure leaves nothing behind (never a backfill created but not
 * started) and trying again is safe. Throws BackfillFormError before any request when the form
 * is wrong, else the server's ApiError.
 */
export async function startBackfill(
  api: ApiClient,
  values: IBackfillFormValues,
  schedule: IPipelineSchedule
): Promise<IBackfill> {
  const body = backfillBody(values, schedule);
  const answer = await api.json<{ backfill: IBackfill }>(
    'POST',
    'backfills',
    {},
    { backfill: { ...body.backfill, status: 'running' } }
  );
  return answer.backfill;
}

/** `GET backfills/{id}`. */
export async function getBackfill(api: ApiClient, id: number): Promise<IBackfill> {
  const answer = await api.json<{ backfill: IBackfill }>('GET', `backfills/${id}`);
  return answer.backfill;
}

/** `PUT backfills/{id}` `{"status": "cancelled"}`: the backfill and its unfinished runs. */
export function cancelBackfill(api: ApiClient, id: number): Promise<IBackfill> {
  return setBackfillStatus(api, id, 'cancelled');
}

async function setBackfillStatus(
  api: ApiClient,
  id: number,
  status: 'cancelled'
): Promise<IBackfill> {
  const answer = await api.json<{ backfill: IBackfill }>(
    'PUT',
    `backfills/${id}`,
    {},
    { backfill: { status } }
  );
  return answer.backfill;
}

/**
 * The server's field errors as the form's (an ApiError without a field is the form's own).
 * The message is the server's without the fix it ends with (`errorTexts`): the fix is shown
 * once, on its own.
 */
export function fieldErrorsOf(err: unknown): IFieldError[] | null {
  if (err instanceof BackfillFormError) {
    return err.errors;
  }
  if (err instanceof ApiError && err.field && inputForField(err.field)) {
    const { message, fix } = errorTexts(err);
    return [{ field: err.field, message, fix: fix ?? '' }];
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// Progress

const FINISHED: readonly string[] = ['completed', 'failed', 'cancelled'];

function count(value: unknown): number {
  return typeof value === 'number' && isFinite(value) && value > 0 ? value : 0;
}

/** Runs that have ended (completed, failed or cancelled). */
export function finishedRuns(backfill: IBackfill): number {
  const p = backfill.progress;
  return count(p?.completed) + count(p?.failed) + count(p?.cancelled);
}

/**
 * `3 of 5 runs done · 1 failed · 1 running`: done is completed (the server's `progress.done`),
 * then the runs that failed, were cancelled or are running, when there are any.
 */
export function progressText(backfill: IBackfill): string {
  const p = backfill.progress;
  const total = count(p?.total);
  if (total === 0) {
    return backfill.status === 'initial' ? 'no runs yet' : '0 runs';
  }
  const done = count(p?.done ?? p?.completed);
  const parts = [`${done} of ${total} run${total === 1 ? '' : 's'} done`];
  for (const key of ['failed', 'cancelled', 'running'] as const) {
    const n = count(p?.[key]);
    if (n) {
      parts.push(`${n} ${key}`);
    }
  }
  return parts.join(' · ');
}

/** The part of the runs that have ended, 0..1 (1 for a finished backfill without runs). */
export function progressFraction(backfill: IBackfill): number {
  const total = count(backfill.progress?.total);
  if (total === 0) {
    return isBackfillFinished(backfill) ? 1 : 0;
  }
  return Math.min(1, finishedRuns(backfill) / total);
}

/** Completed, failed or cancelled: nothing more will change. */
export function isBackfillFinished(backfill: IBackfill): boolean {
  return FINISHED.includes(backfill.status);
}

/** `completed · 3 of 3 runs done`: the status, then the progress. */
export function statusText(backfill: IBackfill): string {
  return `${backfill.status} · ${progressText(backfill)}`;
}

// ---------------------------------------------------------------------------------------------
// Watching

export interface IBackfillWatcherOptions {
  /** Each backfill read (also when nothing changed). */
  onProgress(backfill: IBackfill): void;
  /** Once, with the backfill that has ended; the watcher has stopped. */
  onFinished?(backfill: IBackfill): void;
  /** A read that failed; the watcher keeps trying, backing off. */
  onError?(err: unknown): void;
  timer?: ITimer;
  backoff?: IBackoffOptions;
}

/**
 * Fast while its runs move, backing off (to 15 s) while nothing changes — a long run
 * still shows its end within seconds, an idle tab does not hammer the server.
 */
export const BACKFILL_BACKOFF: IBackoffOptions = {
  ...DEFAULT_BACKOFF,
  activeMs: 1000,
  idleMs: 2000,
  idleFactor: 1.5,
  maxMs: 15000
};

function progressKey(backfill: IBackfill): string {
  return JSON.stringify([backfill.status, backfill.progress]);
}

/** Follows `GET backfills/{id}` until the backfill has ended or `stop()` is called. */
export class BackfillWatcher {
  private readonly poller: Poller;
  private last = '';
  private done = false;

  constructor(
    private readonly api: ApiClient,
    readonly backfillId: number,
    private readonly options: IBackfillWatcherOptions
  ) {
    this.poller = new Poller(() => this.poll(), options.backoff ?? BACKFILL_BACKOFF, options.timer);
  }

  /** True once stopped or finished. */
  get isStopped(): boolean {
    return this.poller.isStopped;
  }

  /** True once the backfill was seen to end. */
  get isFinished(): boolean {
    return this.done;
  }

  /** Start polling; the first read after `initialMs`. */
  start(initialMs = 0): void {
    if (!this.done) {
      this.poller.start(initialMs);
    }
  }

  /** Read again now (after the user cancelled, say). */
  now(): void {
    this.poller.now();
  }

  stop(): void {
    this.poller.stop();
  }

  /**
   * Take a backfill read elsewhere (the answer of start or cancel) as if polled: reports it,
   * and stops when it has ended.
   */
  update(backfill: IBackfill): boolean {
    if (this.done || this.poller.isStopped) {
      return false;
    }
    const changed = progressKey(backfill) !== this.last;
    this.last = progressKey(backfill);
    this.options.onProgress(backfill);
    if (isBackfillFinished(backfill)) {
      this.done = true;
      this.poller.stop();
      this.options.onFinished?.(backfill);
    }
    return changed;
  }

  private async poll(): Promise<{ active: boolean; changed: boolean }> {
    let backfill: IBackfill;
    try {
      backfill = await getBackfill(this.api, this.backfillId);
    } catch (err) {
      if (!this.poller.isStopped) {
        this.options.onError?.(err);
      }
      throw err;
    }
    // stop() during the request: the answer is for nobody.
    const changed = this.update(backfill);
    return { active: changed, changed };
  }
}
