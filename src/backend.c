#include "backend.h"

#include <string.h>

#ifdef CAEM_HAVE_CUDA
#include "cuda_device.h"
#endif

int backend_select(const struct backend **out, const char *name, struct caem_error *err)
{
    *out = NULL;
    if (strcmp(name, "cpu") == 0) {
        *out = backend_cpu();
        return 0;
    }
    if (strcmp(name, "cuda") != 0)
        return caem_fail(err, "unknown device '%s' (expected cpu or cuda)", name);
#ifdef CAEM_HAVE_CUDA
    char reason[256] = "";
    if (cuda_device_count(reason, sizeof reason) == 0)
        return caem_fail(err, "no CUDA device is available (%s); use --device cpu", reason);
    return caem_fail(err, "the CUDA backend's operations are not implemented in this version; "
                     "use --device cpu");
#else
    return caem_fail(err, "this build has no CUDA support (nvcc was not on the PATH when it "
                     "was built); use --device cpu");
#endif
}
