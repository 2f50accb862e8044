# Unit tests for the TLS 1.3 record layer of the hand-off (src/tls13rec.c, in
# herald_pure): RFC 8448 vectors, KeyUpdate, malformed and forged records.
# include()d from tests/unit/CMakeLists.txt (after CMOCKA is found).
add_executable(test_tls13rec ${CMAKE_CURRENT_LIST_DIR}/test_tls13rec.c)
target_link_libraries(test_tls13rec PRIVATE herald_pure PkgConfig::CMOCKA OpenSSL::Crypto Threads::Threads)
add_test(NAME unit_tls13rec COMMAND test_tls13rec)
set_tests_properties(unit_tls13rec PROPERTIES TIMEOUT 60)
