// Python tensors as moerun TensorViews, without copies and without any framework's C++ API.
#pragma once

#include <nanobind/nanobind.h>

#include <cstdint>

#include "moerun/tensor.h"

namespace moerun::python {

// `obj` as a view, or an undefined view for None. Accepts
//   - any DLPack producer (torch, CuPy, JAX, NumPy; via nanobind's ndarray import), C-contiguous;
//   - the tuple (data_ptr, dtype, shape, device_type, device_index) that moerun's Python layer
//     builds for torch tensors and NumPy arrays of ml_dtypes types after checking contiguity
//     (torch's __dlpack__ costs microseconds per tensor; NumPy cannot export bfloat16 or float8
//     through DLPack). dtype is a moerun DType value, device_type a DLPack code (1 cpu, 2 cuda).
// Rejects anything else with an InvalidArgument naming `name`.
TensorView tensor_arg(nanobind::handle obj, const char* name);

// The DType values of the tuple form, for the Python layer.
void add_dtype_codes(nanobind::module_& m);

}  // namespace moerun::python
