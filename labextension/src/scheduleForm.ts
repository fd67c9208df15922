/**
 * The create / edit schedule form's logic, without any DOM: the form's values as typed, the
 * REST body they become, and where a server error belongs in the form.
 *
 * The server is the authority on what a valid schedule is (cron syntax, bounds, time zones,
 * event patterns); this module only parses what must be parsed before a body can be sent at
 * all (JSON text, numbers, the start time). Its own errors use the server's field names
 * (`variables`, `sla`, `settings.timeout` ...), so the view places both kinds in the same spot.
 *
 * Where things live (`mage_nb_sched/handlers/openapi/schedules.yaml`, `PipelineScheduleFields`;
 * `mage_nb_sched/core/settings.py`): `timezone`, `timeout` and `skip_if_previous_running` are
 * keys of `settings`; a PUT of `settings` replaces the whole dict, so an edit sends the
 * schedule's other settings (retries, limits ...) back unchanged beside the edited keys.
 */
import { ApiClient, errorMessage } from './api';
import { FieldError } from './errors';
import { parseJsonObject } from './json';
import { instantOfWall, isKnownTimeZone, isoUtc, localDateTimeText, parseWall } from './time';
import type { IPipelineSchedule, ScheduleStatus, ScheduleType } from './types';

/** The named intervals (`ScheduleInterval`); anything else is a cron expression. */
export const INTERVAL_PRESETS = [
  '@once',
  '@hourly',
  '@daily',
  '@weekly',
  '@monthly',
  '@always_on'
] as const;
export type IntervalPreset = (typeof INTERVAL_PRESETS)[number];
/** The interval select's value: a preset, or `custom` (the cron text field then applies). */
export type IntervalChoice = IntervalPreset | 'custom';

/** The server's defaults of the settings the form edits (core/settings.py `SETTINGS`). */
export const SETTING_DEFAULTS = {
  timezone: 'UTC',
  timeout: null,
  skip_if_previous_running: false
} as const;

/** The form's values as typed: text for everything that is text in an input. */
export interface IScheduleFormValues {
  name: string;
  schedule_type: ScheduleType;
  schedule_interval: IntervalChoice;
  /** The cron expression, used when `schedule_interval` is `custom`. */
  cron: string;
  /** `YYYY-MM-DDTHH:MM[:SS]` (a datetime-local input), wall time in `timezone`; '' = none. */
  start_time: string;
  /** IANA zone name (`settings.timezone`). */
  timezone: string;
  /** A JSON object, or '' for none. */
  variables: string;
  /** Seconds, or '' for none. */
  sla: string;
  /** Seconds (`settings.timeout`), or '' for none. */
  timeout: string;
  /** `settings.skip_if_previous_running`. */
  skip_if_previous_running: boolean;
  description: string;
  /** A JSON array of `{name?, event_type?, pattern}` (event schedules only). */
  event_matchers: string;
  status: ScheduleStatus;
  /** API schedules only: your own token; '' keeps the current one (or generates one). */
  token: string;
}

/** A key of the form (the `name` attribute of its input). */
export type FormField = keyof IScheduleFormValues;

export const FORM_FIELDS: readonly FormField[] = [
  'name',
  'schedule_type',
  'schedule_interval',
  'cron',
  'start_time',
  'timezone',
  'status',
  'variables',
  'sla',
  'timeout',
  'skip_if_previous_running',
  'description',
  'event_matchers',
  'token'
];

export type FormMode = 'create' | 'edit';

export interface IFormContext {
  mode: FormMode;
  /** The notebook's pipeline uuid (sent on create). */
  pipelineUuid: string;
  /** The schedule being edited (required in edit mode). */
  original?: IPipelineSchedule;
}

/** The fields under `pipeline_schedule` (only writable ones, see `PipelineScheduleFields`). */
export type ScheduleChanges = Record<string, unknown>;

/** The REST body of `POST pipeline_schedules` / `PUT pipeline_schedules/{id}`. */
export interface IScheduleBody {
  pipeline_schedule: ScheduleChanges;
}

