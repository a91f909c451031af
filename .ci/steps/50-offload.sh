# Issue 5 (model cache, inference offload, resource manager). Its tests run with the
# others (~20 s here). This step smoke-runs both benchmarks briefly so they keep working;
# the full runs are manual (docs/inference.md). About 25 s on 2 cores.
offload_out="$(mktemp -d)"
python benchmarks/inference.py --duration 0.5 --repeats 1 --concurrency 1 8 --out "$offload_out"
python benchmarks/cache.py --edges 8 --steps 12 --wan-ms 50 --out "$offload_out"
test -s "$offload_out/inference.png"
test -s "$offload_out/cache.png"
rm -rf "$offload_out"
