import { describe, expect, it } from 'vitest';
import { alertKey, runAlerts } from '../src/model';
import { RUN_NOTIFICATION_SCHEMA_ID, alertOfServerEvent } from '../src/serverEvents';
import { run } from './fake';

// What jupyter_server's events websocket sends: {schema_id, ...Notification.payload()}.
function event(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    schema_id: RUN_NOTIFICATION_SCHEMA_ID,
    text: ':x: hello run 9 failed',
    kind: 'failure',
    run_id: 9,
    pipeline_uuid: 'etl/hello',
    schedule_id: 3,
    schedule_name: 'nightly',
    execution_date: '2026-12-01T00:00:00+00:00',
    status: 'failed',
    reason: 'block cell_0 failed: ZeroDivisionError: division by zero',
    ...overrides
  };
}

describe('server events', () => {
  it('turns a failure event into the same alert a poll makes for that run', () => {
    const alert = alertOfServerEvent(event());
    expect(alert).toEqual({
      kind: 'failure',
      runId: 9,
      scheduleId: 3,
      pipelineUuid: 'etl/hello',
      text: 'nightly: run 9 failed: block cell_0 failed: ZeroDivisionError: division by zero'
    });
    const polled = runAlerts(
      [run({ id: 9, status: 'running' })],
      [run({ id: 9, status: 'failed' })]
    );
    expect(alertKey(polled[0])).toBe(alertKey(alert!));
  });

  it('alerts SLA breaches, and ignores successes, other schemas and junk', () => {
    expect(alertOfServerEvent(event({ kind: 'sla_breach', schedule_name: null }))?.text).toBe(
      'etl/hello: run 9 missed its SLA'
    );
    expect(alertOfServerEvent(event({ kind: 'success' }))).toBeNull();
    expect(
      alertOfServerEvent(
        event({ schema_id: 'https://events.jupyter.org/jupyter_server/contents_service/v1' })
      )
    ).toBeNull();
    expect(alertOfServerEvent(event({ run_id: 'x' }))).toBeNull();
    expect(alertOfServerEvent(null)).toBeNull();
  });
});
