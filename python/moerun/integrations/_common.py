"""What both engine adapters need: a moerun.Layer per set of expert weights, and one workspace per
(device, stream) shared by every layer (they run one after another on a stream)."""

from .. import _C
from .._arrays import current_stream, empty_bytes_like
from ..layer import Layer


def weight_dtype(tensor):
    """'bf16' or 'fp8_e4m3' from a torch/NumPy dtype, rejecting others naming the tensor."""
    name = str(tensor.dtype)
    if "bfloat16" in name:
        return "bf16"
    if "float8_e4m3fn" in name:
        return "fp8_e4m3"
    raise _C.InvalidArgument(
        f"moerun: invalid w13 dtype: expected bfloat16 or float8_e4m3fn, got {name}"
    )


def local_placement(num_experts, num_local_experts):
    """An expert_map that only fixes E_l: the adapters pass ids already local, or the engine's own
    map with every call, so which globals it names never matters."""
    num_experts = max(num_experts, num_local_experts)
    return num_experts, list(range(num_local_experts)) + [-1] * (num_experts - num_local_experts)


class LayerCache:
    """moerun.Layers keyed by the identity of their weights (which the layers keep alive), and the
    shared workspaces of their CUDA forwards."""

    def __init__(self, backend, max_tokens, layout):
        self.backend = backend
        self.max_tokens = max_tokens
        self.layout = layout
        self._layers = {}
        self._workspaces = {}  # (device, stream) -> byte buffer

    def get(self, key, make_config, weights):
        layer = self._layers.get(key)
        if layer is None:
            layer = Layer(
                make_config(),
                backend=self.backend,
                layout=self.layout,
                max_tokens=self.max_tokens,
                **weights,
            )
            self._layers[key] = layer
        return layer

    def workspace(self, layer, like):
        """A buffer for `layer`'s forwards on the current stream, grown when a layer needs more."""
        if layer.backend != "cuda":
            return None
        key = (layer.device, current_stream(like))
        needed = layer.workspace_bytes_for(self.max_tokens)
        buffer = self._workspaces.get(key)
        if buffer is None or buffer.nbytes < needed:
            buffer = empty_bytes_like(like, needed)
            self._workspaces[key] = buffer
        return buffer
