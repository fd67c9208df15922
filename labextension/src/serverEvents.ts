/**
 * The scheduler's run notifications as they arrive on JupyterLab's event stream
 * (`app.serviceManager.events.stream`, the server's `/api/events/subscribe` websocket): the
 * server sends each as `{"schema_id": ..., ...payload}` (jupyter_server's events handler), the
 * payload being `mage_nb_sched/scheduling/event_schemas/run_notification.yaml`.
 */
import type { IAlert } from './model';

/** `$id` of the run notification schema (`RUN_NOTIFICATION_SCHEMA_ID` on the Python side). */
export const RUN_NOTIFICATION_SCHEMA_ID = 'https://events.mage-nb-sched.dev/run_notification/v1';

/** The alert of a failure or SLA-breach event; null for any other event (or a success). */
export function alertOfServerEvent(
  event: Record<string, unknown> | null | undefined
): IAlert | null {
  if (!event || typeof event !== 'object') {
    return null;
  }
  const schema = event.schema_id ?? event.__schema__;
  if (schema !== RUN_NOTIFICATION_SCHEMA_ID) {
    return null;
  }
  const kind = event.kind;
  if (kind !== 'failure' && kind !== 'sla_breach') {
    return null;
  }
  const runId = Number(event.run_id);
  if (!Number.isInteger(runId)) {
    return null;
  }
  const pipelineUuid = String(event.pipeline_uuid ?? '');
  const scheduleId = typeof event.schedule_id === 'number' ? event.schedule_id : null;
  const who =
    typeof event.schedule_name === 'string' && event.schedule_name
      ? event.schedule_name
      : pipelineUuid;
  const reason =
    typeof event.reason === 'string' && event.reason ? event.reason.trim().split('\n').pop() : '';
  const text =
    kind === 'failure'
      ? `${who}: run ${runId} failed${reason ? `: ${reason}` : ''}`
      : `${who}: run ${runId} missed its SLA`;
  return { kind, runId, scheduleId, pipelineUuid, text };
}
