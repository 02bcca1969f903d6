// moerun._C: the native half of the Python package. It links moerun only (no framework's C++
// API: tensors cross as DLPack or as raw pointer tuples), so one build works with any torch.
#include <nanobind/nanobind.h>

#include "checkpoint_binding.h"
#include "config_binding.h"
#include "layer_binding.h"
#include "moerun/errors.h"
#include "tensor_args.h"

namespace nb = nanobind;

NB_MODULE(_C, m) {
  m.doc() = "moerun's native module; use the moerun package.";
  // moerun.Error (RuntimeError) and moerun.InvalidArgument (Error and ValueError), with the C++
  // message: "moerun: invalid <field>: expected <...>, got <...>".
  static PyObject* error = PyErr_NewException("moerun.Error", PyExc_RuntimeError, nullptr);
  static PyObject* invalid = PyErr_NewException(
      "moerun.InvalidArgument",
      nb::make_tuple(nb::handle(error), nb::handle(PyExc_ValueError)).ptr(), nullptr);
  m.attr("Error") = nb::handle(error);
  m.attr("InvalidArgument") = nb::handle(invalid);
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const moerun::InvalidArgument& e) {
      PyErr_SetString(invalid, e.what());
    } catch (const moerun::Error& e) {
      PyErr_SetString(error, e.what());
    }
  });
  moerun::python::add_dtype_codes(m);
  moerun::python::bind_config(m);
  moerun::python::bind_layer(m);
  moerun::python::bind_checkpoint(m);
}
