"""Export of Sparse VD models: plain Keras models, compaction, sparse files.

- `strip_sparsevd`: Sparse VD layers -> plain Keras layers (pruned weights 0);
  the result saves as ``.keras`` and exports as a TF SavedModel or TFLite.
- `compact_model`: also drops the units and filters pruning left dead
  (and, with ``drop_unread_inputs=True``, the input features nobody reads,
  through a `SelectFeatures` layer).
- `save_sparse` / `load_sparse`: a file holding only the kept weights;
  with ``bits=k`` (version 2) k-bit values, coded indices and a minimal
  architecture, the smallest file (`posterior_bits` picks k per layer from
  the posterior).
- `quantize_model`: Keras' own ``Model.quantize`` (int8, int4) on the
  stripped model, checked to keep the pruned weights zero.
- `export_tflite`: LiteRT, optionally full-integer int8 and sparse tensors.
- `size_report`: bytes on disk of each of these.
- ``python -m keras_sparsevd.export MODEL.keras OUT_DIR``: all of it from the
  command line.
"""

from keras_sparsevd.export.kbit import posterior_bits
from keras_sparsevd.export.quantize import PrunedWeightsLostError, quantize_model
from keras_sparsevd.export.select import SelectFeatures
from keras_sparsevd.export.sizes import SizeEntry, SizeReport, size_report
from keras_sparsevd.export.sparse_format import load_sparse, save_sparse
from keras_sparsevd.export.strip import compact_model, strip_sparsevd
from keras_sparsevd.export.tflite import TFLiteNotSupportedError, export_tflite

__all__ = [
    "PrunedWeightsLostError",
    "quantize_model",
    "SelectFeatures",
    "SizeEntry",
    "SizeReport",
    "TFLiteNotSupportedError",
    "compact_model",
    "export_tflite",
    "load_sparse",
    "posterior_bits",
    "save_sparse",
    "size_report",
    "strip_sparsevd",
]
