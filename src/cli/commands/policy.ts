// `introvisor policy show`: the running policy (version, where it came from, the document).
import { existsSync } from 'node:fs';
import { defaultPolicyDir } from '../../util/paths.js';
import { FilePolicyStore } from '../../ota/policy-store.js';
import { validatePolicy } from '../../policy/schema.js';
import { parseArgs, UsageError } from '../args.js';

export const usage = 'policy show [--policy-dir DIR] [--json]   the running policy, its version and origin';

export async function run(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { boolean: ['json'], valued: ['policy-dir'] });
  const [sub, ...extra] = args.positional;
  if (sub !== 'show' || extra.length > 0) throw new UsageError(`usage: introvisor ${usage}`);
  const dir = (args.flags.get('policy-dir') as string | undefined) ?? defaultPolicyDir();
  if (!existsSync(dir)) throw new Error(`policy directory ${dir} does not exist (the supervisor creates it on first start; --policy-dir to look elsewhere)`);
  const store = FilePolicyStore.open(dir, validatePolicy);
  for (const p of store.openProblems) console.error(`warning: ${p}`);
  const s = store.currentStored();
  const active = store.current();
  if (!s || !active) { console.error(`no policy in ${dir}`); return 1; }
  if (args.flags.has('json')) {
    console.log(JSON.stringify({ ...s, effective: active.policy }, null, 2));
    return 0;
  }
  console.log(`version ${s.version} from ${s.source}, applied ${new Date(s.appliedAtMs).toISOString()}${s.keyId ? `, signed by key ${s.keyId}` : ''}`);
  console.log('document:');
  console.log(JSON.stringify(s.document, null, 2));
  console.log('effective (with defaults filled in):');
  console.log(JSON.stringify(active.policy, null, 2));
  return 0;
}
