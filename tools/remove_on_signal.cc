#include "remove_on_signal.h"

#include <signal.h>
#include <unistd.h>

#include <cstring>

#include "moerun/errors.h"

namespace moerun::tools {

namespace {

constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP};
// The handler may only touch what is async-signal-safe: a fixed buffer and unlink(2).
char g_path[4096];
struct sigaction g_previous[3];

void remove_and_die(int signal) {
  ::unlink(g_path);
  // The default action, so that the exit status still says which signal ended the run.
  struct sigaction standard {};
  standard.sa_handler = SIG_DFL;
  ::sigaction(signal, &standard, nullptr);
  ::raise(signal);
}

}  // namespace

RemoveOnSignal::RemoveOnSignal(const std::filesystem::path& file) {
  const std::string path = std::filesystem::absolute(file).string();
  check_arg(path.size() < sizeof(g_path), "temporary file path", "under 4096 bytes", path.size());
  std::memcpy(g_path, path.c_str(), path.size() + 1);
  struct sigaction action {};
  action.sa_handler = remove_and_die;
  sigemptyset(&action.sa_mask);
  for (int i = 0; i < 3; ++i) ::sigaction(kSignals[i], &action, &g_previous[i]);
}

RemoveOnSignal::~RemoveOnSignal() {
  for (int i = 0; i < 3; ++i) ::sigaction(kSignals[i], &g_previous[i], nullptr);
  g_path[0] = '\0';
}

}  // namespace moerun::tools
