// ps-style state letters from a task_struct's __state bits (and exit_state,
// when known), the way the kernel's own task_state_index() picks them for
// /proc/PID/stat: the highest reportable bit wins; an idle kernel thread
// (TASK_UNINTERRUPTIBLE | TASK_NOLOAD) is "I", not "D".

const TASK_REPORT = 0x7f;
const TASK_UNINTERRUPTIBLE = 0x2;
const TASK_NOLOAD = 0x400;
/** R S D T t X Z P, by the index of the highest TASK_REPORT bit (0 = running). */
const LETTERS = 'RSDTtXZP';

/** The letter ps shows for a task's state; "?" for a value that is not a task state (a hostile or torn read). */
export function taskStateLetter(state: number, exitState = 0): string {
  if (!Number.isInteger(state) || state < 0 || state > 0xffffffff) return '?';
  if ((state & (TASK_UNINTERRUPTIBLE | TASK_NOLOAD)) === (TASK_UNINTERRUPTIBLE | TASK_NOLOAD) && (state & TASK_REPORT) === TASK_UNINTERRUPTIBLE) return 'I';
  const bits = (state | exitState) & TASK_REPORT;
  if (bits === 0) return 'R';
  return LETTERS[32 - Math.clz32(bits)] ?? '?';
}
