# meshmart — the two commands a fresh clone needs are `make up` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# Runs TypeScript sources directly: the "development" export condition points every
# workspace package at its src/, so no build is needed for up/test.
NODE_RUN := node --conditions=development --import tsx
BUF := node_modules/.bin/buf
WORKSPACES := services/kit services/identity services/catalog services/inventory services/payments services/orders services/notifications edge

.PHONY: help install tools generate lint format breaking typecheck build bench-build test test-unit up deploy demo dead-letters test-chaos bench clean distclean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /  make \1\t/' | expand -t 22

node_modules/.install-stamp: package.json package-lock.json $(addsuffix /package.json,$(WORKSPACES)) web/package.json
	bash scripts/npm-install.sh
	@touch $@

install: node_modules/.install-stamp ## npm ci when package files changed

tools: ## pinned Envoy, schemathesis, grpcurl, protoc-gen-go(-grpc), Jaeger into .data/tools (instant when done)
	bash scripts/tools/install.sh

generate: install ## materialize third-party protos; generate TS code, OpenAPI, descriptor set, envoy.yaml
	$(NODE_RUN) scripts/materialize-protos.ts
	$(BUF) generate
	$(BUF) generate --template buf.gen.openapi.yaml
	@mkdir -p .build
	$(BUF) build --as-file-descriptor-set -o .build/meshmart.binpb
	$(NODE_RUN) edge/envoy/generate.ts

lint: generate ## Biome (format + lint) and buf lint
	node_modules/.bin/biome ci $(if $(CI),--colors=off,) .
	$(BUF) lint

format: install ## apply Biome formatting and safe fixes
	node_modules/.bin/biome check --write .

breaking: generate ## buf breaking against the previous commit's protos
	bash scripts/buf-breaking.sh

typecheck: generate ## tsc over every workspace, tests and scripts, and the storefront (DOM)
	node_modules/.bin/tsc -p tsconfig.json
	node_modules/.bin/tsc -p web/tsconfig.json

build: generate ## compile each workspace to dist/ (what images run)
	@for w in $(WORKSPACES); do \
	  echo "tsc $$w"; node_modules/.bin/tsc -p $$w/tsconfig.build.json; \
	  if [ -d $$w/migrations ]; then rm -rf $$w/dist/migrations; cp -r $$w/migrations $$w/dist/migrations; fi; \
	done
	@echo "storefront: vite build, tsc web/server"
	cd web && ../node_modules/.bin/vite build --logLevel warn
	node_modules/.bin/tsc -p web/server/tsconfig.build.json

test: tools lint breaking typecheck ## everything CI checks: lint, buf lint, buf breaking, typecheck, all tests
	$(NODE_RUN) scripts/run-tests.ts

test-unit: tools generate ## only the tests, skipping the static checks
	$(NODE_RUN) scripts/run-tests.ts

up: tools generate ## run the whole mesh locally (Ctrl-C stops it; OBSERVE=1 adds Jaeger and Prometheus)
	$(NODE_RUN) scripts/up.ts

test-chaos: tools generate ## the full chaos run: 2,000 orders while every service, NATS and Postgres are killed and restarted (MESH=1: through the sidecar mesh)
	CHAOS_ORDERS=$${CHAOS_ORDERS:-2000} CHAOS_MIN_MS=$${CHAOS_MIN_MS:-240000} $(NODE_RUN) scripts/run-tests.ts tests/chaos.test.ts

deploy: generate ## build, push, apply OVERLAY=dev|prod (REGISTRY=…); DRY_RUN=1 only renders and validates
	DRY_RUN=$(DRY_RUN) OVERLAY=$(OVERLAY) REGISTRY=$(REGISTRY) TAG=$(TAG) $(NODE_RUN) scripts/deploy/deploy.ts

demo: ## place orders through the running `make up` (REST edge on :8080) and show the outcome
	$(NODE_RUN) scripts/demo.ts

dead-letters: ## list dead-lettered events of the running mesh (ARGS="replay <seq>" to replay)
	$(NODE_RUN) scripts/dead-letters.ts $(if $(ARGS),$(ARGS),list)

bench: ## benchmarks (npm run bench:catalog)
	npm run bench:catalog

bench-build: build ## compile the benchmark's server entries to bench/.dist (servers run as images do)
	node_modules/.bin/tsc -p bench/tsconfig.build.json

clean: ## remove generated code and build output
	rm -rf services/kit/gen tests/polyglot/go/gen .proto-deps $(addsuffix /dist,$(WORKSPACES)) web/dist bench/.dist web/server-dist

distclean: clean ## also node_modules and local data (.data/)
	rm -rf node_modules .data
