#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int caem_fail(struct caem_error *err, const char *fmt, ...)
{
    if (err == NULL)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

int caem_fail_prefix(struct caem_error *err, const char *fmt, ...)
{
    if (err == NULL)
        return -1;
    char prefix[CAEM_ERROR_MAX];
    char old[CAEM_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->message, sizeof old);
    /* The prefix keeps at most half the buffer so that the cause stays visible. */
    snprintf(err->message, sizeof err->message, "%.*s: %.*s", CAEM_ERROR_MAX / 2, prefix,
             CAEM_ERROR_MAX / 2 - 3, old);
    return -1;
}

void *caem_malloc(size_t size, const char *what, struct caem_error *err)
{
    void *p = malloc(size > 0 ? size : 1);
    if (p == NULL)
        caem_fail(err, "out of memory: %zu bytes for %s", size, what);
    return p;
}

void *caem_calloc(size_t count, size_t size, const char *what, struct caem_error *err)
{
    void *p = calloc(count > 0 ? count : 1, size > 0 ? size : 1);
    if (p == NULL)
        caem_fail(err, "out of memory: %zu x %zu bytes for %s", count, size, what);
    return p;
}
