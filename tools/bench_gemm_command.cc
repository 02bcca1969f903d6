#include "bench_gemm_command.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "cuda/gemm_shape.h"
#include "moerun/errors.h"
#ifdef MOERUN_HAS_CUDA
#include <cuda_runtime_api.h>

#include "bench_ceilings.h"
#include "bench_gemm.h"
#include "bench_timing.h"
#include "cuda/cuda_check.h"
#include "cuda/gemm/sm90_variants.h"
#include "cuda/gemm_heuristics.h"
#include "cuda/runtime.h"
#endif

namespace moerun::tools {

namespace {

// The issue-4 table (docs/gemm.md): DeepSeek-V3's gate-up (N 4096, K 7168) and down (N 7168,
// K 2048) GEMMs, prefill (contiguous) and decode (masked).
const char* const kDefaultShapes[] = {
    "contiguous:4:8192:4096:7168", "contiguous:8:4096:4096:7168", "contiguous:4:8192:7168:2048",
    "contiguous:8:4096:7168:2048", "masked:2:512:4096:7168",      "masked:4:256:7168:2048",
    "masked:32:32:4096:7168",      "masked:256:4:4096:7168",
};

constexpr std::int64_t kMaxGroups = std::int64_t{1} << 20;
constexpr std::int64_t kMaxRows = std::int64_t{1} << 31;
constexpr const char* kShapeSyntax = "LAYOUT:G:M:N:K[:M_MAX] with LAYOUT masked or contiguous";

std::int64_t round_up(std::int64_t x, std::int64_t to) { return (x + to - 1) / to * to; }

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  std::size_t at = 0;
  while (true) {
    const std::size_t next = s.find(sep, at);
    parts.push_back(s.substr(at, next == std::string_view::npos ? next : next - at));
    if (next == std::string_view::npos) return parts;
    at = next + 1;
  }
}

std::int64_t parse_field(std::string_view text, std::string_view spec, const char* field) {
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  check_arg(ec == std::errc() && end == text.data() + text.size(),
            "--shape '" + std::string(spec) + "' " + field, "an integer", std::string(text));
  return value;
}

GemmBenchShape parse_shape(std::string_view spec) {
  const std::vector<std::string_view> f = split(spec, ':');
  check_arg(f.size() == 5 || f.size() == 6, "--shape '" + std::string(spec) + "'",
            std::string(kShapeSyntax) + " (5 or 6 fields)", std::to_string(f.size()) + " fields");
  check_arg(f[0] == "masked" || f[0] == "contiguous", "--shape '" + std::string(spec) + "' LAYOUT",
            "masked or contiguous", std::string(f[0]));
  GemmBenchShape s;
  s.layout = f[0] == "masked" ? Layout::kMasked : Layout::kContiguous;
  s.groups = parse_field(f[1], spec, "G");
  s.m = parse_field(f[2], spec, "M");
  s.n = parse_field(f[3], spec, "N");
  s.k = parse_field(f[4], spec, "K");
  if (f.size() == 6) s.m_max = parse_field(f[5], spec, "M_MAX");
  return s;
}

// Fills in the default M_max and checks `s` as the launcher will (cuda/gemm_shape.h). `where`
// names the shape in messages; `options`: it came from --groups/--m/--m-max, named as such.
void check_shape(GemmBenchShape& s, bool fp8, const std::string& where, bool options) {
  auto field = [&](const char* option, const char* name) {
    return options ? std::string(option) : where + " " + name;
  };
  check_arg(s.groups >= 1 && s.groups <= kMaxGroups, field("--groups", "G"),
            "1 .. " + std::to_string(kMaxGroups), s.groups);
  check_arg(s.m >= 1 && s.m < kMaxRows, field("--m", "M (rows per group)"), "1 .. 2^31 - 1", s.m);
  if (s.layout == Layout::kMasked) {
    if (s.m_max == 0) s.m_max = round_up(s.m, cuda::kGemmContiguousAlignM);
    check_arg(s.m_max >= s.m && s.m_max < kMaxRows, field("--m-max", "M_MAX"),
              ">= M (" + std::to_string(s.m) + ") and < 2^31", s.m_max);
  } else {
    check_arg(s.m_max == 0, field("--m-max", "M_MAX"), "none: M_max is for the masked layout only",
              s.m_max);
  }
  // The launchers' own checks, with their field names (M_max, M_sum, N, K, sizes).
  try {
    if (s.layout == Layout::kMasked) {
      cuda::check_gemm_masked_m_max(s.m_max);
    } else {
      cuda::check_gemm_contiguous_m_sum(s.a_rows());
    }
    cuda::check_gemm_sizes(fp8, s.groups, s.a_rows(), s.n, s.k);
  } catch (const InvalidArgument& e) {
    constexpr std::string_view kPrefix = "moerun: ";
    std::string_view what = e.what();
    if (what.substr(0, kPrefix.size()) == kPrefix) what.remove_prefix(kPrefix.size());
    throw Error("bench-gemm: " + where + " (" + (fp8 ? "fp8" : "bf16") + "): " + std::string(what));
  }
}

}  // namespace

