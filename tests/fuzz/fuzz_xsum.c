/* libFuzzer target for both XSum loaders. The same bytes go to the JSON-lines
 * loader and, as a single <id>.data file, to the extract-file loader. */
#include <stdint.h>
#include <unistd.h>

#include "dataset.h"
#include "fuzz_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[256];
    fuzz_file_write(path, sizeof path, "xsum", ".data", data, size);

    struct dataset ds = {0};
    struct dataset_report report = {0};
    struct caem_error err = {{0}};
    if (dataset_load_xsum_jsonl(&ds, path, &report, &err) == 0)
        dataset_free(&ds);

    struct dataset raw = {0};
    struct dataset_report raw_report = {0};
    if (dataset_load_xsum_raw(&raw, path, &raw_report, &err) == 0)
        dataset_free(&raw);
    unlink(path);
    return 0;
}
