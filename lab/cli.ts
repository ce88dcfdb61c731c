#!/usr/bin/env node
// The lab's own tools (not part of the product):
//   node dist/lab/cli.js accel [--probe]   tell (and cache) whether lab guests run under KVM or TCG
//   node dist/lab/cli.js boot [...]        boot a lab guest and show it is reachable on every channel
import { parseArgs } from 'node:util';
import { chooseAccel } from './accel-probe.js';
import { bootLabGuest } from './boot.js';
import { errorMessage } from '../src/util/errors.js';

const usage = 'usage: node dist/lab/cli.js accel [--probe] | boot [--name NAME] [--memory MIB] [--no-kaslr] [--once]';

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === 'accel') {
    const { values } = parseArgs({ args: rest, options: { probe: { type: 'boolean' } }, strict: true });
    const c = await chooseAccel({ force: values.probe === true });
    console.log(`lab accelerator: ${c.accel} (${c.reason})`);
    return 0;
  }
  if (cmd === 'boot') {
    const { values } = parseArgs({ args: rest, options: { name: { type: 'string' }, memory: { type: 'string' }, 'no-kaslr': { type: 'boolean' }, once: { type: 'boolean' } }, strict: true });
    const memoryMiB = values.memory === undefined ? 256 : Number(values.memory);
    if (!Number.isInteger(memoryMiB) || memoryMiB < 128 || memoryMiB > 16384) throw new Error(`--memory must be a whole number of MiB from 128 to 16384, not "${values.memory}"`);
    return bootLabGuest({ name: values.name ?? 'demo', memoryMiB, kaslr: values['no-kaslr'] !== true, once: values.once === true });
  }
  console.error(usage);
  return 2;
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (e: unknown) => { console.error(`lab: ${errorMessage(e)}`); process.exitCode = 1; },
);
