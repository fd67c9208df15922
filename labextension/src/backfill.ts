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
import { scheduleTimezone } from './model';
import { DEFAULT_BACKOFF, IBackoffOptions, ITimer, Poller } from './poller';
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

// ---------------------------------------------------------------------------------------------
// Wall-clock times in a time zone (no library: Intl knows the zones' offsets)

interface IWall {
  year: number;
  month: number; // 1..12
  day: number;
  hour: number;
  minute: number;
  second: number;
}

const WALL_RE = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?$/;

/** `YYYY-MM-DDTHH:MM[:SS]` as its parts, or null when it is not that (or not a real date). */
export function parseWall(text: string): IWall | null {
  const m = WALL_RE.exec(text.trim());
  if (!m) {
    return null;
  }
  const wall: IWall = {
    year: Number(m[1]),
    month: Number(m[2]),
    day: Number(m[3]),
    hour: Number(m[4]),
    minute: Number(m[5]),
    second: m[6] ? Number(m[6]) : 0
  };
  // Date.UTC rolls 2024-02-30 over into March; a date that does not round-trip is not real.
  const d = new Date(wallMs(wall));
  if (
    d.getUTCFullYear() !== wall.year ||
    d.getUTCMonth() + 1 !== wall.month ||
    d.getUTCDate() !== wall.day ||
    wall.hour > 23 ||
    wall.minute > 59 ||
    wall.second > 59
  ) {
    return null;
  }
  return wall;
}

function wallMs(wall: IWall): number {
  const d = new Date(0);
  // setUTCFullYear, unlike Date.UTC, does not map years 0..99 onto 1900..1999.
  d.setUTCFullYear(wall.year, wall.month - 1, wall.day);
  d.setUTCHours(wall.hour, wall.minute, wall.second, 0);
  return d.getTime();
}

function wallOf(ms: number): IWall {
  const d = new Date(ms);
  return {
    year: d.getUTCFullYear(),
    month: d.getUTCMonth() + 1,
    day: d.getUTCDate(),
    hour: d.getUTCHours(),
    minute: d.getUTCMinutes(),
    second: d.getUTCSeconds()
  };
}

const formatters = new Map<string, Intl.DateTimeFormat>();

function zoneFormatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit'
    });
    formatters.set(timeZone, f);
  }
  return f;
}

/** A zone Intl knows, else UTC (a schedule's settings may name one this browser lacks). */
export function safeTimeZone(timeZone: string): string {
  try {
    zoneFormatter(timeZone);
    return timeZone;
  } catch {
    return 'UTC';
  }
}

/** The wall-clock time in `timeZone` at the instant `ms`. */
export function wallInZone(ms: number, timeZone: string): IWall {
  const parts: Record<string, number> = {};
  for (const part of zoneFormatter(safeTimeZone(timeZone)).formatToParts(new Date(ms))) {
    if (part.type !== 'literal') {
      parts[part.type] = Number(part.value);
    }
  }
  return {
    year: parts.year,
    month: parts.month,
    day: parts.day,
    hour: parts.hour % 24,
    minute: parts.minute,
    second: parts.second
  };
}

/** Minutes `timeZone` is ahead of UTC at the instant `ms`. */
function offsetMinutes(ms: number, timeZone: string): number {
  const wall = wallMs(wallInZone(ms, timeZone));
  return Math.round((wall - Math.floor(ms / 1000) * 1000) / 60000);
}

function pad(n: number, width = 2): string {
  return String(n).padStart(width, '0');
}

