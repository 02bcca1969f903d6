#!/usr/bin/env python3
"""moerun against transformers' own MoE blocks, on checkpoints transformers writes itself.

For Qwen3-MoE, Mixtral and DeepSeek-V3 this script builds a tiny random model with transformers,
saves it with save_pretrained (the per-expert layout; with transformers 5 also the fused layout,
save_original_format=False), runs one MoE layer's own forward (the sparse MoE block, DeepSeek's
shared experts included) on random hidden states, and compares `moerun run --model DIR` on the
same checkpoint and inputs. The configs keep transformers' defaults wherever the model stays tiny,
so config.json omits those keys (save_pretrained writes only the values that differ from the
defaults) and moerun must fill them in as transformers does.

DeepSeek-V3 is also written as an FP8 checkpoint (F8_E4M3 experts with weight_scale_inv and a
quantization_config), made here from the same model: each 128x128 block of an expert matrix is
quantized with a power-of-two scale, and the model's weights are replaced by the dequantized
values before anything is saved, so that the BF16 and FP8 checkpoints hold the same weights. The
FP8 run is compared with the float forward (tolerance 8e-2: moerun's FP8 recipe also quantizes the
activations, about 4% on random data) and, where transformers can run the FP8 checkpoint itself
(its fine-grained FP8 path needs a GPU and triton), with that forward (3e-2).

Needs torch, transformers and safetensors. No network. Exit code 0 when every comparison passes.
Usage: tests/transformers/check_against_transformers.py --moerun build/tools/moerun [--work DIR]
       [--backends cpu,cuda] [--tokens 37] [--seed 0]
"""

import argparse
import copy
import inspect
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import torch
import transformers
from safetensors.torch import load_file, save_file

BF16_TOLERANCE = 1e-2
FP8_VS_FLOAT_TOLERANCE = 8e-2
FP8_VS_FP8_TOLERANCE = 3e-2


def set_attrs(config, **values):
    """Sets config attributes after construction: attribute_map aliases (Qwen3's num_experts /
    num_local_experts) resolve the same way in transformers 4 and 5."""
    for key, value in values.items():
        setattr(config, key, value)
    return config


def tiny_configs():
    """(name, config, MoE layer) per family; keys left at transformers' defaults on purpose."""
    from transformers import DeepseekV3Config, MixtralConfig, Qwen3MoeConfig

    qwen = Qwen3MoeConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                          moe_intermediate_size=128, vocab_size=64)
    set_attrs(qwen, num_experts=16)  # num_experts_per_tok 8, norm_topk_prob False: defaults
    mixtral = MixtralConfig(hidden_size=256, intermediate_size=384, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                            vocab_size=64)  # 8 experts, top-2: defaults
    deepseek = DeepseekV3Config(hidden_size=256, intermediate_size=512, moe_intermediate_size=128,
                                num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                                n_routed_experts=16, kv_lora_rank=64, q_lora_rank=96,
                                qk_rope_head_dim=16, v_head_dim=32, qk_nope_head_dim=32,
                                vocab_size=64)
    # n_group 8, topk_group 4, top-8, routed_scaling_factor 2.5, norm_topk_prob, one shared expert
    # and first_k_dense_replace 3 (layer 3 is the first MoE layer): all transformers' defaults.
    return [("qwen3_moe", qwen, 1), ("mixtral", mixtral, 0), ("deepseek_v3", deepseek, 3)]


