"""The Python package on a GPU, with torch only (no NumPy or pytest needed on the device):

  1. torch CUDA tensors in; the output equals, bit for bit, the native layer called with the same
     tensors through DLPack, and the CPU oracle within the CUDA-vs-oracle tolerance;
  2. CUDA-graph capture (torch.cuda.graph), then replays with new routing;
  3. torch.compile(fullgraph=True) (inductor) over a function calling the op: no graph break;
  4. torch.library.opcheck on CUDA tensors;
  5. two layers on two streams at once in one process;
  6. pre-quantized FP8 input, and the SGLang / vLLM adapters (stand-ins) on CUDA tensors;
  7. the per-call host overhead of moerun.Layer.forward_routed vs the native call it makes.

Run by scripts/device-python.sh: `python3 cuda_checks.py OUT_DIR`. Every check runs; a fresh
seed is printed per check; the closing line is "N passed, N failed"; exit 1 on any failure or
when no CUDA device is usable (nothing is skipped).
"""

import json
import os
import random
import statistics
import sys
import time
import traceback

import torch

import moerun
import moerun.torch_ops

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import engine_standins as engines  # noqa: E402

DEVICE = torch.device("cuda", 0)
# tests/cuda/cuda_tolerances.h: the CUDA layer vs the oracle's layer.
ORACLE_TOLERANCE = {"bf16": 5e-3, "fp8_e4m3": 1.5e-2}
RESULTS = {}


def fresh_seed(name):
    seed = int(os.environ.get("MOERUN_TEST_SEED", random.SystemRandom().randrange(2**31)))
    print(f"[   SEED   ] {name}: {seed}", flush=True)
    return seed


def configs():
    qwen = moerun.MoeConfig.preset("qwen3-30b-a3b", hidden_size=256, intermediate_size=192,
                                   num_experts=32)
    dsv3 = moerun.MoeConfig.preset("deepseek-v3", hidden_size=512, intermediate_size=256,
                                   num_experts=64)
    return {"qwen3-small": qwen, "deepseek-v3-small": dsv3}


