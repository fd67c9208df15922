import { describe, expect, it } from 'vitest';
import { ApiClient } from '../src/api';
import {
  alertKey,
  runAlerts,
  PanelModel,
  describeInterval,
  formatDuration,
  parseVariables,
  pipelineUuidFromPath,
  runDuration,
  runError,
  scheduleTimezone,
  slaState
} from '../src/model';
import {
  BASE,
  FakeServer,
  apiError,
  blockRun,
  json,
  list,
  run,
  schedule,
  schedulerStatus
} from './fake';

function setup(server: FakeServer): PanelModel {
  return new PanelModel(
    new ApiClient(BASE, server.request),
    () => new Date('2026-12-01T12:00:00Z')
  );
}

describe('helpers', () => {
  it('maps a notebook path to its pipeline uuid', () => {
    expect(pipelineUuidFromPath('etl/daily.ipynb')).toBe('etl/daily');
    expect(pipelineUuidFromPath('/report.IPYNB')).toBe('report');
    expect(pipelineUuidFromPath('script.py')).toBeNull();
    expect(pipelineUuidFromPath(null)).toBeNull();
  });

  it('describes interval, time zone, durations and SLA', () => {
    expect(describeInterval(schedule({ schedule_interval: '0 6 * * *' }))).toBe('0 6 * * *');
    expect(describeInterval(schedule({ schedule_type: 'api', schedule_interval: null }))).toBe(
      'on API call'
    );
    expect(scheduleTimezone(schedule({ settings: { timezone: 'Europe/Paris' } }))).toBe(
      'Europe/Paris'
    );
    expect(scheduleTimezone(schedule())).toBe('UTC');
    expect(formatDuration(0.25)).toBe('250 ms');
    expect(formatDuration(12.34)).toBe('12.3 s');
    expect(formatDuration(245)).toBe('4 min 5 s');
    expect(formatDuration(7380)).toBe('2 h 3 min');
    expect(formatDuration(null)).toBe('—');
    // Rounded before it is split: never "1 min 60 s" or "60.0 s".
    expect(formatDuration(119.6)).toBe('2 min 0 s');
    expect(formatDuration(59.97)).toBe('1 min 0 s');
    expect(formatDuration(3599.7)).toBe('1 h 0 min');
    expect(runDuration(run())).toBe(3);
    expect(runDuration(run({ started_at: null }))).toBeNull();
    expect(runError(run({ metrics: { error: 'Traceback: boom' } }))).toBe('Traceback: boom');
    expect(runError(run())).toBeNull();
    const s = schedule({ id: 70, sla: 600 });
    expect(slaState(s)).toEqual({ text: 'SLA 10 min 0 s', breached: false });
    expect(slaState({ ...s, pipeline_runs_count: 4, sla_breached_runs_count: 0 })?.text).toBe(
      'SLA 10 min 0 s · met by every run'
    );
    expect(slaState({ ...s, pipeline_runs_count: 14, sla_breached_runs_count: 2 })).toEqual({
      text: 'SLA 10 min 0 s · missed by 2 of 14 runs',
      breached: true
    });
    expect(slaState(schedule({ sla: null }))).toBeNull();
  });

  it('parses run-now variables as a JSON object', () => {
    expect(parseVariables('')).toBeNull();
    expect(parseVariables(' {"date": "2024-01-15"} ')).toEqual({ date: '2024-01-15' });
    expect(() => parseVariables('[1]')).toThrow('JSON object');
    expect(() => parseVariables('{oops')).toThrow('JSON object');
  });
});

