#!/usr/bin/env bash
# The project's test command: formatting, lints, then every test of the workspace.
# Tests that boot VMs need what scripts/setup.sh installs (assets, helpers).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
[[ -d $HOME/.cargo/bin ]] && export PATH="$HOME/.cargo/bin:$PATH"

echo "==> test: cargo fmt --all --check"
cargo fmt --all --check

echo "==> test: cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings </dev/null

if command -v cargo-nextest >/dev/null; then
    echo "==> test: cargo nextest run --workspace --no-fail-fast"
    cargo nextest run --workspace --no-fail-fast </dev/null
else
    echo "==> test: cargo test --workspace --no-fail-fast (cargo-nextest not installed)"
    cargo test --workspace --no-fail-fast </dev/null
fi
