"""Loading a Hugging Face checkpoint from Python: a small Qwen3-MoE checkpoint written here in
the real format (config.json + safetensors), loaded by moerun's C++ loader, run, and checked
against the fp64 reference on the tensors as stored."""

import json
import struct

import numpy as np

import moerun
import reference as ref

H, I, E, K = 128, 64, 8, 2


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array).tobytes()
        dtype = {"bfloat16": "BF16", "float32": "F32"}[str(array.dtype)]
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def make_checkpoint(directory, seed):
    rng = np.random.default_rng(seed)
    config = {
        "model_type": "qwen3_moe", "architectures": ["Qwen3MoeForCausalLM"],
        "num_hidden_layers": 1, "hidden_size": H, "moe_intermediate_size": I,
        "intermediate_size": 2 * I, "num_experts": E, "num_experts_per_tok": K,
        "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": [],
        "vocab_size": 16, "rms_norm_eps": 1e-6, "torch_dtype": "bfloat16",
    }
    (directory / "config.json").write_text(json.dumps(config))
    tensors = {"model.layers.0.mlp.gate.weight": (rng.standard_normal((E, H)) / np.sqrt(H))
               .astype(ref.BF16)}
    for e in range(E):
        base = f"model.layers.0.mlp.experts.{e}."
        for name, shape in (("gate_proj", (I, H)), ("up_proj", (I, H)), ("down_proj", (H, I))):
            tensors[base + name + ".weight"] = (rng.standard_normal(shape) /
                                                np.sqrt(shape[1])).astype(ref.BF16)
    write_safetensors(directory / "model.safetensors", tensors)
    return tensors


def test_load_a_qwen3_layer_and_run_it(tmp_path, seed):
    tensors = make_checkpoint(tmp_path, seed)
    assert moerun.hf.moe_layers(tmp_path) == [0]
    loaded = moerun.load_hf_layer(tmp_path, 0)
    c = loaded.config
    assert (c.hidden_size, c.intermediate_size, c.num_experts, c.top_k) == (H, I, E, K)
    assert c.routing == "softmax" and c.renormalize and c.weight_dtype == "bf16"
    # w13 packs gate then up; w2 is down; all as stored.
    e = 5
    assert np.array_equal(loaded.w13[e, :I], tensors[f"model.layers.0.mlp.experts.{e}.gate_proj.weight"])
    assert np.array_equal(loaded.w13[e, I:], tensors[f"model.layers.0.mlp.experts.{e}.up_proj.weight"])
    assert np.array_equal(loaded.w2[e], tensors[f"model.layers.0.mlp.experts.{e}.down_proj.weight"])
    assert not loaded.w13.flags.writeable

    x = ref.hidden(6, H, seed)
    logits = loaded.router_logits(x)
    router = tensors["model.layers.0.mlp.gate.weight"].astype(np.float32)
    np.testing.assert_allclose(logits, x.astype(np.float32) @ router.T, rtol=1e-6)
    layer = moerun.Layer(c, backend="cpu", **loaded.weights())
    out = layer.forward(x, logits)
    ids, weights = ref.softmax_topk(logits, K)
    w = {"w13": np.asarray(loaded.w13), "w2": np.asarray(loaded.w2)}
    assert ref.relative_error(out, ref.dense(c, w, x, ids, weights)) <= ref.BF16_TOLERANCE


def test_expert_parallel_load_takes_the_ranks_experts(tmp_path, seed):
    tensors = make_checkpoint(tmp_path, seed)
    loaded = moerun.load_hf_layer(tmp_path, 0, ep_size=4, ep_rank=3)
    assert loaded.w13.shape == (2, 2 * I, H) and loaded.config.num_local_experts == 2
    assert np.array_equal(loaded.w2[1], tensors["model.layers.0.mlp.experts.7.down_proj.weight"])


def test_a_missing_checkpoint_is_named(tmp_path):
    import pytest

    with pytest.raises(moerun.Error, match="config.json"):
        moerun.load_hf_layer(tmp_path, 0)
