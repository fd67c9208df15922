import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ApiClient, ApiError } from '../src/api';
import {
  BackfillFormError,
  BackfillWatcher,
  IBackfill,
  IBackfillFormValues,
  backfillBody,
  cancelBackfill,
  defaultBackfillValues,
  fieldErrorsOf,
  getBackfill,
  inputForField,
  isBackfillFinished,
  progressFraction,
  progressText,
  startBackfill,
  statusText,
  validateBackfill,
  wallToIso
} from '../src/backfill';
import { formChanged } from '../src/formParts';
import {
  BASE,
  FakeServer,
  FakeTimer,
  apiError,
  backfill,
  backfillProgress as progress,
  json,
  schedule,
  settle
} from './fake';

// ---------------------------------------------------------------------------------------------
// The request schema, read from the OpenAPI fragment the server serves (no YAML library here:
// a small reader of the indented block is enough for this one file).

const YAML = readFileSync(
  join(__dirname, '..', '..', 'mage_nb_sched', 'handlers', 'openapi', 'backfills.yaml'),
  'utf8'
);

/** The lines of the block under `key:` found after `from`, dedented to its children. */
function block(text: string, key: string, from = 0): { lines: string[]; end: number } {
  const lines = text.split('\n');
  const start = lines.findIndex((line, i) => i >= from && line.trim() === `${key}:`);
  if (start < 0) {
    throw new Error(`no ${key}: in the yaml`);
  }
  const indent = lines[start].length - lines[start].trimStart().length;
  const out: string[] = [];
  let i = start + 1;
  for (; i < lines.length; i++) {
    const line = lines[i];
    if (line.trim() && line.length - line.trimStart().length <= indent) {
      break;
    }
    out.push(line);
  }
  return { lines: out, end: i };
}

function createSchema(): {
  required: string[];
  properties: Map<string, string>;
} {
  const lines = YAML.split('\n');
  const bodies = lines.findIndex(l => l.trim() === 'BackfillCreate:');
  const envelope = block(YAML, 'backfill', bodies);
  const required = envelope.lines
    .map(l => /^\s*required: \[(.*)\]/.exec(l))
    .find(m => m)?.[1]
    .split(',')
    .map(s => s.trim()) as string[];
  const props = block(envelope.lines.join('\n'), 'properties');
  const indent = Math.min(
    ...props.lines.filter(l => l.trim()).map(l => l.length - l.trimStart().length)
  );
  const properties = new Map<string, string>();
  let current = '';
  for (const line of props.lines) {
    const depth = line.length - line.trimStart().length;
    const m = /^\s*([a-z_]+):\s*(.*)$/.exec(line);
    if (m && depth === indent) {
      current = m[1];
      properties.set(current, m[2]);
    } else if (current) {
      properties.set(current, `${properties.get(current)} ${line.trim()}`);
    }
  }
  return { required, properties };
}

function yamlEnum(spec: string): string[] {
  const m = /enum: \[([^\]]*)\]/.exec(spec);
  return m ? m[1].split(',').map(s => s.trim()) : [];
}

function yamlNumber(spec: string, key: string): number {
  const m = new RegExp(`${key}: (\\d+)`).exec(spec);
  return m ? Number(m[1]) : NaN;
}

// ---------------------------------------------------------------------------------------------

const ISO_WITH_OFFSET = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2})$/;

function values(overrides: Partial<IBackfillFormValues> = {}): IBackfillFormValues {
  return {
    start: '2024-01-01T00:00',
    end: '2024-01-03T00:00',
    interval_type: 'day',
    interval_units: '1',
    variables: '',
    ...overrides
  };
}

function client(server: FakeServer): ApiClient {
  return new ApiClient(BASE, server.request);
}

