"""GGUF -> Hugging Face folder -> OpenVINO IR, for the ``openvino`` backend.

The steps, each run in a child process of ``sys.executable`` so that torch and transformers are
never imported into the caller (a web process, a worker that only serves models):

1. ``gguf_to_hf``: transformers loads the GGUF with ``gguf_file=`` (dequantized to float32) and
   saves a Hugging Face folder. The tokenizer transformers derives from a GGUF is wrong in ways
   that silently change the text, so it is rewritten from the GGUF's own metadata (see
   ``fix_tokenizer_files``) and checked before going on.
2. ``hf_to_openvino``: ``optimum-cli export openvino`` with NNCF weight compression (int4 with a
   group size, ratio and symmetry, or int8), then the openvino-tokenizers models that
   openvino-genai needs (made here when optimum did not make them), then a tokenizer round trip
   through openvino-genai's own ``Tokenizer``.

Everything runs offline: the children get ``HF_HUB_OFFLINE=1`` and load with
``local_files_only``; nothing is fetched from a hub. ``openvino_ir_from_gguf`` caches the result
outside the repository (``CHATSITE_MODEL_CACHE``, default ``~/.cache/chatsite/models``) and
reuses a folder whose marker file, written last, says it is complete.
"""

from pipeline.convert.common import (
    BUNDLED_EXPORT,
    EXPORT_MARKER,
    RECIPE_VERSION,
    ROUND_TRIP_TEXT,
    ConversionError,
    ExportSettings,
    Log,
    export_info,
    gguf_fingerprint,
    ir_size_bytes,
    model_cache_root,
)
from pipeline.convert.hf import gguf_to_hf
from pipeline.convert.openvino_ir import hf_to_openvino, openvino_ir_for_bundled, openvino_ir_from_gguf
from pipeline.convert.tokenizer import fix_tokenizer_files, gguf_metadata

__all__ = [
    "BUNDLED_EXPORT",
    "EXPORT_MARKER",
    "RECIPE_VERSION",
    "ROUND_TRIP_TEXT",
    "ConversionError",
    "ExportSettings",
    "Log",
    "export_info",
    "fix_tokenizer_files",
    "gguf_fingerprint",
    "gguf_metadata",
    "gguf_to_hf",
    "hf_to_openvino",
    "ir_size_bytes",
    "model_cache_root",
    "openvino_ir_for_bundled",
    "openvino_ir_from_gguf",
]
