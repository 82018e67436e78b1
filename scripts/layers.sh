#!/usr/bin/env bash
# Checks the layering rule: a module imports only from its own layer or a lower one. Lowest
# first:
#
#   L0 model, util, metrics
#   L1 scheduler, provisioner, store, logs, error
#   L2 compute
#   L3 batch
#   L4 engine
#   L5 api, server, cli, bench, main.rs, lib.rs
#
# Every `use crate::x...` and every `crate::x::` path in src/**/*.rs counts, test code included;
# comments and string literals do not. Imports within a module's own top-level module are always
# fine. Prints each violation as `file:line: ...` and exits 1 if there is one. A lower layer
# that must call up does it through a trait or channel it owns (see src/lib.rs).
#
#   bash scripts/layers.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec python3 scripts/layers.py .
