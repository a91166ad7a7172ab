/* The live screen: `caem` on a terminal. Panels of the watched job's expert
 * usage, entropy and loss above the Lua REPL, redrawn from the job's
 * statistics several times a second, with keys to select layers, switch
 * views and control the job (panels.h lists them).
 *
 * The REPL line is GNU readline in callback mode, drawn by the screen, with
 * the plain REPL's history and completion. What Lua code and the runtime
 * print on stdout and stderr goes into the scrollback above the input line:
 * both descriptors are redirected into a pipe while the screen runs. */
#ifndef CAEM_UI_SCREEN_H
#define CAEM_UI_SCREEN_H

#include "lua_runner.h"

/* Runs the screen on r's state until the user quits. Returns the exit
 * status (0), or -1 without drawing anything when the screen cannot start
 * (no terminal description for TERM, standard input or output not a
 * terminal), with the reason in `why` for the plain REPL to print. */
int screen_run(struct lua_runner *r, char *why, size_t why_size);

#endif
