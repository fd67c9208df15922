/**
 * The REST resources the panel reads, as the OpenAPI document describes them
 * (`mage_nb_sched/handlers/openapi/*.yaml`). Only the fields the panel uses are typed.
 */

export type ScheduleStatus = 'active' | 'inactive';
export type ScheduleType = 'time' | 'event' | 'api';
export type RunStatus = 'initial' | 'running' | 'completed' | 'failed' | 'cancelled';
export type BlockRunStatus = RunStatus | 'queued' | 'upstream_failed';

export interface IPipelineSchedule {
  id: number;
  name: string;
  pipeline_uuid: string;
  schedule_type: ScheduleType;
  schedule_interval: string | null;
  start_time: string | null;
  status: ScheduleStatus;
  variables: Record<string, unknown> | null;
  sla: number | null;
  settings: Record<string, unknown> | null;
  description: string | null;
  token_hint: string | null;
  next_pipeline_run_date: string | null;
  pipeline_runs_count: number;
  last_pipeline_run_status: RunStatus | null;
  pipeline_in_progress_runs_count: number;
  /** The schedule's runs that missed its SLA. */
  sla_breached_runs_count?: number;
  [key: string]: unknown;
}

export interface IPipelineRun {
  id: number;
  pipeline_schedule_id: number | null;
  pipeline_uuid: string;
  execution_date: string;
  status: RunStatus;
  started_at: string | null;
  completed_at: string | null;
  variables: Record<string, unknown> | null;
  metrics: Record<string, unknown> | null;
  backfill_id: number | null;
  sla_breached: boolean;
  passed_sla: boolean;
  block_runs_count: number;
  [key: string]: unknown;
}

export interface IBlockRun {
  id: number;
  pipeline_run_id: number;
  block_uuid: string;
  status: BlockRunStatus;
  started_at: string | null;
  completed_at: string | null;
  error: string | null;
  metrics: Record<string, unknown> | null;
  duration: number | null;
  [key: string]: unknown;
}

export interface IListMetadata {
  count: number;
  next: number | null;
}

/** The server's error body: `{"error": {"type", "message", "field", "fix"}}`. */
export interface IErrorBody {
  type: string;
  message: string;
  field: string | null;
  fix: string | null;
}

/** `GET status`: who schedules for the store (only the fields the panel reads). */
export interface ISchedulerStatus {
  active: boolean;
  in_this_server: boolean;
  scheduler_enabled: boolean;
  queue_depth: number;
  running: number;
  /** In words: who schedules, or that nobody does and how to start one. */
  message: string;
  problems: { step: string; row_kind: string; row_id: number | null; error: string }[];
  [key: string]: unknown;
}
