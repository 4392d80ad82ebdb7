/** The web page (web/) at /, and the on-device build at /device/ when there is one. */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import fastifyStatic from '@fastify/static';

/** Where `npm run build:web` writes the on-device build that `pneumolens serve` serves at /device/. */
export const DEFAULT_DEVICE_ROOT = fileURLToPath(new URL('../../dist/web/device/', import.meta.url));

export function serveStatic(app: FastifyInstance, o: { webRoot?: string; deviceRoot?: string }): void {
  app.register(fastifyStatic, {
    root: o.webRoot ?? fileURLToPath(new URL('../../web/', import.meta.url)),
    prefix: '/',
    index: 'index.html',
    dotfiles: 'deny',
  });
  if (o.deviceRoot !== undefined) {
    if (!existsSync(o.deviceRoot)) throw new Error(`deviceRoot ${o.deviceRoot} does not exist (npm run build:web writes it)`);
    app.register(fastifyStatic, { root: o.deviceRoot, prefix: '/device/', dotfiles: 'deny', decorateReply: false });
    // The page learns from its health check that it may analyse on the device (web/on-device.js).
    app.addHook('onSend', async (req, reply) => {
      if (req.url === '/api/health') reply.header('x-pneumolens-device', '/device/device.js');
    });
  }
}
