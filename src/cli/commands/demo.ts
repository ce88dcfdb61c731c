// `introvisor demo attack <kind> [guest]`: plays one of the demo's attacks in a
// supervised lab guest through the supervisor's control socket, so the page and
// `introvisor guest` show finding -> ladder -> healthy.
import { controlRequest } from '../../control/client.js';
import { ATTACKS, type Attack } from '../../control/demo.js';
import { parseArgs, UsageError } from '../args.js';
import { socketOf } from './guest.js';

export const usage = `demo attack <${ATTACKS.join('|')}> [guest] [--socket PATH]   play an attack in a lab guest (default guest: demo)`;

export async function run(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { boolean: [], valued: ['socket'] });
  const [verb, attack, guest = 'demo', ...extra] = args.positional;
  if (verb !== 'attack' || !attack || extra.length > 0) throw new UsageError(`usage: introvisor ${usage}`);
  if (!(ATTACKS as readonly string[]).includes(attack)) throw new UsageError(`unknown attack "${attack}": one of ${ATTACKS.join(', ')}`);
  const r = await controlRequest(socketOf(args.flags.get('socket')), { op: 'demo-attack', guest, attack: attack as Attack }, 45_000) as { detail: string };
  console.log(`${guest}: ${r.detail}`);
  console.log(`watch it: introvisor guest ${guest} findings; introvisor log --guest ${guest} --since 5m`);
  return 0;
}
