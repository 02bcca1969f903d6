#include "checkpoint_run.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint_runner.h"
#include "cli_options.h"
#include "core/synthetic.h"
#include "core/tolerances.h"
#include "io/hf_loader.h"
#include "io/hidden_states.h"
#include "io/output_file.h"
#include "io/safetensors.h"
#include "layer_runner.h"
#include "layer_values.h"
#include "moerun/errors.h"
#include "moerun/layer.h"
#include "progress.h"
#include "reference_check.h"
#include "remove_on_signal.h"
#include "run_command.h"

namespace moerun::tools {

bool CheckpointRunArgs::any_set() const {
  return layer >= 0 || !input.empty() || !output.empty() || ep_rank >= 0 || save_routing ||
         quantize != "none" || check;
}

bool is_checkpoint_dir(const std::string& model) {
  std::error_code ec;
  return std::filesystem::is_regular_file(std::filesystem::path(model) / "config.json", ec);
}

CLI::Validator model_validator() {
  return CLI::Validator(
      [](std::string& model) -> std::string {
        if (is_checkpoint_dir(model)) return "";
        const auto presets = model_preset_names();
        if (std::find(presets.begin(), presets.end(), model) != presets.end()) return "";
        std::string names;
        for (const auto& n : presets) names += (names.empty() ? "" : ", ") + n;
        return "--model " + model + ": neither a preset (" + names +
               ") nor a directory with a config.json";
      },
      "PRESET|DIR");
}

void add_checkpoint_run_options(CLI::App& run, CheckpointRunArgs& args) {
  const char* group = "Checkpoint (--model DIR)";
  run.add_option("--layer", args.layer, "Decoder layer to run (default: the first MoE layer)")
      ->check(CLI::NonNegativeNumber)
      ->group(group);
  run.add_option("--input", args.input,
                 "safetensors file with one [T, H] tensor (BF16, F16 or F32), any name; default: "
                 "--tokens random rows from --seed")
      ->check(CLI::ExistingFile)
      ->group(group);
  run.add_option("--output", args.output,
                 "safetensors file to write: hidden_states [T, H] (bf16; f32 with --ep-rank)")
      ->group(group);
  run.add_option("--ep-rank", args.ep_rank,
                 "Load and run only this rank's experts of --ep-size; the output is the rank's "
                 "f32 partial sum (the ranks' outputs add up to the layer output; rank 0's holds "
                 "the shared experts)")
      ->check(CLI::NonNegativeNumber)
      ->group(group);
  run.add_flag("--save-routing", args.save_routing,
               "Also write topk_ids [T, k] (i32) and topk_weights [T, k] (f32) to --output")
      ->group(group);
  run.add_option("--quantize", args.quantize,
                 "fp8: quantize BF16/F16/F32 experts to FP8 e4m3 (128x128 blocks) on load")
      ->check(CLI::IsMember({"none", "fp8"}))
      ->capture_default_str()
      ->group(group);
  run.add_flag("--check", args.check,
               "Compare every row with the fp64 dense reference: --reference full (exit 1 above "
               "tolerance); not with --ep-rank")
      ->group(group);
}

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The rows the reference checks: --reference, or --check (all rows); none with --ep-rank.
ReferenceRows reference_mode(const RunArgs& args) {
  const CheckpointRunArgs& ck = args.checkpoint;
  const bool one_rank = ck.ep_rank >= 0;
  check_arg(!(ck.check && !args.reference.empty() && args.reference != "full"), "--check",
            "alone or with --reference full (it checks every row)",
            "--reference " + args.reference);
  const std::string mode = ck.check ? "full" : args.reference;
  check_arg(!(one_rank && (ck.check || (!mode.empty() && mode != "none"))),
            ck.check ? "--check" : "--reference",
            "none with --ep-rank (the reference needs every expert)", ck.check ? "set" : mode);
  if (mode.empty()) return one_rank ? ReferenceRows::kNone : ReferenceRows::kSampled;
  return parse_reference(mode);
}

std::string megabytes(std::uint64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f MB", static_cast<double>(bytes) * 1e-6);
  return text;
}

// The tensors of --output, in file order: hidden_states, then with --save-routing the routing.
std::vector<io::TensorToWrite> output_tensors(const TensorView& out, const TensorView& ids,
                                              const TensorView& weights, bool save_routing) {
  std::vector<io::TensorToWrite> tensors{io::tensor_to_write("hidden_states", out)};
  if (save_routing) {
    tensors.push_back(io::tensor_to_write("topk_ids", ids));
    tensors.push_back(io::tensor_to_write("topk_weights", weights));
  }
  return tensors;
}

}  // namespace

