/* Tokenizers and tasks in Lua: caem.tokenizer and caem.task. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lua_internal.h"

/* ---- tokenizers ---- */

struct lua_tokenizer *lua_tokenizer_check(lua_State *L, int index)
{
    return luaL_checkudata(L, index, TOKENIZER_TYPE);
}

/* caem.tokenizer(path) */
static int caem_tokenizer(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct lua_tokenizer *lt = lua_newuserdatauv(L, sizeof *lt, 0);
    memset(lt, 0, sizeof *lt);
    luaL_setmetatable(L, TOKENIZER_TYPE);
    struct caem_error err;
    if (tokenizer_load(&lt->tokenizer, path, &err) != 0)
        return raise_error(L, "caem.tokenizer", &err);
    lt->path = strdup(path);
    if (lt->path == NULL)
        return luaL_error(L, "caem.tokenizer: out of memory");
    return 1;
}

static int tokenizer_method_encode(lua_State *L)
{
    struct lua_tokenizer *lt = lua_tokenizer_check(L, 1);
    size_t length;
    const char *text = luaL_checklstring(L, 2, &length);
    int32_t *ids;
    size_t count;
    struct caem_error err;
    if (tokenizer_encode(lt->tokenizer, text, length, &ids, &count, &err) != 0)
        return raise_error(L, "tokenizer:encode", &err);
    lua_createtable(L, (int)count, 0);
    for (size_t i = 0; i < count; i++) {
        lua_pushinteger(L, ids[i]);
        lua_seti(L, -2, (lua_Integer)i + 1);
    }
    free(ids);
    return 1;
}

