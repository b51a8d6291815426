#!/usr/bin/env bash
# Installs node_modules from package-lock.json.
#
# `npm ci` is preferred. It refuses a lock file that lacks other platforms' optional
# binaries (@biomejs/cli-darwin-*, @bufbuild/buf-win32-*, …), and a registry mirror that
# serves only this platform's packages produces exactly such a lock file. Then
# `npm install --no-save` installs the same locked versions without rewriting the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! npm ci --no-audit --no-fund 2>/tmp/meshmart-npm-ci.$$.log; then
  if grep -q "Missing: .* from lock file" /tmp/meshmart-npm-ci.$$.log; then
    echo "npm ci: lock file lacks other platforms' optional packages; installing the locked versions with npm install --no-save"
    npm install --no-save --no-audit --no-fund
  else
    cat /tmp/meshmart-npm-ci.$$.log >&2
    rm -f /tmp/meshmart-npm-ci.$$.log
    exit 1
  fi
fi
rm -f /tmp/meshmart-npm-ci.$$.log
