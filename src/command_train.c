/* caem train: single-task fine-tuning with evaluation before and after, and
 * checkpoints that resume exactly. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "checkpoint_edit.h"
#include "command_task.h"
#include "commands.h"
#include "config.h"
#include "jobs.h"
#include "results.h"
#include "train.h"

/* ---- checkpoints ---- */

struct run_context {
    const struct run_options *options;
    struct model *model;
    struct trainer *trainer;
    const struct task *task;
    const char *tokenizer_path;
    char base[17];
    const struct checkpoint_history *previous_history;
};

static int save_training_checkpoint(const struct run_context *rc, const char *path,
                                    struct caem_error *err)
{
    struct checkpoint ck;
    memset(&ck, 0, sizeof ck);
    ck.model = rc->model;
    ck.optimizer = trainer_optimizer(rc->trainer);
    struct train_state state;
    trainer_get_state(rc->trainer, &state);
    ck.has_train_state = 1;
    ck.train.seed = state.seed;
    ck.train.step = state.step;
    ck.train.epoch = state.epoch;
    ck.train.epoch_batch = state.epoch_batch;
    ck.train.rng_seed = rc->model->rng.seed;
    ck.train.rng_next = state.rng_next;
    ck.train.batch_size = (int)rc->options->batch;
    ck.train.accumulation = (int)rc->options->accumulation;
    snprintf(ck.train.task, sizeof ck.train.task, "%s", rc->task->name);
    char *extra_names[] = { "max_input", "max_target" };
    int64_t extra_values[] = { rc->options->max_input, rc->options->max_target };
    ck.train.extra_count = 2;
    ck.train.extra_names = extra_names;
    ck.train.extra_values = extra_values;

    struct checkpoint_usage usage[2];
    memset(usage, 0, sizeof usage);
    usage[0].task = (char *)rc->task->name;
    usage[0].split = "train";
    usage[0].table = *trainer_usage(rc->trainer);
    ck.usage = usage;
    ck.usage_count = 1;
    const struct usage_table *validation = trainer_validation_usage(rc->trainer);
    if (usage_table_rows(validation) > 0 && validation->tokens[0] > 0) {
        usage[1].task = (char *)rc->task->name;
        usage[1].split = "validation";
        usage[1].table = *validation;
        ck.usage_count = 2;
    }

    if (train_history_build(rc->previous_history, rc->trainer, &ck.history, err) != 0)
        return -1;
    char *names[] = { "task", "tokenizer", "base" };
    char *values[] = { (char *)rc->task->name, (char *)rc->tokenizer_path, (char *)rc->base };
    ck.attr_names = names;
    ck.attr_values = values;
    ck.attr_count = 3;
    int status = checkpoint_save(path, &ck, err);
    checkpoint_history_free(&ck.history);
    return status;
}

/* ---- caem train ---- */