describe('PanelModel', () => {
  it('shows nothing and asks nothing while no notebook is in focus', async () => {
    const server = new FakeServer();
    const model = setup(server);
    await model.refresh();
    expect(server.calls).toHaveLength(0);
    expect(model.state.schedules).toEqual([]);
    expect(model.state.schedulesLoaded).toBe(true);
  });

  it('filters to the notebook in focus, or shows all', async () => {
    const server = new FakeServer()
      .on('GET', 'pipeline_schedules', req =>
        list(
          'pipeline_schedules',
          req.query.pipeline_uuid
            ? [schedule({ id: 1 })]
            : [schedule({ id: 1 }), schedule({ id: 2, pipeline_uuid: 'other' })]
        )
      )
      .on('GET', 'pipeline_runs', req =>
        list('pipeline_runs', [run({ id: 40, pipeline_uuid: req.query.pipeline_uuid })])
      );
    const model = setup(server);
    expect(model.setNotebookPath('etl/daily.ipynb')).toBe(true);
    expect(model.setNotebookPath('etl/daily.ipynb')).toBe(false);
    await model.refresh();
    expect(server.calls[0].query.pipeline_uuid).toBe('etl/daily');
    expect(model.visibleSchedules.map(s => s.id)).toEqual([1]);
    // No schedule selected: the notebook's own runs (scheduled or not) are shown.
    expect(server.calls[1].path).toBe('pipeline_runs');
    expect(server.calls[1].query.pipeline_uuid).toBe('etl/daily');
    expect(model.state.runsScope).toBe('notebook');
    expect(model.state.runs.map(r => r.id)).toEqual([40]);
    model.setFilter('all');
    await model.refresh();
    expect(server.calls[2].query.pipeline_uuid).toBeUndefined();
    expect(server.calls).toHaveLength(3);
    expect(model.state.runsScope).toBeNull();
    expect(model.state.runs).toEqual([]);
    expect(model.visibleSchedules.map(s => s.id)).toEqual([1, 2]);
    expect(model.state.lastUpdated?.toISOString()).toBe('2026-12-01T12:00:00.000Z');
  });

  it('notifies subscribers on every change, until unsubscribed', async () => {
    const server = new FakeServer().on('GET', 'pipeline_schedules', () =>
      list('pipeline_schedules', [])
    );
    const model = setup(server);
    let seen = 0;
    const off = model.subscribe(() => seen++);
    model.setFilter('all');
    await model.refresh();
    expect(seen).toBeGreaterThanOrEqual(3);
    off();
    const before = seen;
    model.clearError();
    expect(seen).toBe(before);
  });

  it('toggles a schedule status and keeps the server answer', async () => {
    const server = new FakeServer()
      .on('GET', 'pipeline_schedules', () =>
        list('pipeline_schedules', [schedule({ id: 3, status: 'active' })])
      )
      .on('PUT', 'pipeline_schedules/3', req => ({
        pipeline_schedule: schedule({ id: 3, ...(req.body as any).pipeline_schedule })
      }));
    const model = setup(server);
    model.setFilter('all');
    await model.refresh();
    const pending = model.toggleStatus(3);
    expect(model.state.busy).toEqual([3]);
    await pending;
    expect(model.state.busy).toEqual([]);
    expect(server.calls[1].body).toEqual({ pipeline_schedule: { status: 'inactive' } });
    expect(model.state.schedules[0].status).toBe('inactive');
    await model.toggleStatus(3);
    expect(server.calls[2].body).toEqual({ pipeline_schedule: { status: 'active' } });
    expect(model.state.schedules[0].status).toBe('active');
  });

  it('puts the server error in the state when an action fails', async () => {
    const server = new FakeServer()
      .on('GET', 'pipeline_schedules', () => list('pipeline_schedules', [schedule({ id: 3 })]))
      .on('POST', 'pipeline_runs', () =>
        apiError(409, 'conflict', 'schedule 3 is inactive', 'status', 'activate the schedule first')
      );
    const model = setup(server);
    model.setFilter('all');
    await model.refresh();
    await expect(model.runNow(3)).rejects.toThrow('schedule 3 is inactive');
    expect(model.state.error).toBe(
      'schedule 3 is inactive (field: status) — fix: activate the schedule first'
    );
    expect(model.state.busy).toEqual([]);
    // A refresh that succeeds keeps the action's error on screen until it is dismissed.
    await model.refresh();
    expect(model.state.error).toContain('schedule 3 is inactive');
    model.clearError();
    expect(model.state.error).toBeNull();
  });

  it('runs now: selects the schedule and the new run, and counts it in progress', async () => {
    const server = new FakeServer()
      .on('GET', 'pipeline_schedules', () => list('pipeline_schedules', [schedule({ id: 3 })]))
      .on('POST', 'pipeline_runs', () =>
        json({ pipeline_run: run({ id: 40, pipeline_schedule_id: 3, status: 'initial' }) }, 201)
      );
    const model = setup(server);
    model.setFilter('all');
    await model.refresh();
    expect(model.active).toBe(false);
    const created = await model.runNow(3, { date: '2024-01-15' });
    expect(created.id).toBe(40);
    expect(server.calls[1].body).toEqual({
      pipeline_run: { pipeline_schedule_id: 3, variables: { date: '2024-01-15' } }
    });
    expect(model.state.selectedScheduleId).toBe(3);
    expect(model.state.selectedRunId).toBe(40);
    expect(model.state.runs.map(r => r.id)).toEqual([40]);
    expect(model.state.schedules[0].pipeline_in_progress_runs_count).toBe(1);
    expect(model.active).toBe(true);
  });

  it('reads the run history, block runs and a log as the user selects them', async () => {
    const server = new FakeServer()
      .on('GET', 'pipeline_schedules', () => list('pipeline_schedules', [schedule({ id: 3 })]))
      .on('GET', 'pipeline_schedules/3/pipeline_runs', () =>
        list('pipeline_runs', [
          run({ id: 41, status: 'failed', metrics: { error: 'Traceback' } }),
          run({ id: 40 })
        ])
      )
      .on('GET', 'pipeline_runs/41/block_runs', () =>
        list('block_runs', [
          blockRun({ id: 7, block_uuid: 'load' }),
          blockRun({ id: 8, status: 'failed', error: 'ZeroDivisionError' })
        ])
      )
      .on('GET', 'block_runs/8/logs', () => new Response('boom\n', { status: 200 }));
    const model = setup(server);
    model.setFilter('all');
    await model.refresh();
    await model.selectSchedule(3);
    expect(model.selectedSchedule?.id).toBe(3);
    expect(model.state.runs.map(r => r.id)).toEqual([41, 40]);
    await model.selectRun(41);
    expect(model.selectedRun?.status).toBe('failed');
    expect(model.state.blockRuns.map(b => b.block_uuid)).toEqual(['load', 'cell_8']);
    await model.showLogs(8);
    expect(model.state.selectedBlockRunId).toBe(8);
    expect(model.state.logs?.text).toBe('boom\n');
    await model.showLogs(8);
    expect(model.state.selectedBlockRunId).toBeNull();
    await model.selectRun(41);
    expect(model.state.selectedRunId).toBeNull();
    expect(model.state.blockRuns).toEqual([]);
    await model.selectSchedule(3);
    expect(model.state.selectedScheduleId).toBeNull();
  });

  it('refresh re-reads the selection and reports activity and change for the poller', async () => {
    let status = 'running';
    const server = new FakeServer()
      .on('GET', 'pipeline_schedules', () => list('pipeline_schedules', [schedule({ id: 3 })]))
      .on('GET', 'pipeline_schedules/3/pipeline_runs', () =>
        list('pipeline_runs', [run({ id: 50, status })])
      )
      .on('GET', 'pipeline_runs/50/block_runs', () =>
        list('block_runs', [blockRun({ id: 9, status })])
      );
    const model = setup(server);
    model.setFilter('all');
    await model.refresh();
    await model.selectSchedule(3);
    await model.selectRun(50);
    expect(await model.refresh()).toEqual({ active: true, changed: false });
    status = 'completed';
    expect(await model.refresh()).toEqual({ active: false, changed: true });
    expect(model.state.runs[0].status).toBe('completed');
    expect(model.state.blockRuns[0].status).toBe('completed');
    expect(await model.refresh()).toEqual({ active: false, changed: false });
  });

  it('drops a selection the server no longer has', async () => {
    let items = [schedule({ id: 3 })];
    const server = new FakeServer()
      .on('GET', 'pipeline_schedules', () => list('pipeline_schedules', items))
      .on('GET', 'pipeline_schedules/3/pipeline_runs', () => list('pipeline_runs', []));
    const model = setup(server);
    model.setFilter('all');
    await model.refresh();
    await model.selectSchedule(3);
    items = [];
    await model.refresh();
    expect(model.state.selectedScheduleId).toBeNull();
    expect(model.state.runs).toEqual([]);
  });

  it('keeps a refresh failure as the error and rethrows it (the poller backs off)', async () => {
    const server = new FakeServer().on('GET', 'pipeline_schedules', () =>
      apiError(503, 'store_unavailable', 'the database is busy', null, 'retry in a moment')
    );
    const model = setup(server);
    model.setFilter('all');
    await expect(model.refresh()).rejects.toThrow('the database is busy');
    expect(model.state.connectionError).toBe('the database is busy — fix: retry in a moment');
    expect(model.state.error).toBeNull();
    expect(model.state.loading).toBe(false);
    server.on('GET', 'pipeline_schedules', () => list('pipeline_schedules', []));
    await model.refresh();
    expect(model.state.connectionError).toBeNull();
  });
});

