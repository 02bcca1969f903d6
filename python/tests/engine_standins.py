"""Small stand-ins of the engines' classes, written from the signatures in the research note
(ecosystem-ep.md A1/A2: SGLang main after PR #32665, moe_runner/runner.py @045c0bbe, base.py
@009c6808, token_dispatcher/standard.py @008b79d2; vLLM modular_kernel.py @003d383e), installed
as modules under the engines' real import paths so the adapters import them as they would the
engines. Only what the adapters touch is here."""

import enum
import sys
import types
from dataclasses import dataclass
from typing import Any, Optional


def _module(name, **attributes):
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


# --- SGLang ------------------------------------------------------------------------------------

@dataclass
class StandardTopKOutput:
    topk_weights: Any  # [M, k] f32
    topk_ids: Any  # [M, k] int32 (local under EP, -1 for other ranks' experts)
    router_logits: Any


@dataclass
class StandardDispatchOutput:
    hidden_states: Any  # [M, K]
    hidden_states_scale: Any
    topk_output: StandardTopKOutput


@dataclass
class StandardCombineInput:
    hidden_states: Any


@dataclass
class MoeRunnerConfig:
    num_experts: int
    num_local_experts: int
    hidden_size: int
    intermediate_size_per_partition: int
    layer_id: int = 0
    top_k: int = 1
    num_fused_shared_experts: int = 0
    params_dtype: Any = None
    activation: str = "silu"
    is_gated: bool = True
    apply_router_weight_on_input: bool = False
    inplace: bool = False
    no_combine: bool = False
    routed_scaling_factor: Optional[float] = None
    gemm1_alpha: Optional[float] = None
    gemm1_clamp_limit: Optional[float] = None


@dataclass
class DeepGemmMoeQuantInfo:
    w13_weight: Any
    w2_weight: Any
    use_fp8: bool = False
    w13_scale: Any = None
    w2_scale: Any = None
    block_shape: Any = None


class SglangRegistry:
    """register_moe_runner_core and MoeRunner.run's dispatch-native branch."""

    def __init__(self):
        self.cores = {}
        self.names = []

    def register_moe_runner_core(self, name, factory):
        self.cores[name] = factory

    def register_moe_runner_backend_name(self, name):
        self.names.append(name)

    def run(self, name, runner_config, dispatch_output, quant_info):
        core = self.cores[name](runner_config)
        assert hasattr(core, "run_from_dispatch")
        return core, core.run_from_dispatch(dispatch_output, quant_info, runner_config, hooks=None)


def install_sglang():
    registry = SglangRegistry()
    modules = {
        "sglang": _module("sglang"),
        "sglang.srt": _module("sglang.srt"),
        "sglang.srt.layers": _module("sglang.srt.layers"),
        "sglang.srt.layers.moe": _module("sglang.srt.layers.moe"),
        "sglang.srt.layers.moe.utils": _module(
            "sglang.srt.layers.moe.utils",
            register_moe_runner_backend_name=registry.register_moe_runner_backend_name),
        "sglang.srt.layers.moe.moe_runner": _module("sglang.srt.layers.moe.moe_runner"),
        "sglang.srt.layers.moe.moe_runner.runner": _module(
            "sglang.srt.layers.moe.moe_runner.runner",
            register_moe_runner_core=registry.register_moe_runner_core),
        "sglang.srt.layers.moe.token_dispatcher": _module("sglang.srt.layers.moe.token_dispatcher"),
        "sglang.srt.layers.moe.token_dispatcher.standard": _module(
            "sglang.srt.layers.moe.token_dispatcher.standard",
            StandardDispatchOutput=StandardDispatchOutput,
            StandardCombineInput=StandardCombineInput),
    }
    return registry, modules


# --- vLLM --------------------------------------------------------------------------------------

class FusedMoEActivationFormat(enum.Enum):
    Standard = "standard"
    BatchedExperts = "batched_experts"


@dataclass
class FusedMoEQuantConfig:
    w1_scale: Any = None
    w2_scale: Any = None


class _ExpertsBase:
    def __init__(self, quant_config):
        self.quant_config = quant_config

    @property
    def w1_scale(self):
        return self.quant_config.w1_scale

    @property
    def w2_scale(self):
        return self.quant_config.w2_scale


class FusedMoEExpertsModular(_ExpertsBase):
    pass


class FusedMoEExpertsMonolithic(_ExpertsBase):
    pass


class TopKWeightAndReduceNoOP:
    pass


def install_vllm():
    prefix = "vllm.model_executor.layers.fused_moe"
    return {
        "vllm": _module("vllm"),
        "vllm.model_executor": _module("vllm.model_executor"),
        "vllm.model_executor.layers": _module("vllm.model_executor.layers"),
        prefix: _module(prefix),
        prefix + ".modular_kernel": _module(
            prefix + ".modular_kernel",
            FusedMoEActivationFormat=FusedMoEActivationFormat,
            FusedMoEExpertsModular=FusedMoEExpertsModular,
            FusedMoEExpertsMonolithic=FusedMoEExpertsMonolithic),
        prefix + ".topk_weight_and_reduce": _module(
            prefix + ".topk_weight_and_reduce", TopKWeightAndReduceNoOP=TopKWeightAndReduceNoOP),
    }


def installed(monkeypatch, modules):
    """Puts `modules` into sys.modules for one test (monkeypatch undoes it)."""
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
