"""``python -m keras_sparsevd.export``: export a saved Sparse VD model.

Usage:

    python -m keras_sparsevd.export MODEL.keras OUT_DIR [--compact]
        [--drop-unread-inputs] [--format savedmodel,keras,sparse,tflite]
        [--float16] [--overwrite]

Writes, for the formats asked for (default ``savedmodel,keras,sparse``):

- ``OUT_DIR/savedmodel/``: TF SavedModel of the stripped model; serve it
  with ``loaded = tf.saved_model.load(path)`` then ``loaded.serve(x)`` (keep
  ``loaded`` alive), no keras_sparsevd needed.
- ``OUT_DIR/model.keras``: the stripped model, plain Keras layers (with
  ``--drop-unread-inputs``, also a `keras_sparsevd.export.SelectFeatures`
  layer, so loading it needs ``import keras_sparsevd``; the SavedModel and
  TFLite exports still serve without the package).
- ``OUT_DIR/model.npz``: the sparse format (`keras_sparsevd.load_sparse`).
- ``OUT_DIR/model.tflite``: TFLite, where Keras can export it (else skipped
  with a message).

Then prints the sparsity report and the bytes on disk of each format, each
against the dense float32 model of the same architecture (4 bytes per
parameter), with the Sparse VD input last for comparison.

Everything is written to a temporary folder beside its destination first, so
a failed or killed export leaves OUT_DIR as it was: a new OUT_DIR appears
whole, in one rename. An existing OUT_DIR is refused unless ``--overwrite``
is given, which replaces only the files above and leaves others alone: the
old ones are moved aside before the new ones move in, so a kill never leaves
old and new exports side by side. An export never writes over its input
(``run/model.keras`` exported into ``run`` is refused). Bad input gives a
one-line error and exit status 2; a failed export, status 1.
An export whose predictions differ from the Sparse VD model's (on 8 random
inputs) is a failed export: nothing is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import zipfile

import keras
import numpy as np

from keras_sparsevd import files
from keras_sparsevd.convert import tree
from keras_sparsevd.export.select import SelectFeatures
from keras_sparsevd.export.sizes import (
    DENSE_LABEL,
    SizeEntry,
    SizeReport,
    dense_float32_bytes,
    measure_stripped,
    path_size,
)
from keras_sparsevd.export.strip import strip_sparsevd
from keras_sparsevd.export.tflite import TFLiteNotSupportedError, export_tflite
from keras_sparsevd.model_helpers import layer_widths, svd_layers
from keras_sparsevd.report import sparsity_report

PROG = "python -m keras_sparsevd.export"
FORMATS = ("savedmodel", "keras", "sparse", "tflite")
DEFAULT_FORMATS = "savedmodel,keras,sparse"
# Name of each format's output inside OUT_DIR.
OUTPUT_NAMES = {
    "savedmodel": "savedmodel",
    "keras": "model.keras",
    "sparse": "model.npz",
    "tflite": "model.tflite",
}


SVD_INPUT_LABEL = "Sparse VD .keras (the input)"
# Name prefix of the folder an export is staged in (see `files`).
_STAGING_PREFIX = ".export" + files.TMP_MARK


class UsageError(Exception):
    """Bad input: reported in one line, exit status 2."""


def main(argv: list | None = None) -> int:
    """Runs the command line; returns the exit status.

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` if None.

    Returns:
        0 on success, 2 on bad input, 1 if writing an export failed.
    """
    args = _parser().parse_args(argv)
    try:
        formats = _parse_formats(args.format)
        if args.drop_unread_inputs and not args.compact:
            raise UsageError(
                "--drop-unread-inputs is part of compaction: pass --compact too."
            )
        _check_paths(args.model, args.out_dir, args.overwrite, formats)
        model = _load(args.model)
        stripped = strip_sparsevd(
            model, compact=args.compact, drop_unread_inputs=args.drop_unread_inputs
        )
    except UsageError as error:
        return _fail(str(error), 2)
    except ValueError as error:
        return _fail(_one_line(error), 2)
    print(sparsity_report(model))
    if args.compact:
        print()
        print(_compaction_summary(model, stripped))
    print()
    verdict, matches = _prediction_check(model, stripped)
    print(verdict)
    if not matches:
        return _fail(
            "the exported model does not reproduce the Sparse VD model's "
            "predictions; nothing was written.",
            1,
        )
    try:
        report, written = _export(model, stripped, args, formats)
    except Exception as error:
        return _fail(f"export failed: {type(error).__name__}: {_one_line(error)}", 1)
    print()
    print(report)
    print()
    for path in written:
        print(f"wrote {path}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Export a saved Sparse VD model (.keras) as plain Keras models, a TF "
            "SavedModel, the sparse .npz format and TFLite, and report the sizes."
        ),
    )
    parser.add_argument("model", help="the Sparse VD model, a .keras file")
    parser.add_argument("out_dir", help="folder to write; must not exist yet")
    parser.add_argument(
        "--compact",
        action="store_true",
        help="also remove dead units and filters (same predictions, smaller)",
    )
    parser.add_argument(
        "--drop-unread-inputs",
        action="store_true",
        help=(
            "with --compact, also drop the input features the first layer does "
            "not read (a gather in front of it; model.keras then needs "
            "keras_sparsevd to load, the SavedModel and TFLite do not)"
        ),
    )
    parser.add_argument(
        "--format",
        default=DEFAULT_FORMATS,
        help=(
            f"comma-separated formats out of {','.join(FORMATS)} "
            f"(default {DEFAULT_FORMATS})"
        ),
    )
    parser.add_argument(
        "--float16",
        action="store_true",
        help="store the sparse format's values as float16 (half the bytes)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an existing OUT_DIR, replacing the export files there",
    )
    return parser


def _fail(message: str, status: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _parse_formats(text: str) -> list:
    formats = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise UsageError(
            f"unknown --format {', '.join(unknown) or repr(text)}; choose from "
            f"{','.join(FORMATS)}."
        )
    return list(dict.fromkeys(formats))


def _check_paths(model_path: str, out_dir: str, overwrite: bool, formats: list) -> None:
    if not os.path.exists(model_path):
        raise UsageError(f"{model_path}: no such file.")
    if not os.path.isfile(model_path):
        raise UsageError(f"{model_path}: not a file (expected a .keras model file).")
    if not os.access(model_path, os.R_OK):
        raise UsageError(f"{model_path}: not readable.")
    if os.path.exists(out_dir):
        if not os.path.isdir(out_dir):
            raise UsageError(f"{out_dir} exists and is not a folder.")
        if not overwrite:
            raise UsageError(
                f"{out_dir} already exists; pass --overwrite to replace the "
                "export files in it (other files are left alone), or choose a "
                "new folder."
            )
        model_real = os.path.realpath(model_path)
        for name in formats:
            target = os.path.realpath(os.path.join(out_dir, OUTPUT_NAMES[name]))
            if model_real == target or model_real.startswith(target + os.sep):
                raise UsageError(
                    f"the export's {OUTPUT_NAMES[name]} would replace its input "
                    f"{model_path}, the Sparse VD model (the only file that can be "
                    "trained further or re-thresholded); an export never writes "
                    f"over its input: choose another OUT_DIR, e.g. "
                    f"{os.path.join(out_dir, 'export')}."
                )


def _load(model_path: str) -> keras.Model:
    if model_path.endswith(".keras") and not zipfile.is_zipfile(model_path):
        raise UsageError(
            f"{model_path} is not a .keras model file (not a zip archive)."
        )
    try:
        model = keras.saving.load_model(model_path, compile=False)
    except Exception as error:
        raise UsageError(
            f"cannot read {model_path} as a Keras model "
            f"({type(error).__name__}: {_one_line(error)})."
        ) from None
    if not isinstance(model, keras.Model):
        raise UsageError(f"{model_path} holds a {type(model).__name__}, not a model.")
    if not svd_layers(model):
        raise UsageError(
            f"{model_path} has no Sparse VD layer: there is nothing to strip; "
            "export it with Keras directly."
        )
    return model


def _compaction_summary(model: keras.Model, compact: keras.Model) -> str:
    before = layer_widths(model)
    after = layer_widths(compact)
    lines = ["compaction (units or filters kept):"]
    for name, width in after.items():
        if name in before:
            lines.append(f"  {name}: {before[name]} -> {width}")
    for layer in (node.layer for node in tree.walk(compact)):
        if isinstance(layer, SelectFeatures):
            read = len(layer.indices)
            lines.append(
                f"  {layer.name}: {layer.input.shape[layer.axis]} -> {read} "
                "input features read"
            )
    return "\n".join(lines)


def _prediction_check(model: keras.Model, stripped: keras.Model) -> tuple:
    """Compares both models on random inputs, where the input is one tensor.

    Returns the line to print and whether the predictions match (True when
    the check cannot run).
    """
    if len(model.inputs) != 1 or None in tuple(model.inputs[0].shape)[1:]:
        return "prediction check: skipped (not a single input of known shape).", True
    spec = model.inputs[0]
    shape = (8,) + tuple(spec.shape)[1:]
    rng = np.random.default_rng(0)
    if "int" in str(spec.dtype):
        x = rng.integers(0, 2, shape).astype(str(spec.dtype))
    else:
        x = rng.random(shape).astype("float32")
    diff = np.max(
        np.abs(
            np.asarray(model.predict(x, verbose=0))
            - np.asarray(stripped.predict(x, verbose=0))
        )
    )
    matches = bool(diff <= 1e-4)
    verdict = "match" if matches else "DIFFER"
    return (
        f"prediction check: exported and Sparse VD model {verdict} on 8 random "
        f"inputs (max abs difference {diff:.2e}).",
        matches,
    )


def _export(
    model: keras.Model, stripped: keras.Model, args: argparse.Namespace, formats: list
) -> tuple:
    values_dtype = "float16" if args.float16 else "float32"
    # On the destination's file system, so that moving into place is a rename.
    out_dir = os.path.abspath(args.out_dir)
    exists = os.path.isdir(out_dir)
    if exists:
        _remove_staging_left_by_killed_exports(out_dir)
    staging = files.temporary_folder(out_dir if exists else os.path.dirname(out_dir))
    try:
        # (entry, the format whose file it is, or "input")
        measured = [(SizeEntry(DENSE_LABEL, dense_float32_bytes(model)), "input")]
        stripped_entries = measure_stripped(stripped, staging, values_dtype)
        measured += zip(stripped_entries, ("keras", None, "sparse"))
        ready = {"keras": stripped_entries[0].path, "sparse": stripped_entries[2].path}
        if "savedmodel" in formats:
            ready["savedmodel"] = os.path.join(staging, "savedmodel")
            stripped.export(ready["savedmodel"], verbose=False)
            size = path_size(ready["savedmodel"])
            measured.append((SizeEntry("SavedModel (folder)", size), "savedmodel"))
        if "tflite" in formats:
            ready["tflite"] = os.path.join(staging, "model.tflite")
            try:
                export_tflite(stripped, ready["tflite"])
                size = path_size(ready["tflite"])
                measured.append((SizeEntry("TFLite", size), "tflite"))
            except TFLiteNotSupportedError as error:
                print(f"tflite: skipped: {error}", file=sys.stderr)
                formats = [name for name in formats if name != "tflite"]
        measured.append(
            (SizeEntry(SVD_INPUT_LABEL, path_size(args.model), args.model), "input")
        )
        sources = {name: ready[name] for name in formats}
        if exists:
            written = _move_into(out_dir, sources, staging)
        else:
            written = _publish_new_folder(out_dir, sources, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    # Staged files are gone now: keep a path only where a file was delivered.
    entries = tuple(
        entry if name == "input" else dataclasses.replace(entry, path=written.get(name))
        for entry, name in measured
    )
    return SizeReport(entries), list(written.values())


def _remove_staging_left_by_killed_exports(out_dir: str) -> None:
    for name in os.listdir(out_dir):
        if name.startswith(_STAGING_PREFIX):
            shutil.rmtree(os.path.join(out_dir, name), ignore_errors=True)


def _publish_new_folder(out_dir: str, sources: dict, staging: str) -> dict:
    """Makes `staging` the new `out_dir`, holding only the outputs, in one rename."""
    keep = {os.path.abspath(path) for path in sources.values()}
    for name in os.listdir(staging):
        path = os.path.join(staging, name)
        if path not in keep:
            _remove(path)
    for name, source in sources.items():
        os.rename(source, os.path.join(staging, OUTPUT_NAMES[name]))
    try:
        files.publish_folder(staging, out_dir)
    except OSError as error:
        # The folder appeared during the export.
        raise UsageError(f"{out_dir} appeared during the export: {error}") from None
    return {name: os.path.join(out_dir, OUTPUT_NAMES[name]) for name in sources}


def _move_into(out_dir: str, sources: dict, staging: str) -> dict:
    """Moves each staged output to its name in `out_dir` (--overwrite).

    The old outputs are all moved aside first, then the new ones in: a kill
    on the way leaves some outputs new and others missing, never a mix of
    two exports; the next export clears what was moved aside.
    """
    aside = os.path.join(staging, "replaced")
    os.mkdir(aside)
    for name in sources:
        target = os.path.join(out_dir, OUTPUT_NAMES[name])
        if os.path.lexists(target):
            os.rename(target, os.path.join(aside, OUTPUT_NAMES[name]))
    written = {}
    for name, source in sources.items():
        target = os.path.join(out_dir, OUTPUT_NAMES[name])
        os.rename(source, target)
        written[name] = target
    return written


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)
