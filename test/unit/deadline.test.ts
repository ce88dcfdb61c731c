// settlesWithin: true when the promise settles either way in time, false when not;
// and its timer goes when the promise settles, so nothing waits it out.
import t from 'tap';
import { settlesWithin } from '../../src/util/deadline.js';

t.test('settles in time, either way', async (t) => {
  t.equal(await settlesWithin(Promise.resolve(1), 1_000), true);
  t.equal(await settlesWithin(Promise.reject(new Error('no')), 1_000), true);
});

t.test('does not settle in time', async (t) => {
  t.equal(await settlesWithin(new Promise(() => undefined), 20), false);
});

t.test('the timer is cleared when the promise settles', async (t) => {
  const before = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  await settlesWithin(Promise.resolve(), 60_000);
  t.equal(process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length, before, 'no 60 s timer left behind');
});
