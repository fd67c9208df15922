/** A fake REST server: records each request and answers from handlers keyed by "METHOD path". */
import type { RequestFn } from '../src/api';
import type { IBackfill, IBackfillProgress } from '../src/backfill';
import type { ITimer } from '../src/poller';

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

/** A backfill's `progress` from its run counts (`total` and `done` derived as the server does). */
export function backfillProgress(overrides: Partial<IBackfillProgress> = {}): IBackfillProgress {
  const p = { initial: 0, running: 0, completed: 0, failed: 0, cancelled: 0, ...overrides };
  const total = p.initial + p.running + p.completed + p.failed + p.cancelled;
  return { total, done: p.completed, ...p };
}

/** A backfill with every field the yaml's `Backfill` requires. */
export function backfill(overrides: Partial<IBackfill> = {}): IBackfill {
  return {
    id: 7,
    name: 'backfill etl/daily',
    pipeline_uuid: 'etl/daily',
    pipeline_schedule_id: 3,
    start_datetime: '2024-01-01T00:00:00+00:00',
    end_datetime: '2024-01-03T00:00:00+00:00',
    interval_type: 'day',
    interval_units: 1,
    status: 'initial',
    started_at: null,
    completed_at: null,
    failed_at: null,
    variables: null,
    settings: null,
    created_at: '2024-02-01T00:00:00+00:00',
    updated_at: '2024-02-01T00:00:00+00:00',
    progress: backfillProgress(),
    ...overrides
  };
}

/** Let pending promises (a request a timer started) finish: a few macrotask turns. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) {
    await new Promise(r => setTimeout(r, 0));
  }
}

/** A timer whose callbacks run when a test says (`fire`), for pollers and watchers. */
export class FakeTimer implements ITimer {
  pending: { fn: () => void; ms: number; id: number }[] = [];
  private id = 0;
  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.id;
    this.pending.push({ fn, ms, id });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.pending = this.pending.filter(p => p.id !== handle);
  }
  /** Fire the next timer and let the work it starts finish; its delay. */
  async fire(): Promise<number> {
    const next = this.pending.shift();
    if (!next) {
      throw new Error('nothing armed');
    }
    next.fn();
    await settle();
    return next.ms;
  }
}
