#include "backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef CAEM_HAVE_CUDA
#include "backend_cuda.h"
#endif

/* Empty until set: then CAEM_DEVICE from the environment, or "auto". */
static char default_name[8];

int backend_select(const struct backend **out, const char *name, struct caem_error *err)
{
    *out = NULL;
    if (strcmp(name, "cpu") == 0) {
        *out = backend_cpu();
        return 0;
    }
    int automatic = strcmp(name, "auto") == 0;
    if (!automatic && strcmp(name, "cuda") != 0)
        return caem_fail(err, "unknown device '%s' (expected auto, cpu or cuda)", name);
#ifdef CAEM_HAVE_CUDA
    struct caem_error cuda_err;
    if (backend_cuda_open(out, &cuda_err) == 0)
        return 0;
    if (!automatic)
        return caem_fail(err, "%s; use --device cpu", cuda_err.message);
    static int reported;
    if (!reported) {
        fprintf(stderr, "caem: %s; computing on the CPU\n", cuda_err.message);
        reported = 1;
    }
    *out = backend_cpu();
    return 0;
#else
    if (automatic) {
        *out = backend_cpu();
        return 0;
    }
    return caem_fail(err, "this build has no CUDA support (nvcc was not on the PATH when it "
                     "was built); use --device cpu");
#endif
}

int backend_set_default(const char *name, struct caem_error *err)
{
    if (strcmp(name, "auto") != 0 && strcmp(name, "cpu") != 0 && strcmp(name, "cuda") != 0)
        return caem_fail(err, "unknown device '%s' (expected auto, cpu or cuda)", name);
    snprintf(default_name, sizeof default_name, "%s", name);
    return 0;
}

const char *backend_default_name(void)
{
    if (default_name[0] == '\0') {
        const char *env = getenv("CAEM_DEVICE");
        struct caem_error err;
        if (env != NULL && env[0] != '\0' && backend_set_default(env, &err) != 0)
            fprintf(stderr, "caem: ignoring CAEM_DEVICE=%s (expected auto, cpu or cuda)\n",
                    env);
        if (default_name[0] == '\0')
            snprintf(default_name, sizeof default_name, "auto");
    }
    return default_name;
}

int backend_default(const struct backend **out, struct caem_error *err)
{
    return backend_select(out, backend_default_name(), err);
}
