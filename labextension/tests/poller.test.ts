import { describe, expect, it } from 'vitest';
import { DEFAULT_BACKOFF, Poller, nextDelay } from '../src/poller';
import { FakeTimer } from './fake';

describe('nextDelay', () => {
  it('polls fast while something runs', () => {
    expect(nextDelay({ active: true, unchanged: 5, failures: 0 })).toBe(DEFAULT_BACKOFF.activeMs);
  });
  it('backs off while idle and nothing changes, up to the maximum', () => {
    const d = [0, 1, 2].map(n => nextDelay({ active: false, unchanged: n, failures: 0 }));
    expect(d).toEqual([5000, 7500, 11250]);
    expect(nextDelay({ active: false, unchanged: 50, failures: 0 })).toBe(DEFAULT_BACKOFF.maxMs);
  });
  it('backs off exponentially after failures', () => {
    expect(nextDelay({ active: false, unchanged: 0, failures: 1 })).toBe(10000);
    expect(nextDelay({ active: false, unchanged: 0, failures: 2 })).toBe(20000);
    expect(nextDelay({ active: true, unchanged: 0, failures: 1 })).toBe(4000);
    expect(nextDelay({ active: false, unchanged: 0, failures: 30 })).toBe(60000);
  });
});

describe('Poller', () => {
  it('re-arms after each poll with the backoff delay and resets on now()', async () => {
    const timer = new FakeTimer();
    const results = [
      { active: true, changed: true },
      { active: false, changed: true },
      { active: false, changed: false }
    ];
    let calls = 0;
    const poller = new Poller(async () => results[Math.min(calls++, 2)], DEFAULT_BACKOFF, timer);
    poller.start(0);
    expect(await timer.fire()).toBe(0);
    expect(timer.pending[0].ms).toBe(2000);
    await timer.fire();
    expect(timer.pending[0].ms).toBe(5000);
    await timer.fire();
    expect(timer.pending[0].ms).toBe(7500);
    poller.now();
    expect(timer.pending).toHaveLength(1);
    expect(timer.pending[0].ms).toBe(0);
    expect(calls).toBe(3);
  });

  it('counts failures, and stops arming once stopped', async () => {
    const timer = new FakeTimer();
    const poller = new Poller(
      async () => {
        throw new Error('down');
      },
      DEFAULT_BACKOFF,
      timer
    );
    poller.start(0);
    await timer.fire();
    expect(poller.state.failures).toBe(1);
    expect(timer.pending[0].ms).toBe(10000);
    await timer.fire();
    expect(timer.pending[0].ms).toBe(20000);
    poller.stop();
    expect(timer.pending).toHaveLength(0);
    expect(poller.isStopped).toBe(true);
  });

  it('polls again right after a poll that was in flight when now() came', async () => {
    const timer = new FakeTimer();
    let release: () => void = () => undefined;
    let calls = 0;
    const poller = new Poller(
      () =>
        new Promise(resolve => {
          calls++;
          release = () => resolve({ active: false, changed: false });
        }),
      DEFAULT_BACKOFF,
      timer
    );
    poller.start(0);
    timer.pending.shift()!.fn(); // the poll starts and waits for its answer
    expect(calls).toBe(1);
    poller.now(); // a user action while it is in flight
    release();
    await new Promise(r => setTimeout(r, 0));
    // Not the idle backoff: at once, since the answer may predate the action.
    expect(timer.pending.map(p => p.ms)).toEqual([0]);
    await timer.fire();
    expect(calls).toBe(2);
  });

  it('counts a poll that never answers as failed and keeps polling', async () => {
    const timer = new FakeTimer();
    let calls = 0;
    const poller = new Poller(
      () => {
        calls++;
        return new Promise(() => undefined); // a request that hangs
      },
      { ...DEFAULT_BACKOFF, timeoutMs: 30000 },
      timer
    );
    poller.start(0);
    timer.pending.shift()!.fn();
    // The only timer armed is the poll's deadline.
    expect(timer.pending.map(p => p.ms)).toEqual([30000]);
    await timer.fire();
    expect(poller.state.failures).toBe(1);
    expect(timer.pending.map(p => p.ms)).toEqual([10000]);
    await timer.fire();
    expect(calls).toBe(2);
  });
});
