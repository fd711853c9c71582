# Small helpers shared by every target of the project. No global flags: each
# target opts in through these functions.

function(limpq_enable_ccache)
  if(NOT LIMPQ_USE_CCACHE)
    return()
  endif()
  find_program(LIMPQ_CCACHE ccache)
  if(LIMPQ_CCACHE)
    # Precompiled headers need these sloppiness settings to be cacheable.
    set(CMAKE_CXX_COMPILER_LAUNCHER
        ${CMAKE_COMMAND} -E env CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
        ${LIMPQ_CCACHE} PARENT_SCOPE)
    message(STATUS "limpq: using ccache at ${LIMPQ_CCACHE}")
  endif()
endfunction()

function(limpq_set_warnings target)
  # Host C++ only: nvcc rejects these flags.
  target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:CXX>:-Wall;-Wextra;-Wno-unused-parameter>")
  if(LIMPQ_WARNINGS_AS_ERRORS)
    target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:CXX>:-Werror>")
  endif()
endfunction()

# Every test process sleeps in OpenMP barriers instead of spinning. ctest
# runs tests side by side (-j), each with all cores: spinning threads then
# hold the cores the other process's threads are waiting for, and every
# parallel region waits out a scheduler slice. Measured on the 2-core VM,
# the two ONNX export tests together: over 300 s each (timeout) spinning,
# 64-68 s sleeping; 37 s each alone.
set(LIMPQ_TEST_ENVIRONMENT "OMP_WAIT_POLICY=set:passive")

# limpq_add_test(NAME <name> SOURCES <files...> [LABELS <labels...>]
#                [TIMEOUT <seconds>] [PROPERTIES <ctest properties...>])
# One executable per area; every GoogleTest case becomes a ctest test.
function(limpq_add_test)
  cmake_parse_arguments(ARG "" "NAME;TIMEOUT" "SOURCES;LABELS;PROPERTIES" ${ARGN})
  add_executable(${ARG_NAME} ${ARG_SOURCES})
  target_link_libraries(${ARG_NAME} PRIVATE limpq::limpq limpq_test_support GTest::gtest GTest::gmock GTest::gtest_main)
  target_precompile_headers(${ARG_NAME} REUSE_FROM limpq)
  limpq_set_warnings(${ARG_NAME})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  # One label at most: gtest_discover_tests cannot pass a list value through.
  # Slow suites carry "slow" and stay out of the default run (ctest -LE slow).
  set(label_property)
  if(ARG_LABELS)
    list(LENGTH ARG_LABELS n_labels)
    if(n_labels GREATER 1)
      message(FATAL_ERROR "limpq_add_test(${ARG_NAME}): give at most one label")
    endif()
    set(label_property LABELS ${ARG_LABELS})
  endif()
  gtest_discover_tests(${ARG_NAME}
    PROPERTIES ${label_property} TIMEOUT ${ARG_TIMEOUT} ENVIRONMENT_MODIFICATION ${LIMPQ_TEST_ENVIRONMENT}
               ${ARG_PROPERTIES}
    DISCOVERY_TIMEOUT 60)
endfunction()
