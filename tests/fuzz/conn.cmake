# libFuzzer target for the connection state machine (tests/fuzz/fuzz_conn.c);
# include()d from tests/fuzz/CMakeLists.txt (after HERALD_FUZZ_SAN is set).
# Every herald source but main.c is compiled again, with the fuzzer's
# instrumentation and sanitizers, into a library of its own (so this file
# touches no other target), and linked with what the herald binary links.
if(NOT TARGET PkgConfig::JANSSON)
    find_package(PkgConfig REQUIRED)
    pkg_check_modules(JANSSON REQUIRED IMPORTED_TARGET jansson)
endif()
if(NOT TARGET PkgConfig::HIREDIS)
    find_package(PkgConfig REQUIRED)
    pkg_check_modules(HIREDIS REQUIRED IMPORTED_TARGET hiredis)
endif()

file(GLOB HERALD_CONN_FUZZ_SRC CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/*.c)
list(REMOVE_ITEM HERALD_CONN_FUZZ_SRC ${CMAKE_SOURCE_DIR}/src/main.c)

# The embedded status page (GET /), generated here as the top level does for
# the herald binary.
add_custom_command(
    OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/fuzz_status_page.c
    COMMAND ${CMAKE_COMMAND} -DIN=${CMAKE_SOURCE_DIR}/web/index.html
            -DOUT=${CMAKE_CURRENT_BINARY_DIR}/fuzz_status_page.c -DNAME=status_page_html
            -P ${CMAKE_SOURCE_DIR}/cmake/embed.cmake
    DEPENDS ${CMAKE_SOURCE_DIR}/web/index.html ${CMAKE_SOURCE_DIR}/cmake/embed.cmake)

# Per-input setup and teardown (a fresh server for every input) walks tables
# of thousands of slots; left without coverage callbacks they cost a tenth as
# much, and their coverage says nothing about an input anyway.
file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/fuzz_conn_cov_ignore.txt
    "fun:worker_init\nfun:worker_cleanup\nfun:ring_init\nfun:chan_init\nfun:chan_destroy\n"
    "fun:admit_init\nfun:admit_destroy\nfun:groups_init\nfun:groups_destroy\n")

add_custom_command(
    OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/fuzz_herald_client_js.c
    COMMAND ${CMAKE_COMMAND} -DIN=${CMAKE_SOURCE_DIR}/clients/js/src/index.js
            -DOUT=${CMAKE_CURRENT_BINARY_DIR}/fuzz_herald_client_js.c -DNAME=herald_client_js
            -P ${CMAKE_SOURCE_DIR}/cmake/embed.cmake
    DEPENDS ${CMAKE_SOURCE_DIR}/clients/js/src/index.js ${CMAKE_SOURCE_DIR}/cmake/embed.cmake)

add_library(herald_conn_fuzz STATIC ${HERALD_CONN_FUZZ_SRC}
    ${CMAKE_CURRENT_BINARY_DIR}/fuzz_status_page.c ${CMAKE_CURRENT_BINARY_DIR}/fuzz_herald_client_js.c)
target_include_directories(herald_conn_fuzz PUBLIC ${CMAKE_SOURCE_DIR}/src
    ${CMAKE_SOURCE_DIR}/tests/common ${MSGPACK_INCLUDE_DIR})
target_compile_options(herald_conn_fuzz PRIVATE
    -fsanitize=fuzzer-no-link,${HERALD_FUZZ_SAN} -fno-sanitize-recover=undefined -g -O1
    -fsanitize-coverage-ignorelist=${CMAKE_CURRENT_BINARY_DIR}/fuzz_conn_cov_ignore.txt)
if(NOT TARGET PkgConfig::LIBDEFLATE)
    pkg_check_modules(LIBDEFLATE REQUIRED IMPORTED_TARGET libdeflate)
    pkg_check_modules(ZLIB REQUIRED IMPORTED_TARGET zlib)
endif()
target_link_libraries(herald_conn_fuzz PUBLIC OpenSSL::SSL OpenSSL::Crypto PkgConfig::JANSSON
    PkgConfig::HIREDIS ${MSGPACK_LIBRARY} Threads::Threads PkgConfig::LIBDEFLATE PkgConfig::ZLIB)

add_executable(fuzz_conn ${CMAKE_CURRENT_LIST_DIR}/fuzz_conn.c)
target_compile_options(fuzz_conn PRIVATE
    -fsanitize=fuzzer,${HERALD_FUZZ_SAN} -fno-sanitize-recover=undefined -g -O1)
target_link_options(fuzz_conn PRIVATE -fsanitize=fuzzer,${HERALD_FUZZ_SAN})
target_link_libraries(fuzz_conn PRIVATE herald_conn_fuzz)
# Regression check in CTest: replay the seed corpus once, no fuzzing.
add_test(NAME fuzz_conn_corpus
         COMMAND fuzz_conn -runs=0 ${CMAKE_CURRENT_LIST_DIR}/corpus/conn)
