#!/usr/bin/env python3
"""Side-by-side timing of moerun and its peers on the same GPU, in one run.

Peers: torch._grouped_mm (BF16), torch._scaled_grouped_mm (row-wise FP8), torch._scaled_mm
(dense FP8 with 1x128 / 128x128 block scales, cuBLASLt), DeepGEMM when it imports, and a plain
PyTorch MoE layer (sort by expert, _grouped_mm, SiLU-and-mul, _grouped_mm, weighted index_add_).
moerun's own numbers come from the binary: its grouped GEMMs from one `moerun bench-gemm --json`
per dtype (all shapes in one process), its layer from `moerun bench --json --stage layer`. Without
the binary the peers are still timed and the tables say why moerun's columns are empty.

Each timing: warm-up, then CUDA events around each of many runs over inputs rotated so that
their total exceeds 2x L2, median reported. Ceilings (copy bandwidth, dense BF16 and FP8 matrix
rates) are measured in the same run. Writes a text table, a JSON file and a roofline PNG.
Ratios are peer time / moerun time on the same shape and dtype (> 1: moerun is faster).
`--self-test` checks the tables and ratios on made-up numbers, without torch or a GPU.
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time

try:
    import torch
except ImportError:  # --self-test runs without torch
    torch = None

L2_BYTES = 60 * 2**20
DEVICE = "cuda"


def median_time_ms(fn, arg_sets, warmup=5, iters=40):
    """Median over `iters` event-timed calls, cycling through `arg_sets`."""
    for i in range(warmup):
        fn(*arg_sets[i % len(arg_sets)])
    torch.cuda.synchronize()
    times = []
    for i in range(iters):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        args = arg_sets[i % len(arg_sets)]
        start.record()
        fn(*args)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def copies_for(bytes_per_set):
    """Enough input sets that cycling through them overflows L2 twice."""
    return max(1, min(16, math.ceil(2 * L2_BYTES / max(1, bytes_per_set))))


def fp8(x):
    return x.to(torch.float8_e4m3fn)


# ---------------------------------------------------------------------------- ceilings
def measure_ceilings():
    n = 1 << 30  # 1 GiB copies: read + write counted
    src = torch.empty(n, dtype=torch.uint8, device=DEVICE)
    dst = torch.empty_like(src)
    ms = median_time_ms(lambda: dst.copy_(src), [()], iters=20)
    copy_gbs = 2 * n / ms / 1e6
    del src, dst
    m = 8192
    a = torch.randn(m, m, device=DEVICE, dtype=torch.bfloat16)
    b = torch.randn(m, m, device=DEVICE, dtype=torch.bfloat16)
    ms = median_time_ms(lambda: a @ b, [()], iters=20)
    bf16_tflops = 2 * m**3 / ms / 1e9
    fa, fb = fp8(a), fp8(b).t()
    one = torch.ones((), device=DEVICE)
    try:
        ms = median_time_ms(
            lambda: torch._scaled_mm(fa, fb, one, one, out_dtype=torch.bfloat16), [()], iters=20)
        fp8_tflops = 2 * m**3 / ms / 1e9
    except Exception as e:  # noqa: BLE001
        print(f"fp8 ceiling: torch._scaled_mm failed: {e}", file=sys.stderr)
        fp8_tflops = float("nan")
    return {"copy_gbs": copy_gbs, "bf16_tflops": bf16_tflops, "fp8_tflops": fp8_tflops}


# ------------------------------------------------------------------------ grouped GEMMs
GEMM_SHAPES = [  # (layout, groups, m per group, n, k), the Hopper GEMM issue's table
    ("contiguous", 4, 8192, 4096, 7168), ("contiguous", 4, 8192, 7168, 2048),
    ("contiguous", 8, 4096, 4096, 7168), ("contiguous", 8, 4096, 7168, 2048),
    ("masked", 1, 1024, 4096, 7168), ("masked", 1, 1024, 7168, 2048),
    ("masked", 2, 512, 4096, 7168), ("masked", 2, 512, 7168, 2048),
    ("masked", 4, 256, 4096, 7168), ("masked", 4, 256, 7168, 2048),
    ("masked", 32, 8, 4096, 7168), ("masked", 32, 8, 7168, 2048),
    ("masked", 32, 32, 4096, 7168), ("masked", 32, 64, 7168, 2048),
]


def gemm_bytes(g, m, n, k, elem):
    # DeepGEMM's accounting: m*k + k*n inputs, 2*m*n bf16 output, per group.
    return g * (m * k * elem + n * k * elem + 2 * m * n)


def gemm_inputs(g, m, n, k):
    a = torch.randn(g * m, k, device=DEVICE, dtype=torch.bfloat16)
    b = torch.randn(g, n, k, device=DEVICE, dtype=torch.bfloat16) / math.sqrt(k)
    return a, b


def peer_torch_grouped_mm(g, m, n, k):
    sets = []
    for _ in range(copies_for(gemm_bytes(g, m, n, k, 2))):
        a, b = gemm_inputs(g, m, n, k)
        offs = torch.arange(1, g + 1, device=DEVICE, dtype=torch.int32) * m
        sets.append((a, b.transpose(-2, -1), offs))
    return median_time_ms(lambda a, b, o: torch._grouped_mm(a, b, offs=o), sets)


def peer_torch_scaled_grouped_mm(g, m, n, k):
    sets = []
    for _ in range(copies_for(gemm_bytes(g, m, n, k, 1))):
        a, b = gemm_inputs(g, m, n, k)
        offs = torch.arange(1, g + 1, device=DEVICE, dtype=torch.int32) * m
        sa = torch.ones(g * m, device=DEVICE, dtype=torch.float32)
        sb = torch.ones(g, n, device=DEVICE, dtype=torch.float32)
        sets.append((fp8(a), fp8(b).transpose(-2, -1), sa, sb, offs))
    return median_time_ms(
        lambda a, b, sa, sb, o: torch._scaled_grouped_mm(a, b, sa, sb, offs=o,
                                                         out_dtype=torch.bfloat16), sets)


def deep_gemm_module():
    try:
        import deep_gemm  # noqa: PLC0415
        return deep_gemm, None
    except Exception as e:  # noqa: BLE001
        return None, f"{type(e).__name__}: {e}{dlopen_reason('deep_gemm')}"


def dlopen_reason(package):
    """The dynamic loader's own words on a package's extension, which Python's error hides."""
    import ctypes  # noqa: PLC0415
    import glob  # noqa: PLC0415
    import importlib.util  # noqa: PLC0415
    spec = importlib.util.find_spec(package)
    if not spec or not spec.submodule_search_locations:
        return ""
    for lib in glob.glob(os.path.join(spec.submodule_search_locations[0], "*.so")):
        try:
            ctypes.CDLL(lib)
        except OSError as e:
            return f" (dlopen: {e})"
    return ""


