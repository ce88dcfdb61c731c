// `introvisor baseline save <guest | dump-file> FILE`: the known-good picture of a kernel, taken
// from a state the user knows is clean, for `introvisor check --baseline FILE` on later dumps or
// guests of the same kernel. It is refused when the state is not clean by the self-checks.
import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs, UsageError } from '../args.js';
import { openTarget, TARGET_FLAGS, TARGET_USAGE } from './target.js';
import { analyzeScan } from '../../detectors/index.js';
import { baselineOf } from '../../detectors/baseline.js';
import { snapshotErrors } from '../../views/snapshot-errors.js';
import { writeFileDurably } from '../../util/fs.js';

export const usage = `baseline save <guest | dump-file> FILE [--force] ${TARGET_USAGE}   record a known-clean kernel's baseline for check --baseline`;

export async function run(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { boolean: ['force', ...TARGET_FLAGS.boolean], valued: [...TARGET_FLAGS.valued] });
  const [sub, target, file, ...extra] = args.positional;
  if (sub !== 'save' || target === undefined || file === undefined || extra.length > 0) throw new UsageError(`usage: introvisor ${usage}`);
  if (existsSync(file) && !args.flags.has('force')) throw new UsageError(`${file} exists (use --force to replace it)`);
  if (!existsSync(dirname(file) || '.')) throw new UsageError(`${file}: folder ${dirname(file)} does not exist`);
  const opened = await openTarget(target, args.flags);
  try {
    const snap = await opened.scan({ hashImage: true });
    const errors = snapshotErrors(snap);
    if (errors.length > 0) throw new Error(`${opened.source}: not every view could be read, so no baseline: ${errors.slice(0, 3).map((e) => `${e.where}: ${e.message}`).join('; ')}`);
    const a = analyzeScan({
      nowMs: Date.now(), snapshot: snap, snapshotError: null, memoryOnly: true,
      report: { takenAtMs: Date.now(), agent: 'down', error: 'not asked: memory only' }, critical: [], baseline: null,
    });
    if (a.observations.length > 0) {
      throw new Error(`${opened.source} is not clean, so no baseline (run introvisor check on it): ${a.observations.slice(0, 5).map((o) => `${o.kind}: ${o.summary}`).join('; ')}`);
    }
    const b = baselineOf(snap, Date.now());
    writeFileDurably(file, `${JSON.stringify(b, null, 2)}\n`);
    console.log(`baseline of ${snap.kernel.release} (KASLR slide 0x${snap.kernel.kaslrSlide.toString(16)}) from ${opened.source} written to ${file}`);
    return 0;
  } finally {
    opened.close();
  }
}
