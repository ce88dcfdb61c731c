// The per-view cadence of a periodic scan: cheap views every scan, each optional
// (expensive) view at least once per its interval, at a boot's first scan, and when asked.
import t from 'tap';
import { ViewCadence } from '../../src/supervisor/kernel-scanner.js';

t.test('each optional view is due at the first scan, then once per its interval', async (t) => {
  const c = new ViewCadence({ moduleArea: 2_000, ftrace: 1_000, kprobes: 0, bpf: 1_000 });
  t.same([...c.due(10_000)].sort(), ['bpf', 'ftrace', 'kprobes', 'moduleArea'], 'first scan: all of them');
  t.same([...c.due(10_100)], ['kprobes'], 'interval 0: every scan');
  t.same([...c.due(10_999)].sort(), ['kprobes']);
  t.same([...c.due(11_000)].sort(), ['bpf', 'ftrace', 'kprobes'], '1 s views after 1 s');
  t.same([...c.due(11_500, ['moduleArea'])].sort(), ['kprobes', 'moduleArea'], 'asked for: read now');
  t.same([...c.due(12_100)].sort(), ['bpf', 'ftrace', 'kprobes'], 'the forced read restarted moduleArea\'s interval');
  t.same([...c.due(13_500)].sort(), ['bpf', 'ftrace', 'kprobes', 'moduleArea']);
  t.same([...c.due(100)].sort(), ['bpf', 'ftrace', 'kprobes', 'moduleArea'], 'a clock going back makes every view due, never none');
  c.reset();
  t.same([...c.due(101)].sort(), ['bpf', 'ftrace', 'kprobes', 'moduleArea'], 'after a reset (new boot): all due');
});

t.test('over a run of scans, no view waits longer than its interval plus one scan period', async (t) => {
  const intervals = { moduleArea: 2_000, ftrace: 1_000, kprobes: 250, bpf: 700 };
  const c = new ViewCadence(intervals);
  const last = new Map<string, number>();
  let worst = 0;
  for (let now = 0; now < 60_000; now += 100 + (now % 7)) {
    for (const v of c.due(now)) {
      const prev = last.get(v);
      if (prev !== undefined) worst = Math.max(worst, now - prev - intervals[v]);
      last.set(v, now);
    }
  }
  t.ok(worst <= 106, `worst lateness ${worst} ms is within one scan period`);
});
