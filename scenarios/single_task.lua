-- Fine-tunes a new model on one task of the default corpus, evaluates it on
-- the validation split before and after, prints both sets of figures and the
-- expert usage per MoE layer, and saves the model as a checkpoint.
--
--   caem run scenarios/single_task.lua [TASK] [STEPS] [PRESET]
--
-- TASK is classification (default), summarization or qa; STEPS defaults to
-- 1200; PRESET to tiny. The corpus is read from $CAEM_DATA, default
-- build/data (make data builds it). The checkpoint is written to
-- build/demo/TASK.h5, and both evaluations are appended to
-- build/demo/results.csv and results.jsonl. The other settings are those of
-- make demo: batch 16, inputs cut to 128 tokens, learning rate 2e-3,
-- validation every 300 steps, and evaluation on the first 214 validation
-- examples with beam search (3 beams, at most 200 tokens).
local caem = require "caem"

local usage = "usage: caem run scenarios/single_task.lua [TASK] [STEPS] [PRESET]"
local task_name = arg[1] or "classification"
local steps = math.tointeger(tonumber(arg[2] or "1200"))
if steps == nil or steps < 1 then
  error(("invalid STEPS '%s' (expected a positive integer)\n%s"):format(arg[2], usage), 0)
end
local preset = arg[3] or "tiny"
local data_dir = os.getenv("CAEM_DATA") or "build/data"
local out_dir = "build/demo"

local settings = {
  batch = 16,
  max_input = 128,
  lr = 2e-3,
  validate_every = 300,
  eval_limit = 214,
  beams = 3,
  max_length = 200,
  seed = 1,
}

os.execute(("mkdir -p '%s'"):format(out_dir))
local tokenizer = caem.tokenizer(data_dir .. "/spm.model")
local task = caem.task{name = task_name, dir = data_dir, tokenizer = tokenizer,
                       max_input = settings.max_input}
local model = caem.model{preset = preset, tokenizer = tokenizer, seed = settings.seed}

-- Returns the names of a table's keys in order.
local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

local function evaluate(label)
  local result = model:evaluate{task = task, split = "validation", limit = settings.eval_limit,
                                beams = settings.beams, max_length = settings.max_length,
                                results = out_dir .. "/results"}:wait()
  local figures = {}
  for _, name in ipairs(sorted_keys(result.figures)) do
    figures[#figures + 1] = ("%s %.2f"):format(name, result.figures[name])
  end
  print(("%s: %d validation examples, loss %.4f, %s"):format(label, result.examples,
                                                            result.loss,
                                                            table.concat(figures, ", ")))
  return result
end

print(("single task: %s, preset %s, %d steps on %s"):format(task_name, preset, steps,
                                                             data_dir))
local before = evaluate("before")

local job = model:train{task = task, steps = steps, batch = settings.batch, lr = settings.lr,
                        validate_every = settings.validate_every}
local _, state = job:wait()
local status = job:status()
if state ~= "finished" then
  error(("training %s at step %d: %s"):format(state, status.step, status.message or ""), 0)
end
print(("trained %d steps in %.0f s: loss %.4f, validation loss %s"):format(
  status.step, status.elapsed, status.loss,
  status.validation_loss and ("%.4f"):format(status.validation_loss) or "-"))

local after = evaluate("after")
for _, name in ipairs(sorted_keys(after.figures)) do
  print(("%s: %.2f -> %.2f"):format(name, before.figures[name] or 0 / 0, after.figures[name]))
end
print("\nexpert usage after training (validation split):")
caem.print_usage(after.usage)

local checkpoint = ("%s/%s.h5"):format(out_dir, task_name)
model:save(checkpoint, {task = task, tokenizer = tokenizer})
print("checkpoint written: " .. checkpoint)
