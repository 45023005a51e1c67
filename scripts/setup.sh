#!/usr/bin/env bash
# Installs everything prfaas needs to build, test and serve on Debian 12.
# Idempotent: when every package is already present it returns within a second or two, so
# `make up` / `make test` start building at once on a second run.
set -euo pipefail

APT_PACKAGES=(
  build-essential cmake ninja-build pkg-config git ccache
  libboost-dev libssl-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libspdlog-dev libfmt-dev libyaml-cpp-dev libcli11-dev nlohmann-json3-dev
  libxxhash-dev libopenblas-dev
  libpcre2-dev libutf8proc-dev libucx-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  prometheus iproute2 iperf3 curl procps
  python3 python3-jsonschema python3-yaml
  clang-format clang-tidy
  bible-kjv-text
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# Node.js ships npm on some images (nodesource); only ask Debian for them when absent.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if ((${#missing[@]})); then
  echo "setup: installing ${#missing[@]} Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# JavaScript tooling (tokenizer cross-check, manifest validation): every tools/*/ and deploy/*/
# folder with a package.json gets `npm ci` when its node_modules is missing or older than the lock.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
for pkg in "$root"/tools/*/package.json "$root"/deploy/*/package.json; do
  [ -f "$pkg" ] || continue
  dir="$(dirname "$pkg")"
  lock="$dir/package-lock.json"
  stamp="$dir/node_modules/.prfaas-installed"
  if [ ! -f "$stamp" ] || [ "$pkg" -nt "$stamp" ] || { [ -f "$lock" ] && [ "$lock" -nt "$stamp" ]; }; then
    echo "setup: installing npm packages in ${dir#$root/}"
    if [ -f "$lock" ]; then
      (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    else
      (cd "$dir" && npm install --no-audit --no-fund --loglevel=error)
    fi
    touch "$stamp"
  fi
done