std::int64_t GemmBenchShape::a_rows() const {
  return layout == Layout::kMasked ? groups * m_max
                                   : groups * round_up(m, cuda::kGemmContiguousAlignM);
}

std::string GemmBenchShape::spec() const {
  std::string s = std::string(layout_name(layout)) + ":" + std::to_string(groups) + ":" +
                  std::to_string(m) + ":" + std::to_string(n) + ":" + std::to_string(k);
  if (layout == Layout::kMasked && m_max != round_up(m, cuda::kGemmContiguousAlignM)) {
    s += ":" + std::to_string(m_max);
  }
  return s;
}

void add_bench_gemm_command(CLI::App& app, BenchGemmArgs& args) {
  CLI::App* cmd = app.add_subcommand(
      "bench-gemm",
      "Time moerun's grouped GEMMs alone (out[rows, N] bf16 = A[rows, K] x B[g]^T per group) on "
      "the CUDA backend, with random operands generated on the device. Each line: us, TFLOP/s "
      "(2 x G x M x N x K), GB/s of the bytes DeepGEMM counts, per group M*K + N*K input elements "
      "(1 byte each for FP8, 2 for BF16; FP8 scales not counted) + 2*M*N bytes of bf16 output, "
      "and % of the copy bandwidth and matrix rate measured in the same run. Median of --repeat "
      "event-timed launches after warm-up, operands rotated over more than 2x L2. Shapes: "
      "--shape (repeatable, comma list), or --layout/--groups/--m/--n/--k, or the issue-4 "
      "shapes.");
  cmd->add_option("--dtype", args.dtype, "fp8 (e4m3, 1x128 / 128x128 block scales) or bf16")
      ->check(CLI::IsMember({"fp8", "bf16"}))
      ->capture_default_str();
  cmd->add_option("--shape", args.shapes,
                  "LAYOUT:G:M:N:K[:M_MAX], e.g. masked:32:8:4096:7168 (comma list or repeated; "
                  "M_MAX default M rounded up to 128); default: the issue-4 shapes")
      ->delimiter(',');
  cmd->add_option("--layout", args.layout, "One shape: masked or contiguous")
      ->check(CLI::IsMember({"masked", "contiguous"}));
  cmd->add_option("--groups", args.groups, "One shape: groups G (experts)")
      ->check(CLI::Range(std::int64_t{1}, kMaxGroups));
  cmd->add_option("--m", args.m,
                  "One shape: rows per group M (masked: masked_m of every group; contiguous: "
                  "each group's rows, padded to 128 with m_indices -1)")
      ->check(CLI::Range(std::int64_t{1}, kMaxRows - 1));
  cmd->add_option("--m-max", args.m_max,
                  "One masked shape: rows per group in A's buffer (a multiple of 64, >= M; "
                  "default M rounded up to 128)")
      ->check(CLI::Range(std::int64_t{1}, kMaxRows - 1));
  cmd->add_option("--n", args.n, "One shape: N (weights [G, N, K])")
      ->check(CLI::Range(std::int64_t{1}, kMaxRows - 1));
  cmd->add_option("--k", args.k, "One shape: K")->check(CLI::Range(std::int64_t{1}, kMaxRows - 1));
  cmd->add_option("--variant", args.variant,
                  "Kernel variant: heuristic (the launcher's choice), all (each compiled one of "
                  "the dtype, the launcher's marked), or a name such as fp8_M64N128")
      ->capture_default_str();
  cmd->add_option("--protocol", args.protocol,
                  "back-to-back: events around each of the launches run one after the other; "
                  "kernel: a memset of up to 8 GB before each launch (L2 flushed, as DeepGEMM's "
                  "bench_kineto does), events around the launch alone")
      ->check(CLI::IsMember({"back-to-back", "kernel"}))
      ->capture_default_str();
  cmd->add_option("--repeat", args.repeat, "Timed launches per shape; the median is reported")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  cmd->add_option("--seed", args.seed, "Seed of the random operands")->capture_default_str();
  cmd->add_flag("--json", args.json, "Print one JSON object instead of text");
  cmd->add_flag("--skip-ceilings", args.skip_ceilings,
                "Do not measure the ceilings (no % columns); for profilers");
}

