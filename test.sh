#!/usr/bin/env bash
# Runs every test Turnstone has. Installs what the interop tests need when it is missing:
# coturn's turnutils_* (Debian package coturn) and headless Chromium (chromium, chromium-driver),
# iproute2 (the hostile-network tests build private network namespaces, which needs root),
# clang and libbpf-dev (the kernel fast path),
# and the browser test's npm packages. Interop tests fail, never skip, when a tool is missing.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
command -v turnutils_uclient >/dev/null 2>&1 || missing+=(coturn)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
# The kernel fast path is compiled when clang and libbpf's headers are there; the comparison
# harness's turnstone-kernel needs it (it fails rather than skip without it).
command -v clang >/dev/null 2>&1 || missing+=(clang)
[ -f /usr/include/bpf/bpf_helpers.h ] || missing+=(libbpf-dev)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "test.sh: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ -f tests/browser/package-lock.json ] && [ ! -d tests/browser/node_modules ]; then
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
