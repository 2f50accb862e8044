# Unit tests for the option loader (src/config.c): defaults, the
# file < HERALD_* environment < flag precedence, value parsing and its error
# messages, --help/--version/--print-config. config.c lives in herald_core.
# include()d from tests/unit/CMakeLists.txt (after CMOCKA is found).
add_executable(test_config ${CMAKE_CURRENT_LIST_DIR}/test_config.c)
target_link_libraries(test_config PRIVATE herald_core PkgConfig::CMOCKA)
add_test(NAME unit_config COMMAND test_config)
set_tests_properties(unit_config PROPERTIES TIMEOUT 60)
