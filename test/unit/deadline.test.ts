import t from 'tap';
import { withDeadline } from '../../shared/deadline.js';

t.test('settles as the work does when it is in time', async (t) => {
  t.equal(await withDeadline(Promise.resolve(7), 1000, () => new Error('late')), 7);
  await t.rejects(
    withDeadline(Promise.reject(new Error('own')), 1000, () => new Error('late')),
    /own/,
  );
});

t.test('rejects with the built error when the work is late, and calls the builder once', async (t) => {
  let built = 0;
  const never = new Promise<number>(() => {});
  await t.rejects(
    withDeadline(never, 20, () => {
      built++;
      return new Error('late by design');
    }),
    /late by design/,
  );
  t.equal(built, 1);
});

t.test('leaves no timer behind (a 1 h deadline would keep this file alive)', async (t) => {
  t.equal(await withDeadline(Promise.resolve('ok'), 3_600_000, () => new Error('late')), 'ok');
});
