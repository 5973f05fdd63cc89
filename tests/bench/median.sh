# median.sh - tables of medians for the bench scripts that keep raw rows
# "WORKLOAD SYSTEM VALUE" (sourced).
#
# bench_median RAW WORKLOAD SYSTEM: the median of the values of RAW's rows for
# WORKLOAD on SYSTEM (the lower middle one of an even count), nothing when
# there is none.
bench_median() {
	awk -v w="$2" -v s="$3" '$1 == w && $2 == s { print $3 }' "$1" | sort -g |
		awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'
}

# bench_cells RAW WORKLOAD FORMAT SYSTEM...: for each SYSTEM in turn, printf
# FORMAT (two conversions) with WORKLOAD's median on it and that median's
# ratio to the first SYSTEM's: the cells of one table row.
bench_cells() {
	local raw=$1 w=$2 fmt=$3 base= med s
	shift 3
	for s in "$@"; do
		med=$(bench_median "$raw" "$w" "$s")
		[ -z "$base" ] && base=$med
		# shellcheck disable=SC2059 # the format is the caller's
		printf "$fmt" "$med" "$(echo "$med / $base" | bc -l)"
	done
}