static int tokenizer_method_decode(lua_State *L)
{
    struct lua_tokenizer *lt = lua_tokenizer_check(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_Integer count = luaL_len(L, 2);
    int32_t *ids = lua_newuserdatauv(L, sizeof *ids * (size_t)(count > 0 ? count : 1), 0);
    int vocab = tokenizer_vocab_size(lt->tokenizer);
    for (lua_Integer i = 0; i < count; i++) {
        lua_geti(L, 2, i + 1);
        int exact;
        lua_Integer id = lua_tointegerx(L, -1, &exact);
        if (!exact || id < 0 || id >= vocab)
            return luaL_error(L, "tokenizer:decode: id %d is %s, expected an integer in "
                              "[0, %d)", (int)i + 1, luaL_tolstring(L, -1, NULL), vocab);
        ids[i] = (int32_t)id;
        lua_pop(L, 1);
    }
    char *text;
    size_t length;
    struct caem_error err;
    if (tokenizer_decode(lt->tokenizer, ids, (size_t)count, &text, &length, &err) != 0)
        return raise_error(L, "tokenizer:decode", &err);
    lua_pushlstring(L, text, length);
    free(text);
    return 1;
}

static int tokenizer_method_piece(lua_State *L)
{
    struct lua_tokenizer *lt = lua_tokenizer_check(L, 1);
    lua_Integer id = luaL_checkinteger(L, 2);
    const char *piece = id >= 0 && id <= INT32_MAX
                            ? tokenizer_piece(lt->tokenizer, (int32_t)id) : NULL;
    if (piece == NULL)
        return luaL_error(L, "tokenizer:piece: id %I is outside [0, %d)", id,
                          tokenizer_vocab_size(lt->tokenizer));
    lua_pushstring(L, piece);
    return 1;
}

static int tokenizer_index(lua_State *L)
{
    struct lua_tokenizer *lt = lua_tokenizer_check(L, 1);
    const char *key = luaL_checkstring(L, 2);
    if (lua_getfield(L, lua_upvalueindex(1), key) != LUA_TNIL)
        return 1;
    struct tokenizer_special_ids special = tokenizer_special_ids(lt->tokenizer);
    if (strcmp(key, "vocab_size") == 0)
        lua_pushinteger(L, tokenizer_vocab_size(lt->tokenizer));
    else if (strcmp(key, "pieces") == 0)
        lua_pushinteger(L, tokenizer_piece_count(lt->tokenizer));
    else if (strcmp(key, "path") == 0)
        lua_pushstring(L, lt->path);
    else if (strcmp(key, "eos_id") == 0)
        lua_pushinteger(L, special.eos_id);
    else if (strcmp(key, "pad_id") == 0)
        lua_pushinteger(L, special.pad_id);
    else if (strcmp(key, "unk_id") == 0)
        lua_pushinteger(L, special.unk_id);
    else
        return luaL_error(L, "caem.tokenizer has no field or method '%s'", key);
    return 1;
}

static int tokenizer_tostring(lua_State *L)
{
    struct lua_tokenizer *lt = lua_tokenizer_check(L, 1);
    lua_pushfstring(L, "caem.tokenizer(%s, %d ids)", lt->path != NULL ? lt->path : "?",
                    lt->tokenizer != NULL ? tokenizer_vocab_size(lt->tokenizer) : 0);
    return 1;
}

static int tokenizer_gc(lua_State *L)
{
    struct lua_tokenizer *lt = lua_tokenizer_check(L, 1);
    tokenizer_free(lt->tokenizer);
    free(lt->path);
    lt->tokenizer = NULL;
    lt->path = NULL;
    return 0;
}

/* ---- tasks ---- */

struct lua_task *lua_task_check(lua_State *L, int index)
{
    return luaL_checkudata(L, index, TASK_TYPE);
}

enum task_format {
    FORMAT_JSONL, FORMAT_AGNEWS, FORMAT_SQUAD, FORMAT_XSUM_JSONL, FORMAT_XSUM_RAW,
    FORMAT_XSUM_PAIRS,
};

static const char *const format_names[] = { "jsonl", "agnews", "squad", "xsum_jsonl",
                                             "xsum_raw", "xsum_pairs", NULL };

/* The metric of a task of this format and name unless the caller names one:
 * by the dataset for AG News, SQuAD and XSum, and by the name for the default
 * corpus's tasks. */
static enum task_metric default_metric(enum task_format format, const char *name)
{
    if (format == FORMAT_AGNEWS)
        return TASK_METRIC_ACCURACY;
    if (format == FORMAT_SQUAD)
        return TASK_METRIC_SQUAD;
    if (format != FORMAT_JSONL)
        return TASK_METRIC_ROUGE;
    if (strcmp(name, "summarization") == 0 || strcmp(name, "xsum") == 0)
        return TASK_METRIC_ROUGE;
    if (strcmp(name, "qa") == 0 || strcmp(name, "squad") == 0)
        return TASK_METRIC_SQUAD;
    return TASK_METRIC_ACCURACY;
}

static int load_dataset(enum task_format format, const char *path, struct dataset *data,
                        struct dataset_report *report, struct caem_error *err)
{
    switch (format) {
    case FORMAT_JSONL: return task_load_jsonl(data, path, report, err);
    case FORMAT_AGNEWS: return dataset_load_agnews(data, path, report, err);
    case FORMAT_SQUAD: return dataset_load_squad(data, path, report, err);
    case FORMAT_XSUM_JSONL: return dataset_load_xsum_jsonl(data, path, report, err);
    case FORMAT_XSUM_RAW: return dataset_load_xsum_raw(data, path, report, err);
    case FORMAT_XSUM_PAIRS:
        return dataset_load_xsum_pairs(data, path, NULL, 0, report, err);
    }
    return caem_fail(err, "unknown task format %d", (int)format);
}

static void load_split(lua_State *L, struct lua_task *lk, enum task_format format,
                       enum task_split_kind split, const char *path)
{
    struct dataset data;
    struct dataset_report report;
    struct caem_error err;
    memset(&report, 0, sizeof report);
    if (load_dataset(format, path, &data, &report, &err) != 0)
        luaL_error(L, "caem.task: %s split of task '%s': %s", task_split_name(split),
                   lk->task.name, err.message);
    task_set_split(&lk->task, split, &data);
    lk->task.splits[split].report = report;
    lk->loaded[split] = 1;
}

/* Loads DIR/NAME/{train,validation,test}.jsonl, the splits that exist. */
static void load_directory(lua_State *L, struct lua_task *lk, const char *dir)
{
    int found = 0;
    for (int s = 0; s < TASK_SPLIT_COUNT; s++) {
        enum task_split_kind split = (enum task_split_kind)s;
        const char *path = lua_pushfstring(L, "%s/%s/%s.jsonl", dir, lk->task.name,
                                           task_split_name(split));
        struct stat st;
        if (stat(path, &st) == 0) {
            load_split(L, lk, FORMAT_JSONL, split, path);
            found++;
        }
        lua_pop(L, 1);
    }
    if (found == 0)
        luaL_error(L, "caem.task: no split of task '%s' found: expected %s/%s/train.jsonl, "
                   "validation.jsonl or test.jsonl", lk->task.name, dir, lk->task.name);
}

static void load_paths(lua_State *L, struct lua_task *lk, enum task_format format)
{
    int found = 0;
    for (int s = 0; s < TASK_SPLIT_COUNT; s++) {
        enum task_split_kind split = (enum task_split_kind)s;
        const char *path = option_string(L, 1, task_split_name(split), "caem.task", NULL);
        if (path != NULL) {
            load_split(L, lk, format, split, path);
            found++;
        }
    }
    if (found == 0)
        luaL_error(L, "caem.task: give dir (with name) or at least one of the paths train, "
                   "validation and test");
}

/* The task's name: the option, or the dataset's name for the formats of
 * the public datasets. */
static const char *task_name_option(lua_State *L, enum task_format format, int has_dir)
{
    static const char *const dataset_names[] = { NULL, "agnews", "squad", "xsum", "xsum",
                                                 "xsum" };
    const char *name = option_string(L, 1, "name", "caem.task", dataset_names[format]);
    if (name == NULL)
        luaL_error(L, "caem.task: option 'name' is missing%s", has_dir
                   ? " (the task's directory under dir)" : " (required for format jsonl)");
    return name;
}

/* caem.task{name=, dir= | train=, validation=, test=, format=, tokenizer=, metric=,
 * prompt=, max_input=, max_target=} */
static int caem_task(lua_State *L)
{
    static const char *const function = "caem.task";
    static const char *const options[] = { "name", "dir", "train", "validation", "test",
                                           "format", "tokenizer", "metric", "prompt",
                                           "max_input", "max_target", NULL };
    static const char *const metrics[] = { "accuracy", "squad", "rouge", NULL };
    option_check_keys(L, 1, function, options, 0, 0);
    lua_settop(L, 1);
    struct lua_tokenizer *lt = option_userdata(L, 1, "tokenizer", function, TOKENIZER_TYPE,
                                               1);
    int tokenizer_index = lua_gettop(L);
    enum task_format format = (enum task_format)option_choice(L, 1, "format", function,
                                                              format_names, FORMAT_JSONL);
    const char *dir = option_string(L, 1, "dir", function, NULL);
    if (dir != NULL && format != FORMAT_JSONL)
        return luaL_error(L, "%s: dir reads the JSON-lines layout DIR/NAME/SPLIT.jsonl; give "
                          "the paths train, validation and test for format %s", function,
                          format_names[format]);
    for (int k = 0; dir != NULL && k < TASK_SPLIT_COUNT; k++)
        if (lua_getfield(L, 1, task_split_name((enum task_split_kind)k)) != LUA_TNIL)
            return luaL_error(L, "%s: give either dir or the paths of the splits, not both "
                              "(%s is set too)", function,
                              task_split_name((enum task_split_kind)k));
        else
            lua_pop(L, 1);
    const char *name = task_name_option(L, format, dir != NULL);
    enum task_metric metric = (enum task_metric)option_choice(
        L, 1, "metric", function, metrics, (int)default_metric(format, name));
    const char *prompt = option_string(L, 1, "prompt", function,
                                       format == FORMAT_JSONL ? task_default_prompt(name)
                                                              : NULL);
    int max_input = (int)option_integer(L, 1, "max_input", function, 256, 2, 65536);
    int max_target = (int)option_integer(L, 1, "max_target", function, 64, 2, 65536);

    struct lua_task *lk = lua_newuserdatauv(L, sizeof *lk, 1);
    memset(lk, 0, sizeof *lk);
    luaL_setmetatable(L, TASK_TYPE);
    lua_pushvalue(L, tokenizer_index);
    lua_setiuservalue(L, -2, 1);
    struct caem_error err;
    if (task_init(&lk->task, name, metric, lt->tokenizer, max_input, max_target, &err) != 0 ||
        task_set_prompt(&lk->task, prompt != NULL && prompt[0] != '\0' ? prompt : NULL,
                        &err) != 0)
        return raise_error(L, function, &err);
    if (dir != NULL)
        load_directory(L, lk, dir);
    else
        load_paths(L, lk, format);
    if (task_tokenize(&lk->task, &err) != 0)
        return raise_error(L, function, &err);
    return 1;
}

/* Examples of a split; token sequences for a task without texts. */
static lua_Integer split_count(const struct task_split *s)
{
    return (lua_Integer)(s->data.count > 0 ? s->data.count : s->tokens.count);
}

static enum task_split_kind split_argument(lua_State *L, int index, const char *function)
{
    return check_split(L, luaL_checkstring(L, index), function);
}

static int task_method_size(lua_State *L)
{
    struct lua_task *lk = lua_task_check(L, 1);
    enum task_split_kind split = split_argument(L, 2, "task:size");
    const struct task_split *s = &lk->task.splits[split];
    /* a span-corruption task has token ids without texts */
    lua_pushinteger(L, s->data.count > 0 ? s->data.count : s->tokens.count);
    return 1;
}

static void push_ids(lua_State *L, const int32_t *ids, int count)
{
    lua_createtable(L, count, 0);
    for (int i = 0; i < count; i++) {
        lua_pushinteger(L, ids[i]);
        lua_seti(L, -2, i + 1);
    }
}

/* task:example(split, i) with i from 1 */
static int task_method_example(lua_State *L)
{
    struct lua_task *lk = lua_task_check(L, 1);
    enum task_split_kind split = split_argument(L, 2, "task:example");
    lua_Integer i = luaL_checkinteger(L, 3);
    const struct task_split *s = &lk->task.splits[split];
    if (i < 1 || i > s->data.count)
        return luaL_error(L, "task:example: index %I is outside [1, %I] of the %s split", i,
                          (lua_Integer)s->data.count, task_split_name(split));
    const struct example *ex = &s->data.examples[i - 1];
    lua_createtable(L, 0, 6);
    set_string(L, "input", ex->input);
    set_string(L, "target", ex->target);
    set_string(L, "id", ex->id);
    lua_createtable(L, ex->answer_count, 0);
    for (int a = 0; a < ex->answer_count; a++) {
        lua_pushstring(L, ex->answers[a]);
        lua_seti(L, -2, a + 1);
    }
    lua_setfield(L, -2, "answers");
    if (s->tokenized) {
        const struct task_tokens *t = &s->tokens;
        push_ids(L, t->input_ids + t->input_offsets[i - 1],
                 task_tokens_input_length(t, i - 1));
        lua_setfield(L, -2, "input_ids");
        push_ids(L, t->target_ids + t->target_offsets[i - 1],
                 task_tokens_target_length(t, i - 1));
        lua_setfield(L, -2, "target_ids");
    }
    return 1;
}

static void push_reports(lua_State *L, const struct lua_task *lk)
{
    lua_newtable(L);
    for (int s = 0; s < TASK_SPLIT_COUNT; s++) {
        if (!lk->loaded[s])
            continue;
        push_report(L, &lk->task.splits[s].report);
        lua_setfield(L, -2, task_split_name((enum task_split_kind)s));
    }
}

static int task_index(lua_State *L)
{
    struct lua_task *lk = lua_task_check(L, 1);
    const char *key = luaL_checkstring(L, 2);
    if (lua_getfield(L, lua_upvalueindex(1), key) != LUA_TNIL)
        return 1;
    const struct task *t = &lk->task;
    if (strcmp(key, "name") == 0)
        lua_pushstring(L, t->name);
    else if (strcmp(key, "metric") == 0)
        lua_pushstring(L, task_metric_name(t->metric));
    else if (strcmp(key, "prompt") == 0)
        lua_pushstring(L, t->prompt);
    else if (strcmp(key, "max_input") == 0)
        lua_pushinteger(L, t->max_input_length);
    else if (strcmp(key, "max_target") == 0)
        lua_pushinteger(L, t->max_target_length);
    else if (strcmp(key, "reports") == 0)
        push_reports(L, lk);
    else if (strcmp(key, "tokenizer") == 0)
        lua_getiuservalue(L, 1, 1);
    else
        return luaL_error(L, "caem.task has no field or method '%s'", key);
    return 1;
}

static int task_tostring(lua_State *L)
{
    struct lua_task *lk = lua_task_check(L, 1);
    const struct task *t = &lk->task;
    lua_pushfstring(L, "caem.task(%s: %I train, %I validation, %I test, %s)",
                    t->name != NULL ? t->name : "?",
                    split_count(&t->splits[TASK_SPLIT_TRAIN]),
                    split_count(&t->splits[TASK_SPLIT_VALIDATION]),
                    split_count(&t->splits[TASK_SPLIT_TEST]),
                    task_metric_name(t->metric));
    return 1;
}

static int task_gc(lua_State *L)
{
    struct lua_task *lk = lua_task_check(L, 1);
    task_free(&lk->task);
    return 0;
}

static void register_type(lua_State *L, const char *name, const luaL_Reg *methods,
                          lua_CFunction index, lua_CFunction tostring, lua_CFunction gc)
{
    luaL_newmetatable(L, name);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_pushcclosure(L, index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
}

void lua_caem_open_task(lua_State *L)
{
    static const luaL_Reg tokenizer_methods[] = {
        { "encode", tokenizer_method_encode },
        { "decode", tokenizer_method_decode },
        { "piece", tokenizer_method_piece },
        { NULL, NULL },
    };
    static const luaL_Reg task_methods[] = {
        { "size", task_method_size },
        { "example", task_method_example },
        { NULL, NULL },
    };
    register_type(L, TOKENIZER_TYPE, tokenizer_methods, tokenizer_index, tokenizer_tostring,
                  tokenizer_gc);
    register_type(L, TASK_TYPE, task_methods, task_index, task_tostring, task_gc);
    lua_pushcfunction(L, caem_tokenizer);
    lua_setfield(L, -2, "tokenizer");
    lua_pushcfunction(L, caem_task);
    lua_setfield(L, -2, "task");
}
