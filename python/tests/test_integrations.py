"""The SGLang and vLLM adapters against stand-ins of the engines' classes (engine_standins.py):
a forward through each adapter equals moerun.Layer's on the same inputs, bit for bit."""

import importlib
import sys

import numpy as np
import pytest

import engine_standins as engines
import moerun
import reference as ref

E, H, I, K = 16, 128, 64, 4


def bf16_config(**overrides):
    return moerun.MoeConfig(hidden_size=H, intermediate_size=I, num_experts=E, top_k=K,
                            **overrides)


@pytest.fixture
def sglang(monkeypatch):
    registry, modules = engines.install_sglang()
    engines.installed(monkeypatch, modules)
    adapter = importlib.import_module("moerun.integrations.sglang")
    return registry, adapter


@pytest.fixture
def vllm(monkeypatch):
    engines.installed(monkeypatch, engines.install_vllm())
    monkeypatch.delitem(sys.modules, "moerun.integrations.vllm", raising=False)
    return importlib.import_module("moerun.integrations.vllm")


def same_bits(a, b):
    return a.shape == b.shape and np.array_equal(np.asarray(a).view(np.uint8),
                                                 np.asarray(b).view(np.uint8))


def test_sglang_core_equals_the_layer(sglang, seed):
    registry, adapter = sglang
    adapter.register(backend="cpu")
    assert registry.names == ["moerun"] and "moerun" in registry.cores
    w = ref.weights(bf16_config(), seed)
    x = ref.hidden(40, H, seed)
    ids, weights = ref.random_routing(40, K, E, seed)
    runner_config = engines.MoeRunnerConfig(num_experts=E, num_local_experts=E, hidden_size=H,
                                            intermediate_size_per_partition=I, top_k=K)
    dispatch = engines.StandardDispatchOutput(x, None, engines.StandardTopKOutput(weights, ids, None))
    quant_info = engines.DeepGemmMoeQuantInfo(w13_weight=w["w13"], w2_weight=w["w2"])
    core, combine = registry.run("moerun", runner_config, dispatch, quant_info)
    assert isinstance(combine, engines.StandardCombineInput)
    expected = moerun.Layer(bf16_config(), backend="cpu", **w).forward_routed(x, ids, weights)
    assert same_bits(combine.hidden_states, expected)
    # The same weights reuse their layer.
    core.run_from_dispatch(dispatch, quant_info, runner_config)
    assert len(core._cache._layers) == 1


def test_sglang_expert_parallel_local_ids_and_scaling(sglang, seed):
    registry, adapter = sglang
    adapter.register(backend="cpu")
    # Rank 1 of 4 (SGLang's contiguous placement), DeepSeek's routed_scaling_factor on the output.
    full = ref.weights(bf16_config(), seed)
    local = {name: array[4:8] for name, array in full.items()}
    x = ref.hidden(30, H, seed)
    ids, weights = ref.random_routing(30, K, E, seed)
    local_ids = np.where((ids >= 4) & (ids < 8), ids - 4, -1).astype(np.int32)
    runner_config = engines.MoeRunnerConfig(num_experts=E, num_local_experts=4, hidden_size=H,
                                            intermediate_size_per_partition=I, top_k=K,
                                            routed_scaling_factor=2.5)
    dispatch = engines.StandardDispatchOutput(
        x, None, engines.StandardTopKOutput(weights, local_ids, None))
    _, combine = registry.run("moerun", runner_config, dispatch,
                              engines.DeepGemmMoeQuantInfo(local["w13"], local["w2"]))
    layer = moerun.Layer(bf16_config(ep_size=4, ep_rank=1, output_scale=2.5), backend="cpu",
                         **local)
    expected = np.empty((30, H), dtype=ref.BF16)  # SGLang's combine input is bf16
    layer.forward_routed(x, ids, weights, expected)
    assert same_bits(combine.hidden_states, expected)


def test_sglang_rejects_what_it_does_not_implement(sglang):
    _, adapter = sglang
    config = engines.MoeRunnerConfig(num_experts=E, num_local_experts=E, hidden_size=H,
                                     intermediate_size_per_partition=I, activation="gelu")
    with pytest.raises(NotImplementedError, match="MoeRunnerConfig.activation"):
        adapter.MoerunRunnerCore(config)


def test_vllm_modular_experts_with_expert_map_equal_the_layer(vllm, seed):
    # vLLM's round-robin placement: rank 2 of 3 holds 16 // 3 = 5 experts.
    m = np.asarray(moerun.round_robin_expert_map(E, 3, 2), dtype=np.int32)
    full = ref.weights(bf16_config(), seed)
    held = [g for g in range(E) if m[g] >= 0]
    local = {name: array[held] for name, array in full.items()}
    experts = vllm.MoerunExperts(engines.FusedMoEQuantConfig(), backend="cpu")
    assert experts.activation_format() is engines.FusedMoEActivationFormat.Standard
    assert experts.expects_unquantized_inputs
    assert isinstance(experts.finalize_weight_and_reduce_impl(), engines.TopKWeightAndReduceNoOP)
    assert experts.workspace_shapes(40, 2 * I, H, K, E, 5, None, "silu") == ((0,), (0,), (40, H))
    x = ref.hidden(40, H, seed)
    ids, weights = ref.random_routing(40, K, E, seed)
    output = np.full((40, H), np.nan, dtype=ref.BF16)
    experts.apply(output, x, local["w13"], local["w2"], weights, ids, "silu", E, m, None, None,
                  None, None, None, False)
    layer = moerun.Layer(bf16_config(ep_size=3, ep_rank=2, expert_map=m.tolist()), backend="cpu",
                         **local)
    expected = np.empty((40, H), dtype=ref.BF16)
    layer.forward_routed(x, ids, weights, expected)
    assert same_bits(output, expected)


@pytest.mark.parametrize("grouped", [False, True])
def test_vllm_monolithic_experts_route_like_the_layer(vllm, grouped, seed):
    if grouped:  # DeepSeek-V3's routing: FP8 weights, grouped top-k with a correction bias
        config = moerun.MoeConfig(hidden_size=256, intermediate_size=256, num_experts=E, top_k=K,
                                  routing="grouped", num_groups=4, topk_groups=2,
                                  routed_scaling_factor=2.5, weight_dtype="fp8_e4m3")
    else:
        config = bf16_config()
    w = ref.weights(config, seed)
    bias = (np.random.default_rng(seed).uniform(-0.05, 0.05, E)).astype(np.float32)
    x = ref.hidden(33, config.hidden_size, seed)
    logits = ref.logits(33, E, seed)
    quant = engines.FusedMoEQuantConfig(w.get("w13_scale"), w.get("w2_scale"))
    experts = vllm.MoerunMonolithic(quant, top_k=K, backend="cpu")
    grouped_args = (dict(num_expert_group=4, topk_group=2, routed_scaling_factor=2.5,
                         e_score_correction_bias=bias) if grouped else {})
    out = experts.apply(x, w["w13"], w["w2"], logits, "silu", E, None, None, False, **grouped_args)
    layer = moerun.Layer(config, backend="cpu", correction_bias=bias if grouped else None, **w)
    assert same_bits(out, layer.forward(x, logits))
    with pytest.raises(NotImplementedError, match="routing_replay_out"):
        experts.apply(x, w["w13"], w["w2"], logits, "silu", E, None, None, False,
                      routing_replay_out=object(), **grouped_args)