int run_checkpoint(const RunArgs& args) {
  const CheckpointRunArgs& ck = args.checkpoint;
  const io::HfCheckpoint checkpoint(args.model);
  const io::HfConfig& hc = checkpoint.config();
  int layer = ck.layer;
  if (layer < 0) {
    const std::vector<int> moe = hc.moe_layers();
    if (moe.empty()) throw Error(hc.source + ": no MoE layer");
    layer = moe.front();
  }
  checkpoint.require_moe_layer(layer);
  const bool one_rank = ck.ep_rank >= 0;
  check_arg(!one_rank || ck.ep_rank < args.ep_size, "--ep-rank",
            "< --ep-size (" + std::to_string(args.ep_size) + ")", ck.ep_rank);
  const ReferenceRows reference = reference_mode(args);
  const Backend asked = parse_backend(args.backend);
  const Backend backend = resolve_backend(asked);
  const std::int64_t h = hc.hidden_size;
  const std::int64_t tokens_default = default_tokens(hc.moe_config(), backend);
  const bool check_finite = !args.no_finite_checks;
  const HostTensor hidden =
      ck.input.empty()
          ? random_hidden_states(args.tokens >= 0 ? args.tokens : tokens_default, h, args.seed)
          : io::read_hidden_states(ck.input, h, check_finite);
  const std::string hidden_source =
      ck.input.empty() ? "the random hidden states (--seed " + std::to_string(args.seed) + ")"
                       : "'" + ck.input + "'";
  const std::int64_t tokens = hidden.size(0);

  // The output before the load, which may take minutes: an output that is an input, cannot be
  // written, or would not fit on the disk fails now, and the space is claimed.
  const std::map<std::string, std::string> metadata{
      {"producer", "moerun"},
      {"model", args.model},
      {"layer", std::to_string(layer)},
      {"ep_size", std::to_string(args.ep_size)},
      {"ep_rank", one_rank ? std::to_string(ck.ep_rank) : "all"}};
  std::optional<io::OutputFile> output;
  std::optional<RemoveOnSignal> remove_on_signal;
  if (!ck.output.empty()) {
    std::vector<std::filesystem::path> inputs = checkpoint.store().paths();
    inputs.push_back(checkpoint.dir() / "config.json");
    if (!ck.input.empty()) inputs.emplace_back(ck.input);
    output.emplace(ck.output, inputs);
    remove_on_signal.emplace(output->temporary_path());
    // Shapes only: nothing is computed yet.
    const int k = hc.moe_config().top_k();
    const TensorView out_shape(nullptr, one_rank ? DType::kF32 : DType::kBF16, {tokens, h});
    const TensorView ids_shape(nullptr, DType::kI32, {tokens, k});
    const TensorView weights_shape(nullptr, DType::kF32, {tokens, k});
    output->reserve(io::safetensors_file_size(
        output_tensors(out_shape, ids_shape, weights_shape, ck.save_routing), metadata));
  }

  CheckpointRunOptions options;
  options.backend = backend;
  options.layout = parse_layout(args.layout);
  options.ep_size = args.ep_size;
  options.ep_rank = ck.ep_rank;
  options.quantize_fp8 = ck.quantize == "fp8";
  options.tokens = tokens;
  options.check_finite = check_finite;
  options.hidden_source = hidden_source;
  Progress load_progress("loading layer " + std::to_string(layer) +
                         (backend == Backend::kCuda ? " onto the device" : ""));
  CheckpointRunner runner(checkpoint, layer, options, [&](double f) { load_progress.update(f); });
  load_progress.done();
  const MoeConfig& config = runner.config();
  runner.set_input(hidden);
  // CUDA: one untimed forward first (module load, first touch of the workspaces).
  if (backend == Backend::kCuda) runner.run();
  std::vector<double> seconds;
  Progress forward_progress("forward");
  for (int i = 0; i < args.repeat; ++i) {
    const auto start = std::chrono::steady_clock::now();
    runner.run();
    seconds.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    forward_progress.update(static_cast<double>(i + 1) / args.repeat);
  }
  forward_progress.done();
  const double time_s = median(seconds);
  const HostTensor out = runner.output();
  const cpu::TopK routing = runner.routing();

  // Finite inputs can still overflow inside the layer: such an output is never written.
  check_layer_values(out.view(), "hidden_states", hidden.view(), hidden_source);
  if (output) {
    io::write_safetensors(
        *output,
        output_tensors(out.view(), routing.ids.view(), routing.weights.view(), ck.save_routing),
        metadata);
  }

  std::optional<ReferenceResult> checked;
  const std::vector<std::int64_t> rows = reference_rows(reference, tokens);
  if (!rows.empty()) {
    const io::LoadedMoeLayer& host =
        runner.host_weights(experts_of_rows(routing.ids.view(), rows, config.num_experts));
    MoeConfig all = host.config;
    all.ep_size = 1;
    all.ep_rank = 0;
    std::vector<ReferencePart> parts{
        {all, host.weights(), routing.ids.view(), routing.weights.view()}};
    // The shared experts: every token through the one expert with weight 1.
    HostTensor shared_ids(DType::kI32, {tokens, 1}), shared_weights(DType::kF32, {tokens, 1});
    std::fill(shared_ids.data<int>(), shared_ids.data<int>() + tokens, 0);
    std::fill(shared_weights.data<float>(), shared_weights.data<float>() + tokens, 1.0f);
    if (host.has_shared()) {
      parts.push_back(
          {host.shared_config, host.shared_weights(), shared_ids.view(), shared_weights.view()});
    }
    Progress progress("fp64 dense reference (" + std::to_string(rows.size()) + " rows)");
    checked = check_rows(out.view(), hidden.view(), parts, rows, /*also_unquantized=*/false,
                         [&](double f) { progress.update(f); });
  }
  const double tolerance = layer_tolerance(config.weight_dtype);
  const bool ok = !checked || checked->error <= tolerance;
  const double tokens_per_s = time_s > 0 ? static_cast<double>(tokens) / time_s : 0.0;
  const io::LoadStats& stats = runner.load().stats;
  const std::vector<std::string>& notes = runner.load().notes;
  const Layout layout = runner.layout_for(tokens);
  const std::string why = backend_reason(asked, backend);
  const bool shared = runner.shared_config().num_experts > 0;
  if (args.json) {
    nlohmann::json j;
    j["model"] = args.model;
    j["model_type"] = io::model_type_name(hc.family);
    j["layer"] = layer;
    j["config"] = describe(config);
    j["config_defaults"] = hc.defaults;
    j["experts_layout"] = io::expert_layout_name(runner.info().layout);
    j["shared_experts"] = shared ? hc.n_shared_experts : 0;
    j["tokens"] = tokens;
    j["backend"] = backend_name(backend);
    j["backend_reason"] = why;
    if (backend == Backend::kCpu) j["cuda"] = cuda_unavailable_reason();
    j["layout"] = layout_name(layout);
    j["time_s"] = time_s;
    j["tokens_per_s"] = tokens_per_s;
    j["load"] = {{"seconds", stats.seconds},
                 {"mapped_bytes", stats.mapped_bytes},
                 {"copied_bytes", stats.copied_bytes},
                 {"converted_bytes", stats.converted_bytes},
                 {"uploaded_bytes", stats.uploaded_bytes},
                 {"notes", notes}};
    if (const auto& q = runner.load().quantization) {
      j["quantization_error"] = {{"w13", q->w13_error}, {"w2", q->w2_error}};
    }
    if (!ck.output.empty()) j["output"] = ck.output;
    j["reference"] = {{"mode", reference_rows_name(reference)},
                      {"rows", static_cast<std::int64_t>(rows.size())}};
    if (checked) {
      j["relative_error"] = checked->error;
      j["tolerance"] = tolerance;
    }
    j["ok"] = ok;
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("moerun run --model %s\n", args.model.c_str());
    std::printf("  layer      %d (%s, %s experts%s)\n", layer,
                std::string(io::model_type_name(hc.family)).c_str(),
                std::string(io::expert_layout_name(runner.info().layout)).c_str(),
                shared ? ", shared experts computed" : "");
    std::printf("  config     %s\n", describe(config).c_str());
    if (!hc.defaults.empty()) {
      std::string list;
      for (const auto& d : hc.defaults) list += (list.empty() ? "" : ", ") + d;
      std::printf("  defaults   %s (transformers' own, for keys config.json lacks)\n",
                  list.c_str());
    }
    std::printf("  load       %.3f s: %s mapped, %s copied, %s converted, %s uploaded\n",
                stats.seconds, megabytes(stats.mapped_bytes).c_str(),
                megabytes(stats.copied_bytes).c_str(), megabytes(stats.converted_bytes).c_str(),
                megabytes(stats.uploaded_bytes).c_str());
    for (const auto& note : notes) std::printf("             %s\n", note.c_str());
    std::printf("  tokens     %lld (%s)\n", static_cast<long long>(tokens),
                ck.input.empty() ? "random" : ck.input.c_str());
    std::printf("  backend    %s (%s), layout %s\n", std::string(backend_name(backend)).c_str(),
                why.c_str(), std::string(layout_name(layout)).c_str());
    std::printf("  time       %.3f ms (median of %d; router, routing and experts, no copy back)\n",
                time_s * 1e3, args.repeat);
    std::printf("  tokens/s   %.1f\n", tokens_per_s);
    if (!ck.output.empty()) std::printf("  output     %s\n", ck.output.c_str());
    if (checked) {
      std::printf(
          "  error      %.3e relative to the fp64 dense reference on %lld of %lld rows "
          "(tolerance %.1e): %s\n",
          checked->error, static_cast<long long>(checked->rows), static_cast<long long>(tokens),
          tolerance, ok ? "ok" : "ABOVE TOLERANCE");
    }
  }
  return ok ? 0 : 1;
}

}  // namespace moerun::tools
