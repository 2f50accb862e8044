# Unit tests for the broker's pure modules: Redis Cluster key slots and
# redirections (redis_slot), and --broker URLs (broker_url). Both live in
# herald_pure. include()d from tests/unit/CMakeLists.txt (after CMOCKA is found).
foreach(t redis_slot broker_url)
    add_executable(test_${t} ${CMAKE_CURRENT_LIST_DIR}/test_${t}.c)
    target_link_libraries(test_${t} PRIVATE herald_pure PkgConfig::CMOCKA)
    add_test(NAME unit_${t} COMMAND test_${t})
    set_tests_properties(unit_${t} PROPERTIES TIMEOUT 60)
endforeach()
