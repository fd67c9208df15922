/**
 * A read-only JupyterLab drive of executed notebooks: `MageRuns:run-12/daily.ipynb` is the
 * notebook run 12 executed, with its outputs, read from `GET pipeline_runs/12/notebook`.
 *
 * Why a drive: the runner keeps executed notebooks in the hidden data dir, which the server's
 * contents manager does not serve, and copying them into the user's folders would litter the
 * project. A drive lets JupyterLab open one like any notebook (its own renderers, theme and
 * outputs) without a file being written anywhere.
 */
import type { Contents, ServerConnection } from '@jupyterlab/services';
import { Signal } from '@lumino/signaling';

import { ApiClient } from './api';

/** The drive's name: paths look like `MageRuns:run-12/daily.ipynb`. */
export const RUNS_DRIVE = 'MageRuns';

const PATH_PATTERN = /^run-(\d+)\/([^/]+\.ipynb)$/;

/** The drive path of a run's executed notebook (`MageRuns:run-12/daily.ipynb`). */
export function executedNotebookPath(runId: number, pipelineUuid: string): string {
  const base = pipelineUuid.split('/').pop() || 'notebook';
  return `${RUNS_DRIVE}:run-${runId}/${base}.ipynb`;
}

/** The run id of a path in the drive (without the `MageRuns:` prefix), else null. */
export function runIdOfPath(localPath: string): number | null {
  const match = PATH_PATTERN.exec(localPath.replace(/^\/+/, ''));
  return match ? Number(match[1]) : null;
}

function readOnly(what: string): Error {
  return new Error(
    `Executed notebooks are read-only (${what}): use File › Save As… or Download to keep a copy.`
  );
}

export class ExecutedNotebooksDrive implements Contents.IDrive {
  readonly name = RUNS_DRIVE;
  readonly fileChanged: Signal<Contents.IDrive, Contents.IChangedArgs> = new Signal<
    Contents.IDrive,
    Contents.IChangedArgs
  >(this);
  private disposed = false;

  constructor(
    private readonly api: ApiClient,
    readonly serverSettings: ServerConnection.ISettings
  ) {}

  get isDisposed(): boolean {
    return this.disposed;
  }

  dispose(): void {
    if (this.disposed) {
      return;
    }
    this.disposed = true;
    Signal.clearData(this);
  }

  async get(localPath: string, options?: Contents.IFetchOptions): Promise<Contents.IModel> {
    const path = localPath.replace(/^\/+/, '');
    const now = new Date().toISOString();
    if (path === '' || /^run-\d+\/?$/.test(path)) {
      // Directories exist only so that a file dialog opened here does not fail.
      return {
        name: path.replace(/\/$/, ''),
        path,
        type: 'directory',
        writable: false,
        created: now,
        last_modified: now,
        mimetype: '',
        content: options?.content === false ? null : [],
        format: 'json'
      };
    }
    const runId = runIdOfPath(path);
    if (runId === null) {
      throw new Error(`${RUNS_DRIVE}:${path} is not an executed notebook (run-<id>/<name>.ipynb).`);
    }
    const name = path.split('/').pop() as string;
    const content =
      options?.content === false
        ? null
        : await this.api.json<Record<string, unknown>>('GET', `pipeline_runs/${runId}/notebook`);
    return {
      name,
      path,
      type: 'notebook',
      writable: false,
      created: now,
      last_modified: now,
      mimetype: 'application/x-ipynb+json',
      content,
      format: 'json'
    };
  }

  async getDownloadUrl(localPath: string): Promise<string> {
    const runId = runIdOfPath(localPath);
    if (runId === null) {
      throw new Error(`${RUNS_DRIVE}:${localPath} is not an executed notebook.`);
    }
    return this.api.url(`pipeline_runs/${runId}/notebook`);
  }

  async newUntitled(): Promise<Contents.IModel> {
    throw readOnly('new file');
  }

  async delete(): Promise<void> {
    throw readOnly('delete');
  }

  async rename(): Promise<Contents.IModel> {
    throw readOnly('rename');
  }

  async save(): Promise<Contents.IModel> {
    throw readOnly('save');
  }

  async copy(): Promise<Contents.IModel> {
    throw readOnly('copy');
  }

  async createCheckpoint(): Promise<Contents.ICheckpointModel> {
    throw readOnly('checkpoint');
  }

  async listCheckpoints(): Promise<Contents.ICheckpointModel[]> {
    return [];
  }

  async restoreCheckpoint(): Promise<void> {
    throw readOnly('checkpoint');
  }

  async deleteCheckpoint(): Promise<void> {
    throw readOnly('checkpoint');
  }
}
