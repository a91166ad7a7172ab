/* Ctrl-C (SIGINT) for the programs that run Lua: caem run, caem -e and the
 * REPL.
 *
 * The handler sets a flag. While a Lua state is marked as running, it also
 * sets a count hook on that state, which raises the Lua error
 * "interrupted!" at the next instruction, as the standalone lua interpreter
 * does. So Ctrl-C stops pure Lua code, and the module's `interrupted` hook
 * returns the flag to a script waiting for a job. The flag and the marked
 * state are process-wide because a signal handler can reach nothing else;
 * one Lua state at a time can be marked. Every function except the handler
 * runs on the main thread. */
#ifndef CAEM_INTERRUPT_H
#define CAEM_INTERRUPT_H

#include <lua.h>

#include "error.h"

enum interrupt_mode {
    /* caem run and caem -e: a second SIGINT within one second of a first one
     * that nothing has taken yet (a long C call that does not poll) restores
     * the default action and ends the program. */
    INTERRUPT_SCRIPT,
    /* The REPL: SIGINT never ends the program. */
    INTERRUPT_REPL,
};

/* Installs the handler for SIGINT; the main thread is the one calling. A
 * SIGINT delivered to another thread (a job's worker, an OpenMP thread) is
 * passed on to the main thread. */
int interrupt_install(enum interrupt_mode mode, struct caem_error *err);

/* Restores the action SIGINT had before interrupt_install. */
void interrupt_uninstall(void);

/* Marks L as running Lua code (NULL: none runs), so that SIGINT sets the
 * hook on it. With keep_pending, the hook leaves the flag set after raising
 * its error, so that the caller still sees the Ctrl-C afterwards (the REPL
 * running job callbacks at its prompt). Removes a hook the handler set on the
 * state marked before. */
void interrupt_set_lua(lua_State *L, int keep_pending);

/* Returns 1 when a SIGINT arrived since the flag was last cleared, and clears
 * it, removing the hook the handler set on the marked state. */
int interrupt_take(void);

/* Returns 1 when a SIGINT arrived since the flag was last cleared. */
int interrupt_pending(void);

#endif
