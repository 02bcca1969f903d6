"""moerun as an SGLang MoE runner core, through SGLang's out-of-tree registry.

    from moerun.integrations import sglang
    sglang.register()          # then --moe-runner-backend moerun

Written against SGLang main after PR #32665 (register_moe_runner_core, merged 2026-07-28):
moe_runner/runner.py @045c0bbe, moe_runner/base.py @009c6808, token_dispatcher/standard.py
@008b79d2. MoeRunner.run calls a core's run_from_dispatch(dispatch_output, quant_info,
runner_config, hooks=None) when it has one and uses the CombineInput it returns.

What the core receives (the standard dispatcher): hidden_states [M, K] bf16 (or fp8 with
hidden_states_scale), topk_output.topk_ids [M, k] int32 already local under EP, -1 for experts of
other ranks, topk_weights [M, k] f32 without routed_scaling_factor (SGLang's runners apply it to
the output; so does this one, in fp32 before the one rounding). Weights come from quant_info:
w13_weight [E_l, 2I, K] (gate rows first), w2_weight [E_l, K, I], FP8 128x128 block scales
w13_scale / w2_scale, moerun's own layouts.
"""

from ._common import LayerCache, local_placement, weight_dtype
from .. import _C

BACKEND_NAME = "moerun"


def _unsupported(field, expected, actual):
    return NotImplementedError(
        f"moerun: unsupported {field}: expected {expected}, got {actual!r}"
    )


def _check_runner_config(c):
    checks = (
        ("activation", getattr(c, "activation", "silu"), "silu"),
        ("is_gated", getattr(c, "is_gated", True), True),
        ("apply_router_weight_on_input", getattr(c, "apply_router_weight_on_input", False), False),
        ("no_combine", getattr(c, "no_combine", False), False),
        ("gemm1_alpha", getattr(c, "gemm1_alpha", None), None),
        ("gemm1_clamp_limit", getattr(c, "gemm1_clamp_limit", None), None),
    )
    for field, actual, expected in checks:
        if actual != expected:
            raise _unsupported(f"MoeRunnerConfig.{field}", repr(expected), actual)


def _scale(quant_info, name):
    for attribute in (f"{name}_scale", f"{name}_weight_scale_inv", f"{name}_weight_scale"):
        value = getattr(quant_info, attribute, None)
        if value is not None:
            return value
    return None


class MoerunRunnerCore:
    """A dispatch-native runner core: one moerun.Layer per layer's weights, one workspace per
    stream shared by all of them."""

    def __init__(self, config, *, backend="auto", max_tokens=8192, layout="auto"):
        _check_runner_config(config)
        self.config = config
        self._cache = LayerCache(backend, max_tokens, layout)

    def _layer(self, quant_info, runner_config, hidden_states):
        w13, w2 = quant_info.w13_weight, quant_info.w2_weight
        weights = {
            "w13": w13,
            "w2": w2,
            "w13_scale": _scale(quant_info, "w13"),
            "w2_scale": _scale(quant_info, "w2"),
        }

        def make_config():
            num_experts, expert_map = local_placement(runner_config.num_experts, w13.shape[0])
            scale = getattr(runner_config, "routed_scaling_factor", None)
            return _C.MoeConfig(
                hidden_size=hidden_states.shape[1],
                intermediate_size=w2.shape[2],
                num_experts=num_experts,
                top_k=runner_config.top_k,
                weight_dtype=weight_dtype(w13),
                expert_map=expert_map,
                output_scale=float(scale) if scale else 1.0,
            )

        return self._cache.get((id(w13), id(w2)), make_config, weights)

    def run_from_dispatch(self, dispatch_output, quant_info, runner_config, hooks=None):
        if hooks is not None:
            raise _unsupported("hooks", "None", hooks)
        hidden_states = dispatch_output.hidden_states
        layer = self._layer(quant_info, runner_config, hidden_states)
        topk = dispatch_output.topk_output
        out = layer.forward_routed(
            hidden_states,
            topk.topk_ids,
            topk.topk_weights,
            hidden_states_scale=getattr(dispatch_output, "hidden_states_scale", None),
            local_ids=True,
            workspace=self._cache.workspace(layer, hidden_states),
        )
        from sglang.srt.layers.moe.token_dispatcher.standard import StandardCombineInput

        return StandardCombineInput(hidden_states=out)


def register(name=BACKEND_NAME, *, backend="auto", max_tokens=8192, layout="auto"):
    """Registers the core under `name` with SGLang (the engine must be importable)."""
    from sglang.srt.layers.moe.moe_runner.runner import register_moe_runner_core
    from sglang.srt.layers.moe.utils import register_moe_runner_backend_name

    register_moe_runner_backend_name(name)
    register_moe_runner_core(
        name,
        lambda config: MoerunRunnerCore(
            config, backend=backend, max_tokens=max_tokens, layout=layout
        ),
    )
