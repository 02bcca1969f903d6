"""moerun as vLLM fused-MoE experts: MoerunExperts for the modular path (vLLM routes; its
prepare/finalize does the dispatch) and MoerunMonolithic for the path where the experts route.

Written against vLLM main, model_executor/layers/fused_moe/modular_kernel.py @003d383e
(FusedMoEExpertsModular, FusedMoEExpertsMonolithic, FusedMoEActivationFormat) and
topk_weight_and_reduce.py (TopKWeightAndReduceNoOP). Importing this module imports vLLM.

Contract kept (research note ecosystem-ep.md A2): global topk_ids with vLLM's expert_map [E]
int32 (global -> local, -1 elsewhere), passed to moerun with every call (EPLB may rewrite it);
moerun quantizes its own activations (expects_unquantized_inputs), weights and sums in fp32 and
writes output [M, K] itself, so the finalize step has nothing left to do (the no-op reducer).
Ask vLLM for int32 ids (topk_indices_dtype); moerun never converts ids.
"""

from vllm.model_executor.layers.fused_moe.modular_kernel import (
    FusedMoEActivationFormat,
    FusedMoEExpertsModular,
    FusedMoEExpertsMonolithic,
)
from vllm.model_executor.layers.fused_moe.topk_weight_and_reduce import TopKWeightAndReduceNoOP

from ._common import LayerCache, local_placement, weight_dtype
from .. import _C


def _unsupported(field, expected, actual):
    return NotImplementedError(
        f"moerun: unsupported {field}: expected {expected}, got {actual!r}"
    )


def _check_activation(activation):
    if "silu" not in str(activation).lower():
        raise _unsupported("activation", "silu (SiLU-and-mul)", activation)


class _MoerunExpertsBase:
    """What both classes share: keyword options, the layer cache, the predicates."""

    def __init__(self, *args, backend="auto", max_tokens=8192, layout="auto", **kwargs):
        super().__init__(*args, **kwargs)
        self._cache = LayerCache(backend, max_tokens, layout)

    @staticmethod
    def activation_format():
        return FusedMoEActivationFormat.Standard

    @staticmethod
    def _supports_current_device():
        return _C.cuda_available()

    @staticmethod
    def _supports_no_act_and_mul():
        return False

    @staticmethod
    def _supports_activation(activation):
        return "silu" in str(activation).lower()

    @staticmethod
    def _supports_parallel_config(moe_parallel_config):
        return True  # standard EP through expert_map; any placement

    @staticmethod
    def _supports_quant_scheme(weight_key, activation_key):
        # Unquantized (bf16) weights, or FP8 e4m3 with 128x128 block scales; moerun quantizes
        # its own activations. [unconfirmed: the fields of vLLM's quant keys]
        if weight_key is None:
            return True
        text = str(weight_key).lower()
        return "fp8" in text and "128" in text

    @property
    def expects_unquantized_inputs(self):
        return True

    @staticmethod
    def topk_indices_dtype():
        import torch

        return torch.int32

    def _layer(self, hidden_states, w1, w2, top_k, global_num_experts, routing, scales,
               correction_bias=None):
        def make_config():
            num_experts, expert_map = local_placement(global_num_experts, w1.shape[0])
            return _C.MoeConfig(
                hidden_size=hidden_states.shape[1],
                intermediate_size=w2.shape[2],
                num_experts=num_experts,
                top_k=top_k,
                weight_dtype=weight_dtype(w1),
                expert_map=expert_map if num_experts != w1.shape[0] else None,
                **routing,
            )

        weights = {"w13": w1, "w2": w2, "w13_scale": scales[0], "w2_scale": scales[1],
                   "correction_bias": correction_bias}
        key = (id(w1), id(w2), id(correction_bias), tuple(sorted(routing.items())))
        return self._cache.get(key, make_config, weights)

    def _weight_scales(self):
        return getattr(self, "w1_scale", None), getattr(self, "w2_scale", None)


class MoerunExperts(_MoerunExpertsBase, FusedMoEExpertsModular):
    """vLLM's modular experts slot: vLLM routes and dispatches, moerun runs the experts."""

    def workspace_shapes(self, M, N, K, topk, global_num_experts, local_num_experts,
                         expert_tokens_meta, activation):
        # No vLLM workspaces: moerun keeps its own scratch, one buffer per stream from torch's
        # allocator (so memory profiling sees it), shared by every layer of the adapter.
        del N, topk, global_num_experts, local_num_experts, expert_tokens_meta, activation
        return (0,), (0,), (M, K)

    def finalize_weight_and_reduce_impl(self):
        return TopKWeightAndReduceNoOP()

    def apply(self, output, hidden_states, w1, w2, topk_weights, topk_ids, activation,
              global_num_experts, expert_map, a1q_scale, a2_scale, workspace13, workspace2,
              expert_tokens_meta, apply_router_weight_on_input):
        del a2_scale, workspace13, workspace2, expert_tokens_meta
        _check_activation(activation)
        if apply_router_weight_on_input:
            raise _unsupported("apply_router_weight_on_input", "False", True)
        layer = self._layer(hidden_states, w1, w2, topk_ids.shape[1], global_num_experts, {},
                            self._weight_scales())
        layer.forward_routed(
            hidden_states,
            topk_ids,
            topk_weights,
            output,
            hidden_states_scale=a1q_scale,
            expert_map=expert_map,
            workspace=self._cache.workspace(layer, hidden_states),
        )


class MoerunMonolithic(_MoerunExpertsBase, FusedMoEExpertsMonolithic):
    """vLLM's monolithic experts: router logits in, moerun routes (softmax top-k, or DeepSeek-V3's
    grouped top-k when num_expert_group is given) and runs the layer."""

    def __init__(self, *args, top_k, renormalize=True, **kwargs):
        super().__init__(*args, **kwargs)
        self._top_k = top_k
        self._renormalize = renormalize

    def apply(self, hidden_states, w1, w2, router_logits, activation, global_num_experts,
              expert_map, a1q_scale, apply_router_weight_on_input, num_expert_group=None,
              e_score_correction_bias=None, routed_scaling_factor=None, topk_group=None,
              routing_replay_out=None):
        _check_activation(activation)
        if apply_router_weight_on_input:
            raise _unsupported("apply_router_weight_on_input", "False", True)
        if routing_replay_out is not None:
            raise _unsupported("routing_replay_out", "None", routing_replay_out)
        routing = {"renormalize": self._renormalize}
        if num_expert_group is not None:
            routing.update(
                routing="grouped",
                num_groups=int(num_expert_group),
                topk_groups=int(topk_group),
                routed_scaling_factor=float(routed_scaling_factor or 1.0),
            )
        elif routed_scaling_factor not in (None, 1.0):
            raise _unsupported("routed_scaling_factor", "None or 1.0 with softmax routing",
                               routed_scaling_factor)
        if expert_map is not None:
            raise _unsupported("expert_map", "None (moerun routes to global ids; use "
                               "MoerunExperts under expert parallelism)", "a map")
        layer = self._layer(hidden_states, w1, w2, self._top_k, global_num_experts, routing,
                            self._weight_scales(), e_score_correction_bias)
        return layer.forward(
            hidden_states,
            router_logits,
            hidden_states_scale=a1q_scale,
            workspace=self._cache.workspace(layer, hidden_states),
        )
