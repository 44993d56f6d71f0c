"""The contract of a cxrhash ONNX graph: its input and output names, shapes and metadata."""

from __future__ import annotations

#: The one input: B×1×S×S films in [0, 1], float32, B dynamic.
INPUT = "image"
#: Outputs every graph has, then those it has when the network does (attention map,
#: backbone map statistics for the closeness calibration).
REQUIRED_OUTPUTS = ("hash", "logits", "features")
OPTIONAL_OUTPUTS = ("attention", "map_stats")
#: Rank of each output (batch axis first).
RANKS = {"hash": 2, "logits": 2, "features": 2, "attention": 4, "map_stats": 2}
#: Metadata keys written by the export and checked when loading.
FORMAT_KEY, FORMAT = "cxrhash_onnx_format", "1"
MODEL_ID_KEY = "cxrhash_model_id"
IMAGE_SIZE_KEY = "cxrhash_image_size"
#: Operator set of the export (ONNX Runtime 1.32 runs it; the TorchScript exporter writes it).
OPSET = 17
#: Largest .onnx file read (a ResNet-50 model is ~100 MB).
MAX_BYTES = 1 << 30
