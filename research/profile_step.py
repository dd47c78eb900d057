"""Where the time of a jit-compiled Sparse VD training step goes.

Profiles ``model.train_on_batch`` of a Sparse VD model and of its plain twin
(`benchmarks.train_speed.build_model`), both with ``jit_compile=True``, with
TensorFlow's profiler and XLA's per-instruction trace events on CPU
(``--xla_cpu_enable_xprof_traceme``). Each executed XLA instruction (a fusion,
a matmul, a convolution, a call) is put in a category by looking at the TF
ops fused into it (from the optimised HLO that XLA dumps):

- ``noise``: the random generator (Philox) and the normal transform;
- ``matmul/conv``: dots and convolutions, forward and backward;
- ``KL term``: fusions holding the KL's sigmoid or softplus (XLA fuses the
  gradient and the Adam update of the same weights into them);
- ``optimizer``: the rest of the optimizer's update;
- ``per weight``: the remaining kernel-shaped work (``log_alpha``, mask,
  ``alpha * theta^2``);
- ``per example``: batch-shaped elementwise work (bias, activations,
  ``sqrt(var) * eps``, loss);
- ``other``: anything else.

Times are summed over the threads that ran the instructions, per step, so
they add up to more than the step's wall time when XLA runs work in
parallel. Shares within one model are what to read; absolute times depend on
the machine's load. TensorFlow backend and CPU only; this relies on
TensorFlow's profiler file format and XLA debug flags, and must be the first
thing in its process to compile with XLA.

Usage:

    python -m research.profile_step [--model lenet300] [--steps 20]
        [--batch-size 100] [--noise box_muller_normal] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time

import keras

from benchmarks import common, train_speed
from benchmarks import noise as noise_lib

CATEGORIES = (
    "noise",
    "matmul/conv",
    "KL term",
    "optimizer",
    "per weight",
    "per example",
    "other",
)
_STEP_MODULE = "one_step_on_data"
_INSTRUCTION = re.compile(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ([\w\-]+)\((.*)$")
_CALLED = re.compile(r"(?:calls|to_apply)=%?([\w.\-]+)")
_OP_NAME = re.compile(r'op_name="([^"]+)"')


def parse_hlo(text: str) -> dict:
    """Instruction name -> {"shape", "opcodes", "op_names"} of an HLO module.

    Opcodes and TF op names are gathered through the computations an
    instruction calls (fusions, calls), recursively.
    """
    computations: dict[str, list] = {}
    current = None
    for line in text.splitlines():
        if line and not line.startswith(" ") and line.rstrip().endswith("{"):
            words = line.split()
            current = (words[1] if words[0] == "ENTRY" else words[0]).lstrip("%")
            computations[current] = []
        elif current is not None:
            computations[current].append(line)

    def gather(lines: list, found: dict, seen: set) -> None:
        for line in lines:
            match = _INSTRUCTION.match(line)
            if match:
                found["opcodes"].add(match.group(3))
            found["op_names"].update(_OP_NAME.findall(line))
            for called in _CALLED.findall(line):
                if called not in seen:
                    seen.add(called)
                    gather(computations.get(called, []), found, seen)

    info = {}
    for lines in computations.values():
        for line in lines:
            match = _INSTRUCTION.match(line)
            if match:
                found = {"shape": match.group(2), "opcodes": set(), "op_names": set()}
                gather([line], found, set())
                info[match.group(1)] = found
    return info


def categorise(entry: dict, kernel_shapes: set, batch_size: int, optimizer: str) -> str:
    """The category (see module doc) of one parsed HLO instruction."""
    opcodes, names = entry["opcodes"], entry["op_names"]
    text = " ".join(names)
    philox = {"xor", "shift-right-logical"} <= opcodes and "multiply" in opcodes
    if (
        "rng-bit-generator" in opcodes
        or "StatelessRandom" in text
        or "stateless_random" in text
        or {"cosine", "sine"} & opcodes
        or (philox and not names)
    ):
        return "noise"
    if {"dot", "convolution"} & opcodes or "custom-call" in opcodes:
        return "matmul/conv"
    if "Softplus" in text or "Sigmoid" in text:
        return "KL term"
    if names and all(n.startswith(optimizer + "/") for n in names):
        return "optimizer"
    shape = entry["shape"].split("{")[0]
    if shape in kernel_shapes:
        return "per weight"
    if shape.startswith(f"f32[{batch_size},") or shape == f"f32[{batch_size}]":
        return "per example"
    return "other"


def _hlo_shape(shape: tuple) -> str:
    return "f32[" + ",".join(str(int(d)) for d in shape) + "]"


def _xplane_module():
    try:
        from tensorflow.tsl.profiler.protobuf import xplane_pb2
    except ImportError as error:  # the location moved between TF versions
        raise RuntimeError(
            "This TensorFlow has no tensorflow.tsl.profiler.protobuf.xplane_pb2; "
            "research.profile_step cannot read its profiles."
        ) from error
    return xplane_pb2


def event_times(logdir: str) -> collections.Counter:
    """Trace event name -> total duration in ms, from a profiler log folder."""
    xplane_pb2 = _xplane_module()
    files = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    if not files:
        raise RuntimeError(f"The profiler wrote no .xplane.pb file under {logdir}.")
    space = xplane_pb2.XSpace()
    with open(max(files, key=os.path.getmtime), "rb") as f:
        space.ParseFromString(f.read())
    totals: collections.Counter = collections.Counter()
    for plane in space.planes:
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                totals[names.get(event.metadata_id, "")] += event.duration_ps / 1e9
    return totals


def profile_model(
    name: str, sparse: bool, steps: int, batch_size: int, dump_dir: str
) -> dict:
    """Profiles `steps` jit-compiled training steps of one twin."""
    import tensorflow as tf

    model = train_speed.compiled(name, sparse, jit_compile=True)
    x, y = train_speed.model_batch(name, batch_size)
    before = set(glob.glob(os.path.join(dump_dir, "*")))
    for _ in range(3):
        model.train_on_batch(x, y)
    modules = [
        path
        for path in set(glob.glob(os.path.join(dump_dir, "*"))) - before
        if _STEP_MODULE in path and path.endswith("cpu_after_optimizations.txt")
    ]
    if not modules:
        raise RuntimeError("XLA dumped no training-step module; was XLA used?")
    with open(max(modules, key=os.path.getsize), encoding="utf-8") as f:
        hlo = parse_hlo(f.read())
    kernel_shapes = {
        _hlo_shape(w.shape)
        for w in model.trainable_weights
        if len(w.shape) >= 2 and not w.path.endswith("bias")
    }
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        wall = (time.perf_counter() - start) / steps
        tf.profiler.experimental.stop()
        times = event_times(logdir)
    optimizer = model.optimizer.name
    by_category: collections.Counter = collections.Counter()
    by_instruction = []
    for instruction, total in times.items():
        if instruction not in hlo:
            continue  # runtime wrappers, not XLA instructions
        category = categorise(hlo[instruction], kernel_shapes, batch_size, optimizer)
        by_category[category] += total / steps
        by_instruction.append((total / steps, instruction, category))
    by_instruction.sort(reverse=True)
    summed = sum(by_category.values())
    return {
        "model": name,
        "variant": "svd" if sparse else "plain",
        "step_wall_ms_while_profiling": 1e3 * wall,
        "instruction_ms_per_step": summed,
        "categories": {
            c: {"ms": by_category[c], "share": by_category[c] / summed if summed else 0}
            for c in CATEGORIES
        },
        "top_instructions": [
            {
                "instruction": i,
                "category": c,
                "ms": t,
                "op_names": sorted(hlo[i]["op_names"])[:4],
            }
            for t, i, c in by_instruction[:12]
        ],
    }


def run(
    model: str = "lenet300",
    steps: int = 20,
    batch_size: int = train_speed.BATCH_SIZE,
    noise: str = "box_muller_normal",
) -> dict:
    """Profiles the Sparse VD model and its plain twin; a JSON report."""
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("research.profile_step profiles XLA on TensorFlow only.")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as dump_dir:
        # Read by XLA when it first compiles, so this must come before any
        # jit compilation in this process.
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + " --xla_cpu_enable_xprof_traceme=true"
            + f" --xla_dump_to={dump_dir} --xla_dump_hlo_as_text"
        )
        keras.utils.set_random_seed(0)
        with noise_lib.layer_noise(noise):
            profiles = [
                profile_model(model, sparse, steps, batch_size, dump_dir)
                for sparse in (True, False)
            ]
    return {
        "benchmark": "profile_step",
        "settings": {
            "model": model,
            "steps": steps,
            "batch_size": batch_size,
            "jit_compile": True,
            "svd_noise": noise,
            "kl_weight": train_speed.KL_WEIGHT,
        },
        "environment": common.environment(),
        "elapsed_s": time.perf_counter() - started,
        "profiles": profiles,
    }


def tables(report: dict) -> str:
    """Category tables of both twins, and the SVD model's top instructions."""
    profiles = {p["variant"]: p for p in report["profiles"]}
    rows = []
    for category in CATEGORIES:
        row = [category]
        for variant in ("svd", "plain"):
            entry = profiles[variant]["categories"][category]
            row += [f"{entry['ms']:.3f}", f"{100 * entry['share']:.1f}%"]
        rows.append(row)
    rows.append(
        ["total"]
        + [
            f"{profiles[v]['instruction_ms_per_step']:.3f}" if i == 0 else ""
            for v in ("svd", "plain")
            for i in range(2)
        ]
    )
    header = ("category", "SVD ms/step", "share", "plain ms/step", "share")
    top = common.format_table(
        ("SVD instruction", "category", "ms/step", "TF ops (first)"),
        [
            (
                t["instruction"],
                t["category"],
                f"{t['ms']:.3f}",
                ", ".join(t["op_names"])[:70],
            )
            for t in profiles["svd"]["top_instructions"]
        ],
    )
    s = report["settings"]
    return (
        f"{s['model']}, batch {s['batch_size']}, jit_compile=True, SVD noise "
        f"{s['svd_noise']}; XLA instruction time summed over threads\n"
        f"{common.format_table(header, rows)}\n\n{top}"
    )


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m research.profile_step",
        description="Where a jit-compiled Sparse VD training step spends its time.",
    )
    parser.add_argument("--model", default="lenet300", choices=train_speed.MODELS)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=train_speed.BATCH_SIZE)
    parser.add_argument(
        "--noise",
        default="box_muller_normal",
        choices=sorted(noise_lib.GENERATORS),
        help="noise generator of the SVD layers (default: what they use)",
    )
    parser.add_argument("--json", default=None, help="write the report here")
    args = parser.parse_args(argv)
    report = run(args.model, max(1, args.steps), args.batch_size, args.noise)
    print(tables(report))
    common.save_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
