# Runs the moerun CLI and checks that it fails as it should:
#   cmake -DMOERUN=path -DARGS=a|b|c -DRC=2 -DEXPECT=regex -P check_cli_error.cmake
#   ARGS    the command line, '|'-separated
#   RC      the exit code expected
#   EXPECT  a regular expression stderr + stdout must match (the message naming the field)
#   LIMIT_KB  optional: run under `ulimit -v LIMIT_KB` (through sh)
string(REPLACE "|" ";" args "${ARGS}")
if(DEFINED LIMIT_KB)
  string(REPLACE "|" " " words "${ARGS}")
  execute_process(COMMAND sh -c "ulimit -v ${LIMIT_KB} && exec \"${MOERUN}\" ${words}"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
else()
  execute_process(COMMAND "${MOERUN}" ${args} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                  ERROR_VARIABLE err)
endif()
if(NOT rc EQUAL RC)
  message(FATAL_ERROR "moerun ${ARGS}: exit code ${rc}, expected ${RC}\nstdout:\n${out}\nstderr:\n${err}")
endif()
if(NOT "${err}${out}" MATCHES "${EXPECT}")
  message(FATAL_ERROR "moerun ${ARGS}: output does not match '${EXPECT}'\nstdout:\n${out}\nstderr:\n${err}")
endif()
message(STATUS "moerun ${ARGS}: exit code ${rc}: ${err}")
