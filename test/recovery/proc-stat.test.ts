// Parsing the guest's /proc/PID/stat lines (comm may hold spaces and parentheses).
import t from 'tap';
import { parseProcStat } from '../../src/recovery/proc-stat.js';

t.test('parses pid, comm, state and ppid', async (t) => {
  const text = '1 (init) S 0 1 1 0 -1\n130 (csdtest) S 1 130 130 0\n200 (a (b) c) R 130 200 0\n301 (kworker/0:1H-kblockd) I 2 0 0\n';
  t.same(parseProcStat(text, 'g'), [
    { pid: 1, ppid: 0, comm: 'init', state: 'S' },
    { pid: 130, ppid: 1, comm: 'csdtest', state: 'S' },
    { pid: 200, ppid: 130, comm: 'a (b) c', state: 'R' },
    { pid: 301, ppid: 2, comm: 'kworker/0:1H-kblockd', state: 'I' },
  ]);
});

t.test('garbage is an error naming where and the line', async (t) => {
  t.throws(() => parseProcStat('hello world\n', 'guest g1 /proc'), /guest g1 \/proc: not a \/proc\/PID\/stat line: "hello world"/);
  t.throws(() => parseProcStat('x (a) S 1\n', 'g'), /bad pid\/state\/ppid/);
});
