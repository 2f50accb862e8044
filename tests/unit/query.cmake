# Unit tests for the query grammar of the HTTP routes (src/query.c, in
# herald_pure); include()d from tests/unit/CMakeLists.txt (after CMOCKA is found).
add_executable(test_query ${CMAKE_CURRENT_LIST_DIR}/test_query.c)
target_link_libraries(test_query PRIVATE herald_pure PkgConfig::CMOCKA)
add_test(NAME unit_query COMMAND test_query)
set_tests_properties(unit_query PROPERTIES TIMEOUT 60)
