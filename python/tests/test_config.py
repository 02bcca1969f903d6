import pytest

import moerun


def test_every_field_by_keyword_and_back():
    c = moerun.MoeConfig(
        hidden_size=256, intermediate_size=128, num_experts=16, top_k=4, routing="grouped",
        renormalize=True, num_groups=4, topk_groups=2, routed_scaling_factor=2.5,
        weight_dtype="fp8_e4m3", ep_size=2, ep_rank=1, output_scale=1.5,
    )
    d = c.to_dict()
    assert d["routing"] == "grouped" and d["weight_dtype"] == "fp8_e4m3" and d["top_k"] == 4
    assert set(d) == set(moerun.MoeConfig.fields())
    assert moerun.MoeConfig(**d) == c
    assert c.num_local_experts == 8
    assert "num_groups=4" in repr(c)


def test_presets_with_overrides():
    q = moerun.MoeConfig.preset("qwen3-30b-a3b")
    assert (q.hidden_size, q.intermediate_size, q.num_experts, q.top_k) == (2048, 768, 128, 8)
    assert q.weight_dtype == "bf16" and q.routing == "softmax"
    d = moerun.MoeConfig.preset("deepseek-v3", ep_size=8, ep_rank=3)
    assert d.routing == "grouped" and d.weight_dtype == "fp8_e4m3" and d.num_local_experts == 32
    assert set(moerun.MoeConfig.preset_names()) >= {"deepseek-v3", "qwen3-30b-a3b", "mixtral-8x7b"}
    with pytest.raises(moerun.InvalidArgument, match="invalid model: expected one of"):
        moerun.MoeConfig.preset("llama")


def test_expert_map_places_experts_that_do_not_divide():
    m = moerun.round_robin_expert_map(10, 4, 1)
    assert m == [-1, 0, -1, -1, -1, 1, -1, -1, -1, 2]
    c = moerun.MoeConfig(hidden_size=64, intermediate_size=64, num_experts=10, top_k=2,
                         ep_size=4, ep_rank=1, expert_map=m)
    assert c.num_local_experts == 3 and c.expert_map == m
    assert c.replace(expert_map=None, ep_size=2, ep_rank=0).num_local_experts == 5
    with pytest.raises(moerun.InvalidArgument, match=r"invalid expert_map\[2\]"):
        c.replace(expert_map=[0, 1, 1, -1, -1, -1, -1, -1, -1, -1])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"hidden_size": 0}, "invalid hidden_size: expected > 0, got 0"),
        ({"hidden_size": "big"}, "invalid hidden_size: expected an int, got str"),
        ({"renormalize": 1}, "invalid renormalize: expected a bool, got int"),
        ({"top_k": 65}, "invalid top_k: expected 1 <= top_k <= num_experts (64), got 65"),
        ({"routing": "sigmoid"}, "invalid routing: expected 'softmax' or 'grouped', got sigmoid"),
        ({"weight_dtype": "int4"}, "invalid weight_dtype: expected 'bf16' or 'fp8_e4m3'"),
        ({"ep_size": 3}, "invalid ep_size: expected a divisor of num_experts (64)"),
        ({"output_scale": 0.0}, "invalid output_scale: expected finite and > 0"),
        ({"expert_map": "x"}, "invalid expert_map: expected None or a sequence of ints, got str"),
        ({"hidden": 1}, "invalid MoeConfig keyword: expected one of hidden_size"),
    ],
)
def test_bad_fields_are_named(kwargs, message):
    base = dict(hidden_size=128, intermediate_size=64, num_experts=64, top_k=2)
    with pytest.raises(moerun.InvalidArgument) as error:
        moerun.MoeConfig(**{**base, **kwargs})
    assert message in str(error.value)
    assert isinstance(error.value, ValueError) and isinstance(error.value, moerun.Error)


def test_workspace_query_needs_no_gpu():
    c = moerun.MoeConfig.preset("deepseek-v3", ep_size=8)
    small, large = moerun.workspace_bytes(c, 128), moerun.workspace_bytes(c, 4096)
    assert 0 < small < large and large % 256 == 0
    assert moerun.workspace_bytes(c, 4096, layout="contiguous") <= large
    with pytest.raises(moerun.InvalidArgument, match="invalid max_tokens"):
        moerun.workspace_bytes(c, 0)
