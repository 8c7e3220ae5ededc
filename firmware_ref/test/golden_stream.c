/* golden_stream.c - see golden_stream.h. Test support code: uses stdio, never linked into the library. */
#include "golden_stream.h"

#include <stdio.h>
#include <stdlib.h>

#ifdef GOLDEN_EMBEDDED
extern const int32_t grukit_golden_words[];
extern const uint32_t grukit_golden_word_count;
static uint32_t g_pos;
#else
static FILE *g_file;
#endif

void golden_fail(const char *what)
{
    printf("\nGOLDEN-ERROR %s\n", what);
    fflush(stdout);
    exit(3);
}

int golden_open(int argc, char **argv)
{
#ifdef GOLDEN_EMBEDDED
    (void)argc;
    (void)argv;
    g_pos = 0;
    return 0;
#else
    if (argc < 2) {
        golden_fail("usage: driver GOLDEN_FILE");
    }
    g_file = fopen(argv[1], "r");
    return g_file == NULL ? 1 : 0;
#endif
}

int32_t golden_next(void)
{
#ifdef GOLDEN_EMBEDDED
    if (g_pos >= grukit_golden_word_count) {
        golden_fail("read past the end of the golden stream");
    }
    return grukit_golden_words[g_pos++];
#else
    long value;
    if (fscanf(g_file, "%ld", &value) != 1 || value < INT32_MIN || value > INT32_MAX) {
        golden_fail("golden stream ended or holds a malformed word");
    }
    return (int32_t)value;
#endif
}

int32_t golden_next_in(int32_t lo, int32_t hi, const char *what)
{
    const int32_t v = golden_next();
    if (v < lo || v > hi) {
        golden_fail(what);
    }
    return v;
}

int64_t golden_next_i64(void)
{
    const uint32_t hi = (uint32_t)golden_next();
    const uint32_t lo = (uint32_t)golden_next();
    return (int64_t)(((uint64_t)hi << 32) | lo);
}

void golden_emit_i32(int32_t case_index, const int32_t *values, int32_t n)
{
    printf("%ld %ld", (long)case_index, (long)n);
    for (int32_t i = 0; i < n; ++i) {
        printf(" %ld", (long)values[i]);
    }
    printf("\n");
}

void golden_emit_i16(int32_t case_index, const int16_t *values, int32_t n)
{
    printf("%ld %ld", (long)case_index, (long)n);
    for (int32_t i = 0; i < n; ++i) {
        printf(" %d", (int)values[i]);
    }
    printf("\n");
}

void golden_emit_i8(int32_t case_index, const int8_t *values, int32_t n)
{
    printf("%ld %ld", (long)case_index, (long)n);
    for (int32_t i = 0; i < n; ++i) {
        printf(" %d", (int)values[i]);
    }
    printf("\n");
}

void golden_close(void)
{
#ifndef GOLDEN_EMBEDDED
    if (g_file != NULL) {
        fclose(g_file);
    }
#endif
    fflush(stdout);
}
