// moerun._C.load_hf_layer: one MoE layer of a Hugging Face checkpoint (src/io), as NumPy arrays
// that view the loader's memory (the memory-mapped file where it serves tensors in place).
#pragma once

#include <nanobind/nanobind.h>

namespace moerun::python {

void bind_checkpoint(nanobind::module_& m);

}  // namespace moerun::python
