"""The precisions a recipe may name, and the torch dtype of each."""

from __future__ import annotations

from typing import Literal

import torch

Precision = Literal["bfloat16", "float16", "float32"]

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def torch_dtype(precision: str) -> torch.dtype:
    return DTYPES[precision]
