/* The prelude lua/caem.lua: found beside the program or through
 * CAEM_LUA_PATH, or else the copy compiled into the program.
 *
 * The copy is embedded with the assembler's .incbin, which reads
 * lua/caem.lua relative to the directory the compiler runs in (the
 * repository root, where make runs). The compiler's dependency files do not
 * list it, so the Makefile names it as a prerequisite of this object. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lua_internal.h"

__asm__(".pushsection .rodata\n"
        ".global lua_caem_prelude_start\n"
        "lua_caem_prelude_start:\n"
        ".incbin \"lua/caem.lua\"\n"
        ".global lua_caem_prelude_end\n"
        "lua_caem_prelude_end:\n"
        ".byte 0\n"
        ".popsection\n");

extern const char lua_caem_prelude_start[];
extern const char lua_caem_prelude_end[];

/* Finds caem.lua beside the program: PROGRAM_DIR/lua/caem.lua (the
 * repository's layout) or PROGRAM_DIR/../share/caem/lua/caem.lua (an
 * installed layout). */
static int find_beside_program(char *path, size_t size)
{
    char program[PATH_MAX];
    ssize_t length = readlink("/proc/self/exe", program, sizeof program - 1);
    if (length <= 0)
        return 0;
    program[length] = '\0';
    char *slash = strrchr(program, '/');
    if (slash == NULL)
        return 0;
    *slash = '\0';
    static const char *const candidates[] = { "lua/caem.lua", "../share/caem/lua/caem.lua" };
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++) {
        snprintf(path, size, "%s/%s", program, candidates[i]);
        if (access(path, R_OK) == 0)
            return 1;
    }
    return 0;
}

void lua_caem_run_prelude(lua_State *L)
{
    int module = lua_gettop(L);
    char path[PATH_MAX + 64];
    const char *source = path;
    const char *dir = getenv("CAEM_LUA_PATH");
    int status;
    if (dir != NULL && dir[0] != '\0') {
        snprintf(path, sizeof path, "%s/caem.lua", dir);
        status = luaL_loadfilex(L, path, "t");
    } else if (find_beside_program(path, sizeof path)) {
        status = luaL_loadfilex(L, path, "t");
    } else {
        source = "embedded";
        status = luaL_loadbufferx(L, lua_caem_prelude_start,
                                  (size_t)(lua_caem_prelude_end - lua_caem_prelude_start),
                                  "=lua/caem.lua (embedded)", "t");
    }
    if (status != LUA_OK)
        luaL_error(L, "caem: cannot load the prelude %s: %s", source, lua_tostring(L, -1));
    lua_pushvalue(L, module);
    lua_call(L, 1, 0);
    lua_pushstring(L, source);
    lua_setfield(L, module, "prelude");
}
