# libFuzzer target for the query grammar of the HTTP routes (src/query.c);
# include()d from tests/fuzz/CMakeLists.txt (after HERALD_FUZZ_SAN is set).
# query.c gets its own instrumented library so that this file does not touch
# herald_pure_fuzz.
add_library(herald_query_fuzz STATIC ${CMAKE_SOURCE_DIR}/src/query.c ${CMAKE_SOURCE_DIR}/src/names.c)
target_include_directories(herald_query_fuzz PUBLIC ${CMAKE_SOURCE_DIR}/src)
target_compile_options(herald_query_fuzz PRIVATE
    -fsanitize=fuzzer-no-link,${HERALD_FUZZ_SAN} -fno-sanitize-recover=undefined -g -O1)

add_executable(fuzz_query ${CMAKE_CURRENT_LIST_DIR}/fuzz_query.c)
target_compile_options(fuzz_query PRIVATE
    -fsanitize=fuzzer,${HERALD_FUZZ_SAN} -fno-sanitize-recover=undefined -g -O1)
target_link_options(fuzz_query PRIVATE -fsanitize=fuzzer,${HERALD_FUZZ_SAN})
target_link_libraries(fuzz_query PRIVATE herald_query_fuzz)
# Regression check in CTest: replay the seed corpus once, no fuzzing.
add_test(NAME fuzz_query_corpus
         COMMAND fuzz_query -runs=0 ${CMAKE_CURRENT_LIST_DIR}/corpus/query)
