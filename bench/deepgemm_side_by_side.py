#!/usr/bin/env python3
"""DeepGEMM, built from source on the device, beside moerun's grouped GEMMs: same GPU, same run.

Usage (device; scripts/device-deepgemm.sh builds DeepGEMM and calls this):
  deepgemm_side_by_side.py MOERUN_BIN [--dtype=fp8,bf16] [--shapes=FILE] [--quick] [--repeat=N]

Both libraries are timed under both protocols, and each pair is compared under the same one:
  back-to-back: CUDA events around each launch, launches one after another, operands rotated over
                more than 2x L2 (`moerun bench-gemm --protocol back-to-back`); for DeepGEMM the
                events also hold its Python call (~15 us of host work), which the kernel-only
                column does not;
  kernel:       kernel time with the L2 flushed (and the GPU idle) before each launch: DeepGEMM's
                own bench_kineto, `moerun bench-gemm --protocol kernel`.
The SM clock is sampled (NVML) while each side runs. DeepGEMM's outputs are checked against a
bf16 reference (its calc_diff); moerun checks its own against fp64. Activation scales are given to
DeepGEMM already in the MN-major layout its SM90 kernel reads, so its timed call is the GEMM alone.
Contiguous rows of a group are padded to 128 with m_indices -1 for both libraries; masked M_MAX is
M rounded up to 128 for both. FLOPs count rows that hold tokens only.

Prints a table; writes $OUT/deepgemm_side_by_side.json. Exit status 1 when a run or check failed.
"""
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time

import torch
import deep_gemm
from deep_gemm.testing import bench_kineto, calc_diff
from deep_gemm.utils.math import per_block_cast_to_fp8, per_token_cast_to_fp8

# (layout, groups, rows per group, N, K). The first block is DeepSeek-V3's (gate-up N 4096 K 7168,
# down N 7168 K 2048), as in the GEMM issue; the rest are shapes moerun was not tuned on: other
# models' N and K (Qwen3-30B-A3B, Mixtral-8x7B), row counts that are not multiples of 64, many
# small groups, decode.
SHAPES = [
    ("contiguous", 4, 8192, 4096, 7168), ("contiguous", 4, 8192, 7168, 2048),
    ("contiguous", 8, 4096, 4096, 7168), ("contiguous", 8, 4096, 7168, 2048),
    ("masked", 1, 1024, 4096, 7168), ("masked", 1, 1024, 7168, 2048),
    ("masked", 2, 512, 4096, 7168), ("masked", 2, 512, 7168, 2048),
    ("masked", 4, 256, 4096, 7168), ("masked", 4, 256, 7168, 2048),
    ("masked", 32, 8, 4096, 7168), ("masked", 32, 8, 7168, 2048),
    ("masked", 32, 32, 4096, 7168), ("masked", 32, 64, 7168, 2048),
    ("contiguous", 16, 2000, 1536, 2048), ("contiguous", 16, 2000, 2048, 768),
    ("contiguous", 2, 6000, 28672, 4096), ("contiguous", 2, 6000, 4096, 14336),
    ("contiguous", 64, 200, 4096, 7168), ("masked", 8, 300, 1536, 2048),
    ("masked", 16, 100, 4096, 7168), ("masked", 128, 16, 1536, 2048),
]
QUICK = [SHAPES[0], SHAPES[3], SHAPES[8], SHAPES[10]]
L2_BYTES = 60 * 2**20


def padded(m):
    return (m + 127) // 128 * 128


class ClockSampler:
    """Median SM clock (MHz) over the samples taken between start() and stop()."""

    def __init__(self):
        try:
            import pynvml
            pynvml.nvmlInit()
            bus = torch.cuda.get_device_properties(0).pci_bus_id if hasattr(
                torch.cuda.get_device_properties(0), "pci_bus_id") else None
            self.handle = (pynvml.nvmlDeviceGetHandleByPciBusId(bus) if bus
                           else pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device()))
            self.nvml = pynvml
        except Exception as e:  # noqa: BLE001 - the clock is optional, its absence reported
            self.nvml, self.reason = None, f"{type(e).__name__}: {e}"
        self.samples, self.running = [], False

    def start(self):
        self.samples, self.running = [], self.nvml is not None
        if self.running:
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()

    def _run(self):
        while self.running:
            self.samples.append(self.nvml.nvmlDeviceGetClockInfo(self.handle, self.nvml.NVML_CLOCK_SM))
            time.sleep(0.001)

    def stop(self):
        if self.running:
            self.running = False
            self.thread.join()
        return statistics.median(self.samples) if self.samples else float("nan")


