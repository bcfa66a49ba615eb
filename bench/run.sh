#!/usr/bin/env bash
# make bench: keygate against an equivalent nginx gate, same upstream, same keys, same load.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/bench.py "$@"
