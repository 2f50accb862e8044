# Unit tests for the SSE encoder and resume id (src/sse.c, in herald_pure);
# include()d from tests/unit/CMakeLists.txt (after CMOCKA is found).
add_executable(test_sse ${CMAKE_CURRENT_LIST_DIR}/test_sse.c)
target_include_directories(test_sse PRIVATE ${CMAKE_SOURCE_DIR}/tests/common)
target_link_libraries(test_sse PRIVATE herald_pure PkgConfig::CMOCKA)
add_test(NAME unit_sse COMMAND test_sse)
set_tests_properties(unit_sse PROPERTIES TIMEOUT 60)