describe('alerts', () => {
  it('alerts runs seen in progress that fail, and newly breached SLAs, once', () => {
    const before = [
      run({ id: 1, status: 'running' }),
      run({ id: 2, status: 'completed' }),
      run({ id: 3, status: 'failed' })
    ];
    const after = [
      run({
        id: 1,
        status: 'failed',
        metrics: { error: 'Traceback\nZeroDivisionError: division by zero' }
      }),
      run({ id: 2, status: 'completed', sla_breached: true }),
      run({ id: 3, status: 'failed' }),
      run({ id: 4, status: 'failed' })
    ];
    const alerts = runAlerts(before, after, new Map([[1, 'nightly']]));
    expect(alerts.map(a => [a.kind, a.runId])).toEqual([
      ['failure', 1],
      ['sla_breach', 2]
    ]);
    expect(alerts[0].text).toBe('nightly: run 1 failed: ZeroDivisionError: division by zero');
    expect(alertKey(alerts[0])).toBe('failure:1');
    expect(runAlerts(after, after)).toEqual([]);
  });

  it('tells listeners when a shown run fails between two refreshes', async () => {
    let status = 'running';
    const server = new FakeServer()
      .on('GET', 'pipeline_schedules', () =>
        list('pipeline_schedules', [schedule({ id: 1, name: 'nightly' })])
      )
      .on('GET', 'pipeline_schedules/1/pipeline_runs', () =>
        list('pipeline_runs', [run({ id: 9, pipeline_schedule_id: 1, status })])
      );
    const model = setup(server);
    model.setFilter('all');
    await model.refresh();
    await model.selectSchedule(1);
    const seen: string[] = [];
    model.onAlert(a => seen.push(a.text));
    await model.refresh();
    expect(seen).toEqual([]);
    status = 'failed';
    await model.refresh();
    expect(seen).toEqual(['nightly: run 9 failed']);
  });
});

