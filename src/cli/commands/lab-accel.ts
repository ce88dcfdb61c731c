// `introvisor lab-accel`: which accelerator lab guests use here, probing once.
import { chooseAccel } from '../../lab/accel.js';
import { parseArgs } from '../args.js';

export const usage = 'lab-accel [--probe]                       tell (and cache) whether lab guests run under KVM or TCG';

export async function run(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { boolean: ['probe'], valued: [] });
  const c = await chooseAccel({ force: args.flags.has('probe') });
  console.log(`lab accelerator: ${c.accel} (${c.reason})`);
  return 0;
}