describe('backfillBody against the OpenAPI request schema', () => {
  const schema = createSchema();
  const sched = schedule({ id: 3 });

  it('reads the schema (so the checks below check something)', () => {
    expect(schema.required).toEqual(['start_datetime', 'end_datetime']);
    expect(schema.properties.has('pipeline_schedule_id')).toBe(true);
    expect(yamlEnum(schema.properties.get('interval_type') ?? '')).toContain('day');
  });

  it('sends only fields of the schema, the required ones included, with their types', () => {
    const body = backfillBody(values({ interval_units: '2', variables: '{"env": "prod"}' }), sched);
    expect(Object.keys(body)).toEqual(['backfill']);
    const fields = body.backfill as unknown as Record<string, unknown>;
    for (const key of Object.keys(fields)) {
      expect(schema.properties.has(key), key).toBe(true);
    }
    for (const key of schema.required) {
      expect(fields[key], key).toBeDefined();
    }
    expect(fields.pipeline_schedule_id).toBe(3);
    expect(fields.start_datetime).toMatch(ISO_WITH_OFFSET);
    expect(fields.end_datetime).toMatch(ISO_WITH_OFFSET);
    expect(yamlEnum(schema.properties.get('interval_type') ?? '')).toContain(fields.interval_type);
    const units = schema.properties.get('interval_units') ?? '';
    expect(Number.isInteger(fields.interval_units)).toBe(true);
    expect(fields.interval_units).toBe(2);
    expect(fields.interval_units as number).toBeGreaterThanOrEqual(yamlNumber(units, 'minimum'));
    expect(fields.interval_units as number).toBeLessThanOrEqual(yamlNumber(units, 'maximum'));
    expect(fields.variables).toEqual({ env: 'prod' });
  });

  it('offers every interval type of the schema, and only those', () => {
    const allowed = yamlEnum(schema.properties.get('interval_type') ?? '');
    for (const kind of allowed) {
      const body = backfillBody(
        values({ interval_type: kind as IBackfillFormValues['interval_type'] }),
        sched
      );
      expect(body.backfill.interval_type).toBe(kind);
    }
    const errors = validateBackfill(values({ interval_type: 'fortnight' as never }), sched);
    expect(errors.map(e => e.field)).toEqual(['interval_type']);
  });

  it('leaves variables out when none are given', () => {
    expect('variables' in backfillBody(values({ variables: '  ' }), sched).backfill).toBe(false);
    expect('variables' in backfillBody(values({ variables: '{}' }), sched).backfill).toBe(false);
  });

  it('accepts the most units the schema allows and refuses one more', () => {
    const max = yamlNumber(schema.properties.get('interval_units') ?? '', 'maximum');
    expect(
      backfillBody(values({ interval_units: String(max) }), sched).backfill.interval_units
    ).toBe(max);
    const errors = validateBackfill(values({ interval_units: String(max + 1) }), sched);
    expect(errors.map(e => e.field)).toEqual(['interval_units']);
  });
});

describe('times are in the schedule’s time zone', () => {
  it('is UTC without a time zone setting', () => {
    const body = backfillBody(values(), schedule({ settings: null }));
    expect(body.backfill.start_datetime).toBe('2024-01-01T00:00:00+00:00');
    expect(body.backfill.end_datetime).toBe('2024-01-03T00:00:00+00:00');
  });

  it('uses the zone’s offset of that date (winter and summer)', () => {
    const paris = schedule({ settings: { timezone: 'Europe/Paris' } });
    const body = backfillBody(
      values({ start: '2024-01-01T00:00', end: '2024-07-01T06:30' }),
      paris
    );
    expect(body.backfill.start_datetime).toBe('2024-01-01T00:00:00+01:00');
    expect(body.backfill.end_datetime).toBe('2024-07-01T06:30:00+02:00');
    expect(Date.parse(body.backfill.start_datetime)).toBe(Date.UTC(2023, 11, 31, 23, 0));
    expect(wallToIso('2024-03-10T12:00', 'America/New_York')).toBe('2024-03-10T12:00:00-04:00');
  });

  it('moves a time skipped by DST forward and takes the earlier of a repeated one (time.ts)', () => {
    const paris = schedule({ settings: { timezone: 'Europe/Paris' } });
    const body = backfillBody(
      values({ start: '2024-03-31T02:30', end: '2024-10-27T02:30' }),
      paris
    );
    expect(body.backfill.start_datetime).toBe('2024-03-31T03:30:00+02:00');
    // The earlier 02:30 (summer time), as the schedule form and Python's fold=0 read it.
    expect(body.backfill.end_datetime).toBe('2024-10-27T02:30:00+02:00');
    expect(wallToIso('2024-11-03T01:30', 'America/New_York')).toBe('2024-11-03T01:30:00-04:00');
  });

  it('falls back to UTC for a zone this browser does not know', () => {
    const body = backfillBody(values(), schedule({ settings: { timezone: 'Mars/Olympus' } }));
    expect(body.backfill.start_datetime).toBe('2024-01-01T00:00:00+00:00');
  });
});

