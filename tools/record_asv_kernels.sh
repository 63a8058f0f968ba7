#!/usr/bin/env bash
# Re-record the newest commit of the kernel-section fixture (tests/data/asv_kernels) in one go.
#
# Run on a QUIET machine (nothing else running; the script refuses above load average 1.0
# unless FORCE=1): the fixture's point is that the DRAM-bound rates stay under the read-stream
# ceiling of the same run, and a loaded machine measures the ceiling and the kernels at
# different moments under different load. About 4-5 minutes on 2 cores (quick mode: one
# sample per benchmark; the selection below is the README's).
#
#   tools/record_asv_kernels.sh              # from the repository root, with .venv set up
#   PY=/path/to/python tools/record_asv_kernels.sh
#   DEST=/tmp/x tools/record_asv_kernels.sh  # write elsewhere (a trial), not into tests/data
#   BENCH='roofline\.' FORCE=1 DEST=/tmp/x tools/record_asv_kernels.sh   # the mechanics only
#
# What it does: runs `asv run --python=same --quick --set-commit-hash HEAD` on the selection
# into a scratch results directory (machine name "vm", as in the fixture), replaces the
# fixture's newest result file with the new one (the older commit's file stays: the history
# tests need two commits), keeps in benchmarks.json only the benchmarks the result files
# hold, and runs the fixture's roofline tests with --runxfail: if
# test_no_dram_bound_rate_exceeds_its_ceiling_beyond_noise now passes, remove its xfail
# marker in tests/test_report_kernels.py and update tests/data/asv_kernels/README.md
# (commit, date, load average printed below).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
PY=${PY:-.venv/bin/python}
DEST=${DEST:-tests/data/asv_kernels/results}
MAX_LOAD=${MAX_LOAD:-1.0}

load=$(cut -d' ' -f1 /proc/loadavg)
if [[ "${FORCE:-0}" != 1 ]] && awk -v l="$load" -v m="$MAX_LOAD" 'BEGIN{exit !(l > m)}'; then
    echo "load average $load > $MAX_LOAD: not a quiet machine (FORCE=1 to record anyway)" >&2
    exit 2
fi

# asv matches each regex against "name(param, ...)", parameters as their repr strings.
if [[ -n "${BENCH:-}" ]]; then
    SELECT=("$BENCH")
else
    SELECT=(
        "attention\.PrefillAttention\.\w+\('(numba|numpy_f32|torch)', (512|1024), 2\)"
        "attention\.DecodeAttention\.\w+\('(numba|numpy_f32|torch)', 8, 2\)"
        "attention\.PagedDecodeAttention\.\w+\('(numba|torch)', 8, 2\)"
        "sampling\.TopK\.\w+\((1|32), 256000, 2\)"
        "sampling\.(FilterTopP|Sample)\.\w+\((1|32), (32000|256000), 2\)"
        "moe\.(RouteDispatch|PermuteUnpermute)\.\w+\((512|8192), 'E8k2', '(numba|numpy_f32|torch)', 2\)"
        "moe\.MoELayer\.\w+\('(numba|dense|torch|torch_dense)', 2, "
        "roofline\."
    )
fi
BENCH_ARGS=()
for b in "${SELECT[@]}"; do BENCH_ARGS+=(-b "$b"); done

scratch=$(mktemp -d)
conf="asv.record-fixture.conf.json"  # beside asv.conf.json: its relative paths stay valid
trap 'rm -rf "$scratch" "$conf"' EXIT
"$PY" - "$scratch" "$conf" <<'EOF'
import json, re, sys
scratch, conf = sys.argv[1:]
text = re.sub(r"^\s*//.*$", "", open("asv.conf.json").read(), flags=re.MULTILINE)
cfg = json.loads(text)
cfg["results_dir"] = f"{scratch}/results"
cfg["html_dir"] = f"{scratch}/html"
open(conf, "w").write(json.dumps(cfg, indent=2))
EOF

commit=$(git rev-parse HEAD)
start=$(date +%s)
echo "recording $commit at load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" -m asv --config "$conf" machine --yes --machine vm >/dev/null
"$PY" -m asv --config "$conf" run --python=same --quick --machine vm --set-commit-hash "$commit" \
    "${BENCH_ARGS[@]}" --show-stderr
echo "asv took $(( $(date +%s) - start )) s; load average now $(cut -d' ' -f1-3 /proc/loadavg)"

mkdir -p "$DEST/vm"
"$PY" - "$scratch/results" "$DEST" "$commit" <<'EOF'
import json, shutil, sys
from pathlib import Path
new, dest, commit = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
files = sorted((new / "vm").glob(f"{commit[:8]}-*.json"))
if not files:
    sys.exit("asv wrote no result file for this commit")
old = sorted((dest / "vm").glob("*-*.json"), key=lambda p: json.loads(p.read_text())["date"])
if old:
    old[-1].unlink()  # the newest commit's file is replaced; the older one stays for the history
for f in files:
    shutil.copy(f, dest / "vm" / f.name)
shutil.copy(new / "vm" / "machine.json", dest / "vm" / "machine.json")
held = set()
for f in (dest / "vm").glob("*-*.json"):
    held |= set(json.loads(f.read_text())["results"])
described = json.loads((new / "benchmarks.json").read_text())
if (dest / "benchmarks.json").exists():  # the older commit's benchmarks keep their descriptions
    described = {**json.loads((dest / "benchmarks.json").read_text()), **described}
kept = {k: v for k, v in described.items() if k == "version" or k in held}
(dest / "benchmarks.json").write_text(json.dumps(kept, indent=4, sort_keys=True))
print(f"{len(files)} result file(s) into {dest}; benchmarks.json keeps {len(kept) - 1} benchmark(s)")
EOF

if [[ "$DEST" == tests/data/asv_kernels/results ]]; then
    "$PY" -m pytest tests/test_report_kernels.py -q --runxfail -k "ceiling or dram or contradiction" || true
fi
