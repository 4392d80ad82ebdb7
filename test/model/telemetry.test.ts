/** Nothing leaves the machine: importing the inference module turns onnxruntime's telemetry off (a user's own choice is kept). */
import { describe, expect, it } from 'vitest';

describe('onnxruntime telemetry', () => {
  it('is disabled by the inference module unless the user set ORT_DISABLE_TELEMETRY', async () => {
    const before = process.env.ORT_DISABLE_TELEMETRY;
    await import('../../src/model/session.ts');
    expect(process.env.ORT_DISABLE_TELEMETRY).toBe(before ?? '1');
  });
});
