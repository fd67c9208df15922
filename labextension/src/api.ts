/**
 * The REST client of the panel. It knows URLs, bodies and error shapes, and nothing of the
 * DOM or of JupyterLab: the request function is injected (in the extension it is
 * `ServerConnection.makeRequest` bound to the server settings, so the XSRF token and the
 * Jupyter token are sent), which keeps this module unit-testable.
 */
import type {
  IBlockRun,
  IErrorBody,
  IListMetadata,
  IPipelineRun,
  IPipelineSchedule,
  ISchedulerStatus,
  ScheduleStatus
} from './types';

/** `fetch`-shaped: takes an absolute URL and a RequestInit, answers a Response. */
export type RequestFn = (url: string, init: RequestInit) => Promise<Response>;

/** Path of the REST API under the server's base URL. */
export const API_PATH = 'mage/api/';

/** At most this many pages are read for one list (1000 items a page). */
export const MAX_PAGES = 20;

/** An error answered by the server (or a failure to reach it), with the server's fields. */
export class ApiError extends Error {
  readonly status: number;
  readonly type: string;
  readonly field: string | null;
  readonly fix: string | null;
  readonly serverMessage: string;

  constructor(status: number, body: IErrorBody) {
    super(formatError(body));
    this.name = 'ApiError';
    this.status = status;
    this.type = body.type;
    this.field = body.field;
    this.fix = body.fix;
    this.serverMessage = body.message;
  }
}

/** One line a person can act on: the message, the field at fault and what would be accepted. */
export function formatError(body: IErrorBody): string {
  let text = body.message || body.type || 'Request failed';
  if (body.field) {
    text += ` (field: ${body.field})`;
  }
  // The server often ends its message with the fix already; say it once.
  if (body.fix && !text.includes(body.fix)) {
    text += ` — fix: ${body.fix}`;
  }
  return text;
}

/** Any thrown value as the message to show. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) {
    return err.message;
  }
  return String(err);
}

/**
 * Turn a non-2xx answer into an ApiError: the server's JSON error body when there is one,
 * else the HTTP status with the body's first characters.
 */
export async function errorFromResponse(response: Response): Promise<ApiError> {
  let text = '';
  try {
    text = await response.text();
  } catch {
    text = '';
  }
  let body: IErrorBody | null = null;
  if (text) {
    try {
      const parsed = JSON.parse(text) as { error?: Partial<IErrorBody> };
      const e = parsed && typeof parsed === 'object' ? parsed.error : undefined;
      if (e && typeof e === 'object') {
        body = {
          type: String(e.type ?? 'error'),
          message: String(e.message ?? ''),
          field: e.field == null ? null : String(e.field),
          fix: e.fix == null ? null : String(e.fix)
        };
      }
    } catch {
      body = null;
    }
  }
  if (!body) {
    const snippet = text.trim().slice(0, 200);
    body = {
      type: 'http_error',
      message:
        `HTTP ${response.status}${response.statusText ? ' ' + response.statusText : ''}` +
        (snippet ? `: ${snippet}` : ''),
      field: null,
      fix: null
    };
  }
  if (!body.message) {
    body.message = `HTTP ${response.status}`;
  }
  return new ApiError(response.status, body);
}

/** Join a base URL and path segments with single slashes. */
export function joinUrl(base: string, ...parts: string[]): string {
  let url = base.endsWith('/') ? base : base + '/';
  parts.forEach((part, i) => {
    let p = part.replace(/^\/+/, '');
    if (i < parts.length - 1 && p && !p.endsWith('/')) {
      p += '/';
    }
    url += p;
  });
  return url;
}

/** `?a=1&b=x` of the defined values, in the given order ('' when none). */
export function queryString(
  params: Record<string, string | number | boolean | null | undefined>
): string {
  const pairs: string[] = [];
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === '') {
      continue;
    }
    pairs.push(`${encodeURIComponent(key)}=${encodeURIComponent(String(value))}`);
  }
  return pairs.length ? `?${pairs.join('&')}` : '';
}

export interface IListSchedulesOptions {
  /** Only the schedules of this pipeline (notebook path without `.ipynb`). */
  pipelineUuid?: string | null;
  status?: ScheduleStatus;
}

export interface IRunNowOptions {
  variables?: Record<string, unknown> | null;
  executionDate?: string | null;
}

