#include "exit_codes.h"

#include <cstdio>
#include <exception>
#include <new>

#include "moerun/errors.h"

namespace moerun::tools {

int run_with_exit_codes(const std::function<int()>& command) {
  try {
    return command();
  } catch (const ResourceError& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return kExitResource;
  } catch (const Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return kExitBadInput;
  } catch (const std::bad_alloc&) {
    // HostTensor names its size and shape (a ResourceError); this is any other allocation.
    std::fprintf(stderr, "moerun: out of host memory (std::bad_alloc outside a tensor)\n");
    return kExitResource;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moerun: error: %s\n", e.what());
    return kExitBadInput;
  }
}

}  // namespace moerun::tools