function formatOffset(minutes: number): string {
  const sign = minutes < 0 ? '-' : '+';
  const abs = Math.abs(minutes);
  return `${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
}

/** A wall time as the datetime-local text `YYYY-MM-DDTHH:MM` (seconds only when not 0). */
export function formatWall(wall: IWall): string {
  const base =
    `${pad(wall.year, 4)}-${pad(wall.month)}-${pad(wall.day)}` +
    `T${pad(wall.hour)}:${pad(wall.minute)}`;
  return wall.second ? `${base}:${pad(wall.second)}` : base;
}

/**
 * A wall time in `timeZone` as ISO-8601 with that zone's offset then
 * (`2024-01-01T00:00:00+01:00`); null when the text is not a date-time. A time skipped by a
 * DST change is moved forward by the gap (02:30 on a spring-forward night reads as 03:30); a
 * time that happens twice reads as the later one.
 */
export function wallToIso(text: string, timeZone: string): string | null {
  const wall = parseWall(text);
  if (!wall) {
    return null;
  }
  const zone = safeTimeZone(timeZone);
  const guess = wallMs(wall);
  // The offset at the instant the wall time would be in UTC, then again at the corrected
  // instant: two steps settle every zone (the offset changes at most once nearby).
  let offset = offsetMinutes(guess, zone);
  const second = offsetMinutes(guess - offset * 60000, zone);
  if (second !== offset) {
    offset = second;
  }
  const instant = guess - offset * 60000;
  const shown = wallInZone(instant, zone);
  return `${formatWall(shown).slice(0, 16)}:${pad(shown.second)}${formatOffset(offsetMinutes(instant, zone))}`;
}

/** Milliseconds since the epoch of a wall time in `timeZone`, or NaN. */
export function wallToMs(text: string, timeZone: string): number {
  const iso = wallToIso(text, timeZone);
  return iso === null ? NaN : Date.parse(iso);
}

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

function addDays(wall: IWall, days: number): IWall {
  return wallOf(wallMs(wall) + days * 86400000);
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
  const end =
    kind === 'hour' ? { ...addDays(midnight, -1), hour: 23 } : addDays(midnight, -1);
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
  const text = values.variables.trim();
  if (text) {
    let parsed: unknown;
    let ok = true;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      ok = false;
      errors.push({
        field: 'variables',
        message: `Variables are not valid JSON: ${err instanceof Error ? err.message : String(err)}`,
        fix: 'Write a JSON object, e.g. {"env": "prod"}, or leave it empty.'
      });
    }
    if (ok && (!parsed || typeof parsed !== 'object' || Array.isArray(parsed))) {
      errors.push({
        field: 'variables',
        message: 'Variables must be a JSON object',
        fix: 'Write a JSON object, e.g. {"env": "prod"}, or leave it empty.'
      });
    }
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
  const text = values.variables.trim();
  if (text) {
    const variables = JSON.parse(text) as Record<string, unknown>;
    if (Object.keys(variables).length) {
      body.variables = variables;
    }
  }
  return { backfill: body };
}

// ---------------------------------------------------------------------------------------------
// REST

/** `POST backfills` then `PUT backfills/{id}` `{"status": "running"}`: the started backfill. */
export async function startBackfill(
  api: ApiClient,
  values: IBackfillFormValues,
  schedule: IPipelineSchedule
): Promise<IBackfill> {
  const body = backfillBody(values, schedule);
  const created = await api.json<{ backfill: IBackfill }>('POST', 'backfills', {}, body);
  try {
    return await setBackfillStatus(api, created.backfill.id, 'running');
  } catch (err) {
    throw new BackfillStartError(created.backfill, err);
  }
}

/** The backfill was created but starting it failed: it exists (status initial), unstarted. */
export class BackfillStartError extends Error {
  constructor(
    readonly backfill: IBackfill,
    readonly reason: unknown
  ) {
    super(
      `Backfill ${backfill.id} was created but not started: ` +
        (reason instanceof Error ? reason.message : String(reason))
    );
    this.name = 'BackfillStartError';
  }
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
  status: 'running' | 'cancelled'
): Promise<IBackfill> {
  const answer = await api.json<{ backfill: IBackfill }>(
    'PUT',
    `backfills/${id}`,
    {},
    { backfill: { status } }
  );
  return answer.backfill;
}

/** The server's field errors as the form's (an ApiError without a field is the form's own). */
export function fieldErrorsOf(err: unknown): IFieldError[] | null {
  if (err instanceof BackfillFormError) {
    return err.errors;
  }
  if (err instanceof ApiError && err.field && inputForField(err.field)) {
    return [{ field: err.field, message: err.serverMessage || err.message, fix: err.fix ?? '' }];
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
    this.poller = new Poller(
      () => this.poll(),
      options.backoff ?? BACKFILL_BACKOFF,
      options.timer
    );
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
