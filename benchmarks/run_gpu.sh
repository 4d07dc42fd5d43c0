#!/usr/bin/env bash
# Every benchmark on a CUDA machine, in one command that can be split over several time-limited ones.
#
#   bash benchmarks/run_gpu.sh OUTDIR [STATE_DIR]
#
# Writes OUTDIR/{peers,samplers,training,models,metrics}_cuda.json (copy them into results/benchmarks/
# and re-execute notebooks/08_benchmarks.ipynb with --tier gpu). A script whose results file already
# exists in OUTDIR or in STATE_DIR is skipped, and bench_peers.py keeps every finished measurement in
# STATE_DIR/peers_partial.json: run the same command again (with the files from the first run in
# STATE_DIR) and it goes on where it stopped.
#
# The peers (diffusers, denoising-diffusion-pytorch) come from benchmarks/requirements-peers.txt;
# on a machine with no index, put their wheels in .whl/ (pure-Python wheels, see benchmarks/README.md)
# and they are installed into /tmp/peers-site first. BENCH_PEERS_ARGS: extra arguments of bench_peers.py.
set -uo pipefail
out=${1:?usage: run_gpu.sh OUTDIR [STATE_DIR]}
state=${2:-$out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/peers-site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/peers-site"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null
$py -c "import torch, diffusion_edu; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"

have() { [ -e "$out/$1" ] || [ -e "$state/$1" ]; }
step() {  # name, command...
    local name=$1; shift
    if have "$name"; then echo "== $name: already measured, skipped"; return 0; fi
    echo "== $name: $*"
    local t0=$SECONDS
    "$@" || echo "== $name FAILED (exit $?)"
    echo "== $name took $((SECONDS - t0)) s"
}
[ -e "$state/peers_partial.json" ] && [ "$state" != "$out" ] && cp "$state/peers_partial.json" "$out/"
step peers_cuda.json $py benchmarks/bench_peers.py --device cuda --partial "$out/peers_partial.json" \
    --out "$out/peers_cuda.json" --note "benchmarks/run_gpu.sh" ${BENCH_PEERS_ARGS:-}
step samplers_cuda.json $py benchmarks/bench_samplers.py --device cuda --n 256 --eval-n 1000 --out "$out/samplers_cuda.json"
step training_cuda.json $py benchmarks/bench_training.py --device cuda --out "$out/training_cuda.json"
step metrics_cuda.json $py benchmarks/bench_metrics.py --device cuda --out "$out/metrics_cuda.json"
step models_cuda.json $py benchmarks/bench_models.py --device cuda --modes fp32 channels_last bf16 --windows 3 --window-s 1 --out "$out/models_cuda.json"
ls -la "$out"
