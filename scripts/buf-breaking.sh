#!/usr/bin/env bash
# buf breaking for proto/ against a previous commit, offline.
#
# Against what:
#   $BUF_BREAKING_AGAINST (any git revision) when set; otherwise the merge base with
#   origin/main when that is not HEAD itself (a branch or PR); otherwise HEAD~1.
# The input is the working tree, so uncommitted changes are checked too.
#
# Why not `--against .git#ref=...`: the against side needs the third-party imports, which live
# in the git-ignored .proto-deps/ (materialized from npm packages, see
# scripts/materialize-protos.ts). So the previous commit's proto/ and buf.yaml are extracted
# with `git archive` into a temp dir, the current .proto-deps/ is copied beside them, and that
# directory is the against workspace. Rules: buf.yaml (FILE for the proto module; .proto-deps
# is ignored).
#
# Exits 0 with a note when there is nothing to compare with (first commit, shallow clone, or a
# previous commit without protos).
set -euo pipefail

root=$(git rev-parse --show-toplevel)
cd "$root"
buf=node_modules/.bin/buf

if [[ -n "${BUF_BREAKING_AGAINST:-}" ]]; then
  base=$(git rev-parse --verify -q "${BUF_BREAKING_AGAINST}^{commit}") || {
    echo "buf-breaking: BUF_BREAKING_AGAINST=${BUF_BREAKING_AGAINST} is not a commit" >&2
    exit 1
  }
  how="${BUF_BREAKING_AGAINST}"
else
  base=""
  head=$(git rev-parse -q --verify 'HEAD^{commit}' || true)
  if git rev-parse -q --verify 'origin/main^{commit}' >/dev/null; then
    mb=$(git merge-base HEAD origin/main 2>/dev/null || true)
    if [[ -n "$mb" && "$mb" != "$head" ]]; then
      base=$mb
      how="merge base with origin/main"
    fi
  fi
  if [[ -z "$base" ]]; then
    if ! base=$(git rev-parse -q --verify 'HEAD~1^{commit}'); then
      echo "buf-breaking: no previous commit to compare with (first commit or shallow clone); skipped"
      exit 0
    fi
    how="HEAD~1"
  fi
fi
short=$(git rev-parse --short "$base")

if ! git ls-tree -r --name-only "$base" -- proto | grep -q '\.proto$'; then
  echo "buf-breaking: ${how} (${short}) has no protos under proto/; nothing to compare, skipped"
  exit 0
fi

# Imports for both sides, from the installed npm packages (idempotent, fast).
node --import tsx scripts/materialize-protos.ts >/dev/null

against=$(mktemp -d "${TMPDIR:-/tmp}/buf-breaking.XXXXXX")
trap 'rm -rf "$against"' EXIT

git archive --format=tar "$base" -- proto | tar -x -C "$against"
if git cat-file -e "$base:buf.yaml" 2>/dev/null && git show "$base:buf.yaml" | grep -q '\.proto-deps'; then
  git show "$base:buf.yaml" >"$against/buf.yaml"
else
  # The previous commit predates this workspace layout: compare under today's buf.yaml.
  cp buf.yaml "$against/buf.yaml"
fi
cp -R .proto-deps "$against/.proto-deps"

echo "buf-breaking: proto/ (working tree) against ${how} (${short})"
"$buf" breaking . --against "$against"
echo "buf-breaking: no breaking changes"
