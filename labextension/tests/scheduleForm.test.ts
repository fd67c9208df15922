import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ApiClient, ApiError } from '../src/api';
import {
  FieldError,
  IScheduleFormValues,
  bodyFromValues,
  defaultValues,
  errorTexts,
  fieldOfError,
  localErrors,
  parseLocalDateTime,
  saveSchedule,
  valuesFromSchedule,
  visibleFields
} from '../src/scheduleForm';
import { stripFix } from '../src/errors';
import { escapeAction, formChanged } from '../src/formParts';
import { BASE, FakeServer, apiError, json, schedule } from './fake';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The keys of a YAML mapping that starts after `marker`, at the indentation of its first key. */
function yamlKeysAfter(text: string, marker: string): string[] {
  const lines = text.split('\n');
  const start = lines.findIndex(line => line.includes(marker));
  expect(start, `"${marker}" in the yaml`).toBeGreaterThanOrEqual(0);
  const indent = /^ */.exec(lines[start + 1])![0].length;
  const keys: string[] = [];
  for (const line of lines.slice(start + 1)) {
    const own = /^ */.exec(line)![0].length;
    if (line.trim() && own < indent) {
      break;
    }
    const match = new RegExp(`^ {${indent}}([A-Za-z_]+):`).exec(line);
    if (match) {
      keys.push(match[1]);
    }
  }
  return keys;
}

