// moerun.MoeConfig: the C++ MoeConfig, every field by keyword.
#pragma once

#include <nanobind/nanobind.h>

namespace moerun::python {

void bind_config(nanobind::module_& m);

}  // namespace moerun::python
