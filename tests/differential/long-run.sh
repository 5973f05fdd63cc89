#!/usr/bin/env bash
# long-run.sh - the differential test for as long as you like: batches of
# seeds through differential.sh until DURATION seconds have passed (or the
# seeds run out), each batch on a fresh repository and state dir.  Failing
# seeds are printed minimised; replay one with
#   DIFF_FIRST=N DIFF_LAST=N bash tests/differential/differential.sh
#
#   bash tests/differential/long-run.sh [DURATION [FIRST [BATCH [STEPS]]]]
#       DURATION  seconds to run (default 3600)
#       FIRST     first seed (default 1000)
#       BATCH     seeds per batch (default 200)
#       STEPS     operations per seed (default 250)
#   AGENTFS=build/cli/agentfs DIFF_IGNORE=nlink,link bash tests/differential/long-run.sh 600
#       (DIFF_IGNORE looks past a known bug for others: see differential.py --ignore)
#
# Exit status 1 if any batch failed.  The log of each failing batch is kept in
# ${TMPDIR:-/tmp}/agentfs-difflong.*/batch-FIRST.log.
set -u
here=$(cd "$(dirname "$0")" && pwd)
duration=${1:-3600}
seed=${2:-1000}
batch=${3:-200}
steps=${4:-250}
logs=$(mktemp -d "${TMPDIR:-/tmp}/agentfs-difflong.XXXXXX") || exit 1
end=$((SECONDS + duration))
rc=0 total=0 failed=0
while [ "$SECONDS" -lt "$end" ]; do
	last=$((seed + batch - 1))
	log=$logs/batch-$seed.log
	# the batch's own watchdog: generous, a hung mount still ends the batch
	if DIFF_FIRST=$seed DIFF_LAST=$last DIFF_STEPS=$steps DIFF_TIMEOUT=$((batch * 10)) \
		AGENTFS_TEST_WATCHDOG=$((batch * 10 + 60)) \
		bash "$here/differential.sh" >"$log" 2>&1; then
		rm -f "$log"
	else
		rc=1
		failed=$((failed + $(grep '^not ok [0-9]* - seed' "$log" | sort -u | wc -l)))
		grep -v '^ok' "$log" | awk '!seen[$0]++' | head -n 200
	fi
	total=$((total + batch))
	echo "# seeds $seed..$last done ($total in all, $failed failed, $((end - SECONDS > 0 ? end - SECONDS : 0)) s left)"
	seed=$((last + 1))
done
[ "$rc" -eq 0 ] && rmdir "$logs" 2>/dev/null
exit $rc
