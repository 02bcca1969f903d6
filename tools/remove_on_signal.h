// A temporary file that an interrupted run (SIGINT, SIGTERM, SIGHUP) removes before it dies, so
// that Ctrl-C leaves nothing behind but what was there before. One at a time per process.
#pragma once

#include <filesystem>

namespace moerun::tools {

class RemoveOnSignal {
 public:
  // Installs the handlers (the previous ones come back with the destructor).
  explicit RemoveOnSignal(const std::filesystem::path& file);
  ~RemoveOnSignal();
  RemoveOnSignal(const RemoveOnSignal&) = delete;
  RemoveOnSignal& operator=(const RemoveOnSignal&) = delete;
};

}  // namespace moerun::tools
