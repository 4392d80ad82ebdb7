/**
 * The HTTP edge, before any route: a cap on open connections, the security headers of every
 * answer, the Host (DNS rebinding) and Origin checks, and closing connections while shutting down.
 */
import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { PneumoError } from '../errors.ts';
import type { EngineState } from './engine-state.ts';
import type { HostPolicy } from './host.ts';
import type { OriginPolicy } from './origin.ts';

export const DEFAULT_MAX_CONNECTIONS = 512;

const TOO_MANY_CONNECTIONS = (() => {
  const body = JSON.stringify(new PneumoError('busy', 'The server has too many open connections. Please retry shortly.').toJSON());
  return (
    `HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\nRetry-After: 2\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
  );
})();

const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy':
    "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; style-src 'self'; img-src 'self' data: blob:; " +
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  // Cross-origin isolation (COOP + COEP): the on-device page (/device/, npm run build:web) may run
  // its WebAssembly model with threads (SharedArrayBuffer). Everything the page loads is our own.
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-embedder-policy': 'require-corp',
  'cross-origin-resource-policy': 'same-origin',
  'x-frame-options': 'DENY',
};

/**
 * A connection cap: beyond it, a connection is answered 503 at once and closed (it never reaches
 * the parser's buffers or a route). Counted on the socket, so idle keep-alive connections count too.
 * Returns the count of open connections.
 */
export function capConnections(server: Server, maxConnections: number): () => number {
  let openConnections = 0;
  server.on('connection', (socket: Socket) => {
    if (openConnections >= maxConnections) {
      socket.on('error', () => undefined);
      socket.end(TOO_MANY_CONNECTIONS);
      return;
    }
    openConnections++;
    socket.once('close', () => openConnections--);
  });
  return () => openConnections;
}

export function guardRequests(app: FastifyInstance, o: { hosts: HostPolicy; origins: OriginPolicy; engine: EngineState }): void {
  app.addHook('onRequest', async (req, reply) => {
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) reply.header(k, v);
    // DNS rebinding: only this server's own names (host.ts).
    o.hosts.check(req.headers.host);
    if (o.engine.status === 'shutting_down' && req.url !== '/api/health') {
      reply.header('connection', 'close');
      throw new PneumoError('busy', 'The server is shutting down.', { retry_after_s: 10 });
    }
    // A page of another site must not make a visitor's browser post to this server (a form POST
    // needs no CORS preflight); it could not read the answer, but it could spend our resources.
    if (req.method !== 'GET' && req.method !== 'HEAD' && req.method !== 'OPTIONS') o.origins.check(req.headers);
  });

  // While shutting down, answers close their connection so keep-alive sockets do not hold close().
  app.addHook('onSend', async (_req, reply) => {
    if (o.engine.status === 'shutting_down') reply.header('connection', 'close');
  });
}
