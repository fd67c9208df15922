// Runs the unit tests (vitest) and closes with the line CI reads: "N passed, N failed".
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dir = mkdtempSync(join(tmpdir(), 'mage-nb-sched-vitest-'));
const report = join(dir, 'report.json');
const vitest = join(root, 'node_modules', 'vitest', 'vitest.mjs');
const result = spawnSync(
  process.execPath,
  [vitest, 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${report}`, ...process.argv.slice(2)],
  { cwd: root, stdio: 'inherit' }
);
let passed = 0;
let failed = 0;
let skipped = 0;
let readable = true;
try {
  const data = JSON.parse(readFileSync(report, 'utf8'));
  passed = data.numPassedTests ?? 0;
  failed = data.numFailedTests ?? 0;
  skipped = (data.numPendingTests ?? 0) + (data.numTodoTests ?? 0);
  if ((data.numFailedTestSuites ?? 0) > 0 && failed === 0) {
    // A test file that failed to load counts as one failure.
    failed = data.numFailedTestSuites;
  }
} catch (err) {
  readable = false;
  console.error(`error: vitest wrote no readable report (${err.message})`);
}
rmSync(dir, { recursive: true, force: true });
if (!readable) {
  failed = Math.max(failed, 1);
}
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
const ok = result.status === 0 && failed === 0 && passed > 0;
process.exit(ok ? 0 : 1);