const yaml = readFileSync(join(repo, 'mage_nb_sched/handlers/openapi/schedules.yaml'), 'utf8');
/** `PipelineScheduleFields`: what a create may send. */
const WRITABLE = yamlKeysAfter(yaml, 'properties: &scheduleWritableFields');
/** `PipelineScheduleCreateBody`: the envelope's keys. */
const CREATE_BODY_KEYS = yamlKeysAfter(
  yaml.slice(yaml.indexOf('PipelineScheduleCreateBody:')),
  'properties:'
);
/** Every key `settings` may hold (core/settings.py `SETTINGS`). */
const SETTING_KEYS = [
  ...readFileSync(join(repo, 'mage_nb_sched/core/settings.py'), 'utf8').matchAll(
    /Setting\(\s*"([a-z_]+)"/g
  )
].map(m => m[1]);

function client(server: FakeServer): ApiClient {
  return new ApiClient(BASE, server.request);
}

/** A schedule using every field the form edits, with settings the form does not show. */
function fullSchedule(overrides: Record<string, unknown> = {}) {
  return schedule({
    id: 7,
    name: 'nightly load',
    schedule_interval: '30 2 * * 1-5',
    start_time: '2024-03-01T08:15:00+00:00',
    variables: { env: 'prod', n: 3 },
    sla: 3600,
    settings: {
      timezone: 'Europe/Berlin',
      timeout: 900,
      retries: 2,
      skip_if_previous_running: true
    },
    description: 'Loads the nightly data',
    ...overrides
  });
}

const editOf = (original: any) => ({ mode: 'edit' as const, pipelineUuid: 'etl/daily', original });

describe('the yaml and settings the tests check against', () => {
  it('were read (so the shape checks below are not vacuous)', () => {
    expect(WRITABLE).toEqual(
      expect.arrayContaining(['name', 'pipeline_uuid', 'settings', 'token'])
    );
    expect(WRITABLE).not.toContain('id');
    expect(CREATE_BODY_KEYS).toContain('pipeline_schedule');
    expect(SETTING_KEYS).toEqual(
      expect.arrayContaining(['timezone', 'timeout', 'skip_if_previous_running'])
    );
  });
});

describe('valuesFromSchedule → bodyFromValues', () => {
  const cases: [string, any][] = [
    ['a daily time schedule without settings', schedule({ id: 1 })],
    ['a cron schedule with zone, start time and other settings', fullSchedule()],
    [
      'an event schedule with matchers',
      schedule({
        id: 2,
        schedule_type: 'event',
        schedule_interval: null,
        event_matchers: [
          { id: 5, name: null, event_type: 'aws_event', pattern: { source: ['aws.s3'] } },
          {
            id: 6,
            name: 'big',
            event_type: 'aws_event',
            pattern: { detail: { size: [{ numeric: ['>', 1] }] } }
          }
        ]
      })
    ],
    [
      'an API schedule',
      schedule({ id: 3, schedule_type: 'api', schedule_interval: null, token_hint: 'abcd' })
    ],
    [
      'empty variables and description',
      schedule({ id: 4, variables: {}, description: '', settings: {} })
    ],
    [
      'a start time at seconds precision in New York',
      schedule({
        id: 8,
        start_time: '2025-11-02T05:30:07+00:00',
        settings: { timezone: 'America/New_York' }
      })
    ],
    [
      // 01:30 EST, the second 01:30 of that night: as wall time it reads like the first.
      'a start time in the repeated hour of a DST change',
      schedule({
        id: 9,
        start_time: '2025-11-02T06:30:00+00:00',
        settings: { timezone: 'America/New_York' }
      })
    ]
  ];
  it.each(cases)('changes nothing for %s', (_name, original) => {
    const values = valuesFromSchedule(original);
    expect(bodyFromValues(values, editOf(original))).toEqual({ pipeline_schedule: {} });
  });

  it('shows presets, cron text, the zone and its wall time', () => {
    const values = valuesFromSchedule(fullSchedule());
    expect(values.schedule_interval).toBe('custom');
    expect(values.cron).toBe('30 2 * * 1-5');
    expect(values.timezone).toBe('Europe/Berlin');
    // 08:15 UTC on 1 March is 09:15 in Berlin (CET, +01:00).
    expect(values.start_time).toBe('2024-03-01T09:15');
    expect(values.timeout).toBe('900');
    expect(values.skip_if_previous_running).toBe(true);
    expect(JSON.parse(values.variables)).toEqual({ env: 'prod', n: 3 });
    expect(valuesFromSchedule(schedule({ schedule_interval: '@hourly' })).schedule_interval).toBe(
      '@hourly'
    );
    expect(valuesFromSchedule(schedule({ settings: null })).timezone).toBe('UTC');
  });

  it('shows event matchers without their ids', () => {
    const values = valuesFromSchedule(
      schedule({
        schedule_type: 'event',
        event_matchers: [{ id: 9, name: 'm', event_type: 'aws_event', pattern: { a: [1] } }]
      })
    );
    expect(JSON.parse(values.event_matchers)).toEqual([
      { name: 'm', event_type: 'aws_event', pattern: { a: [1] } }
    ]);
  });
});

describe('an edit sends only what changed', () => {
  const original = fullSchedule();
  const edit = (change: Partial<IScheduleFormValues>, from: any = original) =>
    bodyFromValues({ ...valuesFromSchedule(from), ...change }, editOf(from)).pipeline_schedule;

  it('one plain field', () => {
    expect(edit({ sla: '60' })).toEqual({ sla: 60 });
    expect(edit({ name: 'renamed' })).toEqual({ name: 'renamed' });
    expect(edit({ status: 'inactive' })).toEqual({ status: 'inactive' });
    expect(edit({ description: '' })).toEqual({ description: null });
    expect(edit({ variables: '' })).toEqual({ variables: null });
    expect(edit({ cron: '0 9 * * *' })).toEqual({ schedule_interval: '0 9 * * *' });
    expect(edit({ schedule_interval: '@weekly' })).toEqual({ schedule_interval: '@weekly' });
  });

  it('no change for reordered JSON keys or a padded name', () => {
    expect(edit({ variables: '{"n": 3, "env": "prod"}', name: '  nightly load ' })).toEqual({});
  });

  it('a setting: the whole settings dict, the others kept', () => {
    expect(edit({ timeout: '60' })).toEqual({
      settings: {
        timezone: 'Europe/Berlin',
        timeout: 60,
        retries: 2,
        skip_if_previous_running: true
      }
    });
    expect(edit({ timeout: '' })).toEqual({
      settings: { timezone: 'Europe/Berlin', retries: 2, skip_if_previous_running: true }
    });
    expect(edit({ skip_if_previous_running: false }).settings).toMatchObject({
      skip_if_previous_running: false,
      retries: 2
    });
  });

  it('a zone change keeps the typed wall time, so the start instant moves with it', () => {
    const changes = edit({ timezone: 'UTC' });
    expect(changes.settings).toMatchObject({ timezone: 'UTC', retries: 2 });
    // The form showed 09:15 (Berlin); 09:15 in UTC is that instant now.
    expect(changes.start_time).toBe('2024-03-01T09:15:00+00:00');
  });

  it('a start time typed in the schedule zone, as a UTC instant', () => {
    // Berlin is +02:00 in July (CEST).
    expect(edit({ start_time: '2024-07-01T09:00' })).toEqual({
      start_time: '2024-07-01T07:00:00+00:00'
    });
    expect(edit({ start_time: '' })).toEqual({ start_time: null });
  });

  it('leaving the time type clears the interval; a typed token is sent', () => {
    expect(edit({ schedule_type: 'api', token: '  my-own-token-1234567 ' })).toEqual({
      schedule_type: 'api',
      schedule_interval: null,
      token: 'my-own-token-1234567'
    });
    // Not an API schedule: a token left in the (hidden) field is not sent.
    expect(edit({ token: 'my-own-token-1234567' })).toEqual({});
  });

  it('event matchers as a list, when they change', () => {
    const event = schedule({
      schedule_type: 'event',
      schedule_interval: null,
      event_matchers: [{ id: 1, name: null, event_type: 'aws_event', pattern: { a: [1] } }]
    });
    const matchers = [{ pattern: { a: [2] } }];
    expect(edit({ event_matchers: JSON.stringify(matchers) }, event)).toEqual({
      event_matchers: matchers
    });
    // The default event_type and a missing name are no change.
    expect(edit({ event_matchers: '[{"pattern": {"a": [1]}}]' }, event)).toEqual({});
  });

  it('needs the original', () => {
    expect(() => bodyFromValues(defaultValues('x'), { mode: 'edit', pipelineUuid: 'x' })).toThrow();
  });
});

describe('create', () => {
  it('defaults: a daily time schedule named after the notebook, in the given zone', () => {
    const values = defaultValues('etl/sales_report', 'Asia/Tokyo');
    expect(values.name).toBe('sales_report daily');
    expect(values.schedule_type).toBe('time');
    expect(values.schedule_interval).toBe('@daily');
    expect(values.timezone).toBe('Asia/Tokyo');
    expect(defaultValues('etl/sales_report').timezone).toBe('UTC');
    expect(defaultValues('etl/sales_report', '').timezone).toBe('UTC');
  });

  it('sends the writable fields of the yaml only, with pipeline_uuid, empty ones left out', () => {
    const body = bodyFromValues(
      {
        ...defaultValues('etl/daily', 'Europe/Berlin'),
        sla: '120',
        start_time: '2024-01-15T06:00'
      },
      { mode: 'create', pipelineUuid: 'etl/daily' }
    );
    expect(Object.keys(body).every(key => CREATE_BODY_KEYS.includes(key))).toBe(true);
    const fields = body.pipeline_schedule;
    for (const key of Object.keys(fields)) {
      expect(WRITABLE, `field ${key}`).toContain(key);
    }
    for (const key of Object.keys(fields.settings as object)) {
      expect(SETTING_KEYS, `setting ${key}`).toContain(key);
    }
    expect(fields).toEqual({
      name: 'daily daily',
      pipeline_uuid: 'etl/daily',
      schedule_type: 'time',
      status: 'inactive',
      schedule_interval: '@daily',
      sla: 120,
      settings: { timezone: 'Europe/Berlin' },
      // 06:00 in Berlin in January (+01:00).
      start_time: '2024-01-15T05:00:00+00:00'
    });
  });

  it('an API schedule with its own token; an event schedule with matchers and no interval', () => {
    const api = bodyFromValues(
      { ...defaultValues('p', 'UTC'), schedule_type: 'api', token: 'tok-1234567890abcdef' },
      { mode: 'create', pipelineUuid: 'p' }
    ).pipeline_schedule;
    expect(api).toEqual({
      name: 'p daily',
      pipeline_uuid: 'p',
      schedule_type: 'api',
      status: 'inactive',
      token: 'tok-1234567890abcdef'
    });
    const event = bodyFromValues(
      {
        ...defaultValues('p', 'UTC'),
        schedule_type: 'event',
        event_matchers: '[{"pattern": {"x": [1]}}]'
      },
      { mode: 'create', pipelineUuid: 'p' }
    ).pipeline_schedule;
    expect(event.event_matchers).toEqual([{ pattern: { x: [1] } }]);
    expect('schedule_interval' in event).toBe(false);
  });

  it('sends an empty custom cron so the server names what to fix', () => {
    const body = bodyFromValues(
      { ...defaultValues('p', 'UTC'), schedule_interval: 'custom', cron: '  ' },
      { mode: 'create', pipelineUuid: 'p' }
    );
    expect(body.pipeline_schedule.schedule_interval).toBe('');
  });
});

describe('local errors name the server field', () => {
  const base = defaultValues('p', 'UTC');
  const errorOf = (values: IScheduleFormValues): FieldError => {
    try {
      bodyFromValues(values, { mode: 'create', pipelineUuid: 'p' });
    } catch (err) {
      expect(err).toBeInstanceOf(FieldError);
      return err as FieldError;
    }
    throw new Error('no error');
  };

  it.each([
    ['variables not JSON', { variables: '{env: prod}' }, 'variables', 'variables'],
    ['variables a list', { variables: '[1]' }, 'variables', 'variables'],
    [
      'matchers not JSON',
      { schedule_type: 'event', event_matchers: '[{' } as const,
      'event_matchers',
      'event_matchers'
    ],
    [
      'matchers an object',
      { schedule_type: 'event', event_matchers: '{"pattern": {}}' } as const,
      'event_matchers',
      'event_matchers'
    ],
    ['sla not a number', { sla: 'one hour' }, 'sla', 'sla'],
    ['timeout not a number', { timeout: '10m' }, 'settings.timeout', 'timeout'],
    ['start time garbage', { start_time: 'tomorrow' }, 'start_time', 'start_time'],
    ['start time impossible', { start_time: '2024-02-30T10:00' }, 'start_time', 'start_time'],
    [
      'unknown zone with a start time',
      { timezone: 'Mars/Olympus', start_time: '2024-01-01T10:00' },
      'settings.timezone',
      'timezone'
    ]
  ])('%s', (_name, change, field, formField) => {
    const values = { ...base, ...change } as IScheduleFormValues;
    const err = errorOf(values);
    expect(err.field).toBe(field);
    expect(err.fix).toBeTruthy();
    expect(fieldOfError(err)).toBe(formField);
    expect(localErrors(values).map(e => e.field)).toEqual([field]);
  });

  it('collects every local error at once, and none for good values', () => {
    const values = { ...base, variables: 'x', sla: 'y', timeout: 'z' };
    expect(localErrors(values).map(e => e.field)).toEqual(['variables', 'sla', 'settings.timeout']);
    expect(localErrors(base)).toEqual([]);
    // Bounds are the server's: a negative SLA is sent as typed.
    expect(
      bodyFromValues({ ...base, sla: '-1' }, { mode: 'create', pipelineUuid: 'p' })
        .pipeline_schedule.sla
    ).toBe(-1);
  });

  it('ignores fields of other types (matchers on a time schedule)', () => {
    expect(localErrors({ ...base, event_matchers: '[{' })).toEqual([]);
  });
});

describe('fieldOfError', () => {
  it.each([
    ['name', 'name'],
    ['pipeline_schedule.schedule_interval', 'schedule_interval'],
    ['schedule_interval', 'schedule_interval'],
    ['settings.timezone', 'timezone'],
    ['pipeline_schedule.settings.timeout', 'timeout'],
    ['settings.skip_if_previous_running', 'skip_if_previous_running'],
    ['variables', 'variables'],
    ['variables.event_type', 'variables'],
    ['variables.x[2].y', 'variables'],
    ['event_matchers', 'event_matchers'],
    ['event_matchers[0].pattern.detail.size', 'event_matchers'],
    ['start_time', 'start_time'],
    ['sla', 'sla'],
    ['status', 'status'],
    ['token', 'token'],
    ['description', 'description'],
    ['schedule_type', 'schedule_type'],
    // No input of their own: form-level.
    ['settings.colour', null],
    ['settings.landing_time_enabled', null],
    ['settings', null],
    ['pipeline_uuid', null],
    ['pipeline_schedule', null],
    ['body', null],
    ['rotate_token', null],
    ['extra', null],
    ['id', null],
    ['', null]
  ])('%s → %s', (field, expected) => {
    expect(fieldOfError({ field })).toBe(expected);
  });

  it('null field → form-level; the interval on a custom cron → the cron input', () => {
    expect(fieldOfError({ field: null })).toBeNull();
    expect(fieldOfError({ field: 'schedule_interval' }, { schedule_interval: 'custom' })).toBe(
      'cron'
    );
    expect(fieldOfError({ field: 'schedule_interval' }, { schedule_interval: '@daily' })).toBe(
      'schedule_interval'
    );
  });
});

describe('visibleFields', () => {
  const base = defaultValues('p', 'UTC');
  it('cron only for custom, matchers only for events, token only for API schedules', () => {
    expect(visibleFields(base).has('cron')).toBe(false);
    expect(visibleFields({ ...base, schedule_interval: 'custom' }).has('cron')).toBe(true);
    expect(visibleFields(base).has('event_matchers')).toBe(false);
    expect(visibleFields({ ...base, schedule_type: 'event' }).has('event_matchers')).toBe(true);
    expect(visibleFields(base).has('token')).toBe(false);
    const api = visibleFields({ ...base, schedule_type: 'api', schedule_interval: 'custom' });
    expect(api.has('token')).toBe(true);
    expect(api.has('schedule_interval')).toBe(false);
    expect(api.has('cron')).toBe(false);
    expect(api.has('name')).toBe(true);
  });
});

describe('start time and zones', () => {
  it('converts wall time in the zone to the UTC instant the server stores', () => {
    expect(parseLocalDateTime('2024-01-10T09:00', 'America/New_York')).toBe(
      '2024-01-10T14:00:00+00:00'
    );
    expect(parseLocalDateTime('2024-07-10T09:00:30', 'America/New_York')).toBe(
      '2024-07-10T13:00:30+00:00'
    );
    expect(parseLocalDateTime('2024-07-10T09:00', 'UTC')).toBe('2024-07-10T09:00:00+00:00');
    // Just after the spring-forward jumps: the offset differs from the one at the first guess.
    expect(parseLocalDateTime('2024-03-10T03:30', 'America/New_York')).toBe(
      '2024-03-10T07:30:00+00:00'
    );
    expect(parseLocalDateTime('2024-03-31T01:30', 'Europe/Berlin')).toBe(
      '2024-03-31T00:30:00+00:00'
    );
    expect(parseLocalDateTime('  ', 'UTC')).toBeNull();
  });

  it('resolves DST gaps and overlaps as the backfill form does (time.ts: forward, earlier)', () => {
    // Gaps: forward by the gap, east and west of UTC alike.
    expect(parseLocalDateTime('2024-03-31T02:30', 'Europe/Berlin')).toBe(
      '2024-03-31T01:30:00+00:00'
    );
    expect(parseLocalDateTime('2024-03-10T02:30', 'America/New_York')).toBe(
      '2024-03-10T07:30:00+00:00'
    );
    // Overlaps: the earlier instant.
    expect(parseLocalDateTime('2024-10-27T02:30', 'Europe/Berlin')).toBe(
      '2024-10-27T00:30:00+00:00'
    );
    expect(parseLocalDateTime('2024-11-03T01:30', 'America/New_York')).toBe(
      '2024-11-03T05:30:00+00:00'
    );
  });

  it('an edit leaves an overlap start time alone when it was not touched', () => {
    const original = schedule({
      id: 7,
      start_time: '2024-10-27T01:30:00+00:00', // 02:30 CET, the later of the two 02:30s
      settings: { timezone: 'Europe/Berlin' }
    });
    const values = valuesFromSchedule(original);
    expect(values.start_time).toBe('2024-10-27T02:30');
    expect(
      bodyFromValues(values, { mode: 'edit', pipelineUuid: 'etl/daily', original })
        .pipeline_schedule
    ).toEqual({});
  });
});

describe('errorTexts', () => {
  it('shows the fix once: the server message ends with it', async () => {
    const fix = 'Use a whole number of seconds from 0 to 31,536,000 (one year), e.g. sla=3600.';
    const err = new ApiError(400, {
      type: 'validation_error',
      message: `sla=-1: expected a whole number of seconds >= 0. ${fix}`,
      field: 'sla',
      fix
    });
    expect(errorTexts(err)).toEqual({
      message: 'sla=-1: expected a whole number of seconds >= 0.',
      fix
    });
    expect(errorTexts(new FieldError('sla', 'bad', 'do this'))).toEqual({
      message: 'bad',
      fix: 'do this'
    });
    expect(errorTexts(new Error('boom'))).toEqual({ message: 'boom', fix: null });
  });

  it('keeps a message without the fix, and one that is only the fix, whole', () => {
    const noFix = new ApiError(409, {
      type: 'conflict',
      message: 'name taken',
      field: 'name',
      fix: 'Choose another name.'
    });
    expect(errorTexts(noFix)).toEqual({ message: 'name taken', fix: 'Choose another name.' });
    const none = new ApiError(404, {
      type: 'not_found',
      message: 'no schedule 3',
      field: null,
      fix: null
    });
    expect(errorTexts(none)).toEqual({ message: 'no schedule 3', fix: null });
    expect(stripFix('Use 3600.', 'Use 3600.')).toBe('Use 3600.');
    expect(stripFix('sla=-1: bad. Use 3600. (see docs)', 'Use 3600.')).toBe(
      'sla=-1: bad. (see docs)'
    );
    expect(stripFix('  a. b.  ', null)).toBe('a. b.');
  });
});

describe('unsaved changes and Escape', () => {
  const initial = defaultValues('etl/daily', 'UTC');

  it('a form is changed when any value differs from the one it opened with', () => {
    expect(formChanged(initial, { ...initial })).toBe(false);
    expect(formChanged(initial, { ...initial, name: `${initial.name}!` })).toBe(true);
    expect(formChanged(initial, { ...initial, skip_if_previous_running: true })).toBe(true);
    expect(formChanged(initial, { ...initial, timezone: 'Europe/Berlin' })).toBe(true);
  });

  it('cancels at once with nothing to lose, asks first otherwise, and ignores composing', () => {
    const esc = { key: 'Escape' };
    expect(escapeAction(esc, false, false)).toBe('cancel');
    expect(escapeAction(esc, true, false)).toBe('ask');
    // The question is open: Escape closes it, editing goes on.
    expect(escapeAction(esc, true, true)).toBe('keep');
    expect(escapeAction({ key: 'Escape', isComposing: true }, false, false)).toBe('none');
    expect(escapeAction({ key: 'Enter' }, true, false)).toBe('none');
  });
});

describe('saveSchedule', () => {
  it('creates with POST pipeline_schedules and answers the token shown once', async () => {
    const server = new FakeServer().on('POST', 'pipeline_schedules', req =>
      json(
        {
          pipeline_schedule: schedule({
            id: 12,
            ...(req.body as any).pipeline_schedule,
            token: 'clear-token-xyz'
          })
        },
        201
      )
    );
    const values = defaultValues('etl/daily', 'UTC');
    const result = await saveSchedule(client(server), values, {
      mode: 'create',
      pipelineUuid: 'etl/daily'
    });
    expect(server.calls).toHaveLength(1);
    expect(server.calls[0].method).toBe('POST');
    expect(server.calls[0].body).toEqual(
      bodyFromValues(values, { mode: 'create', pipelineUuid: 'etl/daily' })
    );
    expect((server.calls[0].body as any).pipeline_schedule.pipeline_uuid).toBe('etl/daily');
    expect(result.schedule.id).toBe(12);
    expect(result.token).toBe('clear-token-xyz');
    expect(result.changed).toBe(true);
  });

  it('edits with PUT pipeline_schedules/{id}, only the changes; no token answered → null', async () => {
    const original = fullSchedule({ id: 31 });
    const server = new FakeServer().on('PUT', 'pipeline_schedules/31', req =>
      json({ pipeline_schedule: { ...original, ...(req.body as any).pipeline_schedule } })
    );
    const values = { ...valuesFromSchedule(original), sla: '45' };
    const result = await saveSchedule(client(server), values, editOf(original));
    expect(server.calls.map(c => `${c.method} ${c.path}`)).toEqual(['PUT pipeline_schedules/31']);
    expect(server.calls[0].body).toEqual({ pipeline_schedule: { sla: 45 } });
    expect(result.schedule.sla).toBe(45);
    expect(result.token).toBeNull();
    expect(result.changed).toBe(true);
  });

  it('sends nothing when nothing changed', async () => {
    const original = fullSchedule({ id: 32 });
    const server = new FakeServer();
    const result = await saveSchedule(
      client(server),
      valuesFromSchedule(original),
      editOf(original)
    );
    expect(server.calls).toHaveLength(0);
    // The view still calls onSaved; `changed: false` lets the host say "No changes to save."
    expect(result).toEqual({ schedule: original, token: null, changed: false });
  });

  it("rethrows the server's ApiError with its field and fix", async () => {
    const original = fullSchedule({ id: 33 });
    const server = new FakeServer().on('PUT', 'pipeline_schedules/33', () =>
      apiError(
        400,
        'validation_error',
        "schedule_interval='* * *': not a cron expression. Use e.g. '0 9 * * *'.",
        'schedule_interval',
        "Use e.g. '0 9 * * *'."
      )
    );
    const values = { ...valuesFromSchedule(original), cron: '* * *' };
    const err = await saveSchedule(client(server), values, editOf(original)).catch(e => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err.status).toBe(400);
    expect(err.field).toBe('schedule_interval');
    expect(err.fix).toBe("Use e.g. '0 9 * * *'.");
    // The form is on a custom cron: the error goes under the cron input.
    expect(fieldOfError(err, values)).toBe('cron');
  });

  it('a conflict on create keeps its field', async () => {
    const server = new FakeServer().on('POST', 'pipeline_schedules', () =>
      apiError(409, 'conflict', 'name taken', 'name', 'Choose another name.')
    );
    const err = await saveSchedule(client(server), defaultValues('p'), {
      mode: 'create',
      pipelineUuid: 'p'
    }).catch(e => e);
    expect(err).toBeInstanceOf(ApiError);
    expect([err.status, err.field, fieldOfError(err)]).toEqual([409, 'name', 'name']);
  });

  it('throws a local FieldError before any request', async () => {
    const server = new FakeServer();
    const err = await saveSchedule(
      client(server),
      { ...defaultValues('p'), variables: '{' },
      { mode: 'create', pipelineUuid: 'p' }
    ).catch(e => e);
    expect(err).toBeInstanceOf(FieldError);
    expect(err.field).toBe('variables');
    expect(server.calls).toHaveLength(0);
  });
});
