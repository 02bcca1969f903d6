"""moerun: the Mixture-of-Experts layer of LLMs, for NVIDIA Hopper, with an exact CPU oracle.

    import moerun
    layer = moerun.Layer(moerun.MoeConfig.preset("qwen3-30b-a3b"), w13=w13, w2=w2, backend="cpu")
    out = layer.forward(hidden, router_logits)

Tensors are any DLPack producer (torch, CuPy, JAX) or NumPy arrays (bf16 and fp8 through
ml_dtypes). torch.ops.moerun.* comes with `import moerun.torch_ops`; the engine adapters are
moerun.integrations.sglang and moerun.integrations.vllm. See docs/python.md.
"""

from ._C import (
    Error,
    InvalidArgument,
    MoeConfig,
    contiguous_expert_map,
    cuda_available,
    round_robin_expert_map,
    workspace_bytes,
)
from . import hf
from .hf import HfMoeLayer, load_hf_layer
from .layer import Layer

__version__ = "0.1.0"

__all__ = [
    "Error",
    "HfMoeLayer",
    "InvalidArgument",
    "Layer",
    "MoeConfig",
    "contiguous_expert_map",
    "cuda_available",
    "load_hf_layer",
    "round_robin_expert_map",
    "workspace_bytes",
]
