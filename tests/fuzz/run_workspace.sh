#!/usr/bin/env bash
# Fuzz the workspace metadata reader (workspace.yml): build
# tests/fuzz/fuzz_workspace.c with clang's libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer, then run it for N seconds.
#
#   tests/fuzz/run_workspace.sh [SECONDS]        (default 60)
#
# Crashing inputs are kept as ./fuzz-workspace-crash-* in the current directory.
set -euo pipefail
secs=${1:-60}
src=${AGENTFS_SOURCE_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
cc=${CLANG:-clang}
work=$(mktemp -d)
trap 'rm -rf "$work" /tmp/agentfs-fuzz-ws.*' EXIT

"$cc" -g -O1 -std=c17 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
	-fno-sanitize-recover=undefined -I"$src" \
	"$src/tests/fuzz/fuzz_workspace.c" "$src/cli/workspace.c" -lyaml -o "$work/fuzz_workspace"

mkdir "$work/corpus"
cat >"$work/corpus/good.yml" <<'YML'
version: 1
name: w
repo: /home/u/src/app
base_commit: 0123456789abcdef0123456789abcdef01234567
mountpoint: /home/u/agents/t1
created: 1795940000
policy_digest: 0123456789abcdef0123456789abcdef
YML
"$work/fuzz_workspace" -max_total_time="$secs" -max_len=2048 -timeout=10 -rss_limit_mb=2048 \
	-artifact_prefix="$PWD/fuzz-workspace-" -print_final_stats=1 "$work/corpus"
