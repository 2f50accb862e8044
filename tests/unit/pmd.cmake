# Unit tests for permessage-deflate: negotiation and the reader's RSV1 rules
# (pure, in herald_pure) and src/deflate.c (compress-once frames, the bounded
# inflater) built from its sources with msg.c. include()d from
# tests/unit/CMakeLists.txt (after CMOCKA is found).
add_executable(test_pmd ${CMAKE_CURRENT_LIST_DIR}/test_pmd.c)
target_link_libraries(test_pmd PRIVATE herald_pure PkgConfig::CMOCKA)
add_executable(test_deflate ${CMAKE_CURRENT_LIST_DIR}/test_deflate.c
    ${CMAKE_SOURCE_DIR}/src/deflate.c ${CMAKE_SOURCE_DIR}/src/msg.c)
target_link_libraries(test_deflate PRIVATE herald_pure PkgConfig::CMOCKA Threads::Threads
    PkgConfig::LIBDEFLATE PkgConfig::ZLIB)
foreach(t pmd deflate)
    add_test(NAME unit_${t} COMMAND test_${t})
    set_tests_properties(unit_${t} PROPERTIES TIMEOUT 60)
endforeach()