static void format_seconds(double seconds, char *out, size_t size)
{
    long s = (long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(out, size, "%ldh%02ldm", s / 3600, s / 60 % 60);
    else
        snprintf(out, size, "%ldm%02lds", s / 60, s % 60);
}

static void print_progress(struct trainer *t, struct train_snapshot *s)
{
    trainer_snapshot(t, s);
    char eta[32];
    format_seconds(s->eta, eta, sizeof eta);
    printf("step %5ld/%ld  loss %.4f  cross-entropy %.4f  entropy enc %.3f dec %.3f  "
           "%.0f tokens/s  ETA %s\n", s->step, s->steps, s->last.loss, s->last.cross_entropy,
           s->last.encoder_entropy, s->last.decoder_entropy, s->tokens_per_second, eta);
    if (s->validation_step == s->step)
        printf("step %5ld  validation loss %.4f\n", s->step, s->validation_loss);
}

/* Returns the value of a train state's named integer, or `fallback`. */
static long train_extra(const struct checkpoint *ck, const char *name, long fallback)
{
    int64_t value;
    return checkpoint_train_extra(ck, name, &value) ? (long)value : fallback;
}

/* 1 when cfg has the shape of the preset, the vocabulary aside. */
static int same_shape(const char *preset, const struct model_config *cfg)
{
    struct model_config p;
    struct caem_error ignored;
    if (config_preset(&p, preset, &ignored) != 0)
        return 0;
    return p.d_model == cfg->d_model && p.d_kv == cfg->d_kv && p.d_ff == cfg->d_ff &&
           p.num_heads == cfg->num_heads && p.encoder_layers == cfg->encoder_layers &&
           p.decoder_layers == cfg->decoder_layers &&
           p.encoder_sparse_step == cfg->encoder_sparse_step &&
           p.decoder_sparse_step == cfg->decoder_sparse_step &&
           p.num_experts == cfg->num_experts;
}

/* Loads the checkpoint of --resume or --init. A resumed run takes its task,
 * sequence lengths, learning rate and seed from the checkpoint. An option
 * given with another value is an error rather than a silent change. */
static int load_start(struct run_options *o, const struct global_options *g,
                      const struct backend *be, struct checkpoint *loaded,
                      struct caem_error *err)
{
    const char *from = o->resume != NULL ? o->resume : o->init;
    if (from == NULL)
        return 0;
    if (checkpoint_load(from, be, loaded, err) != 0)
        return -1;
    if (o->resume == NULL)
        return 0;
    if (loaded->optimizer == NULL || !loaded->has_train_state)
        return caem_fail(err, "%s has no optimizer state or train state to resume from "
                         "(use --init to start from its parameters)", from);
    if (o->preset_given && !same_shape(o->preset, &loaded->model->config))
        return caem_fail(err, "%s is not a model of preset %s; leave --preset out to resume it",
                         from, o->preset);
    if (o->task_given && strcmp(o->task_name, loaded->train.task) != 0)
        return caem_fail(err, "%s was trained on task '%s', not '%s'", from,
                         loaded->train.task, o->task_name);
    o->task_name = loaded->train.task;
    long saved_lengths[2] = { train_extra(loaded, "max_input", o->max_input),
                              train_extra(loaded, "max_target", o->max_target) };
    long *lengths[2] = { &o->max_input, &o->max_target };
    int given[2] = { o->max_input_given, o->max_target_given };
    const char *names[2] = { "--max-input", "--max-target" };
    for (int i = 0; i < 2; i++) {
        if (given[i] && *lengths[i] != saved_lengths[i])
            return caem_fail(err, "%s was trained with %s %ld, not %ld", from, names[i],
                             saved_lengths[i], *lengths[i]);
        *lengths[i] = saved_lengths[i];
    }
    float saved_lr = loaded->optimizer->config.lr;
    if (o->lr_given && (float)o->lr != saved_lr)
        return caem_fail(err, "%s was trained with --lr %g, not %g", from, (double)saved_lr,
                         o->lr);
    o->lr = saved_lr;
    if (g->seed_given && g->seed != loaded->train.seed)
        return caem_fail(err, "%s was trained with --seed %llu, not %llu", from,
                         (unsigned long long)loaded->train.seed, g->seed);
    if (o->steps <= loaded->train.step)
        return caem_fail(err, "%s is at step %ld already; --steps %ld must be beyond it", from,
                         loaded->train.step, o->steps);
    return 0;
}

/* Creates the model: the loaded checkpoint's, or a new one of the preset's
 * shape with the tokenizer's vocabulary. */
static int build_model(struct run_context *rc, const struct tokenizer *tok,
                       const struct backend *be, unsigned long long seed,
                       struct checkpoint *loaded, struct caem_error *err)
{
    const struct run_options *o = rc->options;
    if (loaded->model != NULL) {
        rc->model = loaded->model;
        const char *base = NULL;
        for (int i = 0; i < loaded->attr_count; i++)
            if (strcmp(loaded->attr_names[i], "base") == 0)
                base = loaded->attr_values[i];
        if (base != NULL)
            snprintf(rc->base, sizeof rc->base, "%s", base);
        else
            checkpoint_params_hash(rc->model, rc->base);
    } else {
        struct model_config cfg;
        if (config_preset(&cfg, o->preset, err) != 0)
            return -1;
        cfg.vocab_size = tokenizer_vocab_size(tok);
        if (model_create(&rc->model, &cfg, be, err) != 0)
            return -1;
        model_init_params(rc->model, seed);
        checkpoint_params_hash(rc->model, rc->base);
    }
    if (rc->model->config.vocab_size < tokenizer_vocab_size(tok))
        return caem_fail(err, "the model's vocabulary has %d ids, fewer than the tokenizer's "
                         "%d", rc->model->config.vocab_size, tokenizer_vocab_size(tok));
    return 0;
}

/* Checks the batch shape of a resumed run, then restores it (trainer_restore). */
static int resume_state(struct run_context *rc, const struct checkpoint *loaded,
                        struct caem_error *err)
{
    if (loaded->train.batch_size != (int)rc->options->batch ||
        loaded->train.accumulation != (int)rc->options->accumulation)
        return caem_fail(err, "%s was trained with batch %d and accumulation %d; resume it "
                         "with the same --batch and --accumulation", rc->options->resume,
                         loaded->train.batch_size, loaded->train.accumulation);
    return trainer_restore(rc->trainer, loaded, err);
}

static volatile sig_atomic_t interrupted;

static void on_interrupt(int signal_number)
{
    (void)signal_number;
    interrupted = 1;
}

/* Runs the steps to o->steps; returns 1 when Ctrl-C (SIGINT) or SIGTERM
 * stopped it between two steps, 0 at the end, -1 on failure. */
static int train_loop(struct run_context *rc, struct caem_error *err)
{
    const struct run_options *o = rc->options;
    struct train_snapshot snap;
    if (train_snapshot_init(&snap, rc->trainer, err) != 0)
        return -1;
    trainer_snapshot(rc->trainer, &snap);
    long every = o->steps / 20 > 0 ? o->steps / 20 : 1;
    int status = 0;
    while (snap.step < o->steps) {
        if (interrupted) {
            status = 1;
            break;
        }
        if (trainer_step(rc->trainer, err) != 0) {
            status = -1;
            break;
        }
        trainer_snapshot(rc->trainer, &snap);
        if (snap.step % every == 0 || snap.step == o->steps || snap.validation_step == snap.step)
            print_progress(rc->trainer, &snap);
        if (o->checkpoint_every > 0 && snap.step % o->checkpoint_every == 0 &&
            snap.step < o->steps) {
            if (save_training_checkpoint(rc, o->checkpoint, err) != 0) {
                status = -1;
                break;
            }
            printf("checkpoint %s written at step %ld\n", o->checkpoint, snap.step);
        }
    }
    train_snapshot_free(&snap);
    return status;
}

int command_train(int argc, char **argv, const struct global_options *g)
{
    struct run_options o;
    run_options_defaults(&o);
    int parsed = parse_run_options(argc, argv, 0, &o);
    if (parsed != 0)
        return parsed == 1 ? 0 : 2;
    if (optind < argc) {
        fprintf(stderr, "caem train: unexpected argument '%s' (see caem train --help)\n",
                argv[optind]);
        return 2;
    }
    struct caem_error err;
    const struct backend *be;
    if (backend_default(&be, &err) != 0) {
        fprintf(stderr, "caem train: %s\n", err.message);
        return 1;
    }
    struct tokenizer *tok = NULL;
    struct task task;
    memset(&task, 0, sizeof task);
    struct checkpoint loaded;
    memset(&loaded, 0, sizeof loaded);
    struct run_context rc;
    memset(&rc, 0, sizeof rc);
    rc.options = &o;
    rc.task = &task;
    char tokenizer_path[4096];
    snprintf(tokenizer_path, sizeof tokenizer_path, "%s",
             o.tokenizer_path != NULL ? o.tokenizer_path : "");
    if (o.tokenizer_path == NULL)
        snprintf(tokenizer_path, sizeof tokenizer_path, "%s/spm.model", o.data_dir);
    rc.tokenizer_path = tokenizer_path;
    int status = 1;
    struct evaluation before, after;
    memset(&before, 0, sizeof before);
    memset(&after, 0, sizeof after);
    const char *model_name = o.checkpoint != NULL ? o.checkpoint : o.preset;

    /* every check that can fail comes before the work it would waste */
    if ((o.checkpoint != NULL && checkpoint_check_target(o.checkpoint, &err) != 0) ||
        load_start(&o, g, be, &loaded, &err) != 0 || load_task(&o, &tok, &task, &err) != 0 ||
        build_model(&rc, tok, be, g->seed, &loaded, &err) != 0)
        goto done;
    if (o.results[0] != '\0' && results_append(o.results, NULL, 0, &err) != 0)
        goto done;
    const struct model_config *cfg = &rc.model->config;
    printf("task %s: %ld train, %ld validation examples; model %zu parameters, %d + %d MoE "
           "layers of %d experts, backend %s\n", task.name,
           task.splits[TASK_SPLIT_TRAIN].tokens.count,
           task.splits[TASK_SPLIT_VALIDATION].tokens.count, rc.model->layout.total,
           config_moe_layer_count(cfg, 0), config_moe_layer_count(cfg, 1), cfg->num_experts,
           be->name);

    struct train_options to = train_defaults();
    to.batch_size = (int)o.batch;
    to.accumulation = (int)o.accumulation;
    to.steps = o.steps;
    to.validate_every = (int)o.validate_every;
    to.seed = g->seed;
    to.count_padding = o.count_padding;
    to.adamw.lr = (float)o.lr;
    if (o.resume != NULL) {
        to.seed = loaded.train.seed;
        to.adamw = loaded.optimizer->config;
    }
    if (trainer_create(&rc.trainer, rc.model, &task, &to, &err) != 0)
        goto done;
    if (o.resume != NULL) {
        if (resume_state(&rc, &loaded, &err) != 0)
            goto done;
        rc.previous_history = &loaded.history;
        printf("resumed %s at step %ld\n", o.resume, loaded.train.step);
    }

    int evaluate = o.eval_limit > 0 && task.splits[TASK_SPLIT_VALIDATION].tokens.count > 0;
    long first_step = o.resume != NULL ? loaded.train.step : 0;
    if (evaluate && run_evaluation(rc.model, &task, &o, model_name, first_step, "before",
                                   &before, &err) != 0)
        goto done;
    struct sigaction action, old_int, old_term;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_interrupt;
    sigaction(SIGINT, &action, &old_int);
    sigaction(SIGTERM, &action, &old_term);
    int loop = train_loop(&rc, &err);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (loop < 0)
        goto done;
    struct train_state state;
    trainer_get_state(rc.trainer, &state);
    if (o.checkpoint != NULL) {
        if (save_training_checkpoint(&rc, o.checkpoint, &err) != 0)
            goto done;
        printf("checkpoint %s written at step %ld\n", o.checkpoint, state.step);
    }
    if (loop == 1) {
        fprintf(stderr, "caem train: interrupted after step %ld%s%s\n", state.step,
                o.checkpoint != NULL ? "; continue with --resume " : "",
                o.checkpoint != NULL ? o.checkpoint : "");
        status = 130;
        goto done;
    }
    if (evaluate && run_evaluation(rc.model, &task, &o, model_name, o.steps, "after", &after,
                                   &err) != 0)
        goto done;
    printf("expert usage over the training steps of this run:\n");
    print_usage_table(trainer_usage(rc.trainer));
    status = 0;
done:
    if (status == 1)
        fprintf(stderr, "caem train: %s\n", err.message);
    evaluation_free(&before);
    evaluation_free(&after);
    trainer_free(rc.trainer);
    if (rc.model != loaded.model)
        model_free(rc.model);
    checkpoint_free(&loaded);
    task_free(&task);
    tokenizer_free(tok);
    return status;
}

