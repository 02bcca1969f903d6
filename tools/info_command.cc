#include "info_command.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/parallel.h"
#include "io/hf_loader.h"
#include "moerun/errors.h"

namespace moerun::tools {

void add_info_command(CLI::App& app, InfoArgs& args) {
  CLI::App* info = app.add_subcommand(
      "info",
      "List the layers of a Hugging Face MoE checkpoint (DeepSeek-V3, Qwen3-MoE, Mixtral): which "
      "are MoE and which dense, and each MoE layer's routed experts: shapes, dtypes and bytes, "
      "every tensor checked against config.json (and DeepSeek-V3's shared experts).");
  info->add_option("--model", args.model, "Checkpoint directory (config.json + safetensors)")
      ->required()
      ->check(CLI::ExistingDirectory);
  info->add_option("--layer", args.layer, "Only this decoder layer")->check(CLI::NonNegativeNumber);
  info->add_flag("--bench-load", args.bench_load,
                 "Time loading one MoE layer (--layer, default the first) from a warm page "
                 "cache, and reading every loaded byte once; report GB/s");
  info->add_option("--repeat", args.repeat, "Timed loads for --bench-load; the median is reported")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  info->add_flag("--json", args.json, "Print one JSON object instead of text");
}

namespace {

std::string human_bytes(std::uint64_t bytes) {
  char text[32];
  const auto b = static_cast<double>(bytes);
  if (b >= 1e9) {
    std::snprintf(text, sizeof(text), "%.2f GB", b * 1e-9);
  } else if (b >= 1e6) {
    std::snprintf(text, sizeof(text), "%.2f MB", b * 1e-6);
  } else {
    std::snprintf(text, sizeof(text), "%.1f kB", b * 1e-3);
  }
  return text;
}

// Reads every byte of `view` once (8 at a time, over all cores): the cost of first use of
// mapped weights, which a zero-copy load defers rather than avoids.
std::uint64_t touch(const TensorView& view) {
  if (!view.defined()) return 0;
  const auto* bytes = static_cast<const unsigned char*>(view.data());
  const std::int64_t words = static_cast<std::int64_t>(view.nbytes() / 8);
  std::atomic<std::uint64_t> sum{0};
  detail::parallel_for(words, 1 << 16, [&](std::int64_t begin, std::int64_t end) {
    std::uint64_t local = 0;
    for (std::int64_t i = begin; i < end; ++i) {
      std::uint64_t w;
      std::memcpy(&w, bytes + i * 8, 8);
      local += w;
    }
    sum += local;
  });
  return sum.load();
}

struct BenchResult {
  int layer = 0;
  std::uint64_t bytes = 0;  // the layer's tensors in the checkpoint
  double load_s = 0.0, read_s = 0.0;
  io::LoadStats stats;
};

BenchResult bench_load(const io::HfCheckpoint& checkpoint, int layer, int repeat) {
  BenchResult r;
  r.layer = layer;
  std::vector<double> load_s, read_s;
  volatile std::uint64_t sink = 0;
  // The first load warms the page cache (every byte is read); it is not timed.
  for (int i = 0; i <= repeat; ++i) {
    const io::LoadedMoeLayer loaded = io::load_moe_layer(checkpoint, layer);
    const auto start = std::chrono::steady_clock::now();
    const MoeWeights w = loaded.weights();
    sink = sink + touch(w.w13) + touch(w.w13_scale) + touch(w.w2) + touch(w.w2_scale);
    const double read =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (i == 0) {
      r.bytes = loaded.info.total_bytes();
      continue;
    }
    load_s.push_back(loaded.stats.seconds);
    read_s.push_back(read);
    r.stats = loaded.stats;
  }
  std::sort(load_s.begin(), load_s.end());
  std::sort(read_s.begin(), read_s.end());
  r.load_s = load_s[load_s.size() / 2];
  r.read_s = read_s[read_s.size() / 2];
  return r;
}

double gb_per_s(std::uint64_t bytes, double seconds) {
  return seconds > 0 ? static_cast<double>(bytes) / seconds * 1e-9 : 0.0;
}

}  // namespace

int info_command(const InfoArgs& args) {
  const io::HfCheckpoint checkpoint(args.model);
  const io::HfConfig& c = checkpoint.config();
  std::vector<int> layers;
  if (args.layer >= 0) {
    check_arg(args.layer < c.num_layers, "--layer",
              "< num_hidden_layers (" + std::to_string(c.num_layers) + ")", args.layer);
    layers.push_back(args.layer);
  } else {
    for (int l = 0; l < c.num_layers; ++l) layers.push_back(l);
  }
  const std::vector<std::string> files = checkpoint.store().files();
  const std::string shared =
      c.n_shared_experts > 0
          ? std::to_string(c.n_shared_experts) +
                " shared expert(s) per MoE layer: one dense MLP of intermediate size " +
                std::to_string(c.shared_intermediate_size()) +
                " on every token, computed and added to the routed output"
          : "none";

  nlohmann::json j;
  j["model"] = args.model;
  j["model_type"] = io::model_type_name(c.family);
  j["num_layers"] = c.num_layers;
  j["moe_config"] = describe(c.moe_config());
  j["hidden_size"] = c.hidden_size;
  j["moe_intermediate_size"] = c.moe_intermediate_size;
  j["num_experts"] = c.num_experts;
  j["top_k"] = c.routing.top_k;
  j["fp8_block_scaled"] = c.fp8_block_scaled;
  j["n_shared_experts"] = c.n_shared_experts;
  j["config_defaults"] = c.defaults;
  j["sharded"] = checkpoint.store().sharded();
  j["files"] = files;
  // Every MoE layer's tensors are checked against these shapes (from config.json) below.
  const std::int64_t e = c.num_experts, h = c.hidden_size, inter = c.moe_intermediate_size;
  const auto blocks = [](std::int64_t n) { return (n + kQuantGroup - 1) / kQuantGroup; };
  j["shapes"] = {{"router", {e, h}}, {"gate_up", {inter, h}}, {"down", {h, inter}}};
  if (c.family == io::ModelFamily::kDeepseekV3) j["shapes"]["correction_bias"] = {e};
  if (c.fp8_block_scaled) {
    j["shapes"]["gate_up_scale_inv"] = {blocks(inter), blocks(h)};
    j["shapes"]["down_scale_inv"] = {blocks(h), blocks(inter)};
  }
  if (!args.json) {
    std::printf("moerun info %s\n", args.model.c_str());
    std::printf("  model_type  %s\n", std::string(io::model_type_name(c.family)).c_str());
    std::printf("  moe         %s\n", describe(c.moe_config()).c_str());
    std::printf(
        "  shapes      router [%lld, %lld]; per expert gate, up [%lld, %lld], down [%lld, %lld]",
        static_cast<long long>(e), static_cast<long long>(h), static_cast<long long>(inter),
        static_cast<long long>(h), static_cast<long long>(h), static_cast<long long>(inter));
    if (c.fp8_block_scaled) {
      std::printf("; weight_scale_inv [%lld, %lld], [%lld, %lld]",
                  static_cast<long long>(blocks(inter)), static_cast<long long>(blocks(h)),
                  static_cast<long long>(blocks(h)), static_cast<long long>(blocks(inter)));
    }
    std::printf("\n");
    std::printf("  shared      %s\n", shared.c_str());
    std::printf("  files       %zu%s\n", files.size(),
                checkpoint.store().sharded() ? " shards (model.safetensors.index.json)" : "");
    std::printf("  %-6s %-6s %-9s %-8s %-8s %-8s %s\n", "layer", "kind", "experts", "scales",
                "router", "bias", "bytes (experts + router)");
  }
  std::uint64_t total = 0;
  for (int layer : layers) {
    const std::string reason = c.dense_reason(layer);
    if (!reason.empty()) {
      j["layers"].push_back({{"layer", layer}, {"kind", "dense"}, {"reason", reason}});
      if (!args.json) std::printf("  %-6d %-6s (%s)\n", layer, "dense", reason.c_str());
      continue;
    }
    const io::MoeLayerInfo info = checkpoint.inspect_moe_layer(layer);
    total += info.total_bytes();
    const std::string expert_dtype(io::st_dtype_name(info.expert_dtype));
    const std::string router_dtype(io::st_dtype_name(info.router_dtype));
    const std::string bias_dtype(info.bias_dtype ? io::st_dtype_name(*info.bias_dtype) : "-");
    nlohmann::json l = {{"layer", layer},
                        {"kind", "moe"},
                        {"experts_layout", io::expert_layout_name(info.layout)},
                        {"expert_dtype", expert_dtype},
                        {"weight_scale_inv", info.fp8_scales},
                        {"router_dtype", router_dtype},
                        {"shared_experts", info.shared_experts},
                        {"expert_bytes", info.expert_bytes},
                        {"scale_bytes", info.scale_bytes},
                        {"router_bytes", info.router_bytes},
                        {"bytes", info.total_bytes()},
                        {"files", info.files}};
    if (info.bias_dtype) l["bias_dtype"] = bias_dtype;
    j["layers"].push_back(l);
    if (!args.json) {
      std::printf("  %-6d %-6s %-9s %-8s %-8s %-8s %s (%s)\n", layer, "moe", expert_dtype.c_str(),
                  info.fp8_scales ? "F32" : "-", router_dtype.c_str(), bias_dtype.c_str(),
                  human_bytes(info.total_bytes()).c_str(),
                  std::string(io::expert_layout_name(info.layout)).c_str());
    }
  }
  j["moe_bytes"] = total;
  if (!args.json)
    std::printf("  total       %s in the MoE layers listed\n", human_bytes(total).c_str());

  if (args.bench_load) {
    int layer = args.layer;
    if (layer < 0) {
      const std::vector<int> moe = c.moe_layers();
      if (moe.empty()) throw Error(c.source + ": no MoE layer to load");
      layer = moe.front();
    }
    checkpoint.require_moe_layer(layer);
    const BenchResult r = bench_load(checkpoint, layer, args.repeat);
    const double load_gbs = gb_per_s(r.bytes, r.load_s);
    const double total_gbs = gb_per_s(r.bytes, r.load_s + r.read_s);
    j["bench_load"] = {{"layer", r.layer},
                       {"bytes", r.bytes},
                       {"load_s", r.load_s},
                       {"read_s", r.read_s},
                       {"load_gb_per_s", load_gbs},
                       {"load_and_read_gb_per_s", total_gbs},
                       {"mapped_bytes", r.stats.mapped_bytes},
                       {"copied_bytes", r.stats.copied_bytes},
                       {"converted_bytes", r.stats.converted_bytes},
                       {"threads", detail::cpu_threads()}};
    if (!args.json) {
      std::printf("  bench-load  layer %d, %s, warm page cache, median of %d, %d threads\n",
                  r.layer, human_bytes(r.bytes).c_str(), args.repeat, detail::cpu_threads());
      std::printf("    load           %8.2f GB/s (%.3f ms: %s mapped, %s copied, %s converted)\n",
                  load_gbs, r.load_s * 1e3, human_bytes(r.stats.mapped_bytes).c_str(),
                  human_bytes(r.stats.copied_bytes).c_str(),
                  human_bytes(r.stats.converted_bytes).c_str());
      std::printf("    load + read    %8.2f GB/s (every loaded byte read once: %.3f ms more)\n",
                  total_gbs, r.read_s * 1e3);
    }
  }
  if (args.json) std::printf("%s\n", j.dump(2).c_str());
  return 0;
}

}  // namespace moerun::tools
