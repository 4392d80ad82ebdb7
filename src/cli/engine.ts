/** Loads the engine for a command (or reuses the one in Io) and always releases what it loaded. */
import { resolve } from 'node:path';
import type { Engine } from '../pipeline.ts';
import type { Io } from './io.ts';

export async function withEngine<T>(
  io: Io,
  opts: { card?: string; threads?: number; site?: string | false },
  fn: (engine: Engine) => Promise<T>,
): Promise<T> {
  if (io.engine) return fn(io.engine);
  // imported lazily so --help and usage errors never load ONNX Runtime
  const { Engine } = await import('../pipeline.ts');
  const card = opts.card ?? (io.env.PNEUMOLENS_MODEL?.trim() || undefined);
  // site: false = the card alone, whatever $PNEUMOLENS_SITE says (pneumolens site fits on the card's own outputs)
  const site = opts.site === false ? undefined : (opts.site ?? (io.env.PNEUMOLENS_SITE?.trim() || undefined));
  const engine = await Engine.load({
    ...opts,
    ...(card !== undefined ? { card: resolve(io.cwd, card) } : {}),
    site: site === undefined ? undefined : resolve(io.cwd, site),
  });
  try {
    return await fn(engine);
  } finally {
    await engine.dispose();
  }
}