export interface ISaveResult {
  schedule: IPipelineSchedule;
  /** The clear API token, when the server answered one (create, or a new token set). */
  token: string | null;
  /**
   * False when an edit had nothing to save (no request was made; `schedule` is the original),
   * so the host can say "No changes to save." rather than "saved". Always true on create.
   */
  changed: boolean;
}

// The shared pieces, re-exported: the view and the tests have always taken them from here.
export { FieldError, errorTexts } from './errors';
export { browserTimezone, knownTimezones, localDateTimeText } from './time';

const START_FIX = "Pick a date and time, e.g. 2024-01-01T09:00 (in the schedule's time zone).";

/**
 * Datetime-local text, read as wall time in `timeZone`, as the ISO instant the server takes
 * (`2024-01-01T08:00:00+00:00`); null for ''. A time skipped by a DST change moves forward by
 * the gap, one that happens twice is the earlier (time.ts). Throws FieldError (`start_time`,
 * or `settings.timezone` when the zone is unknown).
 */
export function parseLocalDateTime(text: string, timeZone: string): string | null {
  const trimmed = text.trim();
  if (!trimmed) {
    return null;
  }
  const wall = parseWall(trimmed);
  if (!wall) {
    const looksLikeOne = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}/.test(trimmed);
    throw new FieldError(
      'start_time',
      looksLikeOne
        ? `"${trimmed}" is not a valid date and time`
        : `"${trimmed}" is not a date and time`,
      START_FIX
    );
  }
  if (!isKnownTimeZone(timeZone)) {
    throw new FieldError(
      'settings.timezone',
      `"${timeZone}" is not a time zone this browser knows`,
      "Use an IANA name such as 'UTC', 'America/New_York' or 'Europe/Berlin'."
    );
  }
  return isoUtc(instantOfWall(wall, timeZone));
}

// ---------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------

function isPreset(value: string | null | undefined): value is IntervalPreset {
  return (INTERVAL_PRESETS as readonly string[]).includes(value ?? '');
}

function settingsOf(schedule: IPipelineSchedule | undefined): Record<string, unknown> {
  const settings = schedule?.settings;
  return settings && typeof settings === 'object' && !Array.isArray(settings) ? settings : {};
}

interface IMatcher {
  name?: unknown;
  event_type?: unknown;
  pattern?: unknown;
  [key: string]: unknown;
}

/** Matchers as the form shows and compares them: no `id`, no null name, the default type. */
function normalMatchers(list: unknown): unknown[] {
  if (!Array.isArray(list)) {
    return [];
  }
  return list.map(item => {
    if (!item || typeof item !== 'object' || Array.isArray(item)) {
      return item;
    }
    const { id: _id, ...rest } = item as IMatcher;
    void _id;
    const out: IMatcher = {};
    if (rest.name !== null && rest.name !== undefined) {
      out.name = rest.name;
    }
    out.event_type = rest.event_type ?? 'aws_event';
    for (const [key, value] of Object.entries(rest)) {
      if (key !== 'name' && key !== 'event_type') {
        out[key] = value;
      }
    }
    return out;
  });
}

function jsonText(value: unknown): string {
  return value === null || value === undefined ? '' : JSON.stringify(value, null, 2);
}

function numberText(value: unknown): string {
  return typeof value === 'number' && isFinite(value) ? String(value) : '';
}

/** The form's values for editing `schedule`. */
export function valuesFromSchedule(schedule: IPipelineSchedule): IScheduleFormValues {
  const settings = settingsOf(schedule);
  const timezone =
    typeof settings.timezone === 'string' && settings.timezone
      ? settings.timezone
      : SETTING_DEFAULTS.timezone;
  const interval = schedule.schedule_interval;
  const matchers = normalMatchers(schedule.event_matchers);
  return {
    name: schedule.name ?? '',
    schedule_type: schedule.schedule_type ?? 'time',
    // No interval (event/API schedules): the select, hidden, keeps a sensible choice.
    schedule_interval: !interval ? '@daily' : isPreset(interval) ? interval : 'custom',
    cron: interval && !isPreset(interval) ? interval : '',
    start_time: localDateTimeText(schedule.start_time, timezone),
    timezone,
    variables: jsonText(schedule.variables),
    sla: numberText(schedule.sla),
    timeout: numberText(settings.timeout),
    skip_if_previous_running: settings.skip_if_previous_running === true,
    description: schedule.description ?? '',
    event_matchers: matchers.length ? jsonText(matchers) : '',
    status: schedule.status ?? 'inactive',
    token: ''
  };
}

