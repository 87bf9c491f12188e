#!/usr/bin/env bash
# Installs bubblewrap (bwrap), the sandbox of the local runner's workers, for its tests
# (tests/test_runner_sandbox.py); the `bwrap` fixture of tests/conftest.py runs it as root.
set -euo pipefail
apt_options=(-y --no-install-recommends -o DPkg::Lock::Timeout=600)
export DEBIAN_FRONTEND=noninteractive
# The package lists of a fresh machine are empty (or stale): refresh them when the install fails.
if ! apt-get install "${apt_options[@]}" -qq bubblewrap >/dev/null 2>&1; then
    apt-get update -o DPkg::Lock::Timeout=600 -qq
    apt-get install "${apt_options[@]}" -qq bubblewrap >/dev/null
fi
