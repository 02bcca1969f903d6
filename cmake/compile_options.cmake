# moerun_set_compile_options(target): the project's warning set (errors when
# MOERUN_WARNINGS_AS_ERRORS), its floating-point contract, and the checked builds' flags
# (MOERUN_STDLIB_ASSERTIONS, MOERUN_SANITIZE).
function(moerun_set_compile_options target)
  # No contraction of a * b + c into a fused multiply-add on the host: the oracle's fp32
  # operations round one by one, as the kernels' __f*_rn intrinsics do (src/core/portable_math.h).
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-ffp-contract=off>
                                           $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-ffp-contract=off>)
  set(cxx_flags -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion)
  if(MOERUN_WARNINGS_AS_ERRORS)
    list(APPEND cxx_flags -Werror)
  endif()
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${cxx_flags}>)
  if(MOERUN_HAS_CUDA)
    set(cuda_flags -lineinfo --expt-relaxed-constexpr -Xptxas=--warn-on-spills)
    if(MOERUN_WARNINGS_AS_ERRORS)
      list(APPEND cuda_flags -Werror=all-warnings)
    endif()
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:${cuda_flags}>)
  endif()
  if(MOERUN_STDLIB_ASSERTIONS)
    # A compile definition reaches nvcc's host compiler too, so .cu host code is checked as well.
    target_compile_definitions(${target} PRIVATE _GLIBCXX_ASSERTIONS)
  endif()
  if(MOERUN_SANITIZE)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=address,undefined -fno-omit-frame-pointer>)
    target_link_options(${target} PRIVATE -fsanitize=address,undefined)
  endif()
endfunction()
