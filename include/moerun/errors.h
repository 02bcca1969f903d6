// moerun's exception types, and the argument checks that raise them.
//
// Every rejection names the field, what was expected and what was found, e.g.
//   moerun: invalid hidden_size: expected a multiple of 128 for FP8 weights, got 1000
// Two kinds of failure are told apart (the CLI's exit codes 2 and 3, docs/USAGE.md):
//   InvalidArgument, and any other Error: the input is wrong (an argument, a file, a value);
//   ResourceError: the machine could not do it (no usable device, a CUDA error, out of host or
//     device memory, a full disk), whatever the input.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace moerun {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error("moerun: " + message) {}
};

// Thrown when an argument is rejected: the message names the field, the expectation and the value.
class InvalidArgument : public Error {
 public:
  InvalidArgument(std::string_view field, std::string_view expected, std::string_view actual)
      : Error("invalid " + std::string(field) + ": expected " + std::string(expected) + ", got " +
              std::string(actual)) {}
};

// The machine, not the input: a CUDA error, no usable device, out of memory, a full disk. The
// message says what was being done (the allocation's size and purpose, the file, the call).
class ResourceError : public Error {
 public:
  using Error::Error;
};

namespace detail {
inline std::string to_text(std::string_view s) { return std::string(s); }
inline std::string to_text(const char* s) { return std::string(s); }
inline std::string to_text(const std::string& s) { return s; }
template <class T>
std::string to_text(const T& value) {
  return std::to_string(value);
}
}  // namespace detail

// Rejects `field` unless `condition` holds; `actual` may be any printable value.
template <class T>
void check_arg(bool condition, std::string_view field, std::string_view expected, const T& actual) {
  if (!condition) throw InvalidArgument(field, expected, detail::to_text(actual));
}

}  // namespace moerun
