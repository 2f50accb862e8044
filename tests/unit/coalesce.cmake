# Unit tests for the write-coalescing policy (src/coalesce.c, in herald_pure);
# include()d from tests/unit/CMakeLists.txt (after CMOCKA is found).
add_executable(test_coalesce ${CMAKE_CURRENT_LIST_DIR}/test_coalesce.c)
target_link_libraries(test_coalesce PRIVATE herald_pure PkgConfig::CMOCKA)
add_test(NAME unit_coalesce COMMAND test_coalesce)
set_tests_properties(unit_coalesce PROPERTIES TIMEOUT 60)