std::vector<GemmBenchShape> bench_gemm_shapes(const BenchGemmArgs& args) {
  const bool fp8 = args.dtype == "fp8";
  check_arg(fp8 || args.dtype == "bf16", "--dtype", "fp8 or bf16", args.dtype);
  const bool one_shape = !args.layout.empty() || args.groups != 0 || args.m != 0 ||
                         args.m_max != 0 || args.n != 0 || args.k != 0;
  std::vector<GemmBenchShape> shapes;
  if (one_shape) {
    check_arg(args.shapes.empty(), "--shape", "not with --layout/--groups/--m/--m-max/--n/--k",
              args.shapes.front());
    GemmBenchShape s;
    s.layout = args.layout == "contiguous" ? Layout::kContiguous : Layout::kMasked;
    s.groups = args.groups;
    s.m = args.m;
    s.m_max = args.m_max;
    s.n = args.n;
    s.k = args.k;
    for (const auto& [value, name] : {std::pair{s.groups, "--groups"}, std::pair{s.m, "--m"},
                                      std::pair{s.n, "--n"}, std::pair{s.k, "--k"}}) {
      check_arg(value != 0, name, "a value (one shape needs --groups, --m, --n and --k)", "none");
    }
    check_arg(s.m_max == 0 || s.layout == Layout::kMasked, "--m-max", "only with --layout masked",
              s.m_max);
    shapes.push_back(s);
  } else if (!args.shapes.empty()) {
    for (const std::string& spec : args.shapes) shapes.push_back(parse_shape(spec));
  } else {
    for (const char* spec : kDefaultShapes) shapes.push_back(parse_shape(spec));
  }
  for (GemmBenchShape& s : shapes) {
    std::string where = "shape '" + std::string(layout_name(s.layout)) + ":" +
                        std::to_string(s.groups) + ":" + std::to_string(s.m) + ":" +
                        std::to_string(s.n) + ":" + std::to_string(s.k);
    if (s.m_max != 0) where += ":" + std::to_string(s.m_max);
    check_shape(s, fp8, where + "'", one_shape);
  }
  return shapes;
}

#ifndef MOERUN_HAS_CUDA

int bench_gemm_command(const BenchGemmArgs& args) {
  bench_gemm_shapes(args);  // argument errors first, as with CUDA
  throw Error("bench-gemm: this build has no CUDA backend (configure with nvcc available)");
}

#else

namespace {

using nlohmann::json;

// The variants --variant asks for: -1 for the launcher's own choice, else sm90::GemmVariant values.
std::vector<int> variants_to_time(const std::string& option, bool fp8) {
  std::vector<int> all;
  std::string names;
  for (int v = 0; v < cuda::sm90::kNumGemmVariants; ++v) {
    const auto variant = static_cast<cuda::sm90::GemmVariant>(v);
    if (cuda::sm90::variant_shape(variant).fp8 != fp8) continue;
    all.push_back(v);
    names += ", " + cuda::gemm_variant_name(variant);
    if (option == cuda::gemm_variant_name(variant)) return {v};
  }
  if (option == "heuristic") return {-1};
  if (option == "all") return all;
  throw InvalidArgument(
      "--variant", "heuristic, all" + names + " (" + (fp8 ? "fp8" : "bf16") + " variants)", option);
}

std::string cell(double v, const char* format) {
  if (!std::isfinite(v)) return "-";
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, format, v);
  return buffer;
}

}  // namespace