def fp8_blocks(weight):
    """128x128 block quantization of the last two dims with power-of-two scales: returns
    (e4m3 codes, weight_scale_inv f32, dequantized weight); code x scale is exact in bf16."""
    *lead, n, k = weight.shape
    w = weight.float().reshape(-1, n // 128, 128, k // 128, 128)
    amax = w.abs().amax(dim=(2, 4), keepdim=True).clamp(min=1e-12)
    scale = torch.exp2(torch.ceil(torch.log2(amax / 448.0)))
    codes = (w / scale).to(torch.float8_e4m3fn)
    dequant = (codes.float() * scale).reshape(weight.shape)
    return (codes.reshape(weight.shape), scale.reshape(*lead, n // 128, k // 128).contiguous(),
            dequant)


def is_expert_matrix(name):
    return ".experts." in name or ".shared_experts." in name


def quantize_model_experts(model):
    """Replaces every expert matrix (routed and shared) by its FP8 round trip, in place."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if is_expert_matrix(name) and p.dim() >= 2:
                p.copy_(fp8_blocks(p.data)[2].to(p.dtype))


def write_fp8_copy(src, dst):
    """The checkpoint at `src` with its expert matrices as F8_E4M3 + weight_scale_inv."""
    os.makedirs(dst, exist_ok=True)
    for f in os.listdir(src):
        if not f.endswith(".safetensors"):
            shutil.copy(os.path.join(src, f), dst)
    index = {}
    for f in sorted(os.listdir(src)):
        if not f.endswith(".safetensors"):
            continue
        tensors = load_file(os.path.join(src, f))
        out = {}
        for name, t in tensors.items():
            if is_expert_matrix(name) and t.dim() >= 2:
                codes, scale, _ = fp8_blocks(t)
                out[name] = codes.contiguous()
                out[name + "_scale_inv"] = scale
            else:
                out[name] = t.contiguous()
        save_file(out, os.path.join(dst, f), metadata={"format": "pt"})
        index.update({name: f for name in out})
    if os.path.exists(os.path.join(dst, "model.safetensors.index.json")):
        with open(os.path.join(dst, "model.safetensors.index.json"), "w") as fh:
            json.dump({"metadata": {}, "weight_map": index}, fh)
    with open(os.path.join(dst, "config.json")) as fh:
        config = json.load(fh)
    config["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3",
                                     "activation_scheme": "dynamic",
                                     "weight_block_size": [128, 128]}
    with open(os.path.join(dst, "config.json"), "w") as fh:
        json.dump(config, fh, indent=2)


def moe_block(model, layer):
    """The layer's MoE block: `mlp`, or `block_sparse_moe` (Mixtral before transformers 5)."""
    decoder = model.model.layers[layer]
    return decoder.mlp if hasattr(decoder, "mlp") else decoder.block_sparse_moe


def block_forward(block, x):
    """transformers' own MoE block forward (the router included), float32."""
    with torch.no_grad():
        y = block(x.unsqueeze(0))
    if isinstance(y, tuple):  # transformers 4 returns (hidden_states, router_logits)
        y = y[0]
    return y.reshape(x.shape).float()


def relative_error(actual, reference):
    d = (actual.double() - reference.double()).norm()
    r = reference.double().norm()
    return float(d / r) if r > 0 else float(d)


def run_moerun(binary, model_dir, layer, x_path, y_path, backend):
    command = [binary, "run", "--model", model_dir, "--layer", str(layer), "--input", x_path,
               "--output", y_path, "--backend", backend, "--reference", "full", "--json"]
    env = dict(os.environ, NCCL_NVLS_ENABLE="0")
    r = subprocess.run(command, capture_output=True, text=True, env=env)
    if r.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(command)}: rc {r.returncode}\n{r.stderr}")
    report = json.loads(r.stdout)
    return load_file(y_path)["hidden_states"].float(), report


def save_variants(model, directory):
    """(layout name, dir) for each layout this transformers writes."""
    variants = []
    per_expert = os.path.join(directory, "per-expert")
    model.save_pretrained(per_expert)
    variants.append(("per-expert", per_expert))
    if "save_original_format" in inspect.signature(model.save_pretrained).parameters:
        fused = os.path.join(directory, "fused")
        model.save_pretrained(fused, save_original_format=False)
        variants.append(("fused", fused))
    return variants


def transformers_fp8_forward(model_dir, layer, x):
    """transformers' own FP8 forward of the block, or the reason it cannot run here."""
    if not torch.cuda.is_available():
        return None, "no CUDA device for transformers' fine-grained FP8"
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, device_map="cuda")
        block = moe_block(model, layer)
        with torch.no_grad():
            y = block(x.to("cuda", torch.bfloat16).unsqueeze(0))
        if isinstance(y, tuple):
            y = y[0]
        return y.reshape(x.shape).float().cpu(), None
    except Exception as e:  # noqa: BLE001 - any failure means "not available here", reported
        return None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--moerun", required=True, help="the moerun binary")
    parser.add_argument("--work", help="where to write the checkpoints (default: a temp dir)")
    parser.add_argument("--backends", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tokens", type=int, default=37)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    work = args.work or tempfile.mkdtemp(prefix="moerun_transformers_")
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, work dir {work}")
    failures = 0
    results = []
    for family, config, layer in tiny_configs():
        model = transformers.AutoModelForCausalLM.from_config(config).to(torch.bfloat16).eval()
        block = moe_block(model, layer)
        with torch.no_grad():
            # Whatever the version's initializer did (or left uninitialized): every matrix of the
            # block random, the correction bias (zeros at init) too, so that it matters.
            for p in block.parameters():
                if p.dim() >= 2:
                    p.copy_((0.02 * torch.randn(p.shape)).to(p.dtype))
            gate = block.gate
            if hasattr(gate, "e_score_correction_bias"):
                bias = gate.e_score_correction_bias
                bias.copy_((0.05 * torch.randn(bias.shape)).to(bias.dtype))
        fp8 = family == "deepseek_v3"
        if fp8:
            quantize_model_experts(model)
        directory = os.path.join(work, family)
        x = torch.randn(args.tokens, config.hidden_size).to(torch.bfloat16)
        x_path = os.path.join(work, f"{family}_x.safetensors")
        os.makedirs(work, exist_ok=True)
        save_file({"x": x.contiguous()}, x_path)
        variants = [(name, path, BF16_TOLERANCE) for name, path in
                    save_variants(model, directory)]
        # A float32 copy: the saved checkpoints keep the model's bf16.
        reference = block_forward(copy.deepcopy(block).float(), x.float())
        if fp8:
            for name, path, _ in list(variants):
                write_fp8_copy(path, path + "-fp8")
                variants.append((name + " fp8", path + "-fp8", FP8_VS_FLOAT_TOLERANCE))
        for name, path, tolerance in variants:
            for backend in args.backends.split(","):
                y_path = os.path.join(path, f"y_{backend}.safetensors")
                try:
                    y, report = run_moerun(args.moerun, path, layer, x_path, y_path, backend)
                except Exception as e:  # noqa: BLE001
                    failures += 1
                    print(f"FAIL {family} {name} {backend}: {e}")
                    continue
                error = relative_error(y, reference)
                ok = error <= tolerance and math.isfinite(error)
                failures += not ok
                results.append({"family": family, "layout": name, "backend": report["backend"],
                                "error_vs_transformers": error, "tolerance": tolerance,
                                "moerun_error_vs_fp64": report.get("relative_error"),
                                "config_defaults": report.get("config_defaults"), "ok": ok})
                print(f"{'ok  ' if ok else 'FAIL'} {family:12} {name:16} {report['backend']:5} "
                      f"vs transformers {error:.3e} (tolerance {tolerance:.0e}); "
                      f"defaults taken: {', '.join(report.get('config_defaults', [])) or 'none'}")
            if name.endswith("fp8"):
                theirs, why = transformers_fp8_forward(path, layer, x)
                if theirs is None:
                    print(f"     {family:12} {name:16} transformers' own FP8 forward: skipped "
                          f"({why})")
                    continue
                mine = load_file(os.path.join(path, f"y_{args.backends.split(',')[0]}"
                                                    ".safetensors"))["hidden_states"].float()
                error = relative_error(mine, theirs)
                ok = error <= FP8_VS_FP8_TOLERANCE
                failures += not ok
                print(f"{'ok  ' if ok else 'FAIL'} {family:12} {name:16} vs transformers' FP8 "
                      f"forward {error:.3e} (tolerance {FP8_VS_FP8_TOLERANCE:.0e})")
    with open(os.path.join(work, "results.json"), "w") as fh:
        json.dump(results, fh, indent=2)
    print(f"{len(results)} comparisons, {failures} failed; results in {work}/results.json")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
