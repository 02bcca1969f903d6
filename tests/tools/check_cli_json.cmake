# Runs the moerun CLI and checks its JSON output: cmake -DMOERUN=path -DARGS=a|b|c -DKEYS=k1|k2=v
# -P check_cli_json.cmake
#   ARGS  the command line, '|'-separated
#   KEYS  what stdout's JSON object must hold, '|'-separated: a path (dots between object keys and
#         array indices, e.g. results.0.layer_ms), optionally '=value' to compare its string value
#         (JSON true/false read as ON/OFF)
# Fails on a non-zero exit code or a missing key. Where the tool reports no usable CUDA device (an
# error, or `moerun run`'s "cuda" key when auto fell back to the CPU) it prints "SKIPPED: no usable
# CUDA device" instead (the test's SKIP_REGULAR_EXPRESSION), unless the environment has
# MOERUN_REQUIRE_GPU=1 (the device scripts): there a missing device, or auto choosing the CPU, is a
# failure.
string(REPLACE "|" ";" args "${ARGS}")
execute_process(COMMAND "${MOERUN}" ${args} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE err)
if("${err}${out}" MATCHES "no usable CUDA device")
  string(REGEX MATCH "no usable CUDA device[^\n\"]*" reason "${err}${out}")
  if("$ENV{MOERUN_REQUIRE_GPU}" STREQUAL "1")
    message(FATAL_ERROR "moerun ${ARGS}: ${reason} (MOERUN_REQUIRE_GPU=1)\n${out}\n${err}")
  endif()
  message("SKIPPED: ${reason}")
  return()
endif()
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "moerun ${ARGS}: exit code ${rc}\nstdout:\n${out}\nstderr:\n${err}")
endif()
string(REPLACE "|" ";" keys "${KEYS}")
foreach(key IN LISTS keys)
  if(key MATCHES "^([^=]+)=(.*)$")
    set(path "${CMAKE_MATCH_1}")
    set(want "${CMAKE_MATCH_2}")
  else()
    set(path "${key}")
    unset(want)
  endif()
  string(REPLACE "." ";" path_list "${path}")
  string(JSON value ERROR_VARIABLE json_error GET "${out}" ${path_list})
  if(json_error)
    message(FATAL_ERROR "moerun ${ARGS}: no '${path}' in its JSON (${json_error})\n${out}")
  endif()
  if(DEFINED want AND NOT value STREQUAL want)
    message(FATAL_ERROR "moerun ${ARGS}: '${path}' is '${value}', expected '${want}'")
  endif()
  message(STATUS "${path} = ${value}")
endforeach()