describe('tokens, notebook runs, deletion', () => {
  it('keeps a token seen once and builds the trigger URL with it', async () => {
    const server = new FakeServer().on('PUT', 'pipeline_schedules/5', req => {
      expect(req.body).toEqual({ pipeline_schedule: { rotate_token: true } });
      return {
        pipeline_schedule: schedule({
          id: 5,
          schedule_type: 'api',
          token: 'tok-new-123456789',
          token_hint: 'tok-'
        })
      };
    });
    const model = setup(server);
    expect(model.triggerUrl(5)).toEqual({
      url: `${BASE}mage/api/pipeline_schedules/5/pipeline_runs/<token>`,
      hasToken: false
    });
    const url = await model.rotateToken(5);
    expect(url).toBe(`${BASE}mage/api/pipeline_schedules/5/pipeline_runs/tok-new-123456789`);
    expect(model.triggerUrl(5)).toEqual({ url, hasToken: true });
  });

  it('runs the notebook in focus on its own and selects the new run', async () => {
    const server = new FakeServer().on('POST', 'pipeline_runs', req => ({
      pipeline_run: run({
        id: 77,
        pipeline_schedule_id: null,
        pipeline_uuid: (req.body as any).pipeline_run.pipeline_uuid,
        status: 'initial'
      })
    }));
    const model = setup(server);
    model.setNotebookPath('etl/daily.ipynb');
    const created = await model.runNotebook('etl/daily', { x: 1 });
    expect(server.calls[0].body).toEqual({
      pipeline_run: { pipeline_uuid: 'etl/daily', variables: { x: 1 } }
    });
    expect(created.id).toBe(77);
    expect(model.state.runsScope).toBe('notebook');
    expect(model.state.selectedRunId).toBe(77);
  });

  it('deletes a schedule and drops its selection', async () => {
    const server = new FakeServer()
      .on('GET', 'pipeline_schedules', () =>
        list('pipeline_schedules', [schedule({ id: 1 }), schedule({ id: 2 })])
      )
      .on('GET', 'pipeline_schedules/2/pipeline_runs', () => list('pipeline_runs', []))
      .on('DELETE', 'pipeline_schedules/2', () => new Response(null, { status: 204 }));
    const model = setup(server);
    model.setFilter('all');
    await model.refresh();
    await model.selectSchedule(2);
    await model.deleteSchedule(2);
    expect(model.visibleSchedules.map(s => s.id)).toEqual([1]);
    expect(model.state.selectedScheduleId).toBeNull();
  });
});

