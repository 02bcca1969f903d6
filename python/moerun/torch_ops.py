"""torch.ops.moerun.*: moerun's layer as torch custom ops, registered from Python.

    import moerun.torch_ops
    out = torch.ops.moerun.moe_forward(hidden, router_logits, moerun.torch_ops.layer_id(layer))

Each op has a fake (meta) implementation, so torch.compile sees one opaque op with known output
shape and dtype and no graph break; the ops return new tensors and mutate nothing. A layer is
named by an int (layer_id) because an op's arguments are tensors and scalars; the registry holds
layers weakly, so it never keeps one alive.
"""

import weakref

import torch

from .layer import Layer

_layers = weakref.WeakValueDictionary()
_ids = weakref.WeakKeyDictionary()


def layer_id(layer: Layer) -> int:
    """The int that names `layer` in the ops (assigned on first use)."""
    found = _ids.get(layer)
    if found is None:
        found = len(_ids) + 1
        while found in _layers:
            found += 1
        _layers[found] = layer
        _ids[layer] = found
    return found


def _layer(layer_id: int) -> Layer:
    layer = _layers.get(layer_id)
    if layer is None:
        raise RuntimeError(f"moerun: no live moerun.Layer has layer_id {layer_id}")
    return layer


def _out_like(layer, hidden_states):
    dtype = torch.float32 if layer.out_dtype == "float32" else torch.bfloat16
    return hidden_states.new_empty((hidden_states.shape[0], layer.config.hidden_size), dtype=dtype)


_lib = torch.library.Library("moerun", "DEF")
_lib.define("moe_forward(Tensor hidden_states, Tensor router_logits, int layer_id) -> Tensor")
_lib.define(
    "moe_forward_routed(Tensor hidden_states, Tensor topk_ids, Tensor topk_weights, int layer_id,"
    " Tensor? hidden_states_scale=None, bool local_ids=False, Tensor? expert_map=None) -> Tensor"
)


def _moe_forward(hidden_states, router_logits, layer_id):
    layer = _layer(layer_id)
    out = _out_like(layer, hidden_states)
    return layer.forward(hidden_states, router_logits, out)


def _moe_forward_routed(
    hidden_states, topk_ids, topk_weights, layer_id, hidden_states_scale=None, local_ids=False,
    expert_map=None,
):
    layer = _layer(layer_id)
    out = _out_like(layer, hidden_states)
    return layer.forward_routed(
        hidden_states, topk_ids, topk_weights, out, hidden_states_scale=hidden_states_scale,
        local_ids=local_ids, expert_map=expert_map,
    )


for _key in ("CPU", "CUDA"):
    _lib.impl("moe_forward", _moe_forward, _key)
    _lib.impl("moe_forward_routed", _moe_forward_routed, _key)


@torch.library.register_fake("moerun::moe_forward")
def _moe_forward_fake(hidden_states, router_logits, layer_id):
    return _out_like(_layer(layer_id), hidden_states)


@torch.library.register_fake("moerun::moe_forward_routed")
def _moe_forward_routed_fake(
    hidden_states, topk_ids, topk_weights, layer_id, hidden_states_scale=None, local_ids=False,
    expert_map=None,
):
    return _out_like(_layer(layer_id), hidden_states)
