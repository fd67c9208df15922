import { describe, expect, it } from 'vitest';
import {
  ApiClient,
  ApiError,
  errorFromResponse,
  formatError,
  joinUrl,
  queryString
} from '../src/api';
import { BASE, FakeServer, apiError, blockRun, json, list, run, schedule } from './fake';

function client(server: FakeServer): ApiClient {
  return new ApiClient(BASE, server.request);
}

describe('URLs', () => {
  it('joins the base URL and the API path with single slashes', () => {
    expect(joinUrl('http://h/base', 'mage/api/', 'pipeline_schedules')).toBe(
      'http://h/base/mage/api/pipeline_schedules'
    );
    expect(joinUrl('http://h/base/', '/mage/api', 'x')).toBe('http://h/base/mage/api/x');
  });

  it('builds query strings from the defined values only, encoded', () => {
    expect(queryString({ a: 1, b: null, c: undefined, d: '', e: 'etl/daily sales' })).toBe(
      '?a=1&e=etl%2Fdaily%20sales'
    );
    expect(queryString({})).toBe('');
  });

  it('puts every route under {base_url}mage/api/', () => {
    const api = new ApiClient('http://localhost:8888/', async () => json({}));
    expect(api.url('pipeline_schedules/3')).toBe(
      'http://localhost:8888/mage/api/pipeline_schedules/3'
    );
    expect(api.url('pipeline_runs', { limit: 5 })).toBe(
      'http://localhost:8888/mage/api/pipeline_runs?limit=5'
    );
  });
});

describe('ApiClient requests', () => {
  it('lists schedules with the notebook filter and a page size', async () => {
    const server = new FakeServer().on('GET', 'pipeline_schedules', () =>
      list('pipeline_schedules', [schedule({ id: 1 }), schedule({ id: 2 })])
    );
    const got = await client(server).listSchedules({ pipelineUuid: 'etl/daily' });
    expect(got.map(s => s.id)).toEqual([1, 2]);
    expect(server.calls).toHaveLength(1);
    expect(server.calls[0].method).toBe('GET');
    expect(server.calls[0].url).toBe(
      'http://localhost:8888/lab-base/mage/api/pipeline_schedules?pipeline_uuid=etl%2Fdaily&limit=1000'
    );
    expect(server.calls[0].body).toBeUndefined();
  });

  it('lists all schedules without a filter and follows metadata.next', async () => {
    const server = new FakeServer().on('GET', 'pipeline_schedules', req =>
      req.query.cursor === '7'
        ? list('pipeline_schedules', [schedule({ id: 8 })], null)
        : list('pipeline_schedules', [schedule({ id: 1 })], 7)
    );
    const got = await client(server).listSchedules();
    expect(got.map(s => s.id)).toEqual([1, 8]);
    expect(server.calls.map(c => c.query)).toEqual([
      { limit: '1000' },
      { limit: '1000', cursor: '7' }
    ]);
  });

  it('pauses with PUT pipeline_schedules/{id} and a pipeline_schedule envelope', async () => {
    const server = new FakeServer().on('PUT', 'pipeline_schedules/4', req => ({
      pipeline_schedule: schedule({ id: 4, ...(req.body as any).pipeline_schedule })
    }));
    const updated = await client(server).setScheduleStatus(4, 'inactive');
    expect(updated.status).toBe('inactive');
    expect(server.calls[0].body).toEqual({ pipeline_schedule: { status: 'inactive' } });
    expect(server.calls[0].headers['content-type']).toBe('application/json');
  });

  it('runs now with POST pipeline_runs, the schedule id and the variables', async () => {
    const server = new FakeServer().on('POST', 'pipeline_runs', () =>
      json({ pipeline_run: run({ id: 11, status: 'initial' }) }, 201)
    );
    const api = client(server);
    const created = await api.runNow(3, { variables: { date: '2024-01-15' } });
    expect(created.id).toBe(11);
    expect(server.calls[0].body).toEqual({
      pipeline_run: { pipeline_schedule_id: 3, variables: { date: '2024-01-15' } }
    });
    await api.runNow(3);
    expect(server.calls[1].body).toEqual({ pipeline_run: { pipeline_schedule_id: 3 } });
  });

  it('reads a schedule run history and a run block runs', async () => {
    const server = new FakeServer()
      .on('GET', 'pipeline_schedules/3/pipeline_runs', () =>
        list('pipeline_runs', [run({ id: 5 })])
      )
      .on('GET', 'pipeline_runs/5/block_runs', () =>
        list('block_runs', [blockRun({ id: 1 }), blockRun({ id: 2 })])
      );
    const api = client(server);
    expect((await api.listScheduleRuns(3, 20)).map(r => r.id)).toEqual([5]);
    expect(server.calls[0].query).toEqual({ limit: '20' });
    expect((await api.listBlockRuns(5)).map(b => b.id)).toEqual([1, 2]);
    expect(server.calls[1].path).toBe('pipeline_runs/5/block_runs');
  });

  it('reads a block log as text with its size headers', async () => {
    const server = new FakeServer().on(
      'GET',
      'block_runs/9/logs',
      () =>
        new Response('hello\n', {
          status: 200,
          headers: {
            'Content-Type': 'text/plain',
            'X-Log-Size': '106',
            'X-Log-Dropped-Bytes': '100'
          }
        })
    );
    const logs = await client(server).blockRunLogs(9, 6);
    expect(logs).toEqual({ text: 'hello\n', size: 106, dropped: 100 });
    expect(server.calls[0].query).toEqual({ tail: '6' });
  });
});