describe('races with the user', () => {
  it("keeps the log the user opened while a refresh was reading another one's", async () => {
    let releaseLog: () => void = () => undefined;
    const server = new FakeServer()
      .on('GET', 'pipeline_schedules', () => list('pipeline_schedules', [schedule({ id: 1 })]))
      .on('GET', 'pipeline_schedules/1/pipeline_runs', () =>
        list('pipeline_runs', [run({ id: 9, pipeline_schedule_id: 1, status: 'running' })])
      )
      .on('GET', 'pipeline_runs/9/block_runs', () =>
        list('block_runs', [
          blockRun({ id: 50, pipeline_run_id: 9, status: 'running' }),
          blockRun({ id: 51, pipeline_run_id: 9, status: 'completed' })
        ])
      )
      .on(
        'GET',
        'block_runs/50/logs',
        () => new Promise(resolve => (releaseLog = () => resolve(new Response('log of 50'))))
      )
      .on('GET', 'block_runs/51/logs', () => new Response('log of 51'));
    const model = setup(server);
    model.setFilter('all');
    await model.refresh();
    await model.selectSchedule(1);
    await model.selectRun(9);
    const first = model.showLogs(50);
    releaseLog();
    await first;
    // A poll re-reads the running block's log; the user opens block 51 meanwhile.
    const polling = model.refresh();
    await new Promise(r => setTimeout(r, 0));
    await model.showLogs(51);
    releaseLog();
    await polling;
    expect(model.state.selectedBlockRunId).toBe(51);
    expect(model.state.logs?.text).toBe('log of 51');
  });

  it("clears the previous notebook's schedules and runs when another comes into focus", async () => {
    const server = new FakeServer()
      .on('GET', 'pipeline_schedules', () => list('pipeline_schedules', [schedule({ id: 1 })]))
      .on('GET', 'pipeline_runs', () => list('pipeline_runs', [run({ id: 3 })]));
    const model = setup(server);
    model.setNotebookPath('a.ipynb');
    await model.refresh();
    expect(model.visibleSchedules).toHaveLength(1);
    expect(model.setNotebookPath('b.ipynb')).toBe(true);
    // Until b's answer comes, nothing of a's shows (or can be acted on) under b's name.
    expect(model.visibleSchedules).toEqual([]);
    expect(model.state.runs).toEqual([]);
    expect(model.state.schedulesLoaded).toBe(false);
  });

  it('says when a failed run is retried, so its next failure alerts again', async () => {
    let status = 'failed';
    const server = new FakeServer()
      .on('GET', 'pipeline_schedules', () => list('pipeline_schedules', [schedule({ id: 1 })]))
      .on('GET', 'pipeline_schedules/1/pipeline_runs', () =>
        list('pipeline_runs', [run({ id: 9, pipeline_schedule_id: 1, status })])
      );
    const model = setup(server);
    model.setFilter('all');
    await model.refresh();
    await model.selectSchedule(1);
    const restarted: number[] = [];
    model.onRestart(id => restarted.push(id));
    await model.refresh();
    expect(restarted).toEqual([]);
    status = 'running'; // retried elsewhere (the CLI, another browser)
    await model.refresh();
    expect(restarted).toEqual([9]);
  });
});

