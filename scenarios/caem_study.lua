-- The CAEM study. It pretrains a common base with 8 experts and one with 16,
-- and fine-tunes one single-task model per task from each. Then it compares
-- the multi-task configurations of the CAEM paper, each fine-tuned on all
-- tasks for the same number of steps:
--
--   Baseline-8, Baseline-16  the base fine-tuned on the task mixture
--   CAEM-8, CAEM-16          the single-task models merged n -> n (alpha 1)
--   CAEM-8-to-16             the 8-expert single-task models merged into 16
--   CAEM-8-Avg, CAEM-16-Avg  the fixed-ratio ablation (alpha 0)
--
-- It prints four tables: (a) each task's metric and Overall Performance per
-- configuration, (b) the mean normalized entropy of encoder and decoder, and
-- (c) the per-layer allocations of every merge. Table (d) is the soup of each
-- baseline with its CAEM model, with the CKA of the two. The tables also go
-- to OUT/tables.txt, every evaluation to OUT/results.csv and results.jsonl,
-- the models to OUT/models/, and one SVG per model with its usage per task
-- (layers x experts) and its entropy per layer to OUT/figures/.
--
--   caem run scenarios/caem_study.lua [OPTIONS]
--
-- Run it with --help for the options and the sizes. docs/caem.md explains
-- the method, the configurations and how to read the tables.
local caem = require "caem"