def inputs(layout, g, m, n, k, fp8):
    rows = padded(m)
    a = torch.randn(g * rows, k, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(g, n, k, device="cuda", dtype=torch.bfloat16)
    ref = None
    if g * m * n * k <= 2**37:
        ref = torch.einsum("gmk,gnk->gmn", a.view(g, rows, k)[:, :m], b)
    if fp8:
        a_fp8, a_sf = per_token_cast_to_fp8(a, use_ue8m0=False)
        b_fp8 = torch.empty_like(b, dtype=torch.float8_e4m3fn)
        b_sf = torch.empty(g, n // 128, k // 128, device="cuda", dtype=torch.float)
        for i in range(g):
            b_fp8[i], b_sf[i] = per_block_cast_to_fp8(b[i], use_ue8m0=False)
        if layout == "masked":
            a_fp8, a_sf = a_fp8.view(g, rows, k), a_sf.view(g, rows, k // 128)
        A, B = (a_fp8, deep_gemm.get_mn_major_tma_aligned_tensor(a_sf)), (b_fp8, b_sf)
    else:
        A, B = (a.view(g, rows, k) if layout == "masked" else a), b
    d = torch.empty(*((g, rows, n) if layout == "masked" else (g * rows, n)), device="cuda",
                    dtype=torch.bfloat16)
    if layout == "contiguous":
        meta = torch.full((g, rows), -1, device="cuda", dtype=torch.int32)
        meta[:, :m] = torch.arange(g, device="cuda", dtype=torch.int32)[:, None]
        meta = meta.view(-1)
    else:
        meta = torch.full((g,), m, device="cuda", dtype=torch.int32)
    return A, B, d, meta, ref


def deepgemm_call(layout, fp8, m):
    if fp8 and layout == "contiguous":
        return lambda A, B, d, meta: deep_gemm.m_grouped_fp8_gemm_nt_contiguous(
            A, B, d, meta, disable_ue8m0_cast=True)
    if fp8:
        return lambda A, B, d, meta: deep_gemm.m_grouped_fp8_gemm_nt_masked(
            A, B, d, meta, m, disable_ue8m0_cast=True)
    if layout == "contiguous":
        return lambda A, B, d, meta: deep_gemm.m_grouped_bf16_gemm_nt_contiguous(A, B, d, meta)
    return lambda A, B, d, meta: deep_gemm.m_grouped_bf16_gemm_nt_masked(A, B, d, meta, m)


def events_median_us(fn, sets, iters):
    for i in range(5):
        fn(*sets[i % len(sets)])
    torch.cuda.synchronize()
    times = []
    for i in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn(*sets[i % len(sets)])
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) * 1e3)
    return statistics.median(times)


def moerun_runs(binary, dtype, shapes, protocol, repeat):
    spec = ",".join(f"{l}:{g}:{m}:{n}:{k}" for l, g, m, n, k in shapes)
    cmd = [binary, "bench-gemm", "--json", "--skip-ceilings", "--dtype", dtype, "--protocol",
           protocol, "--repeat", str(repeat), "--shape", spec]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        return {}, f"rc {p.returncode}: {p.stderr[-600:]}"
    return {r["shape"]: r for r in json.loads(p.stdout).get("results", [])}, None


def main():
    binary = sys.argv[1]
    dtypes, shapes, repeat = ["fp8", "bf16"], SHAPES, 40
    for arg in sys.argv[2:]:
        if arg.startswith("--dtype="):
            dtypes = arg.split("=", 1)[1].split(",")
        elif arg == "--quick":
            shapes = QUICK
        elif arg.startswith("--repeat="):
            repeat = int(arg.split("=", 1)[1])
        elif arg.startswith("--shapes="):  # a file: one LAYOUT:G:M:N:K a line, # comments
            with open(arg.split("=", 1)[1]) as f:
                shapes = [tuple([p[0]] + [int(x) for x in p[1:]])
                          for p in (line.strip().split(":") for line in f)
                          if p[0] and not p[0].startswith("#")]
        else:
            sys.exit(f"unknown option {arg}")
    clock = ClockSampler()
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "deep_gemm": deep_gemm.__version__, "moerun": binary,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "repeat": repeat,
              "rows": []}
    if clock.nvml is None:
        report["sm_clock_unknown"] = clock.reason
    print(f"device {report['device']}, torch {report['torch']}, deep_gemm {report['deep_gemm']}, "
          f"{report['date']}")
    failed = False
    for dtype in dtypes:
        fp8 = dtype == "fp8"
        moerun = {}
        for protocol in ("back-to-back", "kernel"):
            moerun[protocol], err = moerun_runs(binary, dtype, shapes, protocol, repeat)
            if err:
                print(f"moerun bench-gemm {dtype} --protocol {protocol} failed: {err}")
                failed = True
        print(f"\n{dtype}: TFLOP/s (SM MHz) | back-to-back: DeepGEMM events, moerun, ratio | "
              f"kernel-only: DeepGEMM kineto, moerun, ratio | DeepGEMM diff | moerun variant")
        for layout, g, m, n, k in shapes:
            flops = 2 * g * m * n * k
            row = {"dtype": dtype, "layout": layout, "g": g, "m": m, "n": n, "k": k, "flops": flops}
            try:
                A, B, d, meta, ref = inputs(layout, g, m, n, k, fp8)
                fn = deepgemm_call(layout, fp8, m)
                fn(A, B, d, meta)
                torch.cuda.synchronize()
                got = d[:, :m] if layout == "masked" else d.view(g, padded(m), n)[:, :m]
                row["dg_diff"] = float(calc_diff(got, ref)) if ref is not None else float("nan")
                per_set = (g * m * k + g * n * k) * (1 if fp8 else 2) + 2 * g * m * n
                count = max(1, min(8, math.ceil(2 * L2_BYTES / per_set)))
                sets = [(A, B, d, meta)] + [inputs(layout, g, m, n, k, fp8)[:4]
                                            for _ in range(count - 1)]
                clock.start()
                row["dg_events_us"] = events_median_us(fn, sets, repeat)
                row["dg_events_mhz"] = clock.stop()
                clock.start()
                row["dg_kineto_us"] = bench_kineto(lambda: fn(A, B, d, meta), "gemm",
                                                   suppress_kineto_output=True) * 1e6
                row["dg_kineto_mhz"] = clock.stop()
                del sets, A, B, d, meta, ref
            except Exception as e:  # noqa: BLE001 - reported, and the run fails
                row["dg_error"] = f"{type(e).__name__}: {str(e)[:300]}"
                failed = True
            key = f"{layout}:{g}:{m}:{n}:{k}"
            for protocol, name in (("back-to-back", "b2b"), ("kernel", "kernel")):
                r = moerun[protocol].get(key)
                if r:
                    row[f"moerun_{name}_us"] = r["us"]
                    row[f"moerun_{name}_mhz"] = r.get("sm_clock_mhz", float("nan"))
                    row["moerun_variant"] = r.get("variant")
                    failed |= not r.get("check", {}).get("ok", True)
            report["rows"].append(row)
            torch.cuda.empty_cache()
            tf = lambda us: flops / us / 1e6 if us else float("nan")  # noqa: E731
            if "dg_error" in row:
                print(f"  {key}: DeepGEMM error {row['dg_error']}")
                continue
            cells = []
            for dg, mo in (("dg_events", "moerun_b2b"), ("dg_kineto", "moerun_kernel")):
                dg_us, mo_us = row.get(f"{dg}_us"), row.get(f"{mo}_us")
                ratio = dg_us / mo_us if dg_us and mo_us else float("nan")
                row[f"ratio_{mo.split('_')[1]}"] = ratio
                cells.append(f"{tf(dg_us):6.0f} ({row.get(dg + '_mhz', float('nan')):4.0f}) "
                             f"{tf(mo_us):6.0f} ({row.get(mo + '_mhz', float('nan')):4.0f}) "
                             f"{ratio:5.2f}x")
            print(f"  {layout:10s} {g:3d}x{m:<5d} {n:5d} {k:5d} | {cells[0]} | {cells[1]} | "
                  f"{row['dg_diff']:.1e} | {row.get('moerun_variant')}")
    out = os.environ.get("OUT", ".")
    with open(os.path.join(out, "deepgemm_side_by_side.json"), "w") as f:
        json.dump(report, f, indent=1)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
