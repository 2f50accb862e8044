# Unit tests for the envelopes and the group records (src/envelope.c,
# src/chan.c; include()d from tests/unit/CMakeLists.txt (after CMOCKA is
# found). herald_core carries chan.c, envelope.c, msg.c and links msgpack-c
# and jansson; test_envelope decodes with both directly, and test_envelope
# races envelope_variant across threads.
add_executable(test_envelope ${CMAKE_CURRENT_LIST_DIR}/test_envelope.c)
target_link_libraries(test_envelope PRIVATE herald_core PkgConfig::CMOCKA PkgConfig::JANSSON
    OpenSSL::Crypto Threads::Threads)
add_test(NAME unit_envelope COMMAND test_envelope)
set_tests_properties(unit_envelope PROPERTIES TIMEOUT 60)

add_executable(test_chan ${CMAKE_CURRENT_LIST_DIR}/test_chan.c)
target_link_libraries(test_chan PRIVATE herald_core PkgConfig::CMOCKA)
add_test(NAME unit_chan COMMAND test_chan)
set_tests_properties(unit_chan PROPERTIES TIMEOUT 60)
