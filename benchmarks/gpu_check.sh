#!/usr/bin/env bash
# Training cost on an NVIDIA GPU, in one short run (under 8 minutes).
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]     # default: $OUT if set, else gpu_check/
#
# 1. install  a fresh venv with the package ([test,hub] extras), jax[cuda12]
#             and tensorflow[and-cuda] (pinned to the versions of the CPU figures);
# 2. devices  TensorFlow and JAX must each see a GPU, else the script stops
#             here and says so (nvidia-smi's view goes to OUT_DIR too);
# 3. speed    benchmarks.train_speed's SVD/plain step ratios on the GPU for
#             LeNet-5-Caffe and MobileNetV2, on TensorFlow, then on JAX;
# 4. train    LeNet-5-Caffe (Sparse VD) trained for 3 epochs on MNIST (the
#             shipped files: no download) with `python -m examples.train`.
#
# Every step has a time limit (`timeout`); the limits add up to 470 s. A step
# over its limit or failing is reported with its log; install and devices stop
# the run, the others let the rest go on. Everything lands in OUT_DIR:
# devices.json, train_speed_tensorflow.json, train_speed_jax.json,
# train_lenet5/report.json (and the run folder), logs/, summary.json.
#
# Environment variables:
#   GPU_CHECK_VENV    where to make the venv (default: a fresh temporary folder)
#   GPU_CHECK_PYTHON  use this interpreter as it is: no venv, no install
#   PYTHON            the interpreter to make the venv from (default: python3)
#   PIP_ARGS          extra pip arguments, e.g. "--no-index --find-links WHEELS"
#                     on a machine without network access
#   TF_VERSION        tensorflow (default 2.21.0); KERAS_VERSION keras (3.15.1)
#   CPU_OK=1          a dry run without a GPU: the device check only reports,
#                     train_speed runs --quick at batch 8 and training uses
#                     1 epoch on 2,000 examples. Its figures mean nothing.
#   LIMIT_SCALE       multiplies every time limit (default 1; a dry run on a
#                     slow or loaded CPU needs 4 or more)
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-${OUT:-gpu_check}}"
mkdir -p "$out/logs"
out="$(cd "$out" && pwd)"
cpu_ok="${CPU_OK:-0}"
limit_scale="${LIMIT_SCALE:-1}"
tf_version="${TF_VERSION:-2.21.0}"
keras_version="${KERAS_VERSION:-3.15.1}"
: >"$out/logs/steps.tsv"
failed=0

# step NAME LIMIT_S COMMAND...: runs COMMAND from the repo root under a time
# limit, its output to the terminal and OUT_DIR/logs/NAME.log.
step() {
    local name="$1" limit=$(($2 * limit_scale)) start=$SECONDS rc
    shift 2
    echo "== $name (limit ${limit} s)"
    (cd "$root" && timeout --kill-after=10 "$limit" "$@") 2>&1 | tee "$out/logs/$name.log"
    rc=${PIPESTATUS[0]}
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "$limit" >>"$out/logs/steps.tsv"
    if [ "$rc" -ne 0 ]; then
        failed=1
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
            echo "FAILED: $name ran past its ${limit} s limit; see $out/logs/$name.log" >&2
        else
            echo "FAILED: $name (exit $rc); see $out/logs/$name.log" >&2
        fi
    fi
    return "$rc"
}

summary() {
    "${py:-python3}" - "$out" "$cpu_ok" <<'EOF'
import json
import sys
from pathlib import Path

out, cpu_ok = Path(sys.argv[1]), sys.argv[2] == "1"
steps = []
for line in (out / "logs" / "steps.tsv").read_text().splitlines():
    name, rc, seconds, limit = line.split("\t")
    steps.append(
        {"step": name, "exit": int(rc), "seconds": int(seconds), "limit_s": int(limit)}
    )
summary = {
    "script": "benchmarks/gpu_check.sh",
    "dry_run_on_cpu": cpu_ok,
    "steps": steps,
    "ok": all(s["exit"] == 0 for s in steps),
    "json": sorted(
        str(p.relative_to(out)) for p in out.rglob("*.json") if p.name != "summary.json"
    ),
}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
EOF
}

