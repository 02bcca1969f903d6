// moerun's one exception type, and the argument checks that raise it.
//
// Every rejection names the field, what was expected and what was found, e.g.
//   moerun: invalid hidden_size: expected a multiple of 128 for FP8 weights, got 1000
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