int bench_gemm_command(const BenchGemmArgs& args) {
  const std::vector<GemmBenchShape> shapes = bench_gemm_shapes(args);
  const bool fp8 = args.dtype == "fp8";
  const std::vector<int> variants = variants_to_time(args.variant, fp8);
  const std::string reason = cuda::device_unavailable_reason();
  if (!reason.empty()) throw Error("bench-gemm: no usable CUDA device: " + reason);

  int device = 0;
  cudaDeviceProp prop{};
  MOERUN_CUDA_CHECK(cudaGetDevice(&device));
  MOERUN_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  cudaStream_t stream = nullptr;
  MOERUN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  struct StreamGuard {
    cudaStream_t s;
    ~StreamGuard() { cudaStreamDestroy(s); }
  } guard{stream};

  json report = {{"device", prop.name},
                 {"sms", prop.multiProcessorCount},
                 {"l2_bytes", prop.l2CacheSize},
                 {"date", utc_now()},
                 {"repeat", args.repeat},
                 {"protocol", args.protocol},
                 {"dtype", args.dtype},
                 {"variant", args.variant},
                 {"bytes_counted", std::string("per group M*K + N*K input elements (") +
                                       (fp8 ? "1 byte each, FP8 scales not counted" : "2 bytes") +
                                       ") + 2*M*N bytes of bf16 output (DeepGEMM's accounting)"},
                 {"flops_counted", "2*G*M*N*K (rows holding tokens only)"}};
  std::optional<Ceilings> ceilings;
  if (!args.skip_ceilings) {
    std::fprintf(stderr, "bench-gemm: measuring ceilings\n");
    ceilings = measure_ceilings(args.repeat, stream);
  }
  report["ceilings"] = ceilings_json(ceilings);
  SmClockSampler clock(device);
  if (!clock.reason().empty()) report["sm_clock_unknown"] = clock.reason();
  // Kernel-only protocol: the buffer memset before each launch (DeepGEMM's 8 GB, at most a
  // quarter of the free memory, at least 2x L2).
  cuda::DeviceBuffer flush;
  if (args.protocol == "kernel") {
    std::size_t free_bytes = 0, total_bytes = 0;
    MOERUN_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    const std::size_t want = std::max<std::size_t>(
        std::min<std::size_t>(std::size_t{8} << 30, free_bytes / 4), 2 * prop.l2CacheSize);
    flush = cuda::DeviceBuffer(DType::kI32, {static_cast<std::int64_t>(want / 4)});
    report["flush_bytes"] = want;
  }
  const double matrix_rate = !ceilings ? NAN : fp8 ? ceilings->fp8_tflops : ceilings->bf16_tflops;
  if (!args.json) {
    std::printf("moerun bench-gemm: %s (%d SMs, L2 %d MiB), %s; %s, median of %d launches, %s\n",
                prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20, utc_now().c_str(),
                fp8 ? "FP8 e4m3 block-scaled" : "BF16", args.repeat,
                args.protocol == "kernel" ? "kernel-only protocol (L2 flushed before each launch)"
                                          : "back-to-back launches");
    if (!clock.reason().empty()) std::printf("SM clock unknown: %s\n", clock.reason().c_str());
    if (ceilings) print_ceilings(*ceilings);
    std::printf("GB/s counts %s\n", report["bytes_counted"].get<std::string>().c_str());
    std::printf("%-11s %13s %6s %6s %10s %8s %8s %6s %7s %6s  %s\n", "layout", "groups x m", "N",
                "K", "us", "TFLOP/s", "GB/s", "%copy", "%matrix", "SM MHz", "variant");
    std::fflush(stdout);
  }

  json results = json::array(), skipped = json::array();
  bool all_ok = true;
  for (const GemmBenchShape& s : shapes) {
    auto shape_json = [&] {
      json j = {{"shape", s.spec()},  {"layout", layout_name(s.layout)},
                {"groups", s.groups}, {"m", s.m},
                {"n", s.n},           {"k", s.k},
                {"dtype", args.dtype}};
      if (s.layout == Layout::kMasked) j["m_max"] = s.m_max;
      return j;
    };
    std::size_t free_bytes = 0, total_bytes = 0;
    MOERUN_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    const std::size_t per_set = GemmBench::set_bytes(s, fp8);
    const int sets = GemmBench::input_sets(s, fp8, prop.l2CacheSize, free_bytes);
    if (sets == 0) {
      char why[160];
      std::snprintf(why, sizeof why, "needs %.1f GB of device memory, %.1f GB free",
                    static_cast<double>(per_set) * 1e-9, static_cast<double>(free_bytes) * 1e-9);
      json j = shape_json();
      j["reason"] = why;
      skipped.push_back(j);
      if (!args.json) std::printf("%s: skipped: %s\n", s.spec().c_str(), why);
      continue;
    }
    std::fprintf(stderr, "bench-gemm: %s %s\n", args.dtype.c_str(), s.spec().c_str());
    GemmBench bench(s, fp8, sets, args.seed, stream);
    for (const int variant : variants) {
      const GemmBenchResult r = bench.time(variant, args.repeat, flush.view(), clock);
      const double sec = r.us * 1e-6;
      const double tflops = r.flops / sec * 1e-12, gbs = r.bytes / sec * 1e-9;
      const double pct_copy = ceilings ? 100.0 * gbs / ceilings->copy_gbs : NAN;
      const double pct_matrix = matrix_rate > 0 ? 100.0 * tflops / matrix_rate : NAN;
      all_ok = all_ok && r.check_ok;
      json j = shape_json();
      j.update(
          {{"variant", r.variant},
           {"heuristic", r.heuristic},
           {"heuristic_variant", r.heuristic_variant},
           {"heuristic_reason", r.heuristic_reason},
           {"input_sets", r.input_sets},
           {"us", r.us},
           {"sm_clock_mhz", r.sm_mhz},
           {"flops", r.flops},
           {"bytes", r.bytes},
           {"tflops", tflops},
           {"gbs", gbs},
           {"check",
            {{"sampled", r.sampled}, {"relative_error", r.sampled_error}, {"ok", r.check_ok}}}});
      if (std::isfinite(pct_copy)) j["pct_copy"] = pct_copy;
      if (std::isfinite(pct_matrix)) j["pct_matrix"] = pct_matrix;
      if (std::isfinite(pct_copy) || std::isfinite(pct_matrix)) {
        j["pct_ceiling"] = std::fmax(std::isfinite(pct_copy) ? pct_copy : 0,
                                     std::isfinite(pct_matrix) ? pct_matrix : 0);
      }
      results.push_back(j);
      if (!args.json) {
        const std::string gm = std::to_string(s.groups) + " x " + std::to_string(s.m);
        std::printf("%-11s %13s %6lld %6lld %10.1f %8.1f %8.0f %6s %7s %6s  %s%s%s\n",
                    std::string(layout_name(s.layout)).c_str(), gm.c_str(),
                    static_cast<long long>(s.n), static_cast<long long>(s.k), r.us, tflops, gbs,
                    cell(pct_copy, "%.1f").c_str(), cell(pct_matrix, "%.1f").c_str(),
                    cell(r.sm_mhz > 0 ? r.sm_mhz : NAN, "%.0f").c_str(), r.variant.c_str(),
                    r.heuristic ? " (heuristic)" : "", r.check_ok ? "" : "  SAMPLED RESULTS WRONG");
        std::fflush(stdout);
      }
      if (!r.check_ok) {
        std::fprintf(stderr,
                     "bench-gemm: %s %s: sampled outputs differ from the fp64 reference "
                     "(relative error %.3g > %.0e)\n",
                     s.spec().c_str(), r.variant.c_str(), r.sampled_error, kGemmBenchTolerance);
      }
    }
  }
  report["results"] = results;
  report["skipped"] = skipped;
  if (args.json) std::printf("%s\n", report.dump(1).c_str());
  return all_ok ? 0 : 1;
}

#endif  // MOERUN_HAS_CUDA

}  // namespace moerun::tools
