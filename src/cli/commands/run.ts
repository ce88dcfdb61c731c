// `introvisor run --config FILE`: the supervisor: every configured guest watched, detected, recovered.
import { parseArgs, UsageError } from '../args.js';
import { loadSupervisorConfig } from '../../supervisor/config.js';
import { Supervisor } from '../../supervisor/supervisor.js';

export const usage = 'run --config FILE                     watch every configured guest, detect faults, climb the recovery ladder';

export async function run(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { boolean: [], valued: ['config'] });
  const file = args.flags.get('config');
  if (typeof file !== 'string') throw new UsageError('run needs --config FILE (see examples/supervisor.json)');
  if (args.positional.length) throw new UsageError(`run takes no arguments (got "${args.positional.join(' ')}")`);
  const config = loadSupervisorConfig(file);
  const sup = new Supervisor(config);
  console.log(`introvisor run: ${config.guests.length} guest(s), database ${config.database}, policy ${config.policyFile ?? '(defaults)'}`);
  let stopping: Promise<void> | undefined;
  const stop = (sig: string): void => {
    if (stopping) {
      // A second signal (Ctrl-C again) does not wait for the cycles in progress (a boot or a restore
      // takes minutes under TCG). Dying of the default action here would leave the guests' QEMU
      // running (they outlive the supervisor by design); onExit still decides.
      console.log(`introvisor run: ${sig} again: stopping now${config.onExit === 'stop-guests' ? ' (guests killed)' : ''}`);
      void sup.stopNow().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
      return;
    }
    console.log(`introvisor run: ${sig}: stopping (the cycles in progress finish first; signal again to stop at once)`);
    stopping = sup.stop();
  };
  // One stray rejection in an adapter must not end the watch over every guest: say it loudly and go on.
  process.on('unhandledRejection', (e: unknown) => {
    console.error(`introvisor run: unhandled rejection (a bug; watching continues): ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
  });
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  await sup.start();
  await new Promise<void>((resolve) => {
    const t = setInterval(() => { if (stopping) { clearInterval(t); resolve(); } }, 100);
  });
  await stopping;
  console.log('introvisor run: stopped');
  return 0;
}