describe('local errors name the server’s fields', () => {
  const sched = schedule();
  const fieldsOf = (v: Partial<IBackfillFormValues>) =>
    validateBackfill(values(v), sched).map(e => e.field);

  it('refuses variables that are not a JSON object', () => {
    expect(fieldsOf({ variables: '{"a": ' })).toEqual(['variables']);
    expect(fieldsOf({ variables: '[1, 2]' })).toEqual(['variables']);
    expect(fieldsOf({ variables: '"x"' })).toEqual(['variables']);
    expect(fieldsOf({ variables: 'null' })).toEqual(['variables']);
  });

  it('refuses an end before the start, and missing or impossible dates', () => {
    expect(fieldsOf({ start: '2024-02-01T00:00', end: '2024-01-01T00:00' })).toEqual([
      'end_datetime'
    ]);
    expect(fieldsOf({ start: '2024-01-01T00:00', end: '2024-01-01T00:00' })).toEqual([]);
    expect(fieldsOf({ start: '' })).toEqual(['start_datetime']);
    expect(fieldsOf({ end: 'someday' })).toEqual(['end_datetime']);
    expect(fieldsOf({ start: '2024-02-30T00:00' })).toEqual(['start_datetime']);
  });

  it('refuses units that are not a whole number of at least 1', () => {
    for (const units of ['0', '-1', '1.5', 'two', '']) {
      expect(fieldsOf({ interval_units: units }), units).toEqual(['interval_units']);
    }
  });

  it('gives every problem at once, each with a fix', () => {
    const errors = validateBackfill(
      values({
        start: '2024-02-01T00:00',
        end: '2024-01-01T00:00',
        interval_units: '0',
        variables: '['
      }),
      sched
    );
    expect(errors.map(e => e.field).sort()).toEqual([
      'end_datetime',
      'interval_units',
      'variables'
    ]);
    for (const e of errors) {
      expect(e.message).not.toBe('');
      expect(e.fix).not.toBe('');
    }
    let thrown: unknown;
    try {
      backfillBody(values({ interval_units: '0', variables: '[' }), sched);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(BackfillFormError);
    expect((thrown as BackfillFormError).errors.map(e => e.field)).toEqual([
      'interval_units',
      'variables'
    ]);
  });

  it('maps server fields onto the form’s inputs', () => {
    expect(inputForField('start_datetime')).toBe('start');
    expect(inputForField('end_datetime')).toBe('end');
    expect(inputForField('backfill.interval_units')).toBe('interval_units');
    expect(inputForField('interval_type')).toBe('interval_type');
    expect(inputForField('variables.x')).toBe('variables');
    expect(inputForField('variables[0]')).toBe('variables');
    expect(inputForField('pipeline_schedule_id')).toBeNull();
    expect(inputForField('backfill')).toBeNull();
    expect(inputForField(null)).toBeNull();
  });
});

describe('unsaved changes', () => {
  it('the form is changed once a value differs from the defaults it opened with', () => {
    const initial = defaultBackfillValues(schedule(), new Date('2026-01-05T10:20:00Z'));
    expect(formChanged(initial, { ...initial })).toBe(false);
    expect(formChanged(initial, { ...initial, variables: '{"a": 1}' })).toBe(true);
    expect(formChanged(initial, { ...initial, interval_type: 'hour' })).toBe(true);
  });
});

describe('defaultBackfillValues', () => {
  it('is the three whole days before today, daily, in UTC', () => {
    const v = defaultBackfillValues(schedule(), new Date('2026-01-05T10:20:00Z'));
    expect(v).toEqual({
      start: '2026-01-02T00:00',
      end: '2026-01-04T00:00',
      interval_type: 'day',
      interval_units: '1',
      variables: ''
    });
    expect(validateBackfill(v, schedule())).toEqual([]);
  });

  it('counts days in the schedule’s zone (already tomorrow in Tokyo)', () => {
    const tokyo = schedule({ settings: { timezone: 'Asia/Tokyo' } });
    const v = defaultBackfillValues(tokyo, new Date('2026-01-04T20:00:00Z'));
    expect(v.start).toBe('2026-01-02T00:00');
    expect(v.end).toBe('2026-01-04T00:00');
    expect(backfillBody(v, tokyo).backfill.start_datetime).toBe('2026-01-02T00:00:00+09:00');
  });

  it('crosses month and year ends', () => {
    const v = defaultBackfillValues(schedule(), new Date('2026-03-01T00:00:01Z'));
    expect(v.start).toBe('2026-02-26T00:00');
    expect(v.end).toBe('2026-02-28T00:00');
  });

  it('steps hourly for an hourly schedule', () => {
    const v = defaultBackfillValues(
      schedule({ schedule_interval: '@hourly' }),
      new Date('2026-01-05T10:00:00Z')
    );
    expect(v.interval_type).toBe('hour');
    expect(v.end).toBe('2026-01-04T23:00');
  });
});

describe('REST calls', () => {
  it('creates the backfill started, and answers the started one', async () => {
    const server = new FakeServer().on('POST', 'backfills', req =>
      json(
        {
          backfill: backfill({
            id: 11,
            ...((req.body as { backfill: object }).backfill as object),
            progress: progress({ initial: 3 })
          })
        },
        201
      )
    );
    const sched = schedule({ id: 3 });
    const started = await startBackfill(client(server), values(), sched);
    expect(server.calls.map(c => `${c.method} ${c.path}`)).toEqual(['POST backfills']);
    expect(server.calls[0].body).toEqual({
      backfill: { ...backfillBody(values(), sched).backfill, status: 'running' }
    });
    expect(server.calls[0].headers['content-type']).toBe('application/json');
    expect(started.id).toBe(11);
    expect(started.status).toBe('running');
    expect(started.progress.total).toBe(3);
  });

  it('sends nothing when the form is wrong', async () => {
    const server = new FakeServer();
    await expect(
      startBackfill(client(server), values({ variables: '[' }), schedule())
    ).rejects.toBeInstanceOf(BackfillFormError);
    expect(server.calls).toEqual([]);
  });

  it('turns the server’s field error into the form’s', async () => {
    const server = new FakeServer().on('POST', 'backfills', () =>
      apiError(
        400,
        'validation_error',
        'too many runs',
        'interval_type',
        'Use a larger interval_type.'
      )
    );
    let thrown: unknown;
    try {
      await startBackfill(client(server), values(), schedule());
    } catch (err) {
      thrown = err;
    }
    expect(fieldErrorsOf(thrown)).toEqual([
      { field: 'interval_type', message: 'too many runs', fix: 'Use a larger interval_type.' }
    ]);
    // A field the form has no input for is the form's own error.
    const other = new FakeServer().on('POST', 'backfills', () =>
      apiError(404, 'not_found', 'no schedule 3', 'pipeline_schedule_id', null)
    );
    const err = await startBackfill(client(other), values(), schedule()).catch(e => e);
    expect(fieldErrorsOf(err)).toBeNull();
    expect(String(err.message)).toContain('no schedule 3');
  });

  it('creates and starts in one POST (status running), so a failure leaves nothing to resume', async () => {
    let posts = 0;
    const server = new FakeServer().on('POST', 'backfills', req =>
      ++posts === 1
        ? apiError(503, 'store_unavailable', 'the store is busy', null, 'Try again in a moment.')
        : json(
            { backfill: backfill({ id: 22, status: 'running', ...(req.body as any).backfill }) },
            201
          )
    );
    await expect(
      startBackfill(client(server), values(), schedule({ id: 3 }))
    ).rejects.toBeInstanceOf(ApiError);
    // Trying again is one more create: the failed one wrote nothing.
    const started = await startBackfill(client(server), values(), schedule({ id: 3 }));
    expect(started.id).toBe(22);
    expect(started.status).toBe('running');
    expect(server.calls.map(c => `${c.method} ${c.path}`)).toEqual([
      'POST backfills',
      'POST backfills'
    ]);
    expect((server.calls[1].body as any).backfill.status).toBe('running');
    expect((server.calls[1].body as any).backfill.pipeline_schedule_id).toBe(3);
  });

  it('shows the fix once: the server’s message ends with it', async () => {
    const fix = 'Use an interval_units from 1 to 1000, e.g. interval_units=1.';
    const server = new FakeServer().on('POST', 'backfills', () =>
      apiError(
        400,
        'validation_error',
        `interval_units=0: must be at least 1. ${fix}`,
        'interval_units',
        fix
      )
    );
    const err = await startBackfill(client(server), values(), schedule()).catch(e => e);
    const errors = fieldErrorsOf(err);
    expect(errors).toEqual([
      { field: 'interval_units', message: 'interval_units=0: must be at least 1.', fix }
    ]);
    expect(errors?.[0].message).not.toContain(fix);
  });

  it('reads and cancels one backfill', async () => {
    const server = new FakeServer()
      .on('GET', 'backfills/5', () => json({ backfill: backfill({ id: 5, status: 'running' }) }))
      .on('PUT', 'backfills/5', () => json({ backfill: backfill({ id: 5, status: 'cancelled' }) }));
    expect((await getBackfill(client(server), 5)).status).toBe('running');
    expect((await cancelBackfill(client(server), 5)).status).toBe('cancelled');
    expect(server.calls[1].body).toEqual({ backfill: { status: 'cancelled' } });
  });
});

describe('progress', () => {
  it('counts done (completed) runs of all, then failures and runs going', () => {
    const b = backfill({
      status: 'running',
      progress: progress({ completed: 3, failed: 1, initial: 1 })
    });
    expect(progressText(b)).toBe('3 of 5 runs done · 1 failed');
    expect(progressFraction(b)).toBeCloseTo(4 / 5);
    expect(isBackfillFinished(b)).toBe(false);
    const going = backfill({
      status: 'running',
      progress: progress({ completed: 1, running: 2, cancelled: 1 })
    });
    expect(progressText(going)).toBe('1 of 4 runs done · 1 cancelled · 2 running');
    expect(progressFraction(going)).toBeCloseTo(2 / 4);
  });

  it('is whole and finished once completed', () => {
    const b = backfill({ status: 'completed', progress: progress({ completed: 3 }) });
    expect(statusText(b)).toBe('completed · 3 of 3 runs done');
    expect(progressFraction(b)).toBe(1);
    expect(isBackfillFinished(b)).toBe(true);
    expect(
      progressText(backfill({ status: 'completed', progress: progress({ completed: 1 }) }))
    ).toBe('1 of 1 run done');
  });

  it('reads a backfill without runs', () => {
    const fresh = backfill();
    expect(progressText(fresh)).toBe('no runs yet');
    expect(progressFraction(fresh)).toBe(0);
    expect(isBackfillFinished(fresh)).toBe(false);
    const cancelled = backfill({ status: 'cancelled' });
    expect(isBackfillFinished(cancelled)).toBe(true);
    expect(progressFraction(cancelled)).toBe(1);
    expect(
      isBackfillFinished(backfill({ status: 'failed', progress: progress({ failed: 2 }) }))
    ).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------

describe('BackfillWatcher', () => {
  function serverWith(answers: IBackfill[]): FakeServer {
    let i = 0;
    return new FakeServer().on('GET', 'backfills/7', () =>
      json({ backfill: answers[Math.min(i++, answers.length - 1)] })
    );
  }

  it('polls until the backfill has ended, reporting each reading, then stops', async () => {
    const answers = [
      backfill({ status: 'running', progress: progress({ running: 1, initial: 2 }) }),
      backfill({ status: 'running', progress: progress({ completed: 2, running: 1 }) }),
      backfill({ status: 'completed', progress: progress({ completed: 3 }) })
    ];
    const server = serverWith(answers);
    const timer = new FakeTimer();
    const seen: string[] = [];
    const finished: IBackfill[] = [];
    const watcher = new BackfillWatcher(client(server), 7, {
      onProgress: b => seen.push(statusText(b)),
      onFinished: b => finished.push(b),
      timer
    });
    watcher.start(0);
    await timer.fire();
    await timer.fire();
    expect(finished).toEqual([]);
    await timer.fire();
    expect(seen).toEqual(answers.map(statusText));
    expect(finished.map(b => b.status)).toEqual(['completed']);
    expect(watcher.isStopped).toBe(true);
    expect(watcher.isFinished).toBe(true);
    expect(timer.pending).toEqual([]);
    expect(server.calls.length).toBe(3);
    // Starting a finished watcher does nothing.
    watcher.start(0);
    expect(timer.pending).toEqual([]);
  });

  it('polls fast while the runs move and backs off while they do not', async () => {
    const same = backfill({ status: 'running', progress: progress({ running: 1 }) });
    const timer = new FakeTimer();
    const watcher = new BackfillWatcher(client(serverWith([same])), 7, {
      onProgress: () => undefined,
      timer
    });
    watcher.start(0);
    await timer.fire();
    const first = timer.pending[0].ms;
    await timer.fire();
    const second = timer.pending[0].ms;
    await timer.fire();
    const third = timer.pending[0].ms;
    expect(second).toBeGreaterThan(first);
    expect(third).toBeGreaterThan(second);
    watcher.stop();
  });

  it('stops on stop(), and drops an answer that arrives after it', async () => {
    let release: () => void = () => undefined;
    const gate = new Promise<void>(r => (release = r));
    const server = new FakeServer().on('GET', 'backfills/7', async () => {
      await gate;
      return json({
        backfill: backfill({ status: 'running', progress: progress({ running: 1 }) })
      });
    });
    const timer = new FakeTimer();
    const seen: IBackfill[] = [];
    const watcher = new BackfillWatcher(client(server), 7, {
      onProgress: b => seen.push(b),
      timer
    });
    watcher.start(0);
    await timer.fire(); // the request is in flight
    watcher.stop();
    release();
    await settle();
    expect(seen).toEqual([]);
    expect(timer.pending).toEqual([]);
    expect(watcher.isStopped).toBe(true);
  });

  it('keeps trying after a failed read, slower, and says so', async () => {
    let fail = true;
    const server = new FakeServer().on('GET', 'backfills/7', () =>
      fail
        ? apiError(503, 'store_unavailable', 'database is locked')
        : json({
            backfill: backfill({ status: 'completed', progress: progress({ completed: 1 }) })
          })
    );
    const timer = new FakeTimer();
    const errors: string[] = [];
    const finished: IBackfill[] = [];
    const watcher = new BackfillWatcher(client(server), 7, {
      onProgress: () => undefined,
      onFinished: b => finished.push(b),
      onError: err => errors.push(String((err as Error).message)),
      timer
    });
    watcher.start(0);
    await timer.fire();
    expect(errors).toEqual(['database is locked']);
    expect(timer.pending.length).toBe(1);
    fail = false;
    await timer.fire();
    expect(finished.length).toBe(1);
    expect(watcher.isStopped).toBe(true);
  });

  it('takes a reading from elsewhere (the cancel’s answer) and stops when it has ended', () => {
    const timer = new FakeTimer();
    const seen: string[] = [];
    const watcher = new BackfillWatcher(client(new FakeServer()), 7, {
      onProgress: b => seen.push(b.status),
      timer
    });
    watcher.start(1000);
    watcher.update(backfill({ status: 'running', progress: progress({ running: 1 }) }));
    expect(watcher.isStopped).toBe(false);
    watcher.update(backfill({ status: 'cancelled', progress: progress({ cancelled: 1 }) }));
    expect(seen).toEqual(['running', 'cancelled']);
    expect(watcher.isStopped).toBe(true);
    expect(timer.pending).toEqual([]);
  });
});
