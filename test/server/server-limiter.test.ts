import { describe, expect, it } from 'vitest';
import { PneumoError } from '../../src/errors.ts';
import { Limiter } from '../../src/server/limiter.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function deferred() {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

describe('Limiter', () => {
  it('runs at most maxConcurrent at once, in order', async () => {
    const limiter = new Limiter({ maxConcurrent: 2, maxQueue: 10 });
    let active = 0;
    let peak = 0;
    const order: number[] = [];
    const job = (i: number) => async () => {
      active++;
      peak = Math.max(peak, active);
      order.push(i);
      await sleep(10);
      active--;
      return i;
    };
    const results = await Promise.all([0, 1, 2, 3, 4, 5].map((i) => limiter.run(job(i))));
    expect(results).toEqual([0, 1, 2, 3, 4, 5]);
    expect(peak).toBe(2);
    expect(order).toEqual([0, 1, 2, 3, 4, 5]);
    expect(limiter.stats()).toMatchObject({ active: 0, queued: 0, admitted: 0 });
  });

  it('refuses with 503 busy and a Retry-After once slots and queue are full', async () => {
    const limiter = new Limiter({ maxConcurrent: 1, maxQueue: 2 });
    const gate = deferred();
    const running = [limiter.run(() => gate.promise), limiter.run(() => gate.promise), limiter.run(() => gate.promise)];
    expect(limiter.stats()).toMatchObject({ admitted: 3, active: 1, queued: 2 });
    let err: unknown;
    try {
      limiter.admit();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PneumoError);
    expect((err as PneumoError).status).toBe(503);
    expect((err as PneumoError).code).toBe('busy');
    expect((err as PneumoError).details?.retry_after_s).toBeGreaterThanOrEqual(1);
    gate.resolve();
    await Promise.all(running);
    expect(() => limiter.admit().release()).not.toThrow();
    expect(limiter.stats().admitted).toBe(0);
  });

  it('counts admitted-but-not-running tickets (bodies being read) against the bound', () => {
    const limiter = new Limiter({ maxConcurrent: 1, maxQueue: 1 });
    const a = limiter.admit();
    const b = limiter.admit();
    expect(() => limiter.admit()).toThrow(PneumoError);
    a.release();
    a.release(); // idempotent
    const c = limiter.admit();
    b.release();
    c.release();
    expect(limiter.stats().admitted).toBe(0);
  });

  it('drops a queued job whose signal aborts, and frees its place', async () => {
    const limiter = new Limiter({ maxConcurrent: 1, maxQueue: 1 });
    const gate = deferred();
    const first = limiter.run(() => gate.promise);
    const ctrl = new AbortController();
    let ran = false;
    const second = limiter.run(async () => {
      ran = true;
    }, ctrl.signal);
    ctrl.abort(new Error('gave up'));
    await expect(second).rejects.toThrow('gave up');
    expect(limiter.stats()).toMatchObject({ queued: 0, admitted: 1 });
    gate.resolve();
    await first;
    expect(ran).toBe(false);
    expect(limiter.stats().admitted).toBe(0);
  });

  it('keeps the slot of a running job until it settles, even when it fails', async () => {
    const limiter = new Limiter({ maxConcurrent: 1, maxQueue: 0 });
    const gate = deferred();
    const p = limiter.run(async () => {
      await gate.promise;
      throw new Error('boom');
    });
    expect(() => limiter.admit()).toThrow(PneumoError);
    let idle = false;
    const idleP = limiter.idle().then(() => (idle = true));
    await sleep(5);
    expect(idle).toBe(false);
    gate.resolve();
    await expect(p).rejects.toThrow('boom');
    await idleP;
    expect(idle).toBe(true);
    limiter.admit().release();
  });

  it('validates its options', () => {
    expect(() => new Limiter({ maxConcurrent: 0, maxQueue: 1 })).toThrow();
    expect(() => new Limiter({ maxConcurrent: 1, maxQueue: -1 })).toThrow();
    expect(() => new Limiter({ maxConcurrent: 1.5, maxQueue: 1 })).toThrow();
  });
});
