// A JSON value in an error message, in bounded size and without recursion.
//
// nlohmann's dump() recurses once per nesting level, so dumping a hostile value (a 20 MB header
// of nested brackets) would overflow the stack; messages print scalars and arrays of scalars
// whole, and only the type of anything deeper.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace moerun::io {

inline std::string json_brief(const nlohmann::json& value) {
  constexpr std::size_t kMaxChars = 120;
  if (value.is_primitive()) {
    std::string text = value.dump();
    if (text.size() > kMaxChars) text = text.substr(0, kMaxChars) + "...";
    return text;
  }
  if (!value.is_array()) return std::string("a JSON ") + value.type_name();
  std::string text = "[";
  for (const auto& element : value) {
    if (text.size() > 1) text += ",";
    text += element.is_primitive() ? element.dump() : std::string("<") + element.type_name() + ">";
    if (text.size() > kMaxChars) return text + ",...]";
  }
  return text + "]";
}

}  // namespace moerun::io
