#!/usr/bin/env bash
# Fuzz the policy YAML loader: build tests/fuzz/fuzz_policy.c with clang's libFuzzer,
# AddressSanitizer and UndefinedBehaviorSanitizer, then run it for N seconds.
#
#   tests/fuzz/run.sh [SECONDS]        (default 60)
#
# Crashing inputs are kept as ./fuzz-policy-crash-* in the current directory.
set -euo pipefail
secs=${1:-60}
src=${AGENTFS_SOURCE_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
cc=${CLANG:-clang}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 "$src/policy/embed.py" "$src/policy/default.yml" "$work/default_policy.c" \
	policy_default_yml
"$cc" -g -O1 -std=c17 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
	-fno-sanitize-recover=undefined -I"$src" \
	"$src/tests/fuzz/fuzz_policy.c" "$src/policy/pattern.c" "$src/policy/rules.c" \
	"$src/policy/load.c" "$work/default_policy.c" -lyaml -lxxhash -o "$work/fuzz_policy"

mkdir "$work/corpus"
cp "$src/policy/default.yml" "$src"/tests/fuzz/corpus/*.yml "$work/corpus/"
"$work/fuzz_policy" -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
	-dict="$src/tests/fuzz/policy.dict" -artifact_prefix="$PWD/fuzz-policy-" \
	-print_final_stats=1 "$work/corpus"
