// moerun._C.Layer: the C++ Layer with Python tensors in and out (tensor_args.h). The Python class
// moerun.Layer wraps it (allocation of outputs and workspaces, streams, frameworks).
#pragma once

#include <nanobind/nanobind.h>

namespace moerun::python {

void bind_layer(nanobind::module_& m);

}  // namespace moerun::python
