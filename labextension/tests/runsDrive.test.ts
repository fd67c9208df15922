import { describe, expect, it } from 'vitest';
import { ApiClient, ApiError } from '../src/api';
import {
  ExecutedNotebooksDrive,
  RUNS_DRIVE,
  executedNotebookPath,
  runIdOfPath
} from '../src/runsDrive';
import { BASE, FakeServer, apiError } from './fake';

const NOTEBOOK = {
  cells: [
    { cell_type: 'code', source: 'print(1)', outputs: [{ output_type: 'stream', text: '1\n' }] }
  ],
  metadata: {},
  nbformat: 4,
  nbformat_minor: 5
};

function drive(server: FakeServer): ExecutedNotebooksDrive {
  return new ExecutedNotebooksDrive(new ApiClient(BASE, server.request), {} as never);
}

describe('executed notebook paths', () => {
  it('names a run notebook in the drive after its pipeline and run', () => {
    expect(executedNotebookPath(12, 'etl/daily')).toBe(`${RUNS_DRIVE}:run-12/daily.ipynb`);
    expect(executedNotebookPath(3, 'top')).toBe(`${RUNS_DRIVE}:run-3/top.ipynb`);
  });

  it('reads the run id back, and nothing from other paths', () => {
    const local = executedNotebookPath(12, 'etl/daily').slice(RUNS_DRIVE.length + 1);
    expect(runIdOfPath(local)).toBe(12);
    expect(runIdOfPath('run-x/daily.ipynb')).toBeNull();
    expect(runIdOfPath('run-1/a/b.ipynb')).toBeNull();
    expect(runIdOfPath('run-1/daily.txt')).toBeNull();
  });
});

describe('ExecutedNotebooksDrive', () => {
  it('answers the run notebook from GET pipeline_runs/{id}/notebook, read-only', async () => {
    const server = new FakeServer().on('GET', 'pipeline_runs/12/notebook', () => NOTEBOOK);
    const model = await drive(server).get('run-12/daily.ipynb');
    expect(model.type).toBe('notebook');
    expect(model.format).toBe('json');
    expect(model.writable).toBe(false);
    expect(model.name).toBe('daily.ipynb');
    expect(model.content).toEqual(NOTEBOOK);
    expect(server.calls.map(c => c.path)).toEqual(['pipeline_runs/12/notebook']);
  });

  it('does not fetch the content when asked for the model only', async () => {
    const server = new FakeServer();
    const model = await drive(server).get('run-5/x.ipynb', { content: false });
    expect(model.content).toBeNull();
    expect(server.calls).toHaveLength(0);
  });

  it("passes the server's error on (e.g. the run has no notebook yet)", async () => {
    const server = new FakeServer().on('GET', 'pipeline_runs/7/notebook', () =>
      apiError(
        404,
        'not_found',
        'run 7 (running) has no executed notebook: it is written when the run ends.'
      )
    );
    const err = await drive(server)
      .get('run-7/x.ipynb')
      .catch(e => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err.status).toBe(404);
    expect(err.message).toContain('written when the run ends');
  });

  it('refuses writes with a message saying how to keep a copy', async () => {
    const d = drive(new FakeServer());
    await expect(d.save()).rejects.toThrow(/read-only.*Save As/);
    await expect(d.delete()).rejects.toThrow(/read-only/);
    await expect(d.get('elsewhere.ipynb')).rejects.toThrow(/not an executed notebook/);
    expect(await d.getDownloadUrl('run-4/x.ipynb')).toBe(
      `${BASE}mage/api/pipeline_runs/4/notebook`
    );
  });
});
