"""torch tensors and torch.ops.moerun on the CPU backend (skipped without torch; CI has none)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import moerun  # noqa: E402
import moerun.torch_ops  # noqa: E402
import reference as ref  # noqa: E402


def small_layer(seed):
    c = moerun.MoeConfig.preset("qwen3-30b-a3b", hidden_size=128, intermediate_size=96,
                                num_experts=16, top_k=4)
    w = {k: torch.from_numpy(v.view(np.uint16)).view(torch.bfloat16)
         for k, v in ref.weights(c, seed).items()}
    return c, w, moerun.Layer(c, backend="cpu", **w)


def inputs(c, tokens, seed):
    x = torch.from_numpy(ref.hidden(tokens, c.hidden_size, seed).view(np.uint16)).view(torch.bfloat16)
    return x, torch.from_numpy(ref.logits(tokens, c.num_experts, seed))


def test_torch_tensors_equal_numpy_arrays(seed):
    c, w, layer = small_layer(seed)
    x, logits = inputs(c, 20, seed)
    out = layer.forward(x, logits)
    assert out.dtype == torch.bfloat16 and out.shape == (20, 128)
    numpy_layer = moerun.Layer(c, backend="cpu", **ref.weights(c, seed))
    expected = numpy_layer.forward(x.view(torch.int16).numpy().view(ref.BF16), logits.numpy())
    assert np.array_equal(out.view(torch.int16).numpy(), expected.view(np.int16))


def test_op_equals_the_layer_and_passes_opcheck(seed):
    c, _, layer = small_layer(seed)
    x, logits = inputs(c, 12, seed)
    layer_id = moerun.torch_ops.layer_id(layer)
    assert moerun.torch_ops.layer_id(layer) == layer_id
    out = torch.ops.moerun.moe_forward(x, logits, layer_id)
    assert torch.equal(out.view(torch.int16), layer.forward(x, logits).view(torch.int16))
    torch.library.opcheck(torch.ops.moerun.moe_forward.default, (x, logits, layer_id))
    ids, weights = ref.random_routing(12, c.top_k, c.num_experts, seed)
    args = (x, torch.from_numpy(ids), torch.from_numpy(weights), layer_id)
    torch.library.opcheck(torch.ops.moerun.moe_forward_routed.default, args)


def test_compile_sees_one_opaque_op_without_graph_break(seed):
    c, _, layer = small_layer(seed)
    x, logits = inputs(c, 16, seed)
    layer_id = moerun.torch_ops.layer_id(layer)

    def f(hidden, router_logits):
        return torch.ops.moerun.moe_forward(hidden * 2, router_logits, layer_id) + 1

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x, logits), f(x, logits))
