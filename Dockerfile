# pneumolens web app + REST API as a container image (README "Deploy").
#
#   docker build -t pneumolens .
#   docker run --read-only --tmpfs /tmp -p 8080:8080 pneumolens
#
# Stage 1 installs the production dependencies with `npm ci` (no dev dependencies: no Chromium, no
# vitest, no TypeScript); stage 2 is the runtime: Node, those node_modules, the sources (run by tsx,
# as `npm start` does), the web page and the shipped model. It runs as the unprivileged `node` user
# and writes nothing outside /tmp (tsx's compile cache), so the root filesystem can be read-only.
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
# .npmrc skips onnxruntime-node's optional CUDA download; --ignore-scripts runs no install scripts at
# all (none is needed: sharp, onnxruntime-node and esbuild ship prebuilt binaries as npm packages).
# Behind a TLS-intercepting proxy, pass its CA as a build secret (it stays out of the image):
#   docker build --secret id=npm_ca,src=/etc/ssl/certs/ca-certificates.crt .
COPY package.json package-lock.json .npmrc ./
RUN --mount=type=secret,id=npm_ca \
    if [ -s /run/secrets/npm_ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/npm_ca; fi \
 && npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && rm -rf /root/.npm
# onnxruntime-node carries its binaries for every platform (about 290 MB); keep this one's.
RUN keep="$(node -p 'process.platform + "/" + process.arch')" \
 && cd node_modules/onnxruntime-node/bin \
 && for d in napi-v*/*/*; do case "${d#*/}" in "$keep") ;; *) rm -rf "$d" ;; esac; done \
 && test -e napi-v*/"$keep"/onnxruntime_binding.node

FROM ${NODE_IMAGE}
# PNEUMOLENS_SITE: a site profile (pneumolens site) to decide with, e.g.
#   docker run -v "$PWD/site.json:/site/site.json:ro" -e PNEUMOLENS_SITE=/site/site.json ...
# empty = the model card alone; a profile made with another model stops the start.
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    PNEUMOLENS_SITE=
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json tsconfig.json ./
COPY bin ./bin
COPY web ./web
COPY models/MODEL models/pneumolens.json models/pneumolens.onnx ./models/
COPY src ./src
USER node
EXPOSE 8080
# Ready (200) once the model has loaded; 503 while loading or shutting down.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/api/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# One process (PID 1 is node itself, which handles SIGTERM: stop accepting, finish in-flight
# requests, exit). Same settings as `npm start`: PORT, HOST, PNEUMOLENS_* (README "REST API").
CMD ["node", "--import", "tsx", "src/cli/main.ts", "serve"]
