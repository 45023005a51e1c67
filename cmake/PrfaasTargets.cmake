# Helpers that give every project target the same warnings and test conventions.

# Warnings apply to project code only; third-party headers come in as SYSTEM includes.
add_library(prfaas_warnings INTERFACE)
target_compile_options(prfaas_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wno-missing-field-initializers>
  $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<BOOL:${PRFAAS_WERROR}>>:-Werror>)

# prfaas_library(NAME SOURCES ... DEPS ...): a static library rooted at the repository top,
# so includes read "common/status.h".
function(prfaas_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  target_link_libraries(${name} PUBLIC ${ARG_DEPS} PRIVATE prfaas_warnings ${ARG_PRIVATE_DEPS})
endfunction()

# prfaas_test(NAME SOURCES ... DEPS ... LABELS unit|integration|e2e|gpu|fuzz [TIMEOUT s])
# One GoogleTest executable registered with CTest under the given labels. Test discovery runs
# at test time so each TEST shows up on its own in ctest output.
function(prfaas_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  add_executable(${name} ${ARG_SOURCES})
  foreach(label IN LISTS ARG_LABELS)
    set_property(GLOBAL APPEND PROPERTY PRFAAS_TEST_TARGETS_${label} ${name})
  endforeach()
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main prfaas_warnings)
  target_compile_definitions(${name} PRIVATE
    PRFAAS_SOURCE_DIR="${PROJECT_SOURCE_DIR}" PRFAAS_BINARY_DIR="${PROJECT_BINARY_DIR}")
  include(GoogleTest)
  gtest_discover_tests(${name}
    PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT}
    DISCOVERY_MODE PRE_TEST
    EXTRA_ARGS --gtest_brief=0)
endfunction()

# Writes build/<preset>/test-targets-<label>.txt listing the test executables of each label, so
# CI can build just the unit tests of the sanitizer presets (see Makefile: test-asan).
function(prfaas_write_test_target_lists)
  foreach(label unit integration e2e gpu fuzz)
    get_property(_targets GLOBAL PROPERTY PRFAAS_TEST_TARGETS_${label})
    list(JOIN _targets " " _line)
    file(WRITE ${PROJECT_BINARY_DIR}/test-targets-${label}.txt "${_line}\n")
  endforeach()
endfunction()
