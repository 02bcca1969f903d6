# Runs `moerun ep-check --ep-size N` (one process per GPU): cmake -DMOERUN=path -DRANKS=N -P ...
# Prints "SKIPPED: ..." (the test's SKIP_REGULAR_EXPRESSION) where no CUDA device is visible
# (a failure instead under MOERUN_REQUIRE_GPU=1, as the device scripts set it), and where fewer
# than N GPUs are visible only if MOERUN_ALLOW_FEWER_GPUS=1 is set: on a one-GPU machine the
# multi-GPU check fails unless that is asked for explicitly.
set(args ep-check --ep-size ${RANKS})
if("$ENV{MOERUN_ALLOW_FEWER_GPUS}" STREQUAL "1")
  list(APPEND args --allow-fewer-gpus)
endif()
execute_process(COMMAND "${MOERUN}" ${args} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE err)
if("${err}${out}" MATCHES "no usable CUDA device")
  if("$ENV{MOERUN_REQUIRE_GPU}" STREQUAL "1")
    message(FATAL_ERROR "moerun ${args}: no usable CUDA device (MOERUN_REQUIRE_GPU=1)\n${out}\n${err}")
  endif()
  message("SKIPPED: no usable CUDA device")
  return()
endif()
if("${out}" MATCHES "not run \\(--allow-fewer-gpus\\)")
  string(REGEX MATCH "needs [^\n]*visible" reason "${out}")
  message("SKIPPED: ${reason} (MOERUN_ALLOW_FEWER_GPUS=1)")
  return()
endif()
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "moerun ${args}: exit code ${rc}\nstdout:\n${out}\nstderr:\n${err}")
endif()
message("${out}")
