# libFuzzer target for the TLS 1.3 record layer of the hand-off
# (src/tls13rec.c); include()d from tests/fuzz/CMakeLists.txt (after
# HERALD_FUZZ_SAN is set). tls13rec.c gets its own instrumented library so
# that this file does not touch herald_pure_fuzz.
add_library(herald_tls13rec_fuzz STATIC ${CMAKE_SOURCE_DIR}/src/tls13rec.c)
target_include_directories(herald_tls13rec_fuzz PUBLIC ${CMAKE_SOURCE_DIR}/src)
target_compile_options(herald_tls13rec_fuzz PRIVATE
    -fsanitize=fuzzer-no-link,${HERALD_FUZZ_SAN} -fno-sanitize-recover=undefined -g -O1)
target_link_libraries(herald_tls13rec_fuzz PUBLIC OpenSSL::Crypto Threads::Threads)

add_executable(fuzz_tls13rec ${CMAKE_CURRENT_LIST_DIR}/fuzz_tls13rec.c)
target_compile_options(fuzz_tls13rec PRIVATE
    -fsanitize=fuzzer,${HERALD_FUZZ_SAN} -fno-sanitize-recover=undefined -g -O1)
target_link_options(fuzz_tls13rec PRIVATE -fsanitize=fuzzer,${HERALD_FUZZ_SAN})
target_link_libraries(fuzz_tls13rec PRIVATE herald_tls13rec_fuzz)
# Regression check in CTest: replay the seed corpus once, no fuzzing.
add_test(NAME fuzz_tls13rec_corpus
         COMMAND fuzz_tls13rec -runs=0 ${CMAKE_CURRENT_LIST_DIR}/corpus/tls13rec)
