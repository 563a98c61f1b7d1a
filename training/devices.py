"""Which device and dtype a model is loaded on, from the ``auto``-able names that settings,
run parameters and the CLI carry.

Both functions answer names (``"cuda"``, ``"bfloat16"``), not torch objects: the worker
adapters key their once-per-process model caches on them and record them on the detector,
and a caller that needs a ``torch.device`` or a ``torch.dtype`` converts at the call site
(``torch.device(name)``, ``getattr(torch, name)``). torch is imported only when ``auto`` has to
look at the hardware.

No Django here.
"""

from __future__ import annotations

DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16"}
DTYPES = ("float32", "float16", "bfloat16")


def resolve_device(device: str = "auto") -> str:
    """``auto`` is ``cuda`` when a GPU is visible, else ``cpu``; anything else is kept.

    >>> resolve_device("cuda:1")
    'cuda:1'
    """
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str) -> str:
    """The torch dtype name for ``dtype`` on ``device`` (a name such as ``cuda:0``).

    ``auto`` is bfloat16 on a GPU that supports it (else float16) and float32 on a CPU, where
    bf16 matmuls are slow; the short names ``fp32``, ``fp16``, ``bf16`` and ``half`` are
    accepted too.

    >>> resolve_dtype("auto", "cpu")
    'float32'
    >>> resolve_dtype("fp16", "cuda")
    'float16'
    >>> resolve_dtype("bf16", "cpu")
    'bfloat16'
    """
    dtype = DTYPE_ALIASES.get(dtype, dtype)
    if dtype == "auto":
        if not device.startswith("cuda"):
            return "float32"
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: use auto, float32, float16 or bfloat16")
    return dtype
