#!/usr/bin/env bash
# make bench: keygate against an equivalent nginx gate, same upstream, same keys, same load;
# then POSTed bodies with keygate's request buffering on and off, cluster on and off, WebSocket
# echo and TLS.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 bench/bench.py "$@"
echo
python3 bench/bench.py --buffering --no-extras --only keygate,keygate-nobuf,nginx
echo
# The same gate with cluster on and off; keys rate limited (never reached) so every sync has
# counts to push and totals to pull.
python3 bench/bench.py --cluster --rate-limited --no-extras --sizes small --only keygate,keygate-cluster
echo
python3 bench/bench.py --websocket --tls --no-extras --only keygate,nginx --sizes none
echo
python3 bench/instructions.py
