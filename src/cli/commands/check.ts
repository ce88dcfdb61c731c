// `introvisor check <guest | dump-file>`: every detector on a guest or a raw dump, the findings with
// their evidence. A supervised guest is judged by its supervisor (confirmed findings of its latest
// scans); a dump or an unsupervised guest is read here, from memory alone, and each observation is
// a finding (one picture: nothing to confirm it over). Exit 0 clean, 3 findings, 1 error (including
// a view that could not be read: a check that could not look is not clean).
import { existsSync, readFileSync, statSync } from 'node:fs';
import { Ajv } from 'ajv';
import { describeAjvErrors } from '../../policy/schema.js';
import { parseArgs, UsageError } from '../args.js';
import { isGuestName, openTarget, TARGET_FLAGS, TARGET_USAGE } from './target.js';
import { socketOf } from './guest.js';
import { analyzeScan } from '../../detectors/index.js';
import { SEVERITY } from '../../detectors/findings.js';
import { kernelKey, type KernelBaseline } from '../../detectors/baseline.js';
import { parseBaseline } from '../../store/baseline-store.js';
import { controlRequest } from '../../control/client.js';
import { snapshotErrors } from '../../views/snapshot-errors.js';
import { errorMessage } from '../../util/errors.js';

export const usage = `check <guest | dump-file> [--json] [--baseline FILE] [--from-ram] [--socket PATH] ${TARGET_USAGE}   every detector on a guest or a dump: exit 0 clean, 3 findings, 1 error`;

export const EXIT_CLEAN = 0;
export const EXIT_FINDINGS = 3;
export const EXIT_ERROR = 1;

interface CheckFinding { kind: string; severity: string; summary: string; target: string | null; evidence: unknown }
interface CheckResult {
  source: string;
  mode: string;
  kernel: { release: string; banner: string; kaslrSlide: string } | null;
  baseline: string | null;
  findings: CheckFinding[];
  /** Fault kinds that could not be judged, and why. */
  undetermined: string[];
  errors: string[];
}

interface FindingView { atMs: number | null; findings: { kind: string; severity: string; summary: string; target: string | null; evidence: unknown }[] }
const validFindingView = new Ajv({ allErrors: true }).compile<FindingView>({
  type: 'object',
  required: ['atMs', 'findings'],
  properties: {
    atMs: { type: ['number', 'null'] },
    findings: {
      type: 'array',
      maxItems: 1000,
      items: {
        type: 'object',
        required: ['kind', 'severity', 'summary', 'target', 'evidence'],
        properties: { kind: { type: 'string' }, severity: { type: 'string' }, summary: { type: 'string' }, target: { type: ['string', 'null'] }, evidence: {} },
      },
    },
  },
});

export async function run(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { boolean: ['json', 'from-ram', ...TARGET_FLAGS.boolean], valued: ['baseline', 'socket', ...TARGET_FLAGS.valued] });
  const target = args.positional[0];
  if (target === undefined || args.positional.length > 1) throw new UsageError(`usage: introvisor ${usage}`);
  const json = args.flags.has('json');
  const baselineFile = args.flags.get('baseline');
  const baseline = typeof baselineFile === 'string' ? readBaselineFile(baselineFile) : null;

  let result: CheckResult | null = null;
  const isFile = existsSync(target) && statSync(target).isFile();
  if (!isFile && isGuestName(target) && !args.flags.has('from-ram') && baseline === null) result = await fromSupervisor(socketOf(args.flags.get('socket')), target);
  result ??= await fromMemory(target, args.flags, baseline, typeof baselineFile === 'string' ? baselineFile : null);
  if (json) console.log(JSON.stringify(result, null, 2));
  else console.log(printCheck(result));
  if (result.findings.length > 0) return EXIT_FINDINGS;
  return result.errors.length > 0 || result.undetermined.length > 0 ? EXIT_ERROR : EXIT_CLEAN;
}

