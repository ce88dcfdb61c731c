// The judging step of a watch cycle: detectors over what was observed, findings
// confirmed over consecutive scans, and the ladder's next state and decision.
// No I/O: the tracker and the ladder state come in, the results go out.
import { analyzeScan, type ScanAnalysis } from '../detectors/index.js';
import type { FindingTracker, TrackerUpdate } from '../detectors/findings.js';
import type { KernelBaseline } from '../detectors/baseline.js';
import { step, type ActiveFault, type GuestLadderState, type StepResult } from '../policy/ladder.js';
import type { Policy } from '../policy/types.js';
import type { CriticalProcessConfig } from '../recovery/actions.js';
import type { Observation } from './guest-watch.js';

export interface JudgeInput {
  readonly guest: string;
  readonly obs: Observation;
  readonly state: GuestLadderState;
  readonly tracker: FindingTracker;
  readonly policy: Policy;
  readonly critical: readonly CriticalProcessConfig[];
  readonly introspectionOff: boolean;
  /** The stored baseline of the snapshot's kernel, if any. */
  readonly baseline: KernelBaseline | null;
  readonly nowMs: number;
}

export interface Judgement {
  readonly analysis: ScanAnalysis;
  readonly tracked: TrackerUpdate;
  /** A baseline to keep: the first clean scan of a kernel, or the per-boot part after a reboot. */
  readonly baselineToRecord: KernelBaseline | null;
  readonly baselineIsNewBoot: boolean;
  readonly ladder: StepResult;
}

export function judge(i: JudgeInput): Judgement {
  const { obs } = i;
  const analysis = analyzeScan({
    nowMs: obs.startedAtMs, snapshot: obs.snapshot, snapshotError: obs.snapshotError, introspectionOff: i.introspectionOff,
    report: obs.report, reportFresh: obs.reportFresh, critical: i.critical, baseline: i.baseline, ...(obs.trap ? { refusedWrites: obs.trap.tally } : {}),
  });
  const tracked = i.tracker.update(analysis, obs.startedAtMs);
  const faults: ActiveFault[] = tracked.findings.map((f) => ({ kind: f.kind, findingId: f.id, summary: f.summary, target: f.target }));
  const ladder = step(i.state, { nowMs: i.nowMs, scanAtMs: obs.startedAtMs, faults, undetermined: analysis.undetermined, policy: i.policy });
  return { analysis, tracked, baselineToRecord: analysis.baselineToRecord, baselineIsNewBoot: i.baseline !== null, ladder };
}