def peer_deep_gemm_fp8(dg, layout, g, m, n, k):
    sets = []
    for _ in range(copies_for(gemm_bytes(g, m, n, k, 1))):
        a, b = gemm_inputs(g, m, n, k)
        b_fp8 = fp8(b)
        b_sf = torch.ones(g, n // 128, k // 128, device=DEVICE, dtype=torch.float32)
        if layout == "contiguous":
            a_fp8 = fp8(a)
            a_sf = torch.ones(g * m, k // 128, device=DEVICE, dtype=torch.float32)
            d = torch.empty(g * m, n, device=DEVICE, dtype=torch.bfloat16)
            m_indices = torch.arange(g, device=DEVICE, dtype=torch.int32).repeat_interleave(m)
            sets.append(((a_fp8, a_sf), (b_fp8, b_sf), d, m_indices))
        else:
            a_fp8 = fp8(a.view(g, m, k))
            a_sf = torch.ones(g, m, k // 128, device=DEVICE, dtype=torch.float32)
            d = torch.empty(g, m, n, device=DEVICE, dtype=torch.bfloat16)
            masked_m = torch.full((g,), m, device=DEVICE, dtype=torch.int32)
            sets.append(((a_fp8, a_sf), (b_fp8, b_sf), d, masked_m))
    if layout == "contiguous":
        return median_time_ms(lambda a, b, d, mi: dg.m_grouped_fp8_gemm_nt_contiguous(a, b, d, mi), sets)
    return median_time_ms(lambda a, b, d, mm: dg.m_grouped_fp8_gemm_nt_masked(a, b, d, mm, m), sets)


def peer_deep_gemm_bf16(dg, layout, g, m, n, k):
    sets = []
    for _ in range(copies_for(gemm_bytes(g, m, n, k, 2))):
        a, b = gemm_inputs(g, m, n, k)
        if layout == "contiguous":
            d = torch.empty(g * m, n, device=DEVICE, dtype=torch.bfloat16)
            m_indices = torch.arange(g, device=DEVICE, dtype=torch.int32).repeat_interleave(m)
            sets.append((a, b, d, m_indices))
        else:
            d = torch.empty(g, m, n, device=DEVICE, dtype=torch.bfloat16)
            masked_m = torch.full((g,), m, device=DEVICE, dtype=torch.int32)
            sets.append((a.view(g, m, k), b, d, masked_m))
    if layout == "contiguous":
        return median_time_ms(lambda a, b, d, mi: dg.m_grouped_bf16_gemm_nt_contiguous(a, b, d, mi), sets)
    return median_time_ms(lambda a, b, d, mm: dg.m_grouped_bf16_gemm_nt_masked(a, b, d, mm, m), sets)


def blockwise_scaled_mm_variants(m, n, k):
    """Scale layouts to try for torch._scaled_mm with 1x128 x 128x128 block scales; torch versions
    differ in which they accept (the activation scales outer-dim-major, the weight scales as
    [N/128, K/128] or [K/128, N/128])."""
    sa_outer = torch.ones(k // 128, m, device=DEVICE, dtype=torch.float32).t()
    sa_row = torch.ones(m, k // 128, device=DEVICE, dtype=torch.float32)
    sb_nk = torch.ones(n // 128, k // 128, device=DEVICE, dtype=torch.float32)
    sb_kn = torch.ones(k // 128, n // 128, device=DEVICE, dtype=torch.float32)
    return [("sa outer-major, sb [N/128,K/128]", sa_outer, sb_nk),
            ("sa outer-major, sb [K/128,N/128]", sa_outer, sb_kn),
            ("sa outer-major, sb [N/128,K/128]^T", sa_outer, sb_nk.t()),
            ("sa row-major, sb [N/128,K/128]", sa_row, sb_nk)]


def peer_cublaslt_blockwise_fp8(m, n, k):
    """Dense FP8 with 1x128 activation and 128x128 weight scales through torch._scaled_mm."""
    a = fp8(torch.randn(m, k, device=DEVICE))
    b = fp8(torch.randn(n, k, device=DEVICE))
    errors = []
    for name, sa, sb in blockwise_scaled_mm_variants(m, n, k):
        try:
            torch._scaled_mm(a, b.t(), sa, sb, out_dtype=torch.bfloat16)
        except Exception as e:  # noqa: BLE001
            errors.append(f"{name}: {str(e).splitlines()[0][:60]}")
            continue
        return median_time_ms(lambda: torch._scaled_mm(a, b.t(), sa, sb, out_dtype=torch.bfloat16), [()])
    raise RuntimeError("no scale layout accepted (" + "; ".join(errors) + ")")


def timed(fn, *args):
    try:
        return fn(*args), None
    except Exception as e:  # noqa: BLE001
        return None, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"


# ---------------------------------------------------------------- plain PyTorch MoE layer
def torch_moe_layer(x, logits, w13, w2, top_k):
    """The plain-PyTorch BF16 MoE layer the CUDA backend issue names as the baseline."""
    t, h = x.shape
    e = w13.shape[0]
    inter = w2.shape[2]
    weights, ids = torch.topk(torch.softmax(logits, dim=-1), top_k, dim=-1)
    weights = weights / weights.sum(-1, keepdim=True)
    flat = ids.flatten()
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=e)
    offs = torch.cumsum(counts, 0).to(torch.int32)
    tokens = order // top_k
    xs = x[tokens]
    gate_up = torch._grouped_mm(xs, w13.transpose(-2, -1), offs=offs)
    act = torch.nn.functional.silu(gate_up[:, :inter].float()) * gate_up[:, inter:].float()
    down = torch._grouped_mm(act.to(torch.bfloat16), w2.transpose(-2, -1), offs=offs)
    out = torch.zeros(t, h, device=x.device, dtype=torch.float32)
    out.index_add_(0, tokens, down.float() * weights.flatten()[order, None])
    return out.to(torch.bfloat16)


LAYER_SHAPES = {  # name: (H, I, E, k)
    "qwen3-30b-a3b": (2048, 768, 128, 8),
}


def bench_torch_layer(name, tokens):
    h, inter, e, k = LAYER_SHAPES[name]
    w13 = torch.randn(e, 2 * inter, h, device=DEVICE, dtype=torch.bfloat16) / math.sqrt(h)
    w2 = torch.randn(e, h, inter, device=DEVICE, dtype=torch.bfloat16) / math.sqrt(inter)
    sets = []
    for _ in range(4):
        x = torch.randn(tokens, h, device=DEVICE, dtype=torch.bfloat16)
        logits = torch.randn(tokens, e, device=DEVICE, dtype=torch.float32)
        sets.append((x, logits))
    return median_time_ms(lambda x, l: torch_moe_layer(x, l, w13, w2, k), sets, iters=30)


# ----------------------------------------------------------------------------- moerun
def moerun_bench(binary, args):
    """Runs `moerun bench ... --json` for one model and T; returns its result entry (with
    `layer_ms`, per-stage `stages` when timed, and the run's `ceilings`), or (None, reason)."""
    if not binary or not os.path.exists(binary):
        return None, "moerun binary not found"
    cmd = [binary, "bench", "--json"] + args
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return None, (proc.stderr.strip().splitlines() or ["failed"])[-1][:160]
    out = json.loads(proc.stdout)
    if not out["results"]:
        skipped = out["skipped"][0]["reason"] if out["skipped"] else "no result"
        return None, f"skipped: {skipped}"[:160]
    result = out["results"][0]
    result["ceilings"] = out["ceilings"]
    return result, None


def shape_spec(layout, g, m, n, k):
    """A shape as `moerun bench-gemm --shape` takes it (masked M_max: m rounded up to 128)."""
    return f"{layout}:{g}:{m}:{n}:{k}"


def moerun_bench_gemm(binary, dtype, shapes, repeat=40, timeout=600):
    """One `moerun bench-gemm --json` process for `dtype` over all `shapes` (one set of ceilings).
    Returns ({(layout, g, m, n, k): result}, report, None) or (None, None, reason)."""
    if not binary or not os.path.exists(binary):
        return None, None, f"moerun binary not found ({binary})"
    cmd = [binary, "bench-gemm", "--json", "--dtype", dtype, "--repeat", str(repeat),
           "--shape", ",".join(shape_spec(*s) for s in shapes)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, None, f"moerun bench-gemm timed out after {timeout:.0f} s"
    # Exit code 1: every shape ran but a sampled result was wrong (each result says which).
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        return None, None, (proc.stderr.strip().splitlines() or ["failed"])[-1][:160]
    report = json.loads(proc.stdout)
    report["command"] = " ".join(cmd)
    results = {}
    for r in report["results"]:
        results[(r["layout"], r["groups"], r["m"], r["n"], r["k"])] = r
    for r in report.get("skipped", []):
        results[(r["layout"], r["groups"], r["m"], r["n"], r["k"])] = {
            "error": f"skipped: {r['reason']}"}
    return results, report, None


def peer_dtype(name):
    return "bf16" if "bf16" in name else "fp8"


def memory_bound(flops, nbytes, dtype, ceilings):
    """Below the ridge point of the measured roofline (matrix rate / copy bandwidth)."""
    peak = ceilings["bf16_tflops"] if dtype == "bf16" else ceilings["fp8_tflops"]
    if not (peak and math.isfinite(peak)):
        return False
    return flops / nbytes < peak * 1e3 / ceilings["copy_gbs"]


def attach_moerun(row, dtype, ours, error, ceilings):
    """row["moerun"][dtype]: moerun's time on the row's shape, against compare.py's ceilings, with
    the ratios peer us / moerun us for each peer of the same dtype and the best of them."""
    g, m, n, k = row["groups"], row["m"], row["n"], row["k"]
    row.setdefault("moerun", {})
    if error or ours is None or "error" in ours:
        row["moerun"][dtype] = {"error": error or (ours or {}).get("error") or "no result"}
        return
    elem = 2 if dtype == "bf16" else 1
    flops, nbytes = 2 * g * m * n * k, gemm_bytes(g, m, n, k, elem)
    us = ours["us"]
    tflops, gbs = flops / us / 1e6, nbytes / us / 1e3
    peak = ceilings["bf16_tflops"] if dtype == "bf16" else ceilings["fp8_tflops"]
    pct = 100 * max(tflops / peak if peak and math.isfinite(peak) else 0, gbs / ceilings["copy_gbs"])
    entry = {"us": us, "tflops": tflops, "gbs": gbs, "pct_ceiling": pct,
             "pct_ceiling_moerun_run": ours.get("pct_ceiling"), "variant": ours.get("variant"),
             "check_ok": ours.get("check", {}).get("ok"),
             "memory_bound": memory_bound(flops, nbytes, dtype, ceilings), "vs": {}}
    for name, p in row["peers"].items():
        if peer_dtype(name) == dtype and "us" in p:
            entry["vs"][name] = p["us"] / us
    if entry["vs"]:
        best = min((p["us"], name) for name, p in row["peers"].items() if name in entry["vs"])[1]
        entry["best_peer"], entry["vs_best"] = best, entry["vs"][best]
    row["moerun"][dtype] = entry


def rate_cell(tflops, gbs, bound):
    return f"{tflops:.0f} ({gbs:.0f} GB/s)" if bound else f"{tflops:.0f}"


def moerun_table(rows, dtype, ceilings):
    """Markdown lines: moerun's grouped GEMM of `dtype` beside every peer of that dtype."""
    peers = []
    for r in rows:
        for name in r["peers"]:
            if peer_dtype(name) == dtype and name not in peers:
                peers.append(name)
    lines = [f"\n### moerun {dtype.upper()} grouped GEMM vs peers (TFLOP/s, GB/s where memory-bound; "
             "x = peer us / moerun us, > 1: moerun faster)",
             "| layout | g x m | n | k | moerun | us | % ceiling | variant | best peer | moerun / best | "
             + " | ".join(f"moerun / {p}" for p in peers) + " |",
             "|---" * (10 + len(peers)) + "|"]
    for r in rows:
        o = r.get("moerun", {}).get(dtype)
        if o is None:
            continue
        head = f"| {r['layout']} | {r['groups']} x {r['m']} | {r['n']} | {r['k']} "
        if "error" in o:
            lines.append(head + f"| {o['error']} |" + " |" * (5 + len(peers)))
            continue
        wrong = "" if o["check_ok"] in (True, None) else " SAMPLED RESULTS WRONG"
        cells = [rate_cell(o["tflops"], o["gbs"], o["memory_bound"]) + wrong, f"{o['us']:.1f}",
                 f"{o['pct_ceiling']:.0f}", o["variant"] or "",
                 o.get("best_peer", "none timed"),
                 f"{o['vs_best']:.2f}x" if "vs_best" in o else ""]
        for p in peers:
            peer = r["peers"].get(p)
            if peer is None:
                cells.append("-")
            elif "error" in peer:
                cells.append(f"failed: {peer['error'][:60]}")
            else:
                cells.append(f"{o['vs'][p]:.2f}x ({rate_cell(peer['tflops'], peer['gbs'], o['memory_bound'])})")
        lines.append(head + "| " + " | ".join(cells) + " |")
    return lines


def self_test():
    """The tables and ratios on made-up numbers (no torch, no GPU)."""
    ceilings = {"copy_gbs": 4000.0, "bf16_tflops": 750.0, "fp8_tflops": 1300.0}
    rows = [{"layout": "contiguous", "groups": 4, "m": 8192, "n": 4096, "k": 7168, "peers": {
                "torch_grouped_mm_bf16": {"us": 3000.0, "tflops": 1.0, "gbs": 1.0},
                "torch_scaled_grouped_mm_fp8_rowwise": {"us": 2000.0, "tflops": 1.0, "gbs": 1.0},
                "cublaslt_blockwise_fp8_dense": {"us": 1500.0, "tflops": 1.0, "gbs": 1.0},
                "deep_gemm_fp8": {"error": "ImportError: undefined symbol"}}},
            {"layout": "masked", "groups": 32, "m": 8, "n": 4096, "k": 7168, "peers": {
                "torch_grouped_mm_bf16": {"us": 500.0, "tflops": 1.0, "gbs": 1.0},
                "torch_scaled_grouped_mm_fp8_rowwise": {"error": "skipped: --budget-s 1 spent"}}}]
    fake = {("contiguous", 4, 8192, 4096, 7168): {"us": 1900.0, "variant": "fp8_M128N128",
                                                  "check": {"ok": True}, "pct_ceiling": 75.0},
            ("masked", 32, 8, 4096, 7168): {"error": "skipped: needs 9.9 GB"}}
    for r in rows:
        key = (r["layout"], r["groups"], r["m"], r["n"], r["k"])
        attach_moerun(r, "fp8", fake[key], None, ceilings)
        attach_moerun(r, "bf16", None, "moerun binary not found (nowhere/moerun)", ceilings)
    o = rows[0]["moerun"]["fp8"]
    assert o["best_peer"] == "cublaslt_blockwise_fp8_dense", o
    assert abs(o["vs_best"] - 1500 / 1900) < 1e-12 and abs(o["vs"]["torch_scaled_grouped_mm_fp8_rowwise"] - 2000 / 1900) < 1e-12
    assert "deep_gemm_fp8" not in o["vs"] and "torch_grouped_mm_bf16" not in o["vs"]
    assert abs(o["tflops"] - 2 * 4 * 8192 * 4096 * 7168 / 1900e6) < 1e-9 and not o["memory_bound"]
    assert rows[1]["moerun"]["fp8"] == {"error": "skipped: needs 9.9 GB"}
    assert memory_bound(2 * 32 * 8 * 4096 * 7168, gemm_bytes(32, 8, 4096, 7168, 1), "fp8", ceilings)
    lines = moerun_table(rows, "fp8", ceilings) + moerun_table(rows, "bf16", ceilings)
    text = "\n".join(lines)
    assert "| 0.79x |" in text and "1.05x (1)" in text and "failed: ImportError" in text, text
    assert "moerun binary not found" in text and "skipped: needs 9.9 GB" in text, text
    for table in (moerun_table(rows, "fp8", ceilings), moerun_table(rows, "bf16", ceilings)):
        assert len({line.count("|") for line in table[1:]}) == 1, "\n".join(table)
    assert shape_spec("masked", 32, 8, 4096, 7168) == "masked:32:8:4096:7168"
    results, report, error = moerun_bench_gemm("/nonexistent/moerun", "fp8", [("masked", 1, 8, 256, 256)])
    assert results is None and "not found" in error
    print(text)
    print("\nself-test: ok")


# ------------------------------------------------------------------------------ report
def roofline_png(path, ceilings, points):
    try:
        import matplotlib  # noqa: PLC0415
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except Exception as e:  # noqa: BLE001
        print(f"roofline: matplotlib unavailable ({e})", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    xs = [2 ** (i / 8) for i in range(0, 13 * 8)]
    for label, peak in (("FP8", ceilings["fp8_tflops"]), ("BF16", ceilings["bf16_tflops"])):
        if math.isfinite(peak):
            ax.plot(xs, [min(peak, x * ceilings["copy_gbs"] / 1e3) for x in xs], label=f"{label} roof")
    for p in points:
        ax.scatter(p["intensity"], p["tflops"], s=14)
        ax.annotate(p["label"], (p["intensity"], p["tflops"]), fontsize=5)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("FLOP per byte")
    ax.set_ylabel("TFLOP/s")
    ax.set_title(f"{torch.cuda.get_device_name()} roofline (measured ceilings)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=150)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moerun", default="build/default/tools/moerun", help="moerun binary")
    parser.add_argument("--out", default=os.environ.get("OUT", "bench/results"), help="output dir")
    parser.add_argument("--quick", action="store_true", help="fewer shapes")
    parser.add_argument("--budget-s", type=float, default=float("inf"),
                        help="stop timing further GEMM peers after this many seconds (DeepGEMM "
                             "compiles each kernel on first use); skipped ones are listed. "
                             "moerun's GEMMs run first and their time counts too")
    parser.add_argument("--dtype", default="fp8,bf16",
                        help="GEMM dtypes to time, moerun and peers (comma list of fp8, bf16)")
    parser.add_argument("--self-test", action="store_true",
                        help="check the tables and ratios on made-up numbers (no torch, no GPU)")
    args = parser.parse_args()
    if args.self_test:
        self_test()
        return
    if torch is None:
        sys.exit("compare.py: torch is not importable (only --self-test runs without it)")
    dtypes = [d for d in args.dtype.split(",") if d]
    if not dtypes or any(d not in ("fp8", "bf16") for d in dtypes):
        sys.exit(f"compare.py: --dtype: expected a comma list of fp8, bf16, got {args.dtype!r}")
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)

    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv)}
    ceilings = measure_ceilings()
    report["ceilings"] = ceilings
    print(f"# {report['device']}, torch {torch.__version__}, {report['date']}")
    print(f"ceilings: copy {ceilings['copy_gbs']:.0f} GB/s, BF16 {ceilings['bf16_tflops']:.0f} "
          f"TFLOP/s, FP8 {ceilings['fp8_tflops']:.0f} TFLOP/s")

    dg, dg_error = deep_gemm_module()
    report["deep_gemm"] = "loaded" if dg else dg_error
    print(f"DeepGEMM: {report['deep_gemm']}")

    rows, points = [], []
    started = time.time()
    shapes = GEMM_SHAPES[:: 3] if args.quick else GEMM_SHAPES
    # moerun's grouped GEMMs: one process per dtype, every shape, before the peers (whose DeepGEMM
    # JIT may spend the budget). Its own ceilings are in report["moerun_gemm"].
    moerun_gemm = {}
    report["moerun_gemm"] = {}
    for dtype in dtypes:
        torch.cuda.empty_cache()  # leave the device memory to the subprocess
        results, ours, err = moerun_bench_gemm(args.moerun, dtype, shapes)
        moerun_gemm[dtype] = (results, err)
        report["moerun_gemm"][dtype] = (
            {"error": err} if err else
            {k: ours.get(k) for k in ("command", "device", "date", "repeat", "ceilings", "bytes_counted")})
        print(f"moerun bench-gemm {dtype}: " + (err or f"{len(ours['results'])} shapes timed "
                                                      f"({time.time() - started:.0f} s)"))
    for layout, g, m, n, k in shapes:
        flops = 2 * g * m * n * k
        row = {"layout": layout, "groups": g, "m": m, "n": n, "k": k, "peers": {}}
        candidates = {
            "torch_grouped_mm_bf16": (peer_torch_grouped_mm, g, m, n, k),
            "torch_scaled_grouped_mm_fp8_rowwise": (peer_torch_scaled_grouped_mm, g, m, n, k),
        }
        if dg:
            candidates["deep_gemm_fp8"] = (peer_deep_gemm_fp8, dg, layout, g, m, n, k)
            candidates["deep_gemm_bf16"] = (peer_deep_gemm_bf16, dg, layout, g, m, n, k)
        if g == 1 or layout == "contiguous":
            candidates["cublaslt_blockwise_fp8_dense"] = (peer_cublaslt_blockwise_fp8, g * m, n, k)
        candidates = {name: c for name, c in candidates.items() if peer_dtype(name) in dtypes}
        for name, (fn, *fargs) in candidates.items():
            if time.time() - started > args.budget_s:
                row["peers"][name] = {"error": f"skipped: --budget-s {args.budget_s:.0f} spent"}
                continue
            ms, err = timed(fn, *fargs)
            elem = 2 if "bf16" in name else 1
            if ms is None:
                row["peers"][name] = {"error": err}
                continue
            tflops = flops / ms / 1e9
            gbs = gemm_bytes(g, m, n, k, elem) / ms / 1e6
            peak = ceilings["bf16_tflops"] if elem == 2 else ceilings["fp8_tflops"]
            row["peers"][name] = {"us": ms * 1e3, "tflops": tflops, "gbs": gbs,
                                  "pct_ceiling": 100 * max(tflops / peak, gbs / ceilings["copy_gbs"])}
            points.append({"label": f"{name[:12]} {layout[0]}{g}x{m} {n}x{k}",
                           "intensity": flops / gemm_bytes(g, m, n, k, elem), "tflops": tflops})
        for dtype in dtypes:
            results, err = moerun_gemm[dtype]
            ours = results.get((layout, g, m, n, k)) if results else None
            attach_moerun(row, dtype, ours, err or (None if ours else "shape not in moerun's output"),
                          ceilings)
            o = row["moerun"][dtype]
            if "tflops" in o:
                points.append({"label": f"moerun_{dtype} {layout[0]}{g}x{m} {n}x{k}",
                               "intensity": flops / gemm_bytes(g, m, n, k, 2 if dtype == "bf16" else 1),
                               "tflops": o["tflops"]})
        rows.append(row)
        torch.cuda.empty_cache()
    report["gemm"] = rows

    layer_rows = []
    for name in LAYER_SHAPES:
        for tokens in (128, 8192):
            ms, err = timed(bench_torch_layer, name, tokens)
            ours, ours_err = moerun_bench(args.moerun, ["--model", name, "--tokens", str(tokens),
                                                        "--stage", "layer"])
            layer_rows.append({"model": name, "tokens": tokens, "torch_ms": ms, "torch_error": err,
                               "moerun": ours, "moerun_error": ours_err})
    report["layer"] = layer_rows

    print("\n| layout | g x m | n | k | peer | us | TFLOP/s | GB/s | % ceiling |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        for name, p in r["peers"].items():
            if "error" in p:
                print(f"| {r['layout']} | {r['groups']} x {r['m']} | {r['n']} | {r['k']} | {name} "
                      f"| failed: {p['error']} | | | |")
            else:
                print(f"| {r['layout']} | {r['groups']} x {r['m']} | {r['n']} | {r['k']} | {name} "
                      f"| {p['us']:.1f} | {p['tflops']:.0f} | {p['gbs']:.0f} | {p['pct_ceiling']:.0f} |")
    for dtype in dtypes:
        for line in moerun_table(rows, dtype, ceilings):
            print(line)
    print("\n| layer | T | plain PyTorch ms | moerun ms | moerun / torch |")
    print("|---|---|---|---|---|")
    for r in layer_rows:
        ours = r["moerun"]["layer_ms"] if r["moerun"] else None
        ratio = f"{r['torch_ms'] / ours:.2f}x faster" if ours and r["torch_ms"] else (r["moerun_error"] or "")
        torch_ms = f"{r['torch_ms']:.3f}" if r["torch_ms"] else r["torch_error"]
        ours_ms = f"{ours:.3f}" if ours else "-"
        print(f"| {r['model']} | {r['tokens']} | {torch_ms} | {ours_ms} | {ratio} |")

    with open(os.path.join(args.out, "compare.json"), "w") as f:
        json.dump(report, f, indent=1)
    roofline_png(os.path.join(args.out, "roofline.png"), ceilings, points)


if __name__ == "__main__":
    main()