/** The last part of a pipeline uuid (`etl/daily_sales` → `daily_sales`). */
export function notebookBaseName(pipelineUuid: string): string {
  const parts = pipelineUuid.split('/').filter(part => part);
  return parts.length ? parts[parts.length - 1] : pipelineUuid;
}

/**
 * The form's values for a new schedule of `pipelineUuid`: a daily time schedule in
 * `timezone` (the browser's, passed in; 'UTC' when none), created inactive as the server and
 * Mage do, named `<notebook> daily`.
 */
export function defaultValues(pipelineUuid: string, timezone?: string | null): IScheduleFormValues {
  return {
    name: `${notebookBaseName(pipelineUuid)} daily`,
    schedule_type: 'time',
    schedule_interval: '@daily',
    cron: '',
    start_time: '',
    timezone: timezone || SETTING_DEFAULTS.timezone,
    variables: '',
    sla: '',
    timeout: '',
    skip_if_previous_running: false,
    description: '',
    event_matchers: '',
    status: 'inactive',
    token: ''
  };
}

/** Which fields the form shows for these values (the others do not apply to the type). */
export function visibleFields(values: IScheduleFormValues): Set<FormField> {
  const shown = new Set<FormField>(FORM_FIELDS);
  if (values.schedule_type !== 'time') {
    shown.delete('schedule_interval');
  }
  if (values.schedule_type !== 'time' || values.schedule_interval !== 'custom') {
    shown.delete('cron');
  }
  if (values.schedule_type !== 'event') {
    shown.delete('event_matchers');
  }
  if (values.schedule_type !== 'api') {
    shown.delete('token');
  }
  return shown;
}

// ---------------------------------------------------------------------------------------------
// Parsing (local errors) and the body
// ---------------------------------------------------------------------------------------------

function parseJson(text: string, field: string, fix: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new FieldError(field, `not valid JSON: ${errorMessage(err)}`, fix);
  }
}

function parseMatchersText(text: string): unknown[] {
  const trimmed = text.trim();
  if (!trimmed) {
    return [];
  }
  const fix =
    'Use a JSON list, e.g. [{"event_type": "aws_event", "pattern": {"source": ["aws.s3"], ' +
    '"detail-type": ["Object Created"]}}].';
  const value = parseJson(trimmed, 'event_matchers', fix);
  if (!Array.isArray(value)) {
    throw new FieldError('event_matchers', 'must be a JSON list of event matchers', fix);
  }
  return value;
}

/** Seconds text as a number ('' → null); bounds and wholeness are the server's to judge. */
function parseSeconds(text: string, field: string, example: number): number | null {
  const trimmed = text.trim();
  if (!trimmed) {
    return null;
  }
  const value = Number(trimmed);
  if (!isFinite(value)) {
    throw new FieldError(
      field,
      `"${trimmed}" is not a number of seconds`,
      `Give a whole number of seconds, e.g. ${example}, or leave it empty.`
    );
  }
  return value;
}

/** Every value in the form that cannot be sent as typed (empty when all can). */
export function localErrors(values: IScheduleFormValues): FieldError[] {
  const errors: FieldError[] = [];
  const attempt = (fn: () => unknown): void => {
    try {
      fn();
    } catch (err) {
      if (err instanceof FieldError) {
        errors.push(err);
      } else {
        throw err;
      }
    }
  };
  attempt(() => parseJsonObject(values.variables, 'variables'));
  attempt(() => parseSeconds(values.sla, 'sla', 3600));
  attempt(() => parseSeconds(values.timeout, 'settings.timeout', 1800));
  attempt(() =>
    parseLocalDateTime(values.start_time, values.timezone.trim() || SETTING_DEFAULTS.timezone)
  );
  if (values.schedule_type === 'event') {
    attempt(() => parseMatchersText(values.event_matchers));
  }
  return errors;
}