describe('scheduler status', () => {
  it('reads whether a scheduler serves the store, and keeps refreshing when it cannot', async () => {
    let active = false;
    const server = new FakeServer()
      .on('GET', 'pipeline_schedules', () => list('pipeline_schedules', []))
      .on('GET', 'status', () => ({
        status: schedulerStatus({
          active,
          message: active ? 'active' : 'No scheduler is active for this store'
        })
      }));
    const model = setup(server);
    model.setFilter('all');
    const first = await model.refresh();
    expect(model.state.scheduler?.active).toBe(false);
    expect(model.state.scheduler?.message).toContain('No scheduler');
    active = true;
    const second = await model.refresh();
    expect(model.state.scheduler?.active).toBe(true);
    // A scheduler coming up is a change (the poller's backoff starts again).
    expect(first.changed && second.changed).toBe(true);
    expect(server.statusCalls).toHaveLength(2);
    // A server that cannot tell (an error) is no failure of the refresh.
    server.on('GET', 'status', () => apiError(503, 'store_unavailable', 'busy'));
    await model.refresh();
    expect(model.state.scheduler).toBeNull();
    expect(model.state.connectionError).toBeNull();
  });
});

describe('deleted elsewhere', () => {
  it('drops a schedule deleted between the list and the read of its runs, without an error', async () => {
    let gone = false;
    const server = new FakeServer()
      .on('GET', 'pipeline_schedules', () => list('pipeline_schedules', [schedule({ id: 1 })]))
      .on('GET', 'pipeline_schedules/1/pipeline_runs', () =>
        gone
          ? apiError(404, 'not_found', 'pipeline_schedule_id=1: no such schedule')
          : list('pipeline_runs', [])
      );
    const model = setup(server);
    model.setFilter('all');
    await model.refresh();
    await model.selectSchedule(1);
    gone = true; // deleted after the list was read (its runs answer 404)
    await model.refresh();
    expect(model.state.connectionError).toBeNull();
    expect(model.state.selectedScheduleId).toBeNull();
    expect(model.visibleSchedules).toEqual([]);
  });

  it('drops a run deleted between the run list and the read of its blocks', async () => {
    const server = new FakeServer()
      .on('GET', 'pipeline_schedules', () => list('pipeline_schedules', [schedule({ id: 1 })]))
      .on('GET', 'pipeline_schedules/1/pipeline_runs', () =>
        list('pipeline_runs', [run({ id: 9, pipeline_schedule_id: 1 })])
      )
      .on('GET', 'pipeline_runs/9/block_runs', () => list('block_runs', []));
    const model = setup(server);
    model.setFilter('all');
    await model.refresh();
    await model.selectSchedule(1);
    await model.selectRun(9);
    server.on('GET', 'pipeline_runs/9/block_runs', () => apiError(404, 'not_found', 'no such run'));
    await model.refresh();
    expect(model.state.connectionError).toBeNull();
    expect(model.state.selectedRunId).toBeNull();
    expect(model.state.selectedScheduleId).toBe(1);
  });
});
