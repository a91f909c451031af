# Issue 3 (aggregation strategies, privacy proxy): sourced by .ci/run after set-up.
# Nothing to install (numpy, scipy, dp-accounting come with the package). The unit,
# integration and e2e tests run with the rest of the suite in scripts/test (~40 s here);
# this step only checks that both benchmarks still run end to end, in quick mode (~20 s).
python benchmarks/aggregate.py --quick
python benchmarks/accuracy.py --quick --out "$(mktemp -d)"