/** JSON with object keys sorted, so equal values compare equal whatever the key order. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) {
    return `[${value.map(canonical).join(',')}]`;
  }
  if (value && typeof value === 'object') {
    const entries = Object.keys(value as object)
      .sort()
      .map(key => `${JSON.stringify(key)}:${canonical((value as Record<string, unknown>)[key])}`);
    return `{${entries.join(',')}}`;
  }
  return JSON.stringify(value ?? null);
}

function same(a: unknown, b: unknown): boolean {
  return canonical(a) === canonical(b);
}

/**
 * The settings to save: the original's (kept, since a PUT replaces the dict) with the form's
 * three keys; a key is written only when it differs from the default or was there already,
 * so an untouched schedule's settings stay as they were.
 */
function settingsFromValues(
  values: IScheduleFormValues,
  original: Record<string, unknown>
): Record<string, unknown> {
  const settings: Record<string, unknown> = { ...original };
  const put = (key: string, value: unknown, fallback: unknown) => {
    if (!same(value, fallback) || key in original) {
      settings[key] = value;
    }
  };
  put('timezone', values.timezone.trim() || SETTING_DEFAULTS.timezone, SETTING_DEFAULTS.timezone);
  const timeout = parseSeconds(values.timeout, 'settings.timeout', 1800);
  if (timeout === null) {
    // No timeout is the default; leaving the key out says so.
    delete settings.timeout;
  } else {
    settings.timeout = timeout;
  }
  put(
    'skip_if_previous_running',
    values.skip_if_previous_running,
    SETTING_DEFAULTS.skip_if_previous_running
  );
  return settings;
}

/**
 * The REST body for the form's values. Create: every field given (empty optional ones left
 * out) with `pipeline_uuid`. Edit: only the fields that differ from `original`, so a PUT never
 * carries read-only fields nor rewrites what was not touched (an empty `pipeline_schedule`
 * means nothing changed). Throws FieldError for a value that cannot be sent as typed.
 */
