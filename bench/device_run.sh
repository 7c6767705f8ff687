#!/usr/bin/env bash
# Issue 18's 16-core rows on a machine with no network, from the wheels of
# bench/device_bundle.py (.device/bundle.tar, carried with the working tree):
#
#   bash bench/device_run.sh        # in the repository root; results in $OUT
#
# Installs a venv offline (the bundle's wheels first on the path, the machine's own numpy,
# scipy and scikit-learn after them), then runs each part under its own timeout, the most
# wanted first, all inside DEADLINE seconds. Each part's JSON is copied to $OUT as soon as
# it is written; `python bench/scaling.py --report-only X.json --out DIR` draws its table.
set -u
cd "$(dirname "$0")/.."
unset PYTHONPATH  # the venv's packages first; the bench adds the repository itself
OUT=${OUT:-bench/results/device}
PY=${PY:-python3}  # a Python 3.12 (the bundle's wheels are cp312)
VENV=${VENV:-/tmp/mf-venv}
DEADLINE=${DEADLINE:-520}  # a part is stopped by DEADLINE + 10 s at the latest
REPEATS=${REPEATS:-2}
K_SMALL=${K_SMALL:-8} K_NOOP=${K_NOOP:-8} K_BIG=${K_BIG:-16}
QUICK=${QUICK:-}  # --quick: tiny sizes, to check the command lines
PARTS=${PARTS:-small450 peer cold_start cpu io}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d /tmp/mf-device.XXXXXX)
log() { echo "[$(date -u +%T) +${SECONDS}s] $*" | tee -a "$OUT/device_run.log"; }

# part NAME BUDGET_S COMMAND...: run it for at most BUDGET_S (less if the deadline is nearer).
# SIGINT first: the bench's context managers stop the workers and Redis it started.
part() {
    local name=$1 budget=$2 left=$((DEADLINE - SECONDS - 10))
    shift 2
    [[ " $PARTS " == *" $name "* ]] || return 0
    ((budget > left)) && budget=$left
    if ((budget < 30)); then log "$name: skipped, ${left}s left"; return; fi
    log "$name: up to ${budget}s: $*"
    timeout -s INT -k 20 "$budget" "$@" >>"$OUT/device_run.log" 2>&1
    log "$name: exit $?"
}

log "machine: $(nproc) cores, $("$PY" --version 2>&1) at $(command -v "$PY")"
"$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' || { log "PY must be a Python 3.12"; exit 1; }
[ -f .device/bundle.tar ] || { log "no .device/bundle.tar: run bench/device_bundle.py, carry .device"; exit 1; }
install() {
    tar -xf .device/bundle.tar -C "$WORK" || return 1
    "$PY" -m venv --without-pip "$VENV" || return 1
    local site pip=("$VENV/bin/python" -m pip -q install --no-index --find-links "$WORK")
    site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    # The machine's own packages after the venv's (a .pth line is appended to sys.path).
    "$PY" -c 'import sys; print("\n".join(p for p in sys.path if p.endswith(("site-packages", "dist-packages"))))' \
        >"$site/device-site.pth"
    # pip runs from its wheel: the venv has none yet, the machine's may be old.
    "$VENV/bin/python" "$(echo "$WORK"/pip-*.whl)/pip" -q install --no-index --no-deps "$WORK"/*.whl \
        && "${pip[@]}" --no-deps -e . && "$VENV/bin/python" -m pip freeze >"$OUT/pip-freeze.txt"
}
# A warm machine's second call keeps the venv.
[ -x "$VENV/bin/modelfleet" ] || install >>"$OUT/device_run.log" 2>&1 || { log "install failed"; exit 1; }
versions='import importlib.metadata as m, producer.local as l; print(*(f"{d} {m.version(d)}" for d in
    ("numpy", "scipy", "scikit-learn", "pandas", "pyarrow", "celery")), l.find_redis_server(), sep=", ")'
found=$("$VENV/bin/python" -c "$versions" 2>&1) || { log "imports failed: $found"; exit 1; }
log "installed in $VENV: $found"

keep() { [ -f "$WORK/$1/scaling.json" ] && cp "$WORK/$1/scaling.json" "$OUT/scaling-$1.json"; }
S=("$VENV/bin/python" bench/scaling.py $QUICK --repeats "$REPEATS")
# Targets 1-2: small450 `submit --wait` on K_SMALL workers; no-op packed and chain vs the peer.
part small450 170 "${S[@]}" --only small450 --ks "$K_SMALL" --out "$WORK/small450"; keep small450
part peer 90 "${S[@]}" --only peer --ks "$K_NOOP" --out "$WORK/peer"; keep peer
# Target 3: fresh worker to first ping vs bare Celery; first and second I/O batch at K_BIG.
cold=(--parts ping batches --repeats 3 --ks "$K_BIG" --out "$OUT/cold_start.json")
[ -n "$QUICK" ] && cold=(--parts ping batches --repeats 1 --ks "$K_BIG" --seconds 0.2 --out "$OUT/cold_start.json")
part cold_start 130 "$VENV/bin/python" bench/cold_start.py "${cold[@]}"
# Target 5 and the I/O row: CPU-bound and I/O-bound at K_BIG, modelfleet vs Pool.
part cpu 80 "${S[@]}" --only cpu --ks "$K_BIG" --methods pool procs --out "$WORK/cpu"; keep cpu
part io 130 "${S[@]}" --only io --ks "$K_BIG" --methods pool procs --out "$WORK/io"; keep io
log "done: $(cd "$OUT" && ls | tr '\n' ' ')"
