#include "threads.h"

#include <stdlib.h>
#include <unistd.h>

/* Set in the restarted process, so that it restarts only once and can tell
 * that the policy is its own choice, not the user's. */
#define RESTART_MARKER "CAEM_PASSIVE_WAIT_SET"

void threads_prefer_passive_wait(char **argv)
{
    if (getenv("OMP_WAIT_POLICY") != NULL || getenv(RESTART_MARKER) != NULL)
        return;
    if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0 || setenv(RESTART_MARKER, "1", 1) != 0)
        return;
    execv("/proc/self/exe", argv);
    /* execv failed: go on with the default policy */
    unsetenv("OMP_WAIT_POLICY");
    unsetenv(RESTART_MARKER);
}

void threads_restore_environment(void)
{
    if (getenv(RESTART_MARKER) == NULL)
        return;
    unsetenv("OMP_WAIT_POLICY");
    unsetenv(RESTART_MARKER);
}
