// Starting a critical service's command: the program as named, its /usr-merge twin once when the
// agent cannot spawn it (Debian 11 has /bin/systemctl, no /usr/bin/systemctl), and errors that say
// what ran and why. The exec function stands in for the agent's guest-exec.
import t from 'tap';
import { startInGuest, usrMergeTwin, type StartExecResult } from '../../src/recovery/start-command.js';
import { GuestAgentError } from '../../src/qemu/guest-agent-client.js';
import { NotReachableError, TimeoutError } from '../../src/util/errors.js';

const ok: StartExecResult = { exitCode: 0, signal: undefined, stderr: Buffer.alloc(0) };
const noSuchFile = (path: string): GuestAgentError =>
  new GuestAgentError('guest-exec', 'GenericError', `Guest agent command failed, error was 'Failed to execute child process "${path}" (No such file or directory)'`);

/** An agent whose guest holds only the programs in `present`; records what was asked. */
function agent(present: string[], result: StartExecResult = ok): { calls: string[]; exec: (p: string, a: string[]) => Promise<StartExecResult> } {
  const calls: string[] = [];
  return {
    calls,
    exec: async (path, args) => {
      calls.push([path, ...args].join(' '));
      if (!present.includes(path)) throw noSuchFile(path);
      return result;
    },
  };
}

t.test('usrMergeTwin', async (t) => {
  t.equal(usrMergeTwin('/usr/bin/systemctl'), '/bin/systemctl');
  t.equal(usrMergeTwin('/bin/systemctl'), '/usr/bin/systemctl');
  t.equal(usrMergeTwin('/usr/sbin/nginx'), '/sbin/nginx');
  t.equal(usrMergeTwin('/sbin/insmod'), '/usr/sbin/insmod');
  for (const p of ['/usr/local/bin/x', '/opt/app/bin/x', '/usr/bin/sub/x', '/usr/bin/..', '/usr/bin/', 'systemctl', '/usr/lib/x']) {
    t.equal(usrMergeTwin(p), undefined, p);
  }
});

t.test('the program as named, when it starts', async (t) => {
  const a = agent(['/usr/bin/systemctl', '/bin/systemctl']);
  t.equal(await startInGuest('web', { path: '/usr/bin/systemctl', args: ['start', 'nginx'] }, a.exec), 'started /usr/bin/systemctl start nginx');
  t.same(a.calls, ['/usr/bin/systemctl start nginx']);
});

t.test('a guest without /usr merged: the twin runs, and the result says so', async (t) => {
  const a = agent(['/bin/systemctl']);
  const r = await startInGuest('web', { path: '/usr/bin/systemctl', args: ['start', 'nginx'] }, a.exec);
  t.match(r, /^started \/bin\/systemctl start nginx \(\/usr\/bin\/systemctl did not start: .*No such file or directory/);
  t.same(a.calls, ['/usr/bin/systemctl start nginx', '/bin/systemctl start nginx']);
});

t.test('neither exists: one error naming both', async (t) => {
  const a = agent([]);
  await t.rejects(startInGuest('web', { path: '/usr/sbin/nginx', args: [] }, a.exec),
    /\/usr\/sbin\/nginx.*No such file or directory.*nor could it start \/sbin\/nginx/);
  t.equal(a.calls.length, 2);
});

t.test('no twin outside the merged folders', async (t) => {
  const a = agent([]);
  await t.rejects(startInGuest('web', { path: '/opt/app/start', args: [] }, a.exec), GuestAgentError);
  t.same(a.calls, ['/opt/app/start']);
});

t.test('a timeout or a lost agent is not a missing program: no second try', async (t) => {
  for (const e of [new TimeoutError('guest agent exec', 1000), new NotReachableError('guest agent: connection closed')]) {
    const calls: string[] = [];
    await t.rejects(startInGuest('web', { path: '/usr/bin/systemctl', args: [] }, async (p) => { calls.push(p); throw e; }), e);
    t.same(calls, ['/usr/bin/systemctl'], e.name);
  }
});

t.test('a non-zero exit is a failure naming the program that ran', async (t) => {
  const a = agent(['/bin/systemctl'], { exitCode: 5, signal: undefined, stderr: Buffer.from('Unit nginx.service not found.\n') });
  await t.rejects(startInGuest('web', { path: '/usr/bin/systemctl', args: ['start', 'nginx'] }, a.exec),
    /^guest web: \/bin\/systemctl start nginx exited 5: Unit nginx\.service not found\. \(\/usr\/bin\/systemctl did not start/);
  const b = agent(['/usr/bin/x'], { exitCode: undefined, signal: 9, stderr: Buffer.alloc(0) });
  await t.rejects(startInGuest('web', { path: '/usr/bin/x', args: [] }, b.exec), /^guest web: \/usr\/bin\/x exited by signal 9: no message$/);
});
