/* grukit_tables.h - constant tables shared by the grukit C kernels (defined in grukit_tables.c, generated). */
#ifndef GRUKIT_TABLES_H
#define GRUKIT_TABLES_H

#include <stdint.h>

/* sigmoid(i / 24) in unsigned Q0.16, i = 0..255: TFLite-Micro's int16 LOGISTIC / TANH table. */
extern const uint16_t grukit_sigmoid_table_uint16[256];

#endif /* GRUKIT_TABLES_H */
