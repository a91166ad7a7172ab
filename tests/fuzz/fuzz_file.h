/* Helper for fuzz targets whose code under test reads a path: writes the
 * input to a file in /dev/shm named after the process id, so that targets
 * running side by side never share a file. */
#ifndef CAEM_FUZZ_FILE_H
#define CAEM_FUZZ_FILE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Writes size bytes of data to /dev/shm/caem-fuzz-<tag>-<pid><suffix> and
 * stores the path in path. Aborts when the file cannot be written, because a
 * run that silently tests nothing is worse than one that stops. */
static void fuzz_file_write(char *path, size_t path_size, const char *tag, const char *suffix,
                            const uint8_t *data, size_t size)
{
    snprintf(path, path_size, "/dev/shm/caem-fuzz-%s-%ld%s", tag, (long)getpid(), suffix);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, size, f) != size || fclose(f) != 0) {
        perror(path);
        abort();
    }
}

#endif
