/* libFuzzer target for the deb822 record reader. The input is read through
 * fmemopen, and every record's fields are looked up by name so that the
 * lookup also runs over malformed records. */
#include <stdint.h>
#include <stdio.h>

#include "deb822.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an empty input has no records, and fmemopen may reject a zero-length buffer */
    if (size == 0)
        return 0;
    FILE *input = fmemopen((void *)data, size, "rb");
    if (input == NULL)
        return 0;

    struct deb822_reader reader;
    struct deb822_record record = {0};
    struct caem_error err = {{0}};
    deb822_reader_init(&reader, input);
    while (deb822_read(&reader, &record, "fuzz input", &err) == 1) {
        for (int i = 0; i < record.count; i++)
            (void)deb822_get(&record, record.fields[i].name);
        (void)deb822_get(&record, "Package");
        (void)deb822_get(&record, "description-en");
    }
    deb822_record_free(&record);
    deb822_reader_free(&reader);
    fclose(input);
    return 0;
}
