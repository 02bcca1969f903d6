# NCCL for expert parallelism across processes (MOERUN_ENABLE_NCCL, on by default; without it, or
# where NCCL is not found, the build has virtual EP ranks only). Looked for in the CUDA toolkit, the
# system, and the `nvidia-nccl-cu13` wheel of the python3 on PATH (pip install nvidia-nccl-cu13).
# Sets MOERUN_HAS_NCCL and the imported target moerun::nccl.
set(MOERUN_HAS_NCCL OFF)
if(MOERUN_ENABLE_NCCL AND MOERUN_HAS_CUDA)
  set(_moerun_nccl_hints ${CUDAToolkit_INCLUDE_DIRS} ${CUDAToolkit_LIBRARY_DIR})
  find_program(_moerun_python python3)
  if(_moerun_python)
    execute_process(
      COMMAND ${_moerun_python} -c
              "import nvidia.nccl as m; print(list(m.__path__)[0])"
      OUTPUT_VARIABLE _moerun_nccl_wheel OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    if(_moerun_nccl_wheel)
      list(APPEND _moerun_nccl_hints ${_moerun_nccl_wheel}/include ${_moerun_nccl_wheel}/lib)
    endif()
  endif()
  find_path(MOERUN_NCCL_INCLUDE_DIR nccl.h HINTS ${_moerun_nccl_hints}
            PATH_SUFFIXES include ../include)
  find_library(MOERUN_NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${_moerun_nccl_hints}
               PATH_SUFFIXES lib lib64 ../lib)
  if(MOERUN_NCCL_INCLUDE_DIR AND MOERUN_NCCL_LIBRARY)
    file(STRINGS ${MOERUN_NCCL_INCLUDE_DIR}/nccl.h _moerun_nccl_version
         REGEX "^#define NCCL_(MAJOR|MINOR) +[0-9]+")
    string(REGEX REPLACE ".*NCCL_MAJOR +([0-9]+).*NCCL_MINOR +([0-9]+).*" "\\1.\\2"
           MOERUN_NCCL_VERSION "${_moerun_nccl_version}")
    # Symmetric windows and the device API (nccl_device.h) arrived in 2.28.
    if(MOERUN_NCCL_VERSION VERSION_GREATER_EQUAL 2.28 AND EXISTS ${MOERUN_NCCL_INCLUDE_DIR}/nccl_device.h)
      add_library(moerun::nccl UNKNOWN IMPORTED)
      set_target_properties(moerun::nccl PROPERTIES IMPORTED_LOCATION ${MOERUN_NCCL_LIBRARY})
      # SYSTEM: NCCL's headers are not held to moerun's warnings.
      target_include_directories(moerun::nccl SYSTEM INTERFACE ${MOERUN_NCCL_INCLUDE_DIR})
      set(MOERUN_HAS_NCCL ON)
    else()
      message(STATUS "moerun: NCCL ${MOERUN_NCCL_VERSION} at ${MOERUN_NCCL_INCLUDE_DIR} is older "
                     "than 2.28 or has no nccl_device.h; building without it")
    endif()
  endif()
endif()
message(STATUS "moerun: NCCL ${MOERUN_HAS_NCCL} ${MOERUN_NCCL_LIBRARY}")
