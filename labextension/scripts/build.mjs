// Builds the extension (tsc, then jupyter-builder/rspack) unless the output is already built
// from exactly these inputs. `skip-if-exists` in the hatch hook would keep a stale build; this
// hashes every input instead and keeps the hash beside the output (build-stamp.json), so a
// change to any source, style, the lockfile or the config rebuilds, and an unchanged tree does not.
//
//   node scripts/build.mjs            development build (source maps), as `jlpm build`
//   node scripts/build.mjs --prod     production build, as `jlpm build:prod`
//   add --force to rebuild anyway;  --check only says whether the output is current for the
//   mode it was built in (exit 1: stale or missing); with --prod, current as a production build
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync, rmSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = new Set(process.argv.slice(2));
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const outDir = resolve(root, pkg.jupyterlab.outputDir);
const stampPath = join(outDir, 'build-stamp.json');

function stampMode() {
  try {
    return JSON.parse(readFileSync(stampPath, 'utf8')).mode;
  } catch {
    return undefined;
  }
}

// --check alone: the mode the output was built in (an editable install builds in development).
const prod = args.has('--prod') || (args.has('--check') && stampMode() === 'production');
const mode = prod ? 'production' : 'development';

const INPUTS = [
  'package.json',
  'yarn.lock',
  '.yarnrc.yml',
  'tsconfig.json',
  'install.json',
  'src',
  'style',
  'schema',
  'scripts/build.mjs'
];

function files(path) {
  if (!existsSync(path)) {
    return [];
  }
  if (statSync(path).isDirectory()) {
    return readdirSync(path)
      .sort()
      .flatMap(name => files(join(path, name)));
  }
  return [path];
}

export function inputHash() {
  const hash = createHash('sha256');
  hash.update(`mode=${mode}\n`);
  for (const file of INPUTS.flatMap(p => files(join(root, p)))) {
    hash.update(relative(root, file).split('\\').join('/'));
    hash.update('\0');
    hash.update(readFileSync(file));
    hash.update('\0');
  }
  return hash.digest('hex');
}

function upToDate(hash) {
  if (!existsSync(stampPath)) {
    return false;
  }
  try {
    const stamp = JSON.parse(readFileSync(stampPath, 'utf8'));
    return (
      stamp.hash === hash &&
      existsSync(join(outDir, 'package.json')) &&
      existsSync(join(outDir, 'static', 'style.js'))
    );
  } catch {
    return false;
  }
}

function run(cmd, cmdArgs) {
  console.log(`$ ${cmd} ${cmdArgs.join(' ')}`);
  const result = spawnSync(cmd, cmdArgs, { cwd: root, stdio: 'inherit', shell: process.platform === 'win32' });
  if (result.error) {
    console.error(`error: cannot run ${cmd}: ${result.error.message}`);
    process.exit(1);
  }
  if (result.status !== 0) {
    process.exit(result.status ?? 1);
  }
}

const hash = inputHash();
const fresh = upToDate(hash);
if (args.has('--check')) {
  console.log(fresh ? `up to date: ${relative(root, outDir)}` : `stale: ${relative(root, outDir)}`);
  process.exit(fresh ? 0 : 1);
}
if (fresh && !args.has('--force')) {
  console.log(`mage-nb-sched: ${relative(root, outDir)} is up to date (${mode}); nothing to build`);
  process.exit(0);
}
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
rmSync(join(root, 'lib'), { recursive: true, force: true });
rmSync(join(root, 'tsconfig.tsbuildinfo'), { force: true });
run(process.execPath, prod ? [tsc] : [tsc, '--sourceMap']);
run('jupyter-builder', prod ? ['build', '.'] : ['build', '--development', 'True', '.']);
writeFileSync(stampPath, JSON.stringify({ hash, mode, built_at: new Date().toISOString() }, null, 2) + '\n');
console.log(`mage-nb-sched: built ${relative(root, outDir)} (${mode})`);
