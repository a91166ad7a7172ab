/* The plain REPL (caem --plain, and caem with no command): Lua chunks read
 * line by line and run in one state, whose globals, models and jobs survive
 * every error.
 *
 * On a terminal it uses GNU readline: the prompt "caem> " and "  >> " for
 * the lines that continue an incomplete chunk, history in ~/.caem_history,
 * tab completion of globals and of fields and methods. The values of an
 * expression (a line that compiles after "return ", or "=expr") are printed.
 * While it waits for input it runs due job callbacks (lua_caem_poll) about
 * ten times a second. Ctrl-C clears the line; on an empty line it stops the
 * jobs running in the background. Ctrl-D on an empty line quits, asking
 * first when jobs are still running.
 *
 * When standard input is not a terminal it reads the same chunks without
 * prompts, history or completion, and stops the jobs still running at the
 * end of input. */
#ifndef CAEM_REPL_H
#define CAEM_REPL_H

#include <stddef.h>

#include <lua.h>

#include "lua_runner.h"

/* Runs the REPL on r's state until the end of input. Returns the exit
 * status: 1 when input was not a terminal and a chunk failed, else 0. */
int repl_run(struct lua_runner *r);

/* The REPL's handling of input lines, for the live screen, which reads
 * them with readline on its own terminal: the history file, completion, and
 * the chunks (a line runs once its chunk is complete). Output goes to
 * stdout and stderr. */
struct repl_session;

/* Opens the history and installs readline's completion for r's state.
 * Returns NULL when out of memory. */
struct repl_session *repl_session_open(struct lua_runner *r);

/* Adds a line to the history and runs it, or keeps it until its chunk is
 * complete. */
void repl_session_line(struct repl_session *s, const char *line);

/* 1 while the lines of an incomplete chunk wait for more. */
int repl_session_continues(const struct repl_session *s);

/* Drops the lines of an incomplete chunk. */
void repl_session_drop(struct repl_session *s);

/* Writes the history file and frees the session. */
void repl_session_close(struct repl_session *s);

/* Pushes the text the REPL prints for the value at idx: for a table
 * without __tostring or __name, one level of its contents (the sequence
 * 1..n in order, then the other keys sorted, nested tables as {...}, cut
 * after REPL_TABLE_ENTRIES entries or about REPL_TABLE_CHARS characters);
 * for anything else what tostring returns. May raise an error (from a
 * __tostring metamethod). */
#define REPL_TABLE_ENTRIES 20
#define REPL_TABLE_CHARS 200
void repl_push_value_text(lua_State *L, int idx);

/* Returns 1 when s is a Lua name: letters, digits and '_', not starting
 * with a digit, not a reserved word. */
int repl_is_name(const char *s, size_t length);

/* Returns 1 when the status and message (on top of the stack) of a failed
 * load mean that the chunk is incomplete: a syntax error at <eof>. */
int repl_chunk_incomplete(lua_State *L, int status);

/* Pushes a table with the completions of `word`, sorted, and returns how
 * many it has. A word without '.' or ':' completes globals and keywords.
 * "a.b.pre" completes the fields of a.b, and "a.b:pre" its methods (the
 * names whose value is a function). A value's names come from:
 *   - its keys, when it is a table;
 *   - its metatable's __index: the names of that table (following its own
 *     metatable), or, when __index is a C function, the keys of the tables
 *     among its upvalues;
 *   - its metatable's __fields and __methods tables: their string keys, or
 *     their string values when they are sequences. A userdata whose
 *     __index computes fields in C lists them there.
 * Never raises: an error while indexing the path (an __index function
 * failing) gives no completions. */
int repl_completions(lua_State *L, const char *word);

#endif
