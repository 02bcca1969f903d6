// Progress lines for long work, on stderr so that --json output stays clean.
#pragma once

#include <string>

namespace moerun::tools {

class Progress {
 public:
  explicit Progress(std::string label) : label_(std::move(label)) {}
  // Prints at each further 10% step; a final call with 1.0 closes the line.
  void update(double fraction);

 private:
  std::string label_;
  int printed_tenths_ = -1;
};

}  // namespace moerun::tools