def weights(config, seed, device):
    g = torch.Generator().manual_seed(seed)
    e, h, i = config.num_experts, config.hidden_size, config.intermediate_size
    if config.weight_dtype == "bf16":
        w = {"w13": torch.randn(e, 2 * i, h, generator=g) / h**0.5,
             "w2": torch.randn(e, h, i, generator=g) / i**0.5}
        w = {k: v.to(torch.bfloat16) for k, v in w.items()}
    else:
        w = {"w13": torch.randn(e, 2 * i, h, generator=g).to(torch.float8_e4m3fn),
             "w2": torch.randn(e, h, i, generator=g).to(torch.float8_e4m3fn),
             "w13_scale": torch.rand(e, 2 * i // 128, h // 128, generator=g) * 0.5 / h**0.5 + 0.5 / h**0.5,
             "w2_scale": torch.rand(e, h // 128, i // 128, generator=g) * 0.5 / i**0.5 + 0.5 / i**0.5}
    if config.routing == "grouped":
        w["correction_bias"] = (torch.rand(e, generator=g) - 0.5) * 1e-3
    return {k: v.to(device) for k, v in w.items()}


def inputs(config, tokens, seed, device):
    g = torch.Generator().manual_seed(seed + 1)
    hidden = torch.randn(tokens, config.hidden_size, generator=g).to(torch.bfloat16)
    logits = 2.0 * torch.randn(tokens, config.num_experts, generator=g)
    ids = torch.stack([torch.randperm(config.num_experts, generator=g)[: config.top_k]
                       for _ in range(tokens)]).to(torch.int32)
    ids[torch.rand(ids.shape, generator=g) < 0.1] = -1
    topk_weights = torch.rand(ids.shape, generator=g) + 0.1
    return [t.to(device) for t in (hidden, logits, ids, topk_weights)]


def relative_error(actual, reference):
    a, r = actual.double().cpu(), reference.double().cpu()
    if not torch.isfinite(a).all():
        return float("inf")
    return float((a - r).norm() / r.norm())


def same_bits(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(
        a.view(torch.uint8), b.view(torch.uint8))


def oracle(config, w, hidden, ids, topk_weights, layout):
    cpu = moerun.Layer(config, backend="cpu", layout=layout, **{k: v.cpu() for k, v in w.items()})
    return cpu.forward_routed(hidden.cpu(), ids.cpu(), topk_weights.cpu())


class DLPackOnly:
    """A tensor seen through DLPack alone: the native layer's generic path."""

    def __init__(self, tensor):
        self._t = tensor

    def __dlpack__(self, *args, **kwargs):
        return self._t.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self._t.__dlpack_device__()


def check_torch_tensors_equal_the_native_layer_and_the_oracle():
    for name, c in configs().items():
        seed = fresh_seed(name)
        w = weights(c, seed, DEVICE)
        layer = moerun.Layer(c, backend="cuda", max_tokens=300, **w)
        for tokens in (1, 100, 129, 300):
            hidden, logits, ids, topk_weights = inputs(c, tokens, seed + tokens, DEVICE)
            out = layer.forward_routed(hidden, ids, topk_weights)
            native = torch.full_like(out, float("nan"))
            ws = torch.empty(layer.workspace_bytes_for(tokens), dtype=torch.uint8, device=DEVICE)
            layer._native.forward_routed(
                DLPackOnly(hidden), DLPackOnly(ids), DLPackOnly(topk_weights), DLPackOnly(native),
                None, False, None, torch.cuda.current_stream().cuda_stream, DLPackOnly(ws))
            torch.cuda.synchronize()
            assert same_bits(out, native), f"{name} T {tokens}: Python vs native via DLPack"
            error = relative_error(out, oracle(c, w, hidden, ids, topk_weights,
                                               layer.layout_for(tokens)))
            assert error <= ORACLE_TOLERANCE[c.weight_dtype], f"{name} T {tokens}: {error}"
            routed = layer.forward(hidden, logits)
            assert torch.isfinite(routed.float()).all()


def check_graph_capture_replays_with_new_routing():
    for name, c in configs().items():
        seed = fresh_seed(name)
        w = weights(c, seed, DEVICE)
        layer = moerun.Layer(c, backend="cuda", max_tokens=96, overlap=True, **w)
        hidden, _, ids, topk_weights = inputs(c, 96, seed, DEVICE)
        out = torch.empty(96, c.hidden_size, dtype=torch.bfloat16, device=DEVICE)
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream):
            layer.forward_routed(hidden, ids, topk_weights, out)  # warm-up, same stream
        stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            layer.forward_routed(hidden, ids, topk_weights, out)
        for replay in range(3):
            new = inputs(c, 96, seed + 100 + replay, DEVICE)
            hidden.copy_(new[0])
            ids.copy_(new[2])
            topk_weights.copy_(new[3])
            out.fill_(float("nan"))
            graph.replay()
            torch.cuda.synchronize()
            error = relative_error(out, oracle(c, w, hidden, ids, topk_weights,
                                               layer.layout_for(96)))
            assert error <= ORACLE_TOLERANCE[c.weight_dtype], f"{name} replay {replay}: {error}"


def check_compile_fullgraph_has_no_graph_break():
    c = configs()["qwen3-small"]
    seed = fresh_seed("compile")
    layer = moerun.Layer(c, backend="cuda", max_tokens=64, **weights(c, seed, DEVICE))
    layer_id = moerun.torch_ops.layer_id(layer)
    hidden, logits, _, _ = inputs(c, 64, seed, DEVICE)

    def f(x, router_logits):
        return torch.ops.moerun.moe_forward(x * 1.5, router_logits, layer_id) * 2

    explanation = torch._dynamo.explain(f)(hidden, logits)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(f, fullgraph=True)
    assert same_bits(compiled(hidden, logits), f(hidden, logits))


def check_opcheck_on_cuda():
    for name, c in configs().items():
        seed = fresh_seed(name)
        layer = moerun.Layer(c, backend="cuda", max_tokens=40, **weights(c, seed, DEVICE))
        layer_id = moerun.torch_ops.layer_id(layer)
        hidden, logits, ids, topk_weights = inputs(c, 40, seed, DEVICE)
        torch.library.opcheck(torch.ops.moerun.moe_forward.default, (hidden, logits, layer_id))
        torch.library.opcheck(torch.ops.moerun.moe_forward_routed.default,
                              (hidden, ids, topk_weights, layer_id))


def check_two_layers_on_two_streams():
    seed = fresh_seed("two streams")
    runs = []
    for name, c in configs().items():
        w = weights(c, seed, DEVICE)
        layer = moerun.Layer(c, backend="cuda", max_tokens=200, **w)
        hidden, _, ids, topk_weights = inputs(c, 200, seed, DEVICE)
        alone = layer.forward_routed(hidden, ids, topk_weights)
        torch.cuda.synchronize()
        runs.append((name, c, w, layer, hidden, ids, topk_weights, alone, torch.cuda.Stream()))
    outs = [torch.full_like(r[7], float("nan")) for r in runs]
    for _ in range(10):  # interleaved on two streams, no synchronization in between
        for r, out in zip(runs, outs):
            with torch.cuda.stream(r[8]):
                r[3].forward_routed(r[4], r[5], r[6], out)
    torch.cuda.synchronize()
    for (name, c, w, layer, hidden, ids, topk_weights, alone, _), out in zip(runs, outs):
        assert same_bits(out, alone), f"{name}: concurrent run differs"
        error = relative_error(out, oracle(c, w, hidden, ids, topk_weights, layer.layout_for(200)))
        assert error <= ORACLE_TOLERANCE[c.weight_dtype], f"{name}: {error}"


def check_prequantized_fp8_and_the_adapters():
    c = configs()["deepseek-v3-small"]
    seed = fresh_seed("fp8 input")
    w = weights(c, seed, DEVICE)
    layer = moerun.Layer(c, backend="cuda", max_tokens=77, **w)
    hidden, logits, ids, topk_weights = inputs(c, 77, seed, DEVICE)
    g = hidden.float().view(77, -1, 128)
    amax = g.abs().amax(dim=-1, keepdim=True).clamp_min(1e-10)
    codes = (g * (448.0 / amax)).to(torch.float8_e4m3fn).view(77, -1)
    scale = (amax / 448.0).view(77, -1).contiguous()
    a = layer.forward_routed(hidden, ids, topk_weights)
    b = layer.forward_routed(codes, ids, topk_weights, hidden_states_scale=scale)
    assert same_bits(a, b), "pre-quantized FP8 input"

    registry, modules = engines.install_sglang()
    sys.modules.update(modules)
    sys.modules.update(engines.install_vllm())
    from moerun.integrations import sglang, vllm

    sglang.register(backend="cuda", max_tokens=77)
    runner = engines.MoeRunnerConfig(num_experts=c.num_experts, num_local_experts=c.num_experts,
                                     hidden_size=c.hidden_size,
                                     intermediate_size_per_partition=c.intermediate_size,
                                     top_k=c.top_k)
    quant = engines.DeepGemmMoeQuantInfo(w["w13"], w["w2"], True, w["w13_scale"], w["w2_scale"])
    dispatch = engines.StandardDispatchOutput(
        hidden, None, engines.StandardTopKOutput(topk_weights, ids, logits))
    _, combine = registry.run("moerun", runner, dispatch, quant)
    assert same_bits(combine.hidden_states, a), "SGLang adapter"
    experts = vllm.MoerunMonolithic(engines.FusedMoEQuantConfig(w["w13_scale"], w["w2_scale"]),
                                    top_k=c.top_k, backend="cuda", max_tokens=77)
    out = experts.apply(hidden, w["w13"], w["w2"], logits, "silu", c.num_experts, None, None,
                        False, num_expert_group=c.num_groups, topk_group=c.topk_groups,
                        routed_scaling_factor=c.routed_scaling_factor,
                        e_score_correction_bias=w["correction_bias"])
    assert same_bits(out, layer.forward(hidden, logits)), "vLLM monolithic adapter"


def check_per_call_host_overhead():
    c = configs()["qwen3-small"]
    seed = fresh_seed("overhead")
    layer = moerun.Layer(c, backend="cuda", max_tokens=1, **weights(c, seed, DEVICE))
    hidden, _, ids, topk_weights = inputs(c, 1, seed, DEVICE)
    out = torch.empty(1, c.hidden_size, dtype=torch.bfloat16, device=DEVICE)
    ws = torch.empty(layer.workspace_bytes_for(1), dtype=torch.uint8, device=DEVICE)
    stream = torch.cuda.current_stream().cuda_stream
    from moerun._arrays import arg, bytes_arg

    prepared = (arg(hidden, "h"), arg(ids, "i"), arg(topk_weights, "w"), arg(out, "o"), None,
                False, None, stream, bytes_arg(ws, "ws"))
    calls = {
        "python_forward_routed": lambda: layer.forward_routed(hidden, ids, topk_weights, out,
                                                              workspace=ws),
        "python_forward_routed_own_stream_and_workspace": lambda: layer.forward_routed(
            hidden, ids, topk_weights, out),
        "native_call_prepared_args": lambda: layer._native.forward_routed(*prepared),
        "native_call_dlpack_args": lambda: layer._native.forward_routed(
            hidden, ids, topk_weights, out, None, False, None, stream, ws),
    }
    medians = {}
    for name, call in calls.items():
        for _ in range(50):
            call()
        torch.cuda.synchronize()
        samples = []
        for _ in range(40):  # synchronize between bursts so the launch queue never blocks a call
            for _ in range(25):
                start = time.perf_counter_ns()
                call()
                samples.append(time.perf_counter_ns() - start)
            torch.cuda.synchronize()
        medians[name] = statistics.median(samples) / 1000.0
    medians["python_minus_native_us"] = (medians["python_forward_routed"] -
                                         medians["native_call_prepared_args"])
    RESULTS["host_overhead_us_median"] = medians
    print("host overhead per call (us, median of 1000):", json.dumps(medians, indent=1))
    assert all(v > 0 for k, v in medians.items() if k != "python_minus_native_us")


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "."
    if not torch.cuda.is_available() or not moerun.cuda_available():
        print("no usable CUDA device (torch and moerun must both see one)")
        print("0 passed, 1 failed")
        return 1
    RESULTS["device"] = torch.cuda.get_device_name(0)
    RESULTS["torch"] = torch.__version__
    checks = [v for k, v in globals().items() if k.startswith("check_")]
    passed = failed = 0
    for check in checks:
        print(f"[ RUN      ] {check.__name__}", flush=True)
        start = time.time()
        try:
            check()
            passed += 1
            print(f"[       OK ] {check.__name__} ({time.time() - start:.1f} s)", flush=True)
        except Exception:  # a failed check is reported and the rest still run
            failed += 1
            traceback.print_exc()
            print(f"[  FAILED  ] {check.__name__}", flush=True)
    RESULTS["passed"], RESULTS["failed"] = passed, failed
    with open(os.path.join(out_dir, "python-cuda-results.json"), "w") as f:
        json.dump(RESULTS, f, indent=1)
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
