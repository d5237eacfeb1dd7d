#!/usr/bin/env bash
# Runs every test Turnstone has. Installs what the interop tests need when it is missing:
# coturn's turnutils_* (Debian package coturn) and headless Chromium (chromium, chromium-driver),
# iproute2 (the hostile-network and fast path tests build private network namespaces, which
# needs root), nftables (the self-test page's and the probe's broken-network tests build
# firewalls and NATs inside such namespaces), firefox-esr (the page's Firefox run), clang and
# libbpf-dev (the kernel fast path is built from C), ethtool and sysctl (the fast path's veth
# tests switch checksum offload and forwarding inside their namespaces), setpriv from
# util-linux (the fast path's fallback test drops privileges), and the browser test's npm
# packages. Interop tests fail, never skip, when a tool is missing.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
command -v turnutils_uclient >/dev/null 2>&1 || missing+=(coturn)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
# The self-test page's browser test drops UDP inside a network namespace with an nft rule.
command -v nft >/dev/null 2>&1 || missing+=(nftables)
# ... and runs in Firefox too (driven over Marionette, no geckodriver).
command -v firefox-esr >/dev/null 2>&1 || missing+=(firefox-esr)
# The kernel fast path is compiled from C to BPF at build time (build.rs); without these the
# build leaves it out and its tests fail.
command -v clang >/dev/null 2>&1 || missing+=(clang)
[ -f /usr/include/bpf/bpf_helpers.h ] || missing+=(libbpf-dev)
[ -f /usr/include/linux/bpf.h ] || missing+=(linux-libc-dev)
command -v ethtool >/dev/null 2>&1 || missing+=(ethtool)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
command -v sysctl >/dev/null 2>&1 || missing+=(procps)
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
