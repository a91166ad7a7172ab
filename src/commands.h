/* Subcommands of the caem program that live outside src/main.c.
 *
 * Each takes the arguments from the command name on (argv[0] is "info",
 * "import", ...), prints results on stdout and errors on stderr, and returns
 * the exit status: 0 on success, 1 on an error, 2 on a usage error. */
#ifndef CAEM_COMMANDS_H
#define CAEM_COMMANDS_H

/* caem info CKPT.h5: the config, size, optimizer and train state, root
 * attributes, history and expert usage per MoE layer of a checkpoint. */
int command_info(int argc, char **argv);

/* caem import DIR OUT.h5: a Hugging Face Switch Transformers directory to a
 * checkpoint. */
int command_import(int argc, char **argv);

#endif
