#include "interrupt.h"

#include <errno.h>
#include <lauxlib.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>

/* Shared with the handler. The handler writes last_signal_time alone, and
 * it cannot interrupt itself because SIGINT is blocked while it runs. */
static volatile sig_atomic_t pending;
static volatile sig_atomic_t keep_pending;
static lua_State *volatile running_state;
static double last_signal_time = -1e9;

static enum interrupt_mode current_mode;
static pthread_t main_thread;
static struct sigaction previous_action;
static int installed;

static double monotonic_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void interrupt_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    if (!keep_pending)
        pending = 0;
    luaL_error(L, "interrupted!");
}

/* Only async-signal-safe calls here: clock_gettime, pthread_kill, sigaction
 * and raise are on the POSIX list. lua_sethook only stores the hook and its
 * mask in the state, which the standalone lua interpreter relies on too.
 * pthread_self is not on the list; glibc reads it from the thread pointer. */
static void on_sigint(int signal_number)
{
    int saved_errno = errno;
    if (!pthread_equal(pthread_self(), main_thread)) {
        pthread_kill(main_thread, signal_number);
        errno = saved_errno;
        return;
    }
    double now = monotonic_seconds();
    if (current_mode == INTERRUPT_SCRIPT && pending && now - last_signal_time < 1.0) {
        /* the signal stays blocked until the handler returns, then kills */
        struct sigaction default_action;
        memset(&default_action, 0, sizeof default_action);
        default_action.sa_handler = SIG_DFL;
        sigaction(SIGINT, &default_action, NULL);
        raise(SIGINT);
        errno = saved_errno;
        return;
    }
    last_signal_time = now;
    pending = 1;
    lua_State *L = running_state;
    if (L != NULL)
        lua_sethook(L, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
    errno = saved_errno;
}

/* Blocks SIGINT on this thread while the flag and the hook change together. */
static void block_sigint(sigset_t *saved)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, saved);
}

static void restore_mask(const sigset_t *saved)
{
    pthread_sigmask(SIG_SETMASK, saved, NULL);
}

static void remove_hook(lua_State *L)
{
    if (L != NULL && lua_gethook(L) == interrupt_hook)
        lua_sethook(L, NULL, 0, 0);
}

int interrupt_install(enum interrupt_mode mode, struct caem_error *err)
{
    current_mode = mode;
    main_thread = pthread_self();
    pending = 0;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_sigint;
    sigemptyset(&action.sa_mask);
    /* restarted system calls keep a worker's reads whole; select and poll
     * still return EINTR, which is what the REPL's loop needs */
    action.sa_flags = SA_RESTART;
    if (sigaction(SIGINT, &action, installed ? NULL : &previous_action) != 0)
        return caem_fail(err, "cannot install the SIGINT handler: %s", strerror(errno));
    installed = 1;
    return 0;
}

void interrupt_uninstall(void)
{
    if (!installed)
        return;
    sigaction(SIGINT, &previous_action, NULL);
    installed = 0;
    interrupt_set_lua(NULL, 0);
    pending = 0;
}

void interrupt_set_lua(lua_State *L, int keep)
{
    sigset_t saved;
    block_sigint(&saved);
    remove_hook(running_state);
    running_state = L;
    keep_pending = keep;
    /* a Ctrl-C that came just before the Lua code started stops it */
    if (L != NULL && pending)
        lua_sethook(L, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
    restore_mask(&saved);
}

int interrupt_take(void)
{
    sigset_t saved;
    block_sigint(&saved);
    int was_pending = pending != 0;
    if (was_pending) {
        pending = 0;
        remove_hook(running_state);
    }
    restore_mask(&saved);
    return was_pending;
}

int interrupt_pending(void)
{
    return pending != 0;
}