function readBaselineFile(file: string): KernelBaseline {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`--baseline ${file}: ${errorMessage(e)}`);
  }
  return parseBaseline(raw, `--baseline ${file}`);
}

/** A guest the running supervisor watches: its confirmed findings. Null when no supervisor watches it. */
async function fromSupervisor(socket: string, guest: string): Promise<CheckResult | null> {
  if (!existsSync(socket)) return null;
  let v: unknown;
  try {
    v = await controlRequest(socket, { op: 'view', guest, view: 'findings' }, 10_000);
  } catch {
    return null;
  }
  if (!validFindingView(v)) throw new Error(`the supervisor at ${socket} answered a findings view of an unknown shape: ${describeAjvErrors(validFindingView.errors).join('; ')}`);
  const view = v;
  return {
    source: `the supervisor at ${socket}`,
    mode: view.atMs === null ? 'supervised, not scanned yet' : `supervised; latest scan ${new Date(view.atMs).toISOString()}`,
    kernel: null,
    baseline: 'the supervisor\'s',
    findings: view.findings.map((f) => ({ kind: f.kind, severity: f.severity, summary: f.summary, target: f.target, evidence: f.evidence })),
    undetermined: [],
    errors: view.atMs === null ? ['the supervisor has not scanned this guest yet'] : [],
  };
}

async function fromMemory(target: string, flags: Map<string, string | true>, baseline: KernelBaseline | null, baselineFile: string | null): Promise<CheckResult> {
  const opened = await openTarget(target, flags);
  try {
    const snap = await opened.scan({ hashImage: true });
    const key = kernelKey(snap);
    if (baseline && baseline.kernelKey !== key) {
      throw new Error(`--baseline ${String(baselineFile)} is of another kernel ("${baseline.kernelKey.slice(0, 120)}"), not of this one ("${key.slice(0, 120)}")`);
    }
    const a = analyzeScan({
      nowMs: Date.now(), snapshot: snap, snapshotError: null, memoryOnly: true,
      report: { takenAtMs: Date.now(), agent: 'down', error: 'not asked: a check reads memory only' },
      critical: [], baseline,
    });
    return {
      source: opened.source,
      mode: opened.mode,
      kernel: { release: snap.kernel.release, banner: snap.kernel.banner, kaslrSlide: `0x${snap.kernel.kaslrSlide.toString(16)}` },
      baseline: baselineFile,
      findings: a.observations.map((o) => ({ kind: o.kind, severity: SEVERITY[o.kind], summary: o.summary, target: o.target, evidence: o.evidence })),
      undetermined: [...new Set(a.undetermined)],
      errors: snapshotErrors(snap).slice(0, 50).map((e) => `${e.where}: ${e.message}`),
    };
  } finally {
    opened.close();
  }
}

function printCheck(r: CheckResult): string {
  const out = [`source   ${r.source} (${r.mode})`];
  if (r.kernel) out.push(`kernel   ${r.kernel.banner}`, `         release ${r.kernel.release}, KASLR slide ${r.kernel.kaslrSlide}`);
  out.push(`baseline ${r.baseline ?? 'none (self-checks only: each slot and dispatch call against its own handler, modules, processes, hooks; no text/rodata/IDT comparison)'}`);
  out.push('');
  if (r.findings.length === 0) out.push('no findings');
  for (const f of r.findings) {
    out.push(`${f.severity.toUpperCase().padEnd(8)} ${f.kind}: ${f.summary}`);
    out.push(`         ${JSON.stringify(f.evidence).slice(0, 2000)}`);
  }
  if (r.undetermined.length > 0) out.push('', `not judged (a view could not be read): ${r.undetermined.join(', ')}`);
  if (r.errors.length > 0) out.push('', `view errors (${r.errors.length}):`, ...r.errors.map((e) => `  ${e}`));
  out.push('', r.findings.length > 0 ? `${r.findings.length} finding(s)` : r.errors.length + r.undetermined.length > 0 ? 'NOT CLEAN: the check could not read everything' : 'clean');
  return out.join('\n');
}
