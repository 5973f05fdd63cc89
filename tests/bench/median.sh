# median.sh - sourced by the bench scripts that keep raw rows "WORKLOAD SYSTEM VALUE".
#
# bench_median RAW WORKLOAD SYSTEM: the median of the values of RAW's rows for
# WORKLOAD on SYSTEM (the lower middle one of an even count), nothing when
# there is none.
bench_median() {
	awk -v w="$2" -v s="$3" '$1 == w && $2 == s { print $3 }' "$1" | sort -g |
		awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'
}