export interface ILogs {
  text: string;
  /** The whole log's size (X-Log-Size), when the server says it. */
  size: number | null;
  /** Bytes before the part answered (X-Log-Dropped-Bytes). */
  dropped: number;
}

export class ApiClient {
  /**
   * @param baseUrl the Jupyter server's base URL (`ServerConnection.ISettings.baseUrl`)
   * @param request the request function (`ServerConnection.makeRequest` bound to settings)
   */
  constructor(
    readonly baseUrl: string,
    private readonly request: RequestFn
  ) {}

  /** Absolute URL of an API path (`pipeline_schedules/3`) with an optional query. */
  url(
    path: string,
    query: Record<string, string | number | boolean | null | undefined> = {}
  ): string {
    return joinUrl(this.baseUrl, API_PATH, path) + queryString(query);
  }

  /** One request; a non-2xx answer is thrown as an ApiError (network failures too). */
  async send(
    method: string,
    path: string,
    query: Record<string, string | number | boolean | null | undefined> = {},
    body?: unknown
  ): Promise<Response> {
    const init: RequestInit = { method };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers = { 'Content-Type': 'application/json' };
    }
    let response: Response;
    try {
      response = await this.request(this.url(path, query), init);
    } catch (err) {
      throw new ApiError(0, {
        type: 'network_error',
        message: `Cannot reach the server: ${errorMessage(err)}`,
        field: null,
        fix: 'Check that the Jupyter server is running.'
      });
    }
    if (!response.ok) {
      throw await errorFromResponse(response);
    }
    return response;
  }

  /** One request whose answer is JSON (an empty body reads as `{}`). */
  async json<T>(
    method: string,
    path: string,
    query: Record<string, string | number | boolean | null | undefined> = {},
    body?: unknown
  ): Promise<T> {
    const response = await this.send(method, path, query, body);
    const text = await response.text();
    return (text ? JSON.parse(text) : {}) as T;
  }

  /** Every page of a list resource, concatenated (at most MAX_PAGES pages). */
  private async listAll<T>(
    path: string,
    key: string,
    query: Record<string, string | number | boolean | null | undefined>,
    limit: number
  ): Promise<T[]> {
    const items: T[] = [];
    let cursor: number | null = null;
    for (let page = 0; page < MAX_PAGES; page++) {
      const answer: Record<string, unknown> = await this.json('GET', path, {
        ...query,
        limit,
        cursor
      });
      const list = (answer[key] as T[] | undefined) ?? [];
      items.push(...list);
      const metadata = answer.metadata as IListMetadata | undefined;
      cursor = metadata?.next ?? null;
      if (cursor === null) {
        break;
      }
    }
    return items;
  }

  /** `GET pipeline_schedules` (filter `pipeline_uuid`, `status`). */
  listSchedules(options: IListSchedulesOptions = {}): Promise<IPipelineSchedule[]> {
    return this.listAll<IPipelineSchedule>(
      'pipeline_schedules',
      'pipeline_schedules',
      { pipeline_uuid: options.pipelineUuid, status: options.status },
      1000
    );
  }

  /** `PUT pipeline_schedules/{id}` with `{"pipeline_schedule": {"status": ...}}`. */
  async setScheduleStatus(id: number, status: ScheduleStatus): Promise<IPipelineSchedule> {
    const answer = await this.json<{ pipeline_schedule: IPipelineSchedule }>(
      'PUT',
      `pipeline_schedules/${id}`,
      {},
      { pipeline_schedule: { status } }
    );
    return answer.pipeline_schedule;
  }

  /** `POST pipeline_runs` with `{"pipeline_run": {"pipeline_schedule_id", "variables"?}}`. */
  async runNow(scheduleId: number, options: IRunNowOptions = {}): Promise<IPipelineRun> {
    const run: Record<string, unknown> = { pipeline_schedule_id: scheduleId };
    if (options.variables && Object.keys(options.variables).length) {
      run.variables = options.variables;
    }
    if (options.executionDate) {
      run.execution_date = options.executionDate;
    }
    const answer = await this.json<{ pipeline_run: IPipelineRun }>(
      'POST',
      'pipeline_runs',
      {},
      { pipeline_run: run }
    );
    return answer.pipeline_run;
  }

  /** `GET pipeline_schedules/{id}/pipeline_runs`: the newest `limit` runs (newest first). */
  async listScheduleRuns(scheduleId: number, limit = 50): Promise<IPipelineRun[]> {
    const answer = await this.json<{ pipeline_runs: IPipelineRun[] }>(
      'GET',
      `pipeline_schedules/${scheduleId}/pipeline_runs`,
      { limit }
    );
    return answer.pipeline_runs ?? [];
  }

  /** `GET pipeline_runs/{id}/block_runs`: every block run of the run, in execution order. */
  listBlockRuns(runId: number): Promise<IBlockRun[]> {
    return this.listAll<IBlockRun>(`pipeline_runs/${runId}/block_runs`, 'block_runs', {}, 1000);
  }

  /** `GET block_runs/{id}/logs?tail=N` (text/plain). */
  async blockRunLogs(blockRunId: number, tail = 65536): Promise<ILogs> {
    const response = await this.send('GET', `block_runs/${blockRunId}/logs`, { tail });
    const size = response.headers.get('X-Log-Size');
    const dropped = response.headers.get('X-Log-Dropped-Bytes');
    return {
      text: await response.text(),
      size: size === null ? null : Number(size),
      dropped: dropped === null ? 0 : Number(dropped)
    };
  }

  /** `GET pipeline_runs?pipeline_uuid=`: a notebook's newest `limit` runs, scheduled or not. */
  async listNotebookRuns(pipelineUuid: string, limit = 50): Promise<IPipelineRun[]> {
    const answer = await this.json<{ pipeline_runs: IPipelineRun[] }>('GET', 'pipeline_runs', {
      pipeline_uuid: pipelineUuid,
      limit
    });
    return answer.pipeline_runs ?? [];
  }

  /** `POST pipeline_runs` with `{"pipeline_run": {"pipeline_uuid"}}`: run a notebook on its own. */
  async runNotebook(
    pipelineUuid: string,
    variables?: Record<string, unknown> | null
  ): Promise<IPipelineRun> {
    const run: Record<string, unknown> = { pipeline_uuid: pipelineUuid };
    if (variables && Object.keys(variables).length) {
      run.variables = variables;
    }
    const answer = await this.json<{ pipeline_run: IPipelineRun }>(
      'POST',
      'pipeline_runs',
      {},
      { pipeline_run: run }
    );
    return answer.pipeline_run;
  }

  /** `PUT pipeline_schedules/{id}` with `rotate_token`: the new token, answered this once. */
  async rotateToken(id: number): Promise<{ schedule: IPipelineSchedule; token: string }> {
    const answer = await this.json<{ pipeline_schedule: IPipelineSchedule & { token?: string } }>(
      'PUT',
      `pipeline_schedules/${id}`,
      {},
      { pipeline_schedule: { rotate_token: true } }
    );
    const token = answer.pipeline_schedule.token;
    if (!token) {
      throw new Error('The server answered no token after rotating it.');
    }
    return { schedule: answer.pipeline_schedule, token };
  }

  /** `DELETE pipeline_schedules/{id}`. */
  async deleteSchedule(id: number): Promise<void> {
    await this.send('DELETE', `pipeline_schedules/${id}`);
  }

  /** The schedule's API trigger URL (Mage's), with the token when it is known. */
  triggerUrl(id: number, token: string | null): string {
    return this.url(`pipeline_schedules/${id}/pipeline_runs/${token ?? '<token>'}`);
  }

  /** `PUT pipeline_runs/{id}`: cancel a run that has not finished, or run a failed or cancelled
   * one again (`retry`). */
  async changeRun(id: number, action: 'cancel' | 'retry'): Promise<IPipelineRun> {
    const change =
      action === 'cancel' ? { status: 'cancelled' } : { pipeline_run_action: 'retry_blocks' };
    const answer = await this.json<{ pipeline_run: IPipelineRun }>(
      'PUT',
      `pipeline_runs/${id}`,
      {},
      { pipeline_run: change }
    );
    return answer.pipeline_run;
  }

  /** `GET status`: whether a scheduler serves the store (runs wait when none does). */
  async status(): Promise<ISchedulerStatus> {
    const answer = await this.json<{ status: ISchedulerStatus }>('GET', 'status');
    return answer.status;
  }
}
