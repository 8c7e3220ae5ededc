/*
 * golden_stream.h - how a grukit C test driver reads golden vectors and writes its results.
 *
 * Golden vectors are a flat stream of int32 words written by the NumPy side (tests/firmware_build.py).
 * On a host the stream is a text file of decimal words named on the command line; on a bare-metal target
 * (GOLDEN_EMBEDDED) it is an array compiled in from a generated C file that defines grukit_golden_words and
 * grukit_golden_word_count. Results are printed as text lines, one per case:
 *     "<case> <n> <v0> ... <v(n-1)>"
 * which the Python side parses and compares, reporting the first mismatch.
 */
#ifndef GOLDEN_STREAM_H
#define GOLDEN_STREAM_H

#include <stdint.h>

/* Opens the stream (argv[1] on a host; the compiled-in array otherwise). Returns 0 on success. */
int golden_open(int argc, char **argv);

/* The next word; a read past the end or a malformed word aborts the driver with a message (exit 3). */
int32_t golden_next(void);

/* The next word, checked to lie in [lo, hi] (catches a stream that is out of step with the driver). */
int32_t golden_next_in(int32_t lo, int32_t hi, const char *what);

/* An int64 written as two words, high then low (the low word is the uint32 bit pattern as int32). */
int64_t golden_next_i64(void);

/* Prints one result line: "<case_index> <n> <values...>\n". */
void golden_emit_i32(int32_t case_index, const int32_t *values, int32_t n);
void golden_emit_i16(int32_t case_index, const int16_t *values, int32_t n);
void golden_emit_i8(int32_t case_index, const int8_t *values, int32_t n);

/* Reports a driver error and exits with status 3 (the Python side shows stderr/stdout). */
void golden_fail(const char *what);

/* Closes the stream. */
void golden_close(void);

#endif /* GOLDEN_STREAM_H */
