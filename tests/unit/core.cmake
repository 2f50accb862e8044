# Unit tests for modules of the connection layer that do no I/O: the
# per-connection outbound queue (outq), the admission keys (admit), a
# worker's group table and the batched message releases (groups). Each is
# built from its own sources so the test does not drag in the server.
# include()d from tests/unit/CMakeLists.txt (after CMOCKA is found).
add_executable(test_outq ${CMAKE_CURRENT_LIST_DIR}/test_outq.c
    ${CMAKE_SOURCE_DIR}/src/outq.c ${CMAKE_SOURCE_DIR}/src/msg.c)
add_executable(test_admit ${CMAKE_CURRENT_LIST_DIR}/test_admit.c ${CMAKE_SOURCE_DIR}/src/admit.c)
add_executable(test_groups ${CMAKE_CURRENT_LIST_DIR}/test_groups.c
    ${CMAKE_SOURCE_DIR}/src/groups.c ${CMAKE_SOURCE_DIR}/src/names.c ${CMAKE_SOURCE_DIR}/src/msg.c)
foreach(t outq admit groups)
    target_link_libraries(test_${t} PRIVATE herald_pure PkgConfig::CMOCKA Threads::Threads)
    add_test(NAME unit_${t} COMMAND test_${t})
    set_tests_properties(unit_${t} PROPERTIES TIMEOUT 60)
endforeach()