describe('errors', () => {
  it('turns the server JSON error into a message with the field and the fix', async () => {
    const server = new FakeServer().on('PUT', 'pipeline_schedules/4', () =>
      apiError(
        400,
        'validation_error',
        'schedule_interval is not a cron expression',
        'schedule_interval',
        'use @daily or "0 6 * * *"'
      )
    );
    const err = await client(server)
      .setScheduleStatus(4, 'active')
      .catch(e => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err.status).toBe(400);
    expect(err.type).toBe('validation_error');
    expect(err.field).toBe('schedule_interval');
    expect(err.fix).toBe('use @daily or "0 6 * * *"');
    expect(err.message).toBe(
      'schedule_interval is not a cron expression (field: schedule_interval) — fix: use @daily or "0 6 * * *"'
    );
  });

  it('says a 409 conflict as the server says it', async () => {
    const server = new FakeServer().on('POST', 'pipeline_runs', () =>
      apiError(409, 'conflict', 'schedule 3 is inactive', 'status', 'activate it first')
    );
    await expect(client(server).runNow(3)).rejects.toThrow(
      'schedule 3 is inactive (field: status) — fix: activate it first'
    );
  });

  it('falls back to the HTTP status when the body is not the JSON error', async () => {
    const err = await errorFromResponse(
      new Response('<html>Bad Gateway</html>', { status: 502, statusText: 'Bad Gateway' })
    );
    expect(err.status).toBe(502);
    expect(err.message).toBe('HTTP 502 Bad Gateway: <html>Bad Gateway</html>');
    const empty = await errorFromResponse(new Response('', { status: 403 }));
    expect(empty.message).toBe('HTTP 403');
  });

  it('reports a server it cannot reach as a network error', async () => {
    const api = new ApiClient(BASE, async () => {
      throw new TypeError('Failed to fetch');
    });
    const err = await api.listSchedules().catch(e => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err.type).toBe('network_error');
    expect(err.message).toContain('Failed to fetch');
  });

  it('does not repeat a fix the message already ends with (the server does that)', () => {
    const fix =
      "Use one of @once, @hourly, @daily or a 5-field cron expression such as '30 2 * * *'.";
    expect(
      formatError({
        type: 'validation_error',
        message: `schedule_interval='bogus': cron expressions need exactly 5 fields. ${fix}`,
        field: 'schedule_interval',
        fix
      })
    ).toBe(
      `schedule_interval='bogus': cron expressions need exactly 5 fields. ${fix} (field: schedule_interval)`
    );
  });

  it('formats a message without field or fix as the message alone', () => {
    expect(
      formatError({ type: 'not_found', message: 'no schedule 9', field: null, fix: null })
    ).toBe('no schedule 9');
  });
});
