# libFuzzer target for src/sse.c; include()d from tests/fuzz/CMakeLists.txt
# (after HERALD_FUZZ_SAN is set). sse.c gets its own instrumented library so
# that this file does not touch herald_pure_fuzz.
add_library(herald_sse_fuzz STATIC ${CMAKE_SOURCE_DIR}/src/sse.c)
target_include_directories(herald_sse_fuzz PUBLIC ${CMAKE_SOURCE_DIR}/src ${CMAKE_SOURCE_DIR}/tests/common)
target_compile_options(herald_sse_fuzz PRIVATE
    -fsanitize=fuzzer-no-link,${HERALD_FUZZ_SAN} -fno-sanitize-recover=undefined -g -O1)
target_link_libraries(herald_sse_fuzz PUBLIC OpenSSL::Crypto)

add_executable(fuzz_sse ${CMAKE_CURRENT_LIST_DIR}/fuzz_sse.c)
target_compile_options(fuzz_sse PRIVATE
    -fsanitize=fuzzer,${HERALD_FUZZ_SAN} -fno-sanitize-recover=undefined -g -O1)
target_link_options(fuzz_sse PRIVATE -fsanitize=fuzzer,${HERALD_FUZZ_SAN})
target_link_libraries(fuzz_sse PRIVATE herald_sse_fuzz)
# Regression check in CTest: replay the seed corpus once, no fuzzing.
add_test(NAME fuzz_sse_corpus
         COMMAND fuzz_sse -runs=0 ${CMAKE_CURRENT_LIST_DIR}/corpus/sse)