local usage_text = [[
usage: caem run scenarios/caem_study.lua [OPTIONS]

  --size NAME        test, demo, cpu (default), small or base (see below)
  --data DIR         the default corpus (make data builds it); default
                     $CAEM_DATA or build/data
  --tasks A,B,C      task names under DIR (default classification,qa,summarization)
  --task NAME=FORMAT:TRAIN:VALIDATION
                     a task from files in an original format (agnews, squad,
                     xsum_jsonl, xsum_raw, xsum_pairs or jsonl) instead of
                     DIR; repeat it for each task
  --tokenizer PATH   SentencePiece model (default DIR/spm.model)
  --base8 PATH, --base16 PATH
                     start from these checkpoints instead of pretraining
  --out DIR          where everything is written (default build/study)
  --reuse            load a model from OUT/models/ when its file contains the
                     finished run instead of training it again, and resume
                     one whose run stopped from its last checkpoint
  --seed N           seed of models, pretraining and fine-tuning (default 1)

sizes (model shape, steps, evaluation):
  test   for the test suite: a few steps of everything, within a minute
  demo   8 experts only: single-task models, Baseline-8 and CAEM-8
         (make demo; about 10 minutes on 2 CPU cores)
  cpu    every configuration with the tiny shape (about 35 minutes on 2 CPU
         cores)
  small  every configuration with the small preset; meant for a GPU, which
         the workbench cannot use yet, so on a CPU it takes many hours
  base   every configuration with switch-base shapes (the paper's); also
         meant for a GPU
]]

-- ---- sizes ----

local every_configuration = { "Baseline-8", "CAEM-8", "CAEM-8-Avg", "Baseline-16", "CAEM-16",
                              "CAEM-8-to-16", "CAEM-16-Avg" }

-- steps: pretraining (each step takes a batch of every task's text),
-- single-task fine-tuning, multi-task fine-tuning (a batch of every task);
-- checkpoint_every: steps between the checkpoints --reuse resumes from;
-- eval_limit: validation examples per evaluation, 0 for all.
local sizes = {
  test = { preset = "tiny", chunk = 24, pretrain = 6, single = 8, multi = 8, batch = 4,
           lr = 2e-3, checkpoint_every = 4, eval_limit = 6, beams = 1, max_length = 12,
           max_input = 48, cka_limit = 8, configurations = every_configuration },
  demo = { preset = "tiny", pretrain = 600, single = 1500, multi = 1500, batch = 16,
           lr = 2e-3, checkpoint_every = 500, eval_limit = 200, beams = 3, max_length = 64,
           max_input = 128, cka_limit = 64, configurations = { "Baseline-8", "CAEM-8" } },
  cpu = { preset = "tiny", pretrain = 600, single = 1500, multi = 1500, batch = 16,
          lr = 2e-3, checkpoint_every = 500, eval_limit = 200, beams = 3, max_length = 64,
          max_input = 128, cka_limit = 64, configurations = every_configuration },
  small = { preset = "small", pretrain = 5000, single = 5000, multi = 5000, batch = 24,
            lr = 3e-4, checkpoint_every = 1000, eval_limit = 0, beams = 3, max_length = 200,
            max_input = 512, cka_limit = 256, configurations = every_configuration },
  base = { preset = "switch-base-8", pretrain = 10000, single = 5000, multi = 5000,
           batch = 24, lr = 3e-4, checkpoint_every = 1000, eval_limit = 0, beams = 3,
           max_length = 200, max_input = 512, cka_limit = 256,
           configurations = every_configuration },
}

-- ---- the command line ----

local function fail(message)
  error(message .. "\n" .. usage_text, 0)
end

local options = { size = "cpu", data = os.getenv("CAEM_DATA") or "build/data",
                  out = "build/study", seed = 1, task_specs = {}, bases = {} }
do
  local i = 1
  local function value(name)
    i = i + 1
    if arg[i] == nil or arg[i]:sub(1, 2) == "--" then
      fail("option " .. name .. " needs a value")
    end
    return arg[i]
  end
  while i <= #arg do
    local a = arg[i]
    if a == "--help" or a == "-h" then
      io.stdout:write(usage_text)
      return
    elseif a == "--size" then
      options.size = value(a)
    elseif a == "--data" then
      options.data = value(a)
    elseif a == "--tasks" then
      options.tasks = value(a)
    elseif a == "--task" then
      options.task_specs[#options.task_specs + 1] = value(a)
    elseif a == "--tokenizer" then
      options.tokenizer = value(a)
    elseif a == "--base8" then
      options.bases[8] = value(a)
    elseif a == "--base16" then
      options.bases[16] = value(a)
    elseif a == "--out" then
      options.out = value(a)
    elseif a == "--reuse" then
      options.reuse = true
    elseif a == "--seed" then
      options.seed = math.tointeger(tonumber(value(a)))
      if options.seed == nil or options.seed < 0 then
        fail("invalid --seed '" .. arg[i] .. "' (expected an integer from 0)")
      end
    else
      fail("unknown argument '" .. a .. "'")
    end
    i = i + 1
  end
end

local size = sizes[options.size]
if size == nil then
  fail("unknown size '" .. options.size .. "' (expected test, demo, cpu, small or base)")
end
local configurations = size.configurations
local expert_counts = { 8 }
for _, name in ipairs(configurations) do
  if name:find("16") then
    expert_counts = { 8, 16 }
  end
end
if options.bases[16] ~= nil and #expert_counts == 1 then
  fail(("--base16 is not used at size %s, which trains 8-expert models only"):format(
    options.size))
end
if options.tasks ~= nil and #options.task_specs > 0 then
  fail("give --tasks or --task, not both")
end

local out_dir = options.out
for _, dir in ipairs({ out_dir, out_dir .. "/models", out_dir .. "/figures" }) do
  if not os.execute(("mkdir -p '%s'"):format(dir:gsub("'", "'\\''"))) then
    error("cannot create the directory " .. dir, 0)
  end
end
-- A run writes its tables and results under partial names and renames them
-- when it finishes. So a run that fails or is stopped keeps the previous
-- run's files, and the results of one run never add to those of another.
local results_prefix = out_dir .. "/results"
local tables_path = out_dir .. "/tables.txt"
local partial_results_prefix = results_prefix .. ".partial"
local partial_tables_path = tables_path .. ".partial"
for _, extension in ipairs({ ".csv", ".jsonl" }) do
  os.remove(partial_results_prefix .. extension)
end
local tables_file = assert(io.open(partial_tables_path, "w"))

-- Writes to stdout and to the tables file.
local tee = {
  write = function(_, ...)
    io.stdout:write(...)
    tables_file:write(...)
  end,
}
local function say(format, ...)
  tee:write(format:format(...), "\n")
  io.stdout:flush()
end

-- ---- tasks ----

local tokenizer = caem.tokenizer(options.tokenizer or (options.data .. "/spm.model"))
local tasks = {}
if #options.task_specs > 0 then
  for _, spec in ipairs(options.task_specs) do
    local name, format, train, validation = spec:match("^([^=]+)=([^:]+):([^:]+):([^:]+)$")
    if name == nil then
      fail("invalid --task '" .. spec .. "' (expected NAME=FORMAT:TRAIN:VALIDATION)")
    end
    tasks[#tasks + 1] = caem.task{ name = name, format = format, train = train,
                                   validation = validation, tokenizer = tokenizer,
                                   max_input = size.max_input }
  end
else
  for name in (options.tasks or "classification,qa,summarization"):gmatch("[^,]+") do
    tasks[#tasks + 1] = caem.task{ name = name, dir = options.data, tokenizer = tokenizer,
                                   max_input = size.max_input }
  end
end
if #tasks < 2 then
  fail("the study needs at least two tasks, got " .. #tasks)
end
-- caem.task skips malformed records and counts them. A split left without
-- an example stops the study here, and the skipped records are reported
-- once the header is printed.
local skipped_records = {}
for _, task in ipairs(tasks) do
  for _, split in ipairs({ "train", "validation" }) do
    local report = task.reports[split]
    local skipped = ""
    if report ~= nil and report.skipped > 0 then
      skipped = ("%d malformed records skipped, the first: %s"):format(report.skipped,
                                                                        report.first_error)
      skipped_records[#skipped_records + 1] = ("task %s, %s split: %s"):format(task.name,
                                                                               split, skipped)
    end
    if task:size(split) == 0 and report == nil then
      error(("task %s has no %s split, which the study needs"):format(task.name, split), 0)
    elseif task:size(split) == 0 then
      error(("task %s has no usable example in its %s split: %s"):format(task.name, split,
                                                                         skipped), 0)
    end
  end
end

-- The identity of each given base, checked before anything trains. The
-- loaded model is dropped, so that a large base is not kept in memory.
local given_bases = {}
for _, experts in ipairs(expert_counts) do
  local path = options.bases[experts]
  if path ~= nil then
    local base = caem.load(path)
    if base.config.num_experts ~= experts then
      error(("--base%d: %s has %d experts per MoE layer, not %d"):format(
        experts, path, base.config.num_experts, experts), 0)
    end
    given_bases[experts] = base.attributes.base or base:hash()
  end
end

local task_names = {}
for i, task in ipairs(tasks) do
  task_names[i] = task.name
end
say("CAEM study, size %s: tasks %s; preset %s, pretraining %d steps, single-task %d steps, "
    .. "multi-task %d steps, batch %d, lr %g", options.size, table.concat(task_names, ", "),
    size.preset, size.pretrain, size.single, size.multi, size.batch, size.lr)
say("evaluation: %s validation examples per task, %s, at most %d tokens; output in %s",
    size.eval_limit > 0 and tostring(size.eval_limit) or "all",
    size.beams > 1 and (size.beams .. " beams") or "greedy", size.max_length, out_dir)
for _, line in ipairs(skipped_records) do
  say("%s", line)
end

-- ---- running jobs ----

local started = os.time()

local function elapsed()
  local s = os.difftime(os.time(), started)
  return ("%d:%02d"):format(s // 60, s % 60)
end

-- Waits for a job and raises with its message unless it finished.
local function finish(job, label)
  local result, state = job:wait()
  if state ~= "finished" then
    local status = job:status()
    error(("%s %s at step %d: %s"):format(label, state, status.step, status.message or ""), 0)
  end
  return result
end

local function model_path(name)
  return ("%s/models/%s.h5"):format(out_dir, name)
end

-- With --reuse, the model saved under `name`: its finished run of `steps`
-- steps, or a run that stopped before (checkpoints are written every
-- size.checkpoint_every steps), with `true` as second value: train it on
-- with resume = true. Otherwise nil.
local function reusable(name, steps)
  if not options.reuse then
    return nil
  end
  local file = io.open(model_path(name), "r")
  if file == nil then
    return nil
  end
  file:close()
  -- training would not replace a file that is not a checkpoint either
  local ok, model = pcall(caem.load, model_path(name))
  if not ok then
    error(("%s cannot be reused: %s; remove it to train %s again"):format(model_path(name),
                                                                          model, name), 0)
  end
  if model.step == steps then
    say("[%s] %s: reused %s", elapsed(), name, model_path(name))
    return model
  elseif model.step > 0 and model.step < steps then
    say("[%s] %s: resuming %s at step %d", elapsed(), name, model_path(name), model.step)
    return model, true
  end
  return nil
end

local function train_options(extra)
  local o = { steps = size.multi, batch = size.batch, lr = size.lr, seed = options.seed,
              validate_every = 0, checkpoint_every = size.checkpoint_every }
  for k, v in pairs(extra) do
    o[k] = v
  end
  return o
end

-- Trains `model` with the options and saves it as `name`, also every
-- size.checkpoint_every steps on the way.
local function train(model, name, train_with)
  local o = train_options(train_with)
  o.checkpoint = model_path(name)
  local job = model:train(o)
  finish(job, "training " .. name)
  local status = job:status()
  model:save(model_path(name), { tokenizer = tokenizer })
  say("[%s] %s: %d steps in %.0f s, loss %.4f", elapsed(), name, status.step, status.elapsed,
      status.loss)
  return model
end

-- Evaluates the model on every task (or only `only`) and records the usage;
-- returns {task name = result}.
local function evaluate(model, name, only)
  local scores = {}
  for _, task in ipairs(tasks) do
    if only == nil or only == task then
      scores[task.name] = finish(model:evaluate{ task = task, split = "validation",
                                                 limit = size.eval_limit, beams = size.beams,
                                                 max_length = size.max_length, record = true,
                                                 results = partial_results_prefix,
                                                 model_name = name },
                                 "evaluating " .. name .. " on " .. task.name)
    end
  end
  model:save(model_path(name))
  return scores
end

-- ---- 0. the common bases ----

local bases = {}
for _, experts in ipairs(expert_counts) do
  local name = "base-" .. experts
  if given_bases[experts] ~= nil then
    bases[experts] = options.bases[experts]
    say("[%s] %s: %s (base %s)", elapsed(), name, options.bases[experts], given_bases[experts])
  else
    local base, partial = reusable(name, size.pretrain)
    if base == nil or partial then
      base = base or caem.model{ preset = size.preset, tokenizer = tokenizer,
                                 num_experts = experts, seed = options.seed }
      local job = caem.pretrain{ model = base, tasks = tasks, steps = size.pretrain,
                                 batch = size.batch, lr = size.lr, seed = options.seed,
                                 chunk = size.chunk, resume = partial,
                                 checkpoint = model_path(name),
                                 checkpoint_every = size.checkpoint_every }
      finish(job, "pretraining " .. name)
      local status = job:status()
      -- the pretrained parameters are the identity every fine-tuned model records
      base:save(model_path(name), { tokenizer = tokenizer, base = base:hash() })
      say("[%s] %s: pretrained %d steps in %.0f s, span-corruption loss %.4f", elapsed(), name,
          status.step, status.elapsed, status.loss)
    end
    bases[experts] = model_path(name)
  end
end

-- ---- 1. single-task models ----

local single = {}        -- single[experts][i]: the model of task i
local single_scores = {} -- single_scores[experts][task name]: its evaluation
for _, experts in ipairs(expert_counts) do
  single[experts], single_scores[experts] = {}, {}
  for i, task in ipairs(tasks) do
    local name = ("single-%d-%s"):format(experts, task.name)
    local model, partial = reusable(name, size.single)
    if model == nil or partial then
      model = train(model or caem.load(bases[experts]), name,
                    { task = task, steps = size.single, resume = partial })
    end
    single[experts][i] = model
    single_scores[experts][task.name] = evaluate(model, name, task)[task.name]
  end
end

-- ---- 2. the multi-task configurations ----

local function merged(name)
  local experts = tonumber(name:match("^CAEM%-(%d+)")) or 8
  local target = tonumber(name:match("to%-(%d+)$")) or experts
  local alpha = name:find("Avg") and 0 or 1
  local model = caem.merge{ sources = single[experts], experts = target, alpha = alpha,
                            name = name }
  return model, experts
end

local trained = {} -- trained[name] = {model=, scores=, reference=}
for _, name in ipairs(configurations) do
  local model, partial = reusable(name, size.multi)
  -- decided before the base is loaded: a base's own step counter (its
  -- pretraining steps) may equal size.multi
  local finished = model ~= nil and not partial
  local reference
  if name:find("^Baseline") then
    reference = tonumber(name:match("(%d+)$"))
    model = model or caem.load(bases[reference])
  else
    local fresh
    fresh, reference = merged(name)
    model = model or fresh
  end
  if not finished then
    train(model, name, { tasks = tasks, resume = partial })
  end
  trained[name] = { model = model, scores = evaluate(model, name), reference = reference }
end

-- ---- the tables ----

local function primary_of(result)
  return result.primary
end

say("\n(a) Overall Performance and each task's metric (%s), validation split",
    (function()
      local parts = {}
      for _, task in ipairs(tasks) do
        local r = single_scores[8][task.name]
        parts[#parts + 1] = task.name .. ": " .. r.primary_name
      end
      return table.concat(parts, ", ")
    end)())
local rows, columns = {}, { "model", "vs" }
for _, task in ipairs(tasks) do
  columns[#columns + 1] = task.name
end
columns[#columns + 1] = "overall"
columns[#columns + 1] = "tasks"

-- Overall Performance against the single-task models with `reference`
-- experts, over the tasks whose single-task score is above 0 (the formula
-- divides by it). Returns the value (nil without such a task) and the count
-- of tasks it averages, as "2/3".
local function overall(scores, reference)
  local multi, alone = {}, {}
  for _, task in ipairs(tasks) do
    local single_score = primary_of(single_scores[reference][task.name])
    if single_score > 0 then
      multi[#multi + 1] = primary_of(scores[task.name])
      alone[#alone + 1] = single_score
    end
  end
  local counted = ("%d/%d"):format(#alone, #tasks)
  if #alone == 0 then
    return nil, counted
  end
  return caem.overall_performance(multi, alone), counted
end

-- The tasks a single-task model scores 0 on, which Overall Performance
-- leaves out.
local left_out = {}
for _, experts in ipairs(expert_counts) do
  local value, counted = overall(single_scores[experts], experts)
  local row = { model = "single-task-" .. experts, vs = "-", overall = value, tasks = counted }
  for _, task in ipairs(tasks) do
    row[task.name] = primary_of(single_scores[experts][task.name])
    if row[task.name] == 0 then
      left_out[#left_out + 1] = ("%s (%d experts)"):format(task.name, experts)
    end
  end
  rows[#rows + 1] = row
end
for _, name in ipairs(configurations) do
  local m = trained[name]
  local value, counted = overall(m.scores, m.reference)
  local row = { model = name, vs = "single-task-" .. m.reference, overall = value,
                tasks = counted }
  for _, task in ipairs(tasks) do
    row[task.name] = primary_of(m.scores[task.name])
  end
  rows[#rows + 1] = row
end
caem.table_print(rows, { columns = columns, out = tee })
say("vs: the single-task models Overall Performance compares with; tasks: how many tasks it "
    .. "averages")
if #left_out > 0 then
  say("left out of Overall Performance, because the single-task model scores 0 on it: %s",
      table.concat(left_out, ", "))
end

-- (b) entropy: each task's usage on its validation split
say("\n(b) Mean normalized entropy per task (encoder/decoder), validation split")
local function entropy_row(name, usage_of)
  local row = { model = name }
  local enc, dec = 0, 0
  for _, task in ipairs(tasks) do
    local u = usage_of(task)
    row[task.name] = ("%.3f/%.3f"):format(u.mean_entropy.encoder, u.mean_entropy.decoder)
    enc, dec = enc + u.mean_entropy.encoder, dec + u.mean_entropy.decoder
  end
  row.encoder, row.decoder = enc / #tasks, dec / #tasks
  return row
end
-- every evaluated model in table order, with its usage on each task
local evaluated = {}
for _, experts in ipairs(expert_counts) do
  evaluated[#evaluated + 1] = { name = "single-task-" .. experts, usage_of = function(task)
    return single_scores[experts][task.name].usage
  end }
end
for _, name in ipairs(configurations) do
  evaluated[#evaluated + 1] = { name = name, usage_of = function(task)
    return trained[name].scores[task.name].usage
  end }
end
rows = {}
for _, m in ipairs(evaluated) do
  rows[#rows + 1] = entropy_row(m.name, m.usage_of)
end
columns = { "model" }
for _, task in ipairs(tasks) do
  columns[#columns + 1] = task.name
end
columns[#columns + 1] = "encoder"
columns[#columns + 1] = "decoder"
caem.table_print(rows, { columns = columns, out = tee })
say("encoder, decoder: the mean over the tasks")

-- (c) allocations
say("\n(c) Allocations per MoE layer (experts per task, in task order: %s)",
    table.concat(task_names, ":"))
rows = {}
for _, name in ipairs(configurations) do
  local record = trained[name].model.merge
  if record ~= nil then
    for _, layer in ipairs(record.layers) do
      local entropies = {}
      for i, h in ipairs(layer.entropies) do
        entropies[i] = ("%.3f"):format(h)
      end
      rows[#rows + 1] = { model = name, stack = layer.stack, layer = layer.layer,
                          entropies = table.concat(entropies, " "),
                          allocation = table.concat(layer.allocation, ":") }
    end
  end
end
caem.table_print(rows, { columns = { "model", "stack", "layer", "entropies", "allocation" },
                         out = tee })
say("layer: the MoE layer of the stack, from 1; entropies: each source's normalized entropy "
    .. "on its own task's validation split")

-- (d) soup and CKA
say("\n(d) Soup: the mean of each baseline and its CAEM model, and their linear CKA")
rows = {}
local soup_columns = { "models" }
for _, task in ipairs(tasks) do
  soup_columns[#soup_columns + 1] = task.name
end
for _, c in ipairs({ "overall", "tasks", "cka_encoder", "cka_decoder" }) do
  soup_columns[#soup_columns + 1] = c
end
for _, experts in ipairs(expert_counts) do
  local baseline, caem_model = trained["Baseline-" .. experts], trained["CAEM-" .. experts]
  if baseline ~= nil and caem_model ~= nil then
    local label = ("Baseline-%d + CAEM-%d"):format(experts, experts)
    local soup = caem.soup(baseline.model, caem_model.model, 0.5)
    local scores = {}
    for _, task in ipairs(tasks) do
      scores[task.name] = finish(soup:evaluate{ task = task, split = "validation",
                                                limit = size.eval_limit, beams = size.beams,
                                                max_length = size.max_length,
                                                results = partial_results_prefix,
                                                model_name = "soup " .. label },
                                 "evaluating the soup of " .. label)
    end
    local row = { models = label }
    row.overall, row.tasks = overall(scores, experts)
    local enc, dec, n = 0, 0, 0
    for _, task in ipairs(tasks) do
      row[task.name] = primary_of(scores[task.name])
      local cka = caem.cka(baseline.model, caem_model.model, task, { limit = size.cka_limit })
      for _, v in ipairs(cka.encoder) do
        enc = enc + v / #cka.encoder
      end
      for _, v in ipairs(cka.decoder) do
        dec = dec + v / #cka.decoder
      end
      n = n + 1
    end
    row.cka_encoder, row.cka_decoder = enc / n, dec / n
    rows[#rows + 1] = row
  end
end
caem.table_print(rows, { columns = soup_columns, out = tee })
say("cka: the mean over blocks and tasks of the linear CKA of the two models' block outputs")

-- ---- figures ----

local function figure(name, usage_of)
  local panels = {}
  for _, task in ipairs(tasks) do
    panels[#panels + 1] = { title = task.name, usage = usage_of(task) }
  end
  local path = ("%s/figures/%s.svg"):format(out_dir, name)
  caem.usage_figure{ path = path, panels = panels,
                     title = name .. ": expert usage per task, validation split" }
end
for _, m in ipairs(evaluated) do
  figure(m.name, m.usage_of)
end

say("\nfinished in %s; tables in %s, results in %s.csv and .jsonl, figures in %s/figures/",
    elapsed(), tables_path, results_prefix, out_dir)
tables_file:close()
for _, names in ipairs({ { partial_results_prefix .. ".csv", results_prefix .. ".csv" },
                         { partial_results_prefix .. ".jsonl", results_prefix .. ".jsonl" },
                         { partial_tables_path, tables_path } }) do
  local renamed, message = os.rename(names[1], names[2])
  if not renamed then
    error(("cannot rename %s to %s: %s"):format(names[1], names[2], message), 0)
  end
end
