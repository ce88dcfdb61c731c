#!/usr/bin/env node
// introvisor command line: one module per command under ./commands.
import { UsageError } from './args.js';
import { errorMessage } from '../util/errors.js';

interface Command { usage: string; run(argv: string[]): Promise<number> }

const commands: Record<string, () => Promise<Command>> = {
  inspect: () => import('./commands/inspect.js'),
  check: () => import('./commands/check.js'),
  baseline: () => import('./commands/baseline.js'),
  run: () => import('./commands/run.js'),
  status: () => import('./commands/status.js'),
  log: () => import('./commands/log.js'),
  policy: () => import('./commands/policy.js'),
  guest: () => import('./commands/guest.js'),
  demo: () => import('./commands/demo.js'),
  progress: () => import('./commands/progress.js'),
};

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === 'help') {
    const lines = await Promise.all(Object.values(commands).map(async (load) => `  introvisor ${(await load()).usage}`));
    console.log(`usage:\n${lines.join('\n')}`);
    return name === undefined ? 2 : 0;
  }
  const load = commands[name];
  if (!load) throw new UsageError(`unknown command "${name}" (try: introvisor help)`);
  return (await load()).run(rest);
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (e: unknown) => {
    console.error(`introvisor: ${errorMessage(e)}`);
    process.exitCode = e instanceof UsageError ? 2 : 1;
  },
);
