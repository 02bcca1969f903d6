#include "checkpoint_binding.h"

#include <nanobind/ndarray.h>
#include <nanobind/stl/filesystem.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <string>
#include <vector>

#include "io/hf_checkpoint.h"
#include "io/hf_loader.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace moerun::python {

namespace {

struct HfLayer {
  io::LoadedMoeLayer loaded;
};

// A read-only NumPy array over `view`, kept alive by `owner`. bf16 and fp8 come out as uint16 and
// uint8 bits (NumPy has no such dtypes; the Python side views them as ml_dtypes types).
nb::object array_of(const TensorView& view, nb::handle owner) {
  if (!view.defined()) return nb::none();
  std::vector<std::size_t> shape;
  for (int d = 0; d < view.ndim(); ++d) shape.push_back(static_cast<std::size_t>(view.size(d)));
  nb::dlpack::dtype dtype = nb::dtype<float>();
  switch (view.dtype()) {
    case DType::kF32:
      break;
    case DType::kBF16:
      dtype = nb::dtype<std::uint16_t>();
      break;
    case DType::kFP8E4M3:
      dtype = nb::dtype<std::uint8_t>();
      break;
    case DType::kI32:
      dtype = nb::dtype<std::int32_t>();
      break;
  }
  const nb::ndarray<nb::numpy, nb::ro> array(view.data(), shape.size(), shape.data(), owner,
                                             nullptr, dtype);
  return nb::cast(array);
}

}  // namespace

void bind_checkpoint(nb::module_& m) {
  nb::class_<HfLayer>(m, "HfLayer")
      .def_prop_ro("config", [](const HfLayer& l) { return l.loaded.config; })
      .def_prop_ro("layer", [](const HfLayer& l) { return l.loaded.layer; })
      .def_prop_ro("notes", [](const HfLayer& l) { return l.loaded.notes; })
      .def("arrays", [](nb::handle self) {
        const io::LoadedMoeLayer& l = nb::cast<const HfLayer&>(self).loaded;
        nb::dict out;
        auto put = [&](const char* name, const TensorView& v) {
          out[name] = nb::make_tuple(array_of(v, self), std::string(dtype_name(v.dtype())));
        };
        put("w13", l.routed.w13.view);
        put("w13_scale", l.routed.w13_scale.view);
        put("w2", l.routed.w2.view);
        put("w2_scale", l.routed.w2_scale.view);
        put("correction_bias", l.correction_bias.view());
        put("router_weight", l.router_weight.view());
        return out;
      });
  m.def(
      "load_hf_layer",
      [](const std::filesystem::path& dir, int layer, int ep_size, int ep_rank, bool quantize_fp8) {
        nb::gil_scoped_release unlocked;
        const io::HfCheckpoint checkpoint(dir);
        io::LoadOptions options;
        options.quantize_fp8 = quantize_fp8;
        options.ep_size = ep_size;
        options.ep_rank = ep_rank;
        return HfLayer{io::load_moe_layer(checkpoint, layer, options)};
      },
      "dir"_a, "layer"_a, "ep_size"_a = 1, "ep_rank"_a = 0, "quantize_fp8"_a = false);
  m.def(
      "hf_moe_layers",
      [](const std::filesystem::path& dir) { return io::HfCheckpoint(dir).config().moe_layers(); },
      "dir"_a);
}

}  // namespace moerun::python
