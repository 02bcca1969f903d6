# Dependency fallback for machines without the Debian packages (the GPU device machine has no
# GoogleTest, nlohmann-json or CLI11 and no network): -DMOERUN_DEPS_DIR=<dir> holding
#   <dir>/googletest            the GoogleTest source tree (as /usr/src/googletest)
#   <dir>/include/nlohmann      nlohmann-json's headers
#   <dir>/include/CLI           CLI11's headers
# Each is used only where find_package does not find the installed package.
set(MOERUN_DEPS_DIR "" CACHE PATH "Fallback dependency sources (googletest, include/nlohmann, include/CLI)")

if(MOERUN_DEPS_DIR)
  find_package(nlohmann_json 3.10 QUIET)
  if(NOT nlohmann_json_FOUND AND NOT TARGET nlohmann_json::nlohmann_json)
    # IMPORTED, so that install(EXPORT) does not ask for it to be exported.
    add_library(nlohmann_json::nlohmann_json INTERFACE IMPORTED GLOBAL)
    target_include_directories(nlohmann_json::nlohmann_json INTERFACE ${MOERUN_DEPS_DIR}/include)
  endif()
  find_package(CLI11 QUIET)
  if(NOT CLI11_FOUND AND NOT TARGET CLI11::CLI11)
    add_library(CLI11::CLI11 INTERFACE IMPORTED GLOBAL)
    target_include_directories(CLI11::CLI11 INTERFACE ${MOERUN_DEPS_DIR}/include)
  endif()
  if(MOERUN_BUILD_TESTS)
    find_package(GTest QUIET)
    if(NOT GTest_FOUND AND NOT TARGET GTest::gtest)
      set(INSTALL_GTEST OFF CACHE BOOL "" FORCE)
      set(BUILD_GMOCK OFF CACHE BOOL "" FORCE)
      add_subdirectory(${MOERUN_DEPS_DIR}/googletest ${CMAKE_BINARY_DIR}/_deps/googletest
                       EXCLUDE_FROM_ALL)
      if(NOT TARGET GTest::gtest)
        add_library(GTest::gtest ALIAS gtest)
        add_library(GTest::gtest_main ALIAS gtest_main)
      endif()
    endif()
  endif()
endif()
