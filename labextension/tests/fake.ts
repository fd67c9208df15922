/** A fake REST server: records each request and answers from handlers keyed by "METHOD path". */
import type { RequestFn } from '../src/api';

export interface IRecorded {
  method: string;
  url: string;
  path: string;
  query: Record<string, string>;
  body: unknown;
  headers: Record<string, string>;
}

export type Handler = (req: IRecorded) => Response | Promise<Response> | unknown;

export const BASE = 'http://localhost:8888/lab-base/';

export function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json', ...headers }
  });
}

export function apiError(
  status: number,
  type: string,
  message: string,
  field: string | null = null,
  fix: string | null = null
): Response {
  return json({ error: { type, message, field, fix } }, status);
}

export class FakeServer {
  calls: IRecorded[] = [];
  statusCalls: IRecorded[] = [];
  routes = new Map<string, Handler>();

  on(method: string, path: string, handler: Handler): this {
    this.routes.set(`${method} ${path}`, handler);
    return this;
  }

  get request(): RequestFn {
    return async (url: string, init: RequestInit) => {
      const u = new URL(url);
      const prefix = new URL(BASE).pathname + 'mage/api/';
      if (!u.pathname.startsWith(prefix)) {
        throw new Error(`request outside the API: ${url}`);
      }
      const path = u.pathname.slice(prefix.length);
      const query: Record<string, string> = {};
      u.searchParams.forEach((v, k) => (query[k] = v));
      const headers: Record<string, string> = {};
      new Headers(init.headers).forEach((v, k) => (headers[k] = v));
      const req: IRecorded = {
        method: init.method ?? 'GET',
        url,
        path,
        query,
        body: init.body ? JSON.parse(String(init.body)) : undefined,
        headers
      };
      // The panel reads `status` beside every refresh: kept apart, so the tests of other
      // calls count only those, and answered "a scheduler is active" unless a test routes it.
      if (req.method === 'GET' && path === 'status') {
        this.statusCalls.push(req);
        const routed = this.routes.get('GET status');
        const answer = routed ? await routed(req) : { status: schedulerStatus() };
        return answer instanceof Response ? answer : json(answer);
      }
      this.calls.push(req);
      const handler = this.routes.get(`${req.method} ${path}`);
      if (!handler) {
        return apiError(404, 'not_found', `no route ${req.method} ${path}`);
      }
      const answer = await handler(req);
      return answer instanceof Response ? answer : json(answer);
    };
  }
}

let nextId = 1;

export function schedule(overrides: Record<string, unknown> = {}): any {
  const id = (overrides.id as number) ?? nextId++;
  return {
    id,
    name: `schedule ${id}`,
    pipeline_uuid: 'etl/daily',
    schedule_type: 'time',
    schedule_interval: '@daily',
    start_time: null,
    status: 'active',
    last_enabled_at: null,
    variables: null,
    sla: null,
    settings: null,
    description: null,
    token_hint: null,
    in_code: false,
    next_due_at: '2026-12-02T00:00:00+00:00',
    created_at: '2026-12-01T00:00:00+00:00',
    updated_at: '2026-12-01T00:00:00+00:00',
    orphaned_at: null,
    next_pipeline_run_date: '2026-12-02T00:00:00+00:00',
    pipeline_runs_count: 0,
    last_pipeline_run_status: null,
    pipeline_in_progress_runs_count: 0,
    event_matchers: [],
    ...overrides
  };
}

export function run(overrides: Record<string, unknown> = {}): any {
  const id = (overrides.id as number) ?? nextId++;
  return {
    id,
    pipeline_schedule_id: 1,
    pipeline_uuid: 'etl/daily',
    execution_date: '2026-12-01T00:00:00+00:00',
    status: 'completed',
    started_at: '2026-12-01T00:00:01+00:00',
    completed_at: '2026-12-01T00:00:04+00:00',
    variables: null,
    event_variables: null,
    metrics: null,
    backfill_id: null,
    sla_breached: false,
    run_key: `k${id}`,
    owner: null,
    finalized_at: null,
    attempts: 1,
    created_at: '2026-12-01T00:00:00+00:00',
    updated_at: '2026-12-01T00:00:00+00:00',
    execution_partition: `1/20261201T000000`,
    passed_sla: true,
    block_runs_count: 0,
    ...overrides
  };
}

export function blockRun(overrides: Record<string, unknown> = {}): any {
  const id = (overrides.id as number) ?? nextId++;
  return {
    id,
    pipeline_run_id: 1,
    block_uuid: `cell_${id}`,
    status: 'completed',
    started_at: null,
    completed_at: null,
    error: null,
    metrics: null,
    created_at: '2026-12-01T00:00:00+00:00',
    updated_at: '2026-12-01T00:00:00+00:00',
    duration: 1.5,
    ...overrides
  };
}

export function list(key: string, items: unknown[], next: number | null = null): unknown {
  return { [key]: items, metadata: { count: items.length, next } };
}

/** `GET status`'s answer (an active scheduler in this server by default). */
export function schedulerStatus(overrides: Record<string, unknown> = {}): any {
  return {
    scheduler_status: 'running',
    active: true,
    instance_id: 'sched:test',
    in_this_server: true,
    lease_expires_at: '2026-12-01T12:00:10+00:00',
    last_heartbeat_at: '2026-12-01T12:00:00+00:00',
    last_pass_at: '2026-12-01T12:00:00+00:00',
    scheduler_enabled: true,
    this_server: null,
    instances: ['sched:test'],
    queue_depth: 0,
    running: 0,
    workers: null,
    problems: [],
    checked_at: '2026-12-01T12:00:00+00:00',
    message: 'The scheduler in this server (sched:test) is active for this store.',
    ...overrides
  };
}
