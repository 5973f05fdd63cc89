#!/usr/bin/env bash
# Fuzz the journal's reader, scanner and formatter: build tests/fuzz/fuzz_journal.c
# with clang's libFuzzer, AddressSanitizer and UndefinedBehaviorSanitizer, then
# run it for N seconds.
#
#   tests/fuzz/run_journal.sh [SECONDS]        (default 60)
#
# Crashing inputs are kept as ./fuzz-journal-crash-* in the current directory.
set -euo pipefail
secs=${1:-60}
src=${AGENTFS_SOURCE_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
cc=${CLANG:-clang}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$cc" -g -O1 -std=c17 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
	-fno-sanitize-recover=undefined -I"$src" \
	"$src/tests/fuzz/fuzz_journal.c" "$src"/journal/*.c "$src/fs/layout.c" \
	-ljansson -lxxhash -lpthread -o "$work/fuzz_journal"

mkdir "$work/corpus"
cp "$src"/tests/fuzz/corpus/*.jsonl "$work/corpus/"
"$work/fuzz_journal" -max_total_time="$secs" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
	-dict="$src/tests/fuzz/journal.dict" -artifact_prefix="$PWD/fuzz-journal-" \
	-print_final_stats=1 "$work/corpus"
