/* libFuzzer target for the AG News CSV loader. */
#include <stdint.h>
#include <unistd.h>

#include "dataset.h"
#include "fuzz_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[256];
    fuzz_file_write(path, sizeof path, "agnews", ".csv", data, size);

    struct dataset ds = {0};
    struct dataset_report report = {0};
    struct caem_error err = {{0}};
    if (dataset_load_agnews(&ds, path, &report, &err) == 0)
        dataset_free(&ds);
    unlink(path);
    return 0;
}