# The GPU libraries of TF and JAX grab memory on first use; each backend runs
# in a process of its own, but growth keeps a stray import from starving it.
export TF_CPP_MIN_LOG_LEVEL=2 TF_FORCE_GPU_ALLOW_GROWTH=true
export XLA_PYTHON_CLIENT_PREALLOCATE=false

# 1. install
if [ -n "${GPU_CHECK_PYTHON:-}" ]; then
    py="$GPU_CHECK_PYTHON"
    echo "== install: skipped, using $py"
else
    venv="${GPU_CHECK_VENV:-$(mktemp -d)/venv}"
    # One pip call, so that one resolver picks CUDA libraries both TF and JAX accept.
    # shellcheck disable=SC2086
    step install 140 bash -c "
        set -e
        '${PYTHON:-python3}' -m venv '$venv'
        '$venv/bin/python' -m pip install -q --upgrade pip ${PIP_ARGS:-}
        '$venv/bin/python' -m pip install -q ${PIP_ARGS:-} \
            -e '$root[test,hub]' 'keras==$keras_version' \
            'tensorflow[and-cuda]==$tf_version' 'jax[cuda12]'
    " || { summary; exit 1; }
    py="$venv/bin/python"
fi

# 2. devices: fail clearly rather than time a CPU and call it a GPU figure.
command -v nvidia-smi >/dev/null && nvidia-smi >"$out/nvidia_smi.txt" 2>&1
step devices 50 env CPU_OK="$cpu_ok" OUT_JSON="$out/devices.json" "$py" - <<'EOF' || { summary; exit 1; }
import json
import os

import jax
import tensorflow as tf

tf_gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
jax_devices = [f"{d.platform}:{d.device_kind}" for d in jax.devices()]
jax_gpus = [d for d in jax_devices if d.startswith(("gpu", "cuda"))]
report = {
    "tensorflow": tf.__version__,
    "tensorflow_built_with_cuda": tf.test.is_built_with_cuda(),
    "tensorflow_gpus": tf_gpus,
    "jax": jax.__version__,
    "jax_devices": jax_devices,
}
with open(os.environ["OUT_JSON"], "w") as f:
    json.dump(report, f, indent=2)
print(json.dumps(report, indent=2))
missing = [name for name, gpus in (("TensorFlow", tf_gpus), ("JAX", jax_gpus)) if not gpus]
if missing and os.environ["CPU_OK"] != "1":
    raise SystemExit(
        f"no GPU seen by {' and '.join(missing)}: check the driver (nvidia-smi), "
        "that tensorflow[and-cuda] and jax[cuda12] installed their CUDA libraries, "
        "and LD_LIBRARY_PATH. Set CPU_OK=1 for a dry run without a GPU."
    )
EOF

# 3. speed: the step ratios, each backend in its own step and time limit.
if [ "$cpu_ok" = "1" ]; then
    speed_args=(--quick --batch-sizes 8 --compilations default)
    train_args=(--epochs 1 --train-limit 2000)
else
    # Fewer rounds than the CPU tables: a GPU step is short and steady. Keras'
    # default on a TensorFlow GPU is XLA already: timing "xla" as well would
    # compile and time the same thing twice.
    speed_args=(--rounds 5 --round-seconds 0.2 --compilations default)
    train_args=(--epochs 3)
fi
for backend in tensorflow jax; do
    limit=130
    [ "$backend" = jax ] && limit=100
    step "speed_$backend" "$limit" env KERAS_BACKEND="$backend" "$py" -m benchmarks.train_speed \
        --backends "$backend" --models lenet5,mobilenetv2 "${speed_args[@]}" \
        --json "$out/train_speed_$backend.json"
done

# 4. train LeNet-5 on the GPU (TensorFlow, Keras' default compilation).
step train_lenet5 50 env KERAS_BACKEND=tensorflow "$py" -m examples.train \
    --model lenet5 "${train_args[@]}" --no-plots --verbose 2 \
    --out "$out/train_lenet5"

summary
exit "$failed"
