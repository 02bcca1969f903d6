"""moerun.Layer on the CPU backend with NumPy arrays, against the fp64 reference."""

import numpy as np
import pytest

import moerun
import reference as ref


def small(name):
    if name == "qwen3":
        return moerun.MoeConfig.preset("qwen3-30b-a3b", hidden_size=128, intermediate_size=96,
                                       num_experts=16, top_k=4)
    if name == "mixtral":
        return moerun.MoeConfig.preset("mixtral-8x7b", hidden_size=128, intermediate_size=352)
    return moerun.MoeConfig.preset("deepseek-v3", hidden_size=256, intermediate_size=256,
                                   num_experts=16, top_k=4, num_groups=4, topk_groups=2)


@pytest.mark.parametrize("name", ["qwen3", "mixtral"])
@pytest.mark.parametrize("tokens", [1, 65, 130])
def test_forward_routes_and_matches_fp64(name, tokens, seed):
    c = small(name)
    w = ref.weights(c, seed)
    x, logits = ref.hidden(tokens, c.hidden_size, seed), ref.logits(tokens, c.num_experts, seed)
    out = moerun.Layer(c, backend="cpu", **w).forward(x, logits)
    ids, weights = ref.softmax_topk(logits, c.top_k, c.renormalize)
    assert ref.relative_error(out, ref.dense(c, w, x, ids, weights)) <= ref.tolerance(c)


@pytest.mark.parametrize("name", ["qwen3", "deepseek"])
@pytest.mark.parametrize("layout", ["masked", "contiguous"])
def test_forward_routed_matches_fp64_and_writes_every_element(name, layout, seed):
    c = small(name)
    w = ref.weights(c, seed)
    x = ref.hidden(70, c.hidden_size, seed)
    ids, weights = ref.random_routing(70, c.top_k, c.num_experts, seed, skip=0.2)
    ids[0] = np.arange(c.top_k, dtype=np.int32)  # expert 0 is a real expert
    out = np.full((70, c.hidden_size), np.nan, dtype=ref.BF16)
    layer = moerun.Layer(c, backend="cpu", layout=layout, **w)
    assert layer.forward_routed(x, ids, weights, out) is out
    assert ref.relative_error(out, ref.dense(c, w, x, ids, weights)) <= ref.tolerance(c)


def test_prequantized_fp8_input_gives_the_same_bits(seed):
    c = small("deepseek")
    w = ref.weights(c, seed)
    x = ref.hidden(40, c.hidden_size, seed)
    ids, weights = ref.random_routing(40, c.top_k, c.num_experts, seed)
    layer = moerun.Layer(c, backend="cpu", **w)
    # moerun's recipe: scale = amax / 448 per 1x128 group, codes = e4m3(x * 448 / amax)
    g = x.astype(np.float32).reshape(40, -1, 128)
    amax = np.maximum(np.abs(g).max(axis=-1, keepdims=True), np.float32(1e-10))
    scale = (amax / np.float32(448)).astype(np.float32)
    codes = (g * (np.float32(448) / amax)).astype(ref.FP8).reshape(40, -1)
    a = layer.forward_routed(x, ids, weights)
    b = layer.forward_routed(codes, ids, weights, hidden_states_scale=scale.reshape(40, -1))
    assert np.array_equal(a.view(np.uint16), b.view(np.uint16))


def test_expert_parallel_partials_sum_to_the_layer(seed):
    c = small("qwen3")
    w = ref.weights(c, seed)
    x = ref.hidden(50, c.hidden_size, seed)
    ids, weights = ref.random_routing(50, c.top_k, c.num_experts, seed)
    total = np.zeros((50, c.hidden_size))
    for rank in range(3):  # 16 experts over 3 ranks: round-robin placement
        m = moerun.round_robin_expert_map(16, 3, rank)
        local = [g for g in range(16) if m[g] >= 0]
        rank_config = c.replace(ep_size=3, ep_rank=rank, expert_map=m)
        layer = moerun.Layer(rank_config, backend="cpu", w13=w["w13"][local], w2=w["w2"][local])
        assert layer.out_dtype == "float32"
        partial = layer.forward_routed(x, ids, weights)
        # SGLang's convention: ids already local, -1 for other ranks' experts.
        local_ids = np.where(ids >= 0, np.asarray(m, dtype=np.int32)[ids], -1).astype(np.int32)
        same = layer.forward_routed(x, local_ids, weights, local_ids=True)
        assert np.array_equal(partial, same)
        total += partial
    assert ref.relative_error(total, ref.dense(c, w, x, ids, weights)) <= ref.tolerance(c)


