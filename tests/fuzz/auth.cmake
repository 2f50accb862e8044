# libFuzzer target for src/auth.c; include()d from tests/fuzz/CMakeLists.txt
# (after HERALD_FUZZ_SAN is set). auth.c gets its own instrumented library so
# that this file does not touch herald_pure_fuzz.
if(NOT TARGET PkgConfig::JANSSON)
    find_package(PkgConfig REQUIRED)
    pkg_check_modules(JANSSON REQUIRED IMPORTED_TARGET jansson)
endif()

add_library(herald_auth_fuzz STATIC ${CMAKE_SOURCE_DIR}/src/auth.c ${CMAKE_SOURCE_DIR}/src/names.c)
target_include_directories(herald_auth_fuzz PUBLIC ${CMAKE_SOURCE_DIR}/src ${CMAKE_SOURCE_DIR}/tests/common)
target_compile_options(herald_auth_fuzz PRIVATE
    -fsanitize=fuzzer-no-link,${HERALD_FUZZ_SAN} -fno-sanitize-recover=undefined -g -O1)
target_link_libraries(herald_auth_fuzz PUBLIC OpenSSL::Crypto PkgConfig::JANSSON)

add_executable(fuzz_jwt ${CMAKE_CURRENT_LIST_DIR}/fuzz_jwt.c)
target_compile_options(fuzz_jwt PRIVATE
    -fsanitize=fuzzer,${HERALD_FUZZ_SAN} -fno-sanitize-recover=undefined -g -O1)
target_link_options(fuzz_jwt PRIVATE -fsanitize=fuzzer,${HERALD_FUZZ_SAN})
target_link_libraries(fuzz_jwt PRIVATE herald_auth_fuzz)
# Regression check in CTest: replay the seed corpus once, no fuzzing.
add_test(NAME fuzz_jwt_corpus
         COMMAND fuzz_jwt -runs=0 ${CMAKE_CURRENT_LIST_DIR}/corpus/jwt)
