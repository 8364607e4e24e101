#!/usr/bin/env bash
# The CUDA paths in one short run on a GPU machine: the `gpu` tests, `fcasearch profile` on CUDA
# (eager against compile side by side, fp32 and bf16, the ONNX Runtime provider check), and a
# short `--device cuda` search with its final rounds and report. Steps run one after another
# (nothing is timed while something else uses the GPU); each has its own time limit, so a hang
# costs one step, and the script goes on to the next.
#
#   bench/gpu_check.sh OUT_DIR [PART...]
#       PART: all (default: tests profile search) | tests | profile | search | ray | isolation | cpu
#
# `ray` runs the search on a local Ray with two trials sharing the GPU (--gpus-per-trial 0.5) and
# prints where each trial ran and its latency CV; `isolation` runs bench/measure_isolation.py on
# CUDA (latency CV of a candidate while two processes train on the same GPU, with the device lock
# against without).
#
# `cpu` (not part of `all`) runs bench/model_speed.py on two of the machine's cores instead: the
# GPU machine's CPU is another CPU to measure the eager-against-reference ratio on, with each
# form's time per op kind (--ops: about 10 s more); then
# bench/measure_isolation.py --probe on the same two cores (about 25 s).
#
# On an H200 (2026-12-04): tests 80 s, profile 160 s, search 67 s, ray 115 s, isolation 20 s,
# cpu 72 s (before model_speed printed eager-sgemm too: expect about a third more).
#
# Writes OUT_DIR/machine.txt, one log per step and OUT_DIR/results.tgz (profile CSV/JSON and the
# search's run directory). Python: $PYTHON (default python3) with fcasearch importable.
#
# On a lent device machine whose image has torch, onnxruntime, pandas, seaborn and pytest but not
# our other dependencies, carry them as wheels (pip download for cp312 here; fvcore and iopath
# have no wheels: pip wheel them): optuna, sqlalchemy, alembic, mako, colorlog, fvcore, iopath,
# yacs, termcolor, moocore, cffi, pycparser, platformdirs; install them with
# `pip install --no-deps --target DIR` and put DIR and the repository on PYTHONPATH. Ray's wheel
# (79 MB) alone is over a 64 MiB transfer limit: unpacked without its Java jars, rllib, serve and
# dashboard client, binaries stripped, with its small dependencies, it packs into a 53 MB
# tar.xz (the image's own pyarrow serves Tune); add that folder to the end of PYTHONPATH. The Ray
# test modules are left out of `tests` (they need no GPU); `ray` runs a real search instead.
set -u
out=${1:?usage: bench/gpu_check.sh OUT_DIR [all|tests|profile|search|ray|isolation|cpu]...}
shift
parts=" ${*:-all} "
for p in $parts; do
    case $p in
    all | tests | profile | search | ray | isolation | cpu) ;;
    *)
        echo "bench/gpu_check.sh: unknown part '$p' (all, tests, profile, search, ray, isolation, cpu)" >&2
        exit 2
        ;;
    esac
done
[[ $parts == *" all "* ]] && parts+=" tests profile search "
want() { [[ $parts == *" $1 "* ]]; }
py=${PYTHON:-python3}
mkdir -p "$out"
work=$(mktemp -d)
export PYTHONUNBUFFERED=1

step() {  # step NAME SECONDS CMD...: run CMD with a time limit, appended to OUT_DIR/NAME.log
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    {
        echo "== $name (limit ${limit}s): $*"
        timeout --kill-after=10 "$limit" "$@" 2>&1
        echo "== $name: exit $? after $((SECONDS - t0)) s"
    } >"$work/step.log"
    cat "$work/step.log" >>"$out/$name.log"
    tail -n 20 "$work/step.log"
}

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv
    lscpu | grep -E "Model name|Vendor ID|^CPU\(s\)|Thread|Flags" | cut -c1-300
    "$py" -c "import torch, onnxruntime as o; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0)); print('onnxruntime', o.__version__, o.get_available_providers())"
} >"$out/machine.txt" 2>&1
cat "$out/machine.txt"

if want tests; then
    # every gpu-marked test outside the Ray-only modules, then the NVML tests and the runtime
    # registry's provider checks (which skip or pass according to what is installed)
    step tests 150 "$py" -m pytest -q -p no:cacheprovider -n 4 -m gpu tests/measure \
        tests/train/test_trainer.py tests/search/test_local_search.py
    step tests 45 "$py" -m pytest -q -p no:cacheprovider -rs tests/measure/test_energy.py \
        tests/runtime/test_registry.py
fi

if want profile; then
    p="$py -m fcasearch profile"
    step profile 150 $p fcaformer_l1 --device cuda --runtime eager,compile --batch-sizes 1,64 \
        --no-energy --out "$work/profile_runtimes.csv"
    step profile 100 $p fcaformer_l1 fcaformer_l2 --device cuda --batch-sizes 1,64 \
        --dtypes fp32,bf16 --out "$work/profile_dtypes.csv"
    step profile 50 $p fcaformer_l1 --device cuda --batch-sizes 1,64 --cuda-graph \
        --out "$work/profile_graph.csv"
    step profile 40 $p fcaformer_l1 --device cuda --runtime onnxruntime
fi

if want search; then
    step search 150 "$py" search.py --space search_spaces/micro.yaml --device cuda \
        --n-trials 8 --final-rounds 5 --no-progress --out "$work/cuda_search"
fi

if want ray; then
    # two trials at a time on the one GPU, each given half of it by Ray; latency measured in the
    # trials under the device lock, the final rounds as Ray tasks
    step ray 240 "$py" search.py --space search_spaces/micro.yaml --executor ray --device cuda \
        --gpus-per-trial 0.5 --cpus-per-trial 2 --max-concurrent 2 --n-trials 6 --final-rounds 5 \
        --no-progress --out "$work/ray_search"
    step ray 30 "$py" -c "
import pathlib, pandas as pd, sys
run = pathlib.Path(sys.argv[1])
df = pd.read_parquet(run / 'trials.parquet') if (run / 'trials.parquet').exists() else pd.read_csv(run / 'trials.csv')
cols = [c for c in ('trial', 'status', 'device', 'cuda_visible_devices', 'latency_ms',
                    'latency_cv', 'latency_stable', 'latency_attempts', 'train_seconds',
                    'measure_seconds') if c in df]
print(df[cols].to_string(index=False))" "$work/ray_search"
fi

if want isolation; then
    step isolation 150 "$py" bench/measure_isolation.py --device cuda --trainers 2 --cells 8 \
        --train-batch 512
fi

if want cpu; then
    rt=()
    chrt -f 50 true 2>/dev/null && rt=(chrt -f 50)
    # --ops: where eager, eager-sgemm and the reference-style forward spend their time there
    step cpu 300 "${rt[@]}" taskset -c 2,3 "$py" bench/model_speed.py --runtimes eager,onnxruntime \
        --rounds 5 --ops
    # eager's Linear probe beside two trainers on the same two cores, with the lock against
    # without (no real-time priority: trainers would inherit it and starve the probe)
    step cpu-probe 120 taskset -c 2,3 "$py" bench/measure_isolation.py --probe --cells 8 --trainers 2
fi

tar -czf "$out/results.tgz" -C "$work" . 2>/dev/null
ls -la "$out"