def test_output_scale(seed):
    c = small("mixtral").replace(output_scale=2.5)
    w = ref.weights(c, seed)
    x = ref.hidden(20, c.hidden_size, seed)
    ids, weights = ref.random_routing(20, c.top_k, c.num_experts, seed)
    out = moerun.Layer(c, backend="cpu", **w).forward_routed(x, ids, weights)
    assert ref.relative_error(out, ref.dense(c, w, x, ids, weights)) <= ref.tolerance(c)


class DLPackOnly:
    """An array seen through DLPack alone (what a framework other than torch/NumPy passes)."""

    def __init__(self, array):
        self._array = array

    def __dlpack__(self, *args, **kwargs):
        return self._array.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def test_dlpack_and_pointer_paths_agree(seed):
    c = small("qwen3")
    w = ref.weights(c, seed)
    x, logits = ref.hidden(9, c.hidden_size, seed), ref.logits(9, c.num_experts, seed)
    layer = moerun.Layer(c, backend="cpu", **w)
    a = layer.forward(x, logits)
    b = layer.forward(x, DLPackOnly(logits))
    assert np.array_equal(a.view(np.uint16), b.view(np.uint16))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: {**a, "hidden": a["hidden"].astype(np.float32)},
         "invalid hidden_states dtype: expected bf16, got f32"),
        (lambda a: {**a, "hidden": a["hidden"][:, :64]},
         "invalid hidden_states layout: expected contiguous"),
        (lambda a: {**a, "ids": a["ids"].astype(np.int64)},
         "invalid topk_ids dtype: expected float32, bfloat16, float8_e4m3fn or int32, got int64"),
        (lambda a: {**a, "ids": np.full_like(a["ids"], 16)},
         "invalid topk_ids[0, 0]: expected an expert id in [-1, 16), got 16"),
        (lambda a: {**a, "weights": np.full_like(a["weights"], np.inf)},
         "invalid topk_weights[0, 0]: expected a finite value"),
        (lambda a: {**a, "out": np.zeros((4, 128), dtype=ref.BF16)},
         "invalid out shape: expected [5, 128], got [4, 128]"),
        (lambda a: {**a, "ids": [[0, 1]]}, "invalid topk_ids: expected a tensor"),
    ],
)
def test_bad_input_is_named_not_a_crash(change, message, seed):
    c = small("qwen3")
    layer = moerun.Layer(c, backend="cpu", **ref.weights(c, seed))
    ids, weights = ref.random_routing(5, c.top_k, c.num_experts, seed)
    args = {"hidden": ref.hidden(5, c.hidden_size, seed), "ids": ids, "weights": weights,
            "out": np.zeros((5, 128), dtype=ref.BF16)}
    args = change(args)
    with pytest.raises(moerun.InvalidArgument) as error:
        layer.forward_routed(args["hidden"], args["ids"], args["weights"], args["out"])
    assert message in str(error.value)


def test_weights_that_disagree_with_the_config_are_named(seed):
    c = small("qwen3")
    w = ref.weights(c.replace(intermediate_size=64), seed)
    with pytest.raises(moerun.InvalidArgument,
                       match=r"invalid w13 shape: expected \[16, 192, 128\], got \[16, 128, 128\]"):
        moerun.Layer(c, backend="cpu", **w)
    with pytest.raises(moerun.InvalidArgument, match="invalid backend"):
        moerun.Layer(c, backend="tpu", **ref.weights(c, seed))