export function bodyFromValues(values: IScheduleFormValues, ctx: IFormContext): IScheduleBody {
  const original = ctx.mode === 'edit' ? ctx.original : undefined;
  if (ctx.mode === 'edit' && !original) {
    throw new Error('Editing needs the original schedule.');
  }
  const type = values.schedule_type;
  const timezone = values.timezone.trim() || SETTING_DEFAULTS.timezone;
  const desired: ScheduleChanges = {
    name: values.name.trim(),
    schedule_type: type,
    status: values.status,
    description: values.description === '' ? null : values.description,
    variables: parseJsonObject(values.variables, 'variables'),
    sla: parseSeconds(values.sla, 'sla', 3600),
    settings: settingsFromValues(values, settingsOf(original))
  };
  if (type === 'time') {
    desired.schedule_interval =
      values.schedule_interval === 'custom' ? values.cron.trim() : values.schedule_interval;
  } else if (original && original.schedule_type === 'time') {
    // Leaving the time type: the interval no longer applies.
    desired.schedule_interval = null;
  }
  if (type === 'event') {
    desired.event_matchers = parseMatchersText(values.event_matchers);
  }
  if (type === 'api' && values.token.trim()) {
    desired.token = values.token.trim();
  }

  const startText = values.start_time.trim();
  if (!original) {
    desired.start_time = parseLocalDateTime(startText, timezone);
    const body: ScheduleChanges = { name: desired.name, pipeline_uuid: ctx.pipelineUuid };
    for (const [key, value] of Object.entries(desired)) {
      const empty =
        value === null ||
        value === '' ||
        (Array.isArray(value) && value.length === 0) ||
        (key === 'settings' && Object.keys(value as object).length === 0);
      // A time schedule's interval is sent even when empty: the server says what to fix.
      if (!empty || (key === 'schedule_interval' && type === 'time')) {
        body[key] = value;
      }
    }
    return { pipeline_schedule: body };
  }

  // Unchanged when the text is what the original reads as in the chosen zone: comparing text,
  // not instants, keeps a wall time in a DST overlap from looking changed.
  if (startText !== localDateTimeText(original.start_time, timezone)) {
    desired.start_time = parseLocalDateTime(startText, timezone);
  }
  const before: Record<string, unknown> = {
    name: original.name,
    schedule_type: original.schedule_type,
    status: original.status,
    description: original.description === '' ? null : (original.description ?? null),
    variables: original.variables ?? null,
    sla: original.sla ?? null,
    settings: settingsOf(original),
    schedule_interval: original.schedule_interval ?? null,
    event_matchers: normalMatchers(original.event_matchers),
    start_time: original.start_time ?? null
  };
  const changes: ScheduleChanges = {};
  for (const [key, value] of Object.entries(desired)) {
    const now = key === 'event_matchers' ? normalMatchers(value) : value;
    // A token is never answered, so one typed in is always a change.
    if (key === 'token' || !same(now, before[key])) {
      changes[key] = value;
    }
  }
  return { pipeline_schedule: changes };
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

const SETTING_FIELDS: Record<string, FormField> = {
  timezone: 'timezone',
  timeout: 'timeout',
  skip_if_previous_running: 'skip_if_previous_running'
};

const TOP_FIELDS: ReadonlySet<string> = new Set<FormField>([
  'name',
  'schedule_type',
  'schedule_interval',
  'start_time',
  'status',
  'variables',
  'sla',
  'description',
  'event_matchers',
  'token'
]);

/**
 * The form field an error's `field` belongs to: `pipeline_schedule.` is dropped,
 * `settings.timezone` → `timezone`, `variables.x` → `variables`,
 * `event_matchers[0].pattern…` → `event_matchers`; `schedule_interval` → `cron` when the form
 * is on a custom cron (given `values`). Null: no input of its own (a form-level error).
 */
export function fieldOfError(
  error: { field: string | null },
  values?: Pick<IScheduleFormValues, 'schedule_interval'>
): FormField | null {
  let path = error.field;
  if (!path) {
    return null;
  }
  if (path.startsWith('pipeline_schedule.')) {
    path = path.slice('pipeline_schedule.'.length);
  }
  const head = /^[^.[]*/.exec(path)?.[0] ?? '';
  if (head === 'settings') {
    const key = /^settings\.([^.[]+)/.exec(path)?.[1];
    return (key && SETTING_FIELDS[key]) || null;
  }
  if (!TOP_FIELDS.has(head)) {
    return null;
  }
  if (head === 'schedule_interval' && values?.schedule_interval === 'custom') {
    return 'cron';
  }
  return head as FormField;
}

// ---------------------------------------------------------------------------------------------
// Saving
// ---------------------------------------------------------------------------------------------

function tokenOf(schedule: IPipelineSchedule | undefined): string | null {
  const token = schedule?.token;
  return typeof token === 'string' && token ? token : null;
}

/**
 * Save the form: `POST pipeline_schedules` (create) or `PUT pipeline_schedules/{id}` (edit;
 * no request when nothing changed, answering the original with `changed: false`). The token is the clear one the
 * server answers once (create, or a token set), else null. Throws FieldError before any
 * request for a value that cannot be sent, and the server's ApiError unchanged.
 */
export async function saveSchedule(
  api: ApiClient,
  values: IScheduleFormValues,
  ctx: IFormContext
): Promise<ISaveResult> {
  const body = bodyFromValues(values, ctx);
  let answer: { pipeline_schedule: IPipelineSchedule };
  if (ctx.mode === 'create') {
    answer = await api.json('POST', 'pipeline_schedules', {}, body);
  } else {
    const original = ctx.original as IPipelineSchedule;
    if (!Object.keys(body.pipeline_schedule).length) {
      return { schedule: original, token: null, changed: false };
    }
    answer = await api.json('PUT', `pipeline_schedules/${original.id}`, {}, body);
  }
  const schedule = answer.pipeline_schedule;
  return { schedule, token: tokenOf(schedule), changed: true };
}
