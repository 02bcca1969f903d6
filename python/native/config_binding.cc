#include "config_binding.h"

#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cmath>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "moerun/config.h"
#include "moerun/errors.h"

namespace nb = nanobind;

namespace moerun::python {

namespace {

// One keyword of MoeConfig: how Python reads and writes it.
struct Field {
  const char* name;
  std::function<nb::object(const MoeConfig&)> get;
  std::function<void(MoeConfig&, nb::handle)> set;
};

std::string python_type(nb::handle value) { return nb::type_name(value.type()).c_str(); }

template <class T>
T as(nb::handle value, const char* field, const char* expected) {
  // bool is an int in Python; only a real bool may set a flag, and no flag sets a number.
  const bool is_bool = PyBool_Check(value.ptr());
  if constexpr (std::is_same_v<T, bool>) {
    if (!is_bool) throw InvalidArgument(field, expected, python_type(value));
  } else if (is_bool) {
    throw InvalidArgument(field, expected, "bool");
  }
  T out{};
  if (!nb::try_cast(value, out)) throw InvalidArgument(field, expected, python_type(value));
  return out;
}

template <class T>
constexpr const char* kind() {
  if constexpr (std::is_same_v<T, bool>) return "a bool";
  if constexpr (std::is_floating_point_v<T>) return "a number";
  return "an int";
}

template <class T>
Field number(const char* name, T MoeConfig::*member) {
  return {name, [member](const MoeConfig& c) { return nb::cast(c.*member); },
          [name, member](MoeConfig& c, nb::handle v) { c.*member = as<T>(v, name, kind<T>()); }};
}

template <class T>
Field routing_number(const char* name, T RoutingConfig::*member) {
  return {name, [member](const MoeConfig& c) { return nb::cast(c.routing.*member); },
          [name, member](MoeConfig& c, nb::handle v) {
            c.routing.*member = as<T>(v, name, kind<T>());
          }};
}

std::string routing_name(RoutingMode mode) {
  return mode == RoutingMode::kGroupedTopK ? "grouped" : "softmax";
}

const std::vector<Field>& fields() {
  static const std::vector<Field> table = {
      number("hidden_size", &MoeConfig::hidden_size),
      number("intermediate_size", &MoeConfig::intermediate_size),
      number("num_experts", &MoeConfig::num_experts),
      routing_number("top_k", &RoutingConfig::top_k),
      {"routing", [](const MoeConfig& c) { return nb::cast(routing_name(c.routing.mode)); },
       [](MoeConfig& c, nb::handle v) {
         const auto mode = as<std::string>(v, "routing", "'softmax' or 'grouped'");
         if (mode != "softmax" && mode != "grouped") {
           throw InvalidArgument("routing", "'softmax' or 'grouped'", mode);
         }
         c.routing.mode = mode == "grouped" ? RoutingMode::kGroupedTopK : RoutingMode::kSoftmaxTopK;
       }},
      routing_number("renormalize", &RoutingConfig::renormalize),
      routing_number("num_groups", &RoutingConfig::num_groups),
      routing_number("topk_groups", &RoutingConfig::topk_groups),
      routing_number("routed_scaling_factor", &RoutingConfig::routed_scaling_factor),
      {"weight_dtype",
       [](const MoeConfig& c) { return nb::cast(std::string(dtype_name(c.weight_dtype))); },
       [](MoeConfig& c, nb::handle v) {
         const auto name = as<std::string>(v, "weight_dtype", "'bf16' or 'fp8_e4m3'");
         if (name == "bf16" || name == "bfloat16") {
           c.weight_dtype = DType::kBF16;
         } else if (name == "fp8_e4m3" || name == "float8_e4m3fn" || name == "fp8") {
           c.weight_dtype = DType::kFP8E4M3;
         } else {
           throw InvalidArgument("weight_dtype", "'bf16' or 'fp8_e4m3'", name);
         }
       }},
      number("ep_size", &MoeConfig::ep_size),
      number("ep_rank", &MoeConfig::ep_rank),
      {"expert_map",
       [](const MoeConfig& c) {
         return c.expert_map.empty() ? nb::none() : nb::cast(c.expert_map);
       },
       [](MoeConfig& c, nb::handle v) {
         if (v.is_none()) {
           c.expert_map.clear();
           return;
         }
         std::vector<std::int32_t> map;
         // Any sequence of ints (a list, a tuple, a NumPy array's tolist()).
         if (!nb::try_cast(v, map)) {
           throw InvalidArgument("expert_map", "None or a sequence of ints", python_type(v));
         }
         c.expert_map = std::move(map);
       }},
      number("output_scale", &MoeConfig::output_scale),
  };
  return table;
}

const Field& field(const std::string& name) {
  for (const Field& f : fields()) {
    if (name == f.name) return f;
  }
  std::string names;
  for (const Field& f : fields()) names += (names.empty() ? "" : ", ") + std::string(f.name);
  throw InvalidArgument("MoeConfig keyword", "one of " + names, name);
}

void apply(MoeConfig& c, const nb::kwargs& kwargs) {
  for (auto [key, value] : kwargs) field(nb::cast<std::string>(key)).set(c, value);
}

nb::dict to_dict(const MoeConfig& c) {
  nb::dict d;
  for (const Field& f : fields()) d[f.name] = f.get(c);
  return d;
}

}  // namespace

void bind_config(nb::module_& m) {
  auto cls = nb::class_<MoeConfig>(m, "MoeConfig",
                                   "One MoE layer's shapes, routing, weight dtype and expert "
                                   "placement; every field by keyword, validated on creation.");
  cls.def(
         "__init__",
         [](MoeConfig* c, const nb::kwargs& kwargs) {
           MoeConfig config;
           apply(config, kwargs);
           config.validate();
           new (c) MoeConfig(std::move(config));
         },
         "Every field by keyword (see MoeConfig.fields()); rejects a bad value naming the field.")
      .def_static(
          "preset",
          [](const std::string& name, const nb::kwargs& overrides) {
            MoeConfig config = model_preset(name);
            apply(config, overrides);
            config.validate();
            return config;
          },
          "A benchmark model's layer ('deepseek-v3', 'qwen3-30b-a3b', 'mixtral-8x7b', 'small'), "
          "with keyword overrides.")
      .def_static("preset_names", &model_preset_names)
      .def_static("fields",
                  [] {
                    std::vector<std::string> names;
                    for (const Field& f : fields()) names.emplace_back(f.name);
                    return names;
                  })
      .def(
          "replace",
          [](const MoeConfig& c, const nb::kwargs& overrides) {
            MoeConfig config = c;
            apply(config, overrides);
            config.validate();
            return config;
          },
          "A copy with the given fields changed.")
      .def("validate", &MoeConfig::validate)
      .def("to_dict", &to_dict)
      .def_prop_ro("num_local_experts", &MoeConfig::num_local_experts)
      .def("__eq__",
           [](const MoeConfig& a, const MoeConfig& b) { return to_dict(a).equal(to_dict(b)); })
      .def("__repr__", [](const MoeConfig& c) {
        std::string out = "moerun.MoeConfig(";
        bool first = true;
        for (const Field& f : fields()) {
          out += (first ? "" : ", ") + std::string(f.name) + "=" + nb::repr(f.get(c)).c_str();
          first = false;
        }
        return out + ")";
      });
  for (const Field& f : fields()) {
    cls.def_prop_rw(
        f.name, [&f](const MoeConfig& c) { return f.get(c); },
        [&f](MoeConfig& c, nb::handle v) { f.set(c, v); }, nb::for_setter(nb::arg("value").none()));
  }
}

}  // namespace moerun::python
