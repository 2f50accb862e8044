# libFuzzer targets for permessage-deflate: negotiation (src/pmd.c) and the
# bounded inflater (src/deflate.c); include()d from tests/fuzz/CMakeLists.txt
# (after HERALD_FUZZ_SAN is set). Their sources get instrumented libraries of
# their own so this file touches no other target.
if(NOT TARGET PkgConfig::LIBDEFLATE)
    find_package(PkgConfig REQUIRED)
    pkg_check_modules(LIBDEFLATE REQUIRED IMPORTED_TARGET libdeflate)
    pkg_check_modules(ZLIB REQUIRED IMPORTED_TARGET zlib)
endif()

add_library(herald_pmd_fuzz STATIC ${CMAKE_SOURCE_DIR}/src/pmd.c ${CMAKE_SOURCE_DIR}/src/http.c
    ${CMAKE_SOURCE_DIR}/src/deflate.c ${CMAKE_SOURCE_DIR}/src/msg.c ${CMAKE_SOURCE_DIR}/src/ws.c
    ${CMAKE_SOURCE_DIR}/src/utf8.c)
target_include_directories(herald_pmd_fuzz PUBLIC ${CMAKE_SOURCE_DIR}/src)
target_compile_options(herald_pmd_fuzz PRIVATE
    -fsanitize=fuzzer-no-link,${HERALD_FUZZ_SAN} -fno-sanitize-recover=undefined -g -O1)
target_link_libraries(herald_pmd_fuzz PUBLIC OpenSSL::Crypto PkgConfig::LIBDEFLATE PkgConfig::ZLIB
    Threads::Threads)

foreach(t pmd inflate)
    add_executable(fuzz_${t} ${CMAKE_CURRENT_LIST_DIR}/fuzz_${t}.c)
    target_compile_options(fuzz_${t} PRIVATE
        -fsanitize=fuzzer,${HERALD_FUZZ_SAN} -fno-sanitize-recover=undefined -g -O1)
    target_link_options(fuzz_${t} PRIVATE -fsanitize=fuzzer,${HERALD_FUZZ_SAN})
    target_link_libraries(fuzz_${t} PRIVATE herald_pmd_fuzz)
    # Regression check in CTest: replay the seed corpus once, no fuzzing.
    add_test(NAME fuzz_${t}_corpus
             COMMAND fuzz_${t} -runs=0 ${CMAKE_CURRENT_LIST_DIR}/corpus/${t})
endforeach()
