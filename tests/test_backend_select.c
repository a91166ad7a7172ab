/* Device selection: backend_select, the default device, CAEM_DEVICE. */
#include <stdlib.h>

#include "backend.h"
#include "test.h"

/* Runs first: the default is resolved from the environment once. */
static void test_invalid_env_means_auto(void)
{
    setenv("CAEM_DEVICE", "gpu", 1);
    CHECK(strcmp(backend_default_name(), "auto") == 0);
}

static void test_unknown_device_rejected(void)
{
    struct caem_error err;
    const struct backend *be = NULL;
    CHECK(backend_set_default("gpu", &err) != 0);
    CHECK_MSG(strstr(err.message, "unknown device 'gpu'") != NULL, "message: %s", err.message);
    CHECK(backend_select(&be, "opencl", &err) != 0);
    CHECK(be == NULL);
    CHECK_MSG(strstr(err.message, "expected auto, cpu or cuda") != NULL, "message: %s",
              err.message);
}

static void test_cpu_default_gives_cpu(void)
{
    struct caem_error err;
    const struct backend *be = NULL;
    CHECK(backend_set_default("cpu", &err) == 0);
    CHECK(strcmp(backend_default_name(), "cpu") == 0);
    CHECK(backend_default(&be, &err) == 0);
    CHECK(be == backend_cpu());
}

static void test_auto_always_gives_backend(void)
{
    struct caem_error err;
    const struct backend *be = NULL;
    CHECK(backend_select(&be, "auto", &err) == 0);
    CHECK(be != NULL);
    if (be != NULL)
        CHECK(strcmp(be->name, "cpu") == 0 || strcmp(be->name, "cuda") == 0);
}

/* Without a GPU (or without CUDA in the build) cuda fails and says what to do. */
static void test_cuda_unavailable_names_fix(void)
{
    struct caem_error err;
    const struct backend *be = NULL;
    if (backend_select(&be, "cuda", &err) == 0) {
        CHECK(be != NULL && strcmp(be->name, "cuda") == 0);
        SKIP("a GPU is present, so cuda is available");
    }
    CHECK(be == NULL);
    CHECK_MSG(strstr(err.message, "use --device cpu") != NULL, "message: %s", err.message);
}

int main(void)
{
    TEST_SUITE("backend_select");
    RUN_TEST(invalid_env_means_auto);
    RUN_TEST(unknown_device_rejected);
    RUN_TEST(cpu_default_gives_cpu);
    RUN_TEST(auto_always_gives_backend);
    RUN_TEST(cuda_unavailable_names_fix);
    TEST_MAIN_END();
}
