"""One MoE layer of a Hugging Face checkpoint (DeepSeek-V3, Qwen3-MoE, Mixtral), loaded by
moerun's C++ loader: memory-mapped safetensors, w13 packed from gate and up, FP8 block scales
as stored (weight_scale_inv). Arrays are NumPy views of the loader's memory (read-only)."""

from dataclasses import dataclass

from . import _C


@dataclass
class HfMoeLayer:
    config: object  # moerun.MoeConfig, as the checkpoint's config.json gives it
    w13: object  # [E_l, 2I, H] bf16 or float8_e4m3fn
    w2: object  # [E_l, H, I]
    w13_scale: object  # FP8: [E_l, 2I/128, H/128] f32, else None
    w2_scale: object  # FP8: [E_l, H/128, I/128] f32, else None
    correction_bias: object  # DeepSeek-V3: [E] f32, else None
    router_weight: object  # [E, H] f32: router_logits = hidden @ router_weight.T
    notes: list  # how each tensor group was loaded
    _owner: object = None  # the native loader result the arrays view

    def weights(self):
        """The keyword arguments of moerun.Layer for these weights."""
        return {
            "w13": self.w13,
            "w2": self.w2,
            "w13_scale": self.w13_scale,
            "w2_scale": self.w2_scale,
            "correction_bias": self.correction_bias,
        }

    def router_logits(self, hidden_states):
        """hidden_states [T, H] (NumPy, bf16 or f32) -> router logits [T, E] f32, in f32."""
        import numpy as np

        return hidden_states.astype(np.float32) @ self.router_weight.T


def _typed(array, dtype_name):
    if array is None or dtype_name in ("f32", "i32"):
        return array
    import ml_dtypes

    return array.view(ml_dtypes.bfloat16 if dtype_name == "bf16" else ml_dtypes.float8_e4m3fn)


def moe_layers(path):
    """The indices of the checkpoint's MoE layers."""
    return _C.hf_moe_layers(str(path))


def load_hf_layer(path, layer, *, ep_size=1, ep_rank=0, quantize_fp8=False):
    """Loads MoE layer `layer` of the checkpoint folder `path`: this rank's experts (contiguous
    placement over ep_size ranks), BF16 experts quantized to FP8 128x128 blocks when asked."""
    loaded = _C.load_hf_layer(str(path), layer, ep_size, ep_rank, quantize_fp8)
    arrays = {name: _typed(array, dtype) for name, (array, dtype) in loaded.arrays().items()}
    return HfMoeLayer(
        config=loaded.config,
        notes=list(loaded.notes),
        _owner=loaded,
        **arrays,
    )
