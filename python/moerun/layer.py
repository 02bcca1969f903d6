"""moerun.Layer: one MoE layer over the caller's weights, run on the caller's tensors."""

from . import _C
from ._arrays import (
    arg,
    bytes_arg,
    current_stream,
    empty_bytes_like,
    empty_like_framework,
    stream_handle,
)


class Layer:
    """One MoE layer, built once from a config and this rank's expert weights.

    Weights are views: the layer keeps references to the objects given here, never copies.
      w13 [E_l, 2I, H] (rows [0, I) gate, [I, 2I) up) and w2 [E_l, H, I], bf16 or float8_e4m3fn;
      FP8 also w13_scale [E_l, 2I/128, H/128] and w2_scale [E_l, H/128, I/128] float32;
      grouped routing optionally correction_bias [E] float32.
    backend: "cpu" (the oracle, any machine), "cuda", or "auto" (CUDA for device weights).
    max_tokens: the most tokens a forward takes; the CUDA backend needs it (layouts, workspace).
    """

    def __init__(
        self,
        config,
        *,
        w13,
        w2,
        w13_scale=None,
        w2_scale=None,
        correction_bias=None,
        backend="auto",
        layout="auto",
        max_tokens=0,
        overlap=False,
        workspace_limit_bytes=0,
    ):
        self._weights = (w13, w2, w13_scale, w2_scale, correction_bias)
        self._native = _C.Layer(
            config,
            arg(w13, "w13"),
            arg(w2, "w2"),
            arg(w13_scale, "w13_scale"),
            arg(w2_scale, "w2_scale"),
            arg(correction_bias, "correction_bias"),
            backend,
            layout,
            max_tokens,
            overlap,
            workspace_limit_bytes,
            False,
        )
        self._config = self._native.config
        self._cuda = self._native.backend == "cuda"
        self._max_tokens = max_tokens
        self._hidden_size = self._config.hidden_size
        # EP partials are summed across ranks: f32, rounded once after the sum.
        self._out_code = _C.DTYPE_F32 if self._config.ep_size > 1 else _C.DTYPE_BF16
        self._workspaces = {}  # stream -> (buffer, its native argument), for forwards without one

    @property
    def config(self):
        return self._config

    @property
    def backend(self):
        return self._native.backend

    @property
    def device(self):
        """("cpu", 0) or ("cuda", index): where the weights, and every forward's tensors, are."""
        return self._native.device

    @property
    def out_dtype(self):
        """The dtype of outputs this layer allocates: "bfloat16", or "float32" for EP partials."""
        return "float32" if self._out_code == _C.DTYPE_F32 else "bfloat16"

    def layout_for(self, tokens):
        return self._native.layout_for(tokens)

    def workspace_bytes_for(self, tokens):
        """Workspace bytes a CUDA forward of at most `tokens` tokens needs (0 on the CPU)."""
        return self._native.workspace_bytes_for(tokens)

    def forward(
        self, hidden_states, router_logits, out=None, *, hidden_states_scale=None, stream=None,
        workspace=None,
    ):
        """hidden_states [T, H] (bf16, or float8_e4m3fn with hidden_states_scale [T, H/128] f32
        for FP8 weights) and router_logits [T, E] f32 -> out [T, H] (allocated when not given,
        in the inputs' framework; returned).

        CUDA: enqueued on `stream` (default: the framework's current stream), no host
        synchronization. Without `workspace` (a buffer of >= workspace_bytes_for(T) bytes,
        256-byte aligned) the layer uses one it allocated for that stream, so forwards on
        different streams never share one."""
        if out is None:
            out = self._new_out(hidden_states)
        stream, ws = self._launch(hidden_states, stream, workspace)
        self._native.forward(
            arg(hidden_states, "hidden_states"),
            arg(router_logits, "router_logits"),
            arg(out, "out"),
            arg(hidden_states_scale, "hidden_states scale"),
            stream,
            ws,
        )
        return out

    def forward_routed(
        self, hidden_states, topk_ids, topk_weights, out=None, *, hidden_states_scale=None,
        local_ids=False, expert_map=None, stream=None, workspace=None,
    ):
        """As forward, with the routing done by the caller: topk_ids [T, k] int32 (global ids in
        [-1, E), or with local_ids=True this rank's local ids in [-1, E_l), -1 for experts of other
        ranks) and topk_weights [T, k] f32. expert_map [E] int32 on the layer's device, when
        given, places the experts for this call instead of config.expert_map."""
        if out is None:
            out = self._new_out(hidden_states)
        stream, ws = self._launch(hidden_states, stream, workspace)
        self._native.forward_routed(
            arg(hidden_states, "hidden_states"),
            arg(topk_ids, "topk_ids"),
            arg(topk_weights, "topk_weights"),
            arg(out, "out"),
            arg(hidden_states_scale, "hidden_states scale"),
            local_ids,
            arg(expert_map, "expert_map"),
            stream,
            ws,
        )
        return out

    def _new_out(self, hidden_states):
        return empty_like_framework(
            hidden_states, (hidden_states.shape[0], self._hidden_size), self._out_code
        )

    # The stream and workspace of one forward.
    def _launch(self, hidden_states, stream, workspace):
        if not self._cuda:
            return 0, None
        stream = current_stream(hidden_states) if stream is None else stream_handle(stream)
        if workspace is not None:
            return stream, bytes_arg(workspace, "workspace")
        cached = self._workspaces.get(stream)
        if cached is None:
            # Sized once for max_tokens, from the framework's allocator (its memory accounting
            # and graph pools see it), on the stream it is then used on.
            buffer = empty_bytes_like(hidden_states, self.workspace_bytes_for(self._max_tokens))
            cached = (buffer, bytes_arg(buffer, "workspace"))
            self._workspaces[stream] = cached
        return stream, cached[1]

    def __repr__(self):
        return f"moerun.Layer({self._config!r}, backend={self.backend!r}, device={self.device!r})"
