/**
 * Fastify's error and not-found handlers. A step that refuses a request throws a PneumoError that
 * carries its status (src/errors.ts); mapError only maps what reaches here to the API's answer.
 */
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { PneumoError } from '../errors.ts';
import { mapError, notFoundBody } from './errors.ts';

/** The methods of each API address (HEAD with GET, as Fastify adds it): anything else there is 405. */
const API_METHODS: Record<string, string[]> = {
  '/api/predict': ['POST'],
  '/api/health': ['GET', 'HEAD'],
  '/api/model': ['GET', 'HEAD'],
  '/api/openapi.json': ['GET', 'HEAD'],
  '/docs': ['GET', 'HEAD'],
};

export function errorHandler(err: FastifyError, req: FastifyRequest, reply: FastifyReply): void {
  const mapped = mapError(err);
  if (mapped.unexpected) req.log.error({ err }, 'unexpected error');
  else req.log.info({ status: mapped.status, code: mapped.body.error.code }, 'request refused');
  if (mapped.retryAfter !== undefined) reply.header('retry-after', String(mapped.retryAfter));
  // A body we stopped reading (timeout, too large, refused) leaves the connection unusable.
  if ([408, 413].includes(mapped.status) || (req.isMultipart?.() && !req.raw.complete)) reply.header('connection', 'close');
  reply.code(mapped.status).type('application/json; charset=utf-8').send(mapped.body);
}

export function notFoundHandler(req: FastifyRequest, reply: FastifyReply): void {
  // A known API address with another method: 405 and the methods it takes.
  const allow = API_METHODS[req.url.split('?')[0]];
  if (allow) {
    const body = new PneumoError('method_not_allowed', `This address takes ${allow.join(' or ')}.`).toJSON();
    reply.code(405).header('allow', allow.join(', ')).type('application/json; charset=utf-8').send(body);
    return;
  }
  reply.code(404).type('application/json; charset=utf-8').send(notFoundBody());
}
