/* Error reporting for the runtime API.
 *
 * Every fallible function takes a `struct caem_error *` as its last argument,
 * returns 0 on success and -1 on failure, and on failure leaves a message
 * that names what was wrong (file, tensor, layer or record) and what was
 * expected. The caller owns the struct; a NULL pointer discards the message. */
#ifndef CAEM_ERROR_H
#define CAEM_ERROR_H

#include <stddef.h>

#define CAEM_ERROR_MAX 1024

struct caem_error {
    char message[CAEM_ERROR_MAX];
};

#if defined(__GNUC__)
#define CAEM_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define CAEM_PRINTF(fmt, args)
#endif

/* Formats the message into err and returns -1, so that a failing function can
 * end with `return caem_fail(err, ...)`. */
int caem_fail(struct caem_error *err, const char *fmt, ...) CAEM_PRINTF(2, 3);

/* Puts `prefix: ` in front of the message already in err and returns -1. Used
 * by a caller that adds context (a file name, a layer) to a callee's error. */
int caem_fail_prefix(struct caem_error *err, const char *fmt, ...) CAEM_PRINTF(2, 3);

/* Allocation helpers that report the size and what it was for. They return
 * NULL and set err when the allocation fails. */
void *caem_malloc(size_t size, const char *what, struct caem_error *err);
void *caem_calloc(size_t count, size_t size, const char *what, struct caem_error *err);

#endif
