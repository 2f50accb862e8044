# Unit tests for src/auth.c; include()d from tests/unit/CMakeLists.txt (after
# CMOCKA is found). herald_pure carries auth.c, OpenSSL and jansson; the test
# also calls OpenSSL's HMAC itself to build its tokens.
add_executable(test_auth ${CMAKE_CURRENT_LIST_DIR}/test_auth.c)
target_include_directories(test_auth PRIVATE ${CMAKE_SOURCE_DIR}/tests/common)
target_link_libraries(test_auth PRIVATE herald_pure PkgConfig::CMOCKA OpenSSL::Crypto)
add_test(NAME unit_auth COMMAND test_auth)
set_tests_properties(unit_auth PROPERTIES TIMEOUT 60)
