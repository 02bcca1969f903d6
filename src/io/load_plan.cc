#include "io/load_plan.h"

#include <cstdint>
#include <string>

#include "moerun/errors.h"

namespace moerun::io {

namespace {

std::uint64_t element_bytes(std::int64_t count, DType dtype) {
  return static_cast<std::uint64_t>(count) * dtype_size(dtype);
}

// Pieces of `plan` that fill the destination rows [row, row + rows) of expert `e` (dims [E, R, C])
// with a whole file matrix, or with the slice of a fused [E, R, C] file tensor at expert `src_e`.
void add_rows(TensorPlan& plan, const StoredTensor& source, int e, std::int64_t row,
              int source_expert = -1) {
  const std::int64_t rows_per_expert = plan.shape[1], cols = plan.shape[2];
  PlanPiece p;
  p.source = source;
  p.expert = e;
  if (source_expert < 0) {
    p.count = source.info->numel();
  } else {
    p.count = rows_per_expert * cols;
    p.source_offset = static_cast<std::uint64_t>(source_expert) *
                      static_cast<std::uint64_t>(p.count) * st_dtype_size(source.info->dtype);
  }
  p.dest_offset = element_bytes((e * rows_per_expert + row) * cols, plan.dtype);
  plan.pieces.push_back(p);
}

TensorPlan empty_plan(const char* name, DType dtype, const Shape& shape) {
  TensorPlan t;
  t.name = name;
  t.dtype = dtype;
  t.shape = shape;
  return t;
}

// w13/w2 (and scales) of `experts` experts of intermediate size `inter` in `dtype`.
ExpertsPlan shaped(int experts, std::int64_t h, std::int64_t inter, DType dtype) {
  ExpertsPlan p;
  p.w13 = empty_plan("w13", dtype, {experts, 2 * inter, h});
  p.w2 = empty_plan("w2", dtype, {experts, h, inter});
  if (dtype == DType::kFP8E4M3) {
    p.w13_scale =
        empty_plan("w13_scale", DType::kF32, {experts, 2 * inter / kQuantGroup, h / kQuantGroup});
    p.w2_scale =
        empty_plan("w2_scale", DType::kF32, {experts, h / kQuantGroup, inter / kQuantGroup});
  }
  return p;
}

// Local expert `e` from the separate gate/up/down matrices named `gate`, `up`, `down`.
void add_separate(ExpertsPlan& p, const TensorStore& store, int e, const std::string& gate,
                  const std::string& up, const std::string& down) {
  const std::int64_t inter = p.w13.shape[1] / 2;
  const bool fp8 = p.w13_scale.defined();
  add_rows(p.w13, store.at(gate), e, 0);
  add_rows(p.w13, store.at(up), e, inter);
  add_rows(p.w2, store.at(down), e, 0);
  if (!fp8) return;
  add_rows(p.w13_scale, store.at(scale_name(gate)), e, 0);
  add_rows(p.w13_scale, store.at(scale_name(up)), e, inter / kQuantGroup);
  add_rows(p.w2_scale, store.at(scale_name(down)), e, 0);
}

}  // namespace

std::span<const std::byte> PlanPiece::bytes() const {
  const std::uint64_t size = static_cast<std::uint64_t>(count) * st_dtype_size(source_dtype());
  return source.bytes().subspan(source_offset, size);
}

std::uint64_t TensorPlan::nbytes() const {
  return defined() ? element_bytes(shape.numel(), dtype) : 0;
}

bool TensorPlan::as_stored(const PlanPiece& piece) const {
  const std::optional<DType> stored = to_moerun_dtype(piece.source_dtype());
  return stored && *stored == dtype;
}

std::optional<TensorView> TensorPlan::mapped_view() const {
  if (!defined() || pieces.empty()) return std::nullopt;
  std::uint64_t dest = 0;
  const std::byte* next = nullptr;
  for (const PlanPiece& p : pieces) {
    if (p.source.file != pieces.front().source.file || !as_stored(p) || p.dest_offset != dest) {
      return std::nullopt;
    }
    const std::span<const std::byte> b = p.bytes();
    if (next != nullptr && b.data() != next) return std::nullopt;
    next = b.data() + b.size();
    dest += b.size();
  }
  const std::byte* first = pieces.front().bytes().data();
  if (dest != nbytes() || reinterpret_cast<std::uintptr_t>(first) % dtype_size(dtype) != 0) {
    return std::nullopt;
  }
  // The mapping is read-only; the layer only ever reads weights.
  return TensorView(const_cast<std::byte*>(first), dtype, shape);
}

MoeConfig shared_experts_config(const MoeConfig& routed, std::int64_t shared_inter) {
  MoeConfig c;
  c.hidden_size = routed.hidden_size;
  c.intermediate_size = shared_inter;
  c.num_experts = 1;
  c.routing = {RoutingMode::kSoftmaxTopK, 1, false, 1, 1, 1.0f};
  c.weight_dtype = routed.weight_dtype;
  return c;
}

MoeLayerPlan plan_moe_layer(const HfCheckpoint& checkpoint, int layer, const MoeConfig& config,
                            bool with_shared) {
  const HfConfig& hc = checkpoint.config();
  const TensorStore& store = checkpoint.store();
  const MoeLayerNames names = checkpoint.names(layer);
  const std::int64_t h = config.hidden_size, inter = config.intermediate_size;
  const int first = config.first_local_expert(), count = config.num_local_experts();
  MoeLayerPlan plan;
  plan.config = config;
  plan.router = store.at(names.router);
  if (!names.router_bias.empty()) plan.router_bias = store.at(names.router_bias);

  plan.routed = shaped(count, h, inter, config.weight_dtype);
  ExpertsPlan& r = plan.routed;
  const bool fp8 = config.is_fp8();
  if (names.layout == ExpertLayout::kFused) {
    const StoredTensor gate_up = store.at(names.gate_up()), down = store.at(names.down_fused());
    for (int e = 0; e < count; ++e) {
      add_rows(r.w13, gate_up, e, 0, first + e);
      add_rows(r.w2, down, e, 0, first + e);
      if (!fp8) continue;
      add_rows(r.w13_scale, store.at(scale_name(names.gate_up())), e, 0, first + e);
      add_rows(r.w2_scale, store.at(scale_name(names.down_fused())), e, 0, first + e);
    }
  } else {
    for (int e = 0; e < count; ++e) {
      add_separate(r, store, e, names.gate(first + e), names.up(first + e), names.down(first + e));
    }
  }

  plan.shared_config = shared_experts_config(config, hc.shared_intermediate_size());
  plan.shared_config.num_experts = 0;
  if (with_shared && hc.n_shared_experts > 0) {
    plan.shared_config.num_experts = 1;
    plan.shared = shaped(1, h, hc.shared_intermediate_size(), config.weight_dtype);
    add_separate(plan.shared, store, 0, names.shared("gate_proj"), names.shared("up_proj"),
                 names.shared("down_proj"));
  }
  return plan;
}

}  // namespace moerun::io
