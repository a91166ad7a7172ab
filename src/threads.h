/* Thread behavior of the OpenMP runtime. */
#ifndef CAEM_THREADS_H
#define CAEM_THREADS_H

/* Restarts the program (execv of /proc/self/exe with the same argv) once with
 * OMP_WAIT_POLICY=passive, unless the user set OMP_WAIT_POLICY. Call it first
 * thing in main. libgomp reads the policy only when the program loads, and
 * its default lets idle threads spin, which slows a run about five times on
 * a 2-core machine that is busy with another process. Returns normally when
 * no restart is needed or the restart failed. */
void threads_prefer_passive_wait(char **argv);

/* Removes the OMP_WAIT_POLICY that threads_prefer_passive_wait set, so that
 * a child process (such as the reference benchmark) gets the environment the
 * user gave. */
void threads_restore_environment(void);

#endif
