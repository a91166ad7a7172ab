-- model:train and the job controls: results, status, step, pause, stop,
-- callbacks, the busy model, exact resume (of one task and of several),
-- checkpoints, usage, errors.

if fixture.spm == nil then
  skip("training", "no SentencePiece model (spm_train is missing)")
  return
end

local tok = caem.tokenizer(fixture.spm)
local task = caem.task{ name = "topics", dir = fixture.dir, tokenizer = tok, max_input = 24,
                        max_target = 4 }

local function new_model(seed)
  return caem.model{ preset = "tiny", tokenizer = tok, seed = seed or 1 }
end

-- Burns CPU time on this thread for about `seconds`, without calling caem.
local function spin(seconds)
  local start = os.clock()
  while os.clock() - start < seconds do
  end
end

test("train runs to step count", function()
  local m = new_model()
  local job = m:train{ task = task, steps = 6, batch = 8, lr = 1e-3, validate_every = 3 }
  assert(job.kind == "train", "kind")
  assert(job.model == m and job.task == task, "the job keeps its model and task")
  local result, state = job:wait()
  assert(state == "finished", "state " .. state)
  assert(result.state == "finished" and result.step == 6 and result.steps == 6, "steps")
  assert(result.loss > 0 and result.loss < 20, "loss " .. tostring(result.loss))
  assert(result.validation_loss > 0 and result.validation_step == 6, "validation")
  assert(result.tokens > 0, "tokens trained on")
  assert(m.step == 6, "model step " .. m.step)
  assert(not m.busy, "model free after the end")
  local history = m:history()
  assert(#history == 6 and history[6].step == 6, "history rows")
  assert(history[3].validation ~= nil and history[2].validation == nil,
         "validation every 3 steps")
  assert(history[6].loss == result.loss, "the last row is the last step")
  assert(m.attributes.task == "topics", "task attribute")
  assert(m.attributes.tokenizer == fixture.spm, "tokenizer attribute")
  assert(tostring(job) == "caem.job(train, finished, step 6 of 6)", tostring(job))
  assert(job:result().step == 6, "result after wait")
end)

test("status before and after", function()
  local m = new_model()
  local job = m:train{ task = task, steps = 3, batch = 8, paused = true }
  local s = job:status()
  assert(s.kind == "train" and s.state == "paused", "state " .. s.state)
  assert(s.step == 0 and s.steps == 3, "steps")
  assert(s.loss == nil and s.eta == nil, "no loss before the first step")
  assert(s.elapsed >= 0, "elapsed")
  job:resume()
  job:wait()
  s = job:status()
  assert(s.state == "finished" and s.idle, "finished")
  assert(s.step == 3 and s.loss > 0 and s.cross_entropy > 0, "figures of the last step")
  assert(s.encoder_entropy >= 0 and s.encoder_entropy <= 1, "entropy")
  assert(s.tokens_per_second > 0, "tokens per second")
  assert(s.message == nil, "no failure message")
end)

test("busy model raises", function()
  local m = new_model()
  local job = m:train{ task = task, steps = 50, batch = 8, paused = true }
  assert(m.busy, "busy while the job is alive")
  local calls = {
    { "model:hash", m.hash, m },
    { "model:save", m.save, m, fixture.dir .. "/busy.h5" },
    { "model:param", m.param, m, "encoder/final_norm" },
    { "model:history", m.history, m },
    { "model:usage_records", m.usage_records, m },
    { "model:train", m.train, m, { task = task } },
    { "model:evaluate", m.evaluate, m, { task = task } },
    { "model:usage", m.usage, m, { task = task } },
    { "model:generate", m.generate, m, { { 5, 1 } } },
    { "model.step", function() return m.step end },
    { "model.attributes", function() return m.attributes end },
  }
  for _, call in ipairs(calls) do
    local message = expect_error("model is in use by a running job (train)",
                                 table.unpack(call, 2))
    assert(message:find(call[1], 1, true), "the error names " .. call[1] .. ": " .. message)
  end
  assert(m.config.d_model == 32 and m.parameters > 0, "config and size stay readable")
  job:stop()
  local _, state = job:wait()
  assert(state == "stopped", "state " .. state)
  assert(not m.busy, "free after the stop")
  assert(#m:hash() == 16, "usable again")
end)

test("step advances exactly", function()
  local m = new_model()
  local job = m:train{ task = task, steps = 20, batch = 8, paused = true }
  job:step(3)
  local result, state = job:wait()
  assert(result == nil and state == "paused", "wait returns at the pause")
  assert(job:status().step == 3, "3 steps, got " .. job:status().step)
  job:step(2)
  job:wait()
  assert(job:status().step == 5, "5 steps, got " .. job:status().step)
  job:step()
  job:wait()
  assert(job:status().step == 6, "one step by default")
  expect_error("job:result: the train job is paused (step 6 of 20); call job:wait() first",
               job.result, job)
  expect_error("expected a step count of at least 1", job.step, job, 0)
  job:stop()
  job:wait()
  assert(m.step == 6, "the model keeps the 6 steps: " .. m.step)
end)

test("pause stops step counter", function()
  local m = new_model()
  local job = m:train{ task = task, steps = 100000, batch = 4 }
  local _, state = job:wait(0.05)
  assert(state == "running", "still running after 0.05 s: " .. state)
  job:pause()
  _, state = job:wait()
  assert(state == "paused", "paused: " .. state)
  local paused_at = job:status().step
  assert(paused_at > 0, "steps ran before the pause")
  spin(0.05)
  assert(job:status().step == paused_at, "no step while paused")
  job:resume()
  local resumed = false
  for _ = 1, 500 do
    job:wait(0.01)
    if job:status().step > paused_at then
      resumed = true
      break
    end
  end
  assert(resumed, "steps go on after resume")
  job:stop()
  _, state = job:wait()
  assert(state == "stopped", "stopped: " .. state)
end)

test("stop ends job", function()
  local m = new_model()
  local job = m:train{ task = task, steps = 100000, batch = 4 }
  job:wait(0.02)
  job:stop()
  local result, state = job:wait()
  assert(state == "stopped" and result.state == "stopped", "stopped")
  assert(result.step < 100000, "ended early")
  job:step(5)
  job:resume()
  assert(job:status().state == "stopped", "a stopped job does not restart")
  assert(m.step == result.step, "the model keeps the steps done")
  assert(job:result().step == result.step, "result after the stop")
end)

test("callbacks every N steps", function()
  local m = new_model()
  local seen, threads = {}, {}
  local job
  job = m:train{
    task = task, steps = 8, batch = 8, paused = true, every = 2,
    on_step = function(status, j)
      seen[#seen + 1] = status.step
      local _, main = coroutine.running()
      threads[#threads + 1] = on_main_thread() and main and j == job
    end,
  }
  for _ = 1, 4 do
    job:step(2)
    job:wait()
  end
  assert(#seen == 4, #seen .. " calls")
  for i, step in ipairs(seen) do
    assert(step == 2 * i, "call " .. i .. " saw step " .. step)
    assert(threads[i], "call " .. i .. " ran on the main thread with its job")
  end
end)

test("callbacks while running freely", function()
  local m = new_model()
  local seen = {}
  local job = m:train{ task = task, steps = 12, batch = 8, every = 3,
                       on_step = function(status) seen[#seen + 1] = status.step end }
  job:wait()
  assert(#seen >= 1 and #seen <= 4, #seen .. " calls for 4 due steps")
  assert(seen[#seen] == 12, "the last call sees the last step")
  for i = 2, #seen do
    assert(seen[i] > seen[i - 1], "steps increase")
  end
end)

test("failing callback stops job", function()
  local m = new_model()
  local job = m:train{ task = task, steps = 10, batch = 8, paused = true, every = 2,
                       on_step = function() error("boom") end }
  job:step(2)
  local message = expect_error("on_step callback of the train job failed at step 2", job.wait,
                               job)
  assert(message:find("boom", 1, true), message)
  assert(job:status().state == "stopped", "the job is stopped")
  assert(not m.busy, "the model is free")
  assert(m.step == 2, "the steps done are kept")
end)

test("resume equals uninterrupted run", function()
  local full = new_model(4)
  full:train{ task = task, steps = 6, batch = 8, seed = 11 }:wait()

  local path = fixture.dir .. "/half.h5"
  local half = new_model(4)
  half:train{ task = task, steps = 3, batch = 8, seed = 11, checkpoint = path }:wait()
  local loaded = caem.load(path)
  assert(loaded.step == 3, "checkpoint at step 3")
  loaded:train{ task = task, steps = 6, batch = 8, resume = true }:wait()
  assert(loaded:hash() == full:hash(), "resumed from the file: same parameters")
  local a, b = full:history(), loaded:history()
  assert(#b == 6, "history of 6 steps")
  for i = 1, 6 do
    assert(a[i].loss == b[i].loss, "step " .. i .. ": " .. a[i].loss .. " vs " .. b[i].loss)
  end

  half:train{ task = task, steps = 6, batch = 8, resume = true }:wait()
  assert(half:hash() == full:hash(), "resumed in memory: same parameters")

  -- the usage of the resumed run counts the steps before the stop too
  local function train_usage(m)
    for _, record in ipairs(m:usage_records()) do
      if record.split == "train" then return record.usage end
    end
  end
  local ua, ub = train_usage(full), train_usage(loaded)
  for layer = 1, #ua do
    assert(ua[layer].tokens == ub[layer].tokens, "layer " .. layer .. " tokens")
    for e = 1, ua.experts do
      assert(ua[layer].kept[e] == ub[layer].kept[e], "layer " .. layer .. " expert " .. e)
    end
  end
end)

test("resume a run of several tasks", function()
  -- a second task of 16 examples: 2 batches per epoch against topics' 12
  local small = caem.task{ name = "small", tokenizer = tok, max_input = 24, max_target = 4,
                           train = fixture.dir .. "/topics/validation.jsonl",
                           validation = fixture.dir .. "/topics/validation.jsonl" }
  local tasks = { task, small }
  local full = new_model(5)
  full:train{ tasks = tasks, steps = 8, batch = 8, seed = 3 }:wait()

  local path = fixture.dir .. "/multi_half.h5"
  local half = new_model(5)
  half:train{ tasks = tasks, steps = 4, batch = 8, seed = 3, checkpoint = path }:wait()
  local loaded = caem.load(path)
  loaded:train{ tasks = tasks, steps = 8, batch = 8, resume = true }:wait()
  assert(loaded:hash() == full:hash(), "resumed from the file: same parameters")
  local a, b = full:history(), loaded:history()
  for i = 1, 8 do
    assert(a[i].loss == b[i].loss, "step " .. i .. ": " .. a[i].loss .. " vs " .. b[i].loss)
  end
  -- each task's usage counts the steps before the stop too
  local function usage_of(m, name)
    for _, record in ipairs(m:usage_records()) do
      if record.task == name and record.split == "train" then return record.usage end
    end
  end
  for _, name in ipairs({ "topics", "small" }) do
    local ua, ub = usage_of(full, name), usage_of(loaded, name)
    for layer = 1, #ua do
      for e = 1, ua.experts do
        assert(ua[layer].kept[e] == ub[layer].kept[e], name .. " layer " .. layer)
      end
    end
  end
  expect_error("trained on tasks 'topics+small', not 'topics'", loaded.train, loaded,
               { task = task, steps = 12, batch = 8, resume = true })
  -- the same task names with another input length would not continue exactly
  local shorter = caem.task{ name = "topics", dir = fixture.dir, tokenizer = tok,
                             max_input = 16, max_target = 4 }
  expect_error("used task 'topics' with max_input 24, not 16", loaded.train, loaded,
               { tasks = { shorter, small }, steps = 12, batch = 8, resume = true })
end)

test("resume from saved model", function()
  local path = fixture.dir .. "/saved-run.h5"
  local m = new_model(2)
  m:train{ task = task, steps = 2, batch = 8 }:wait()
  m:save(path)
  local info = caem.info(path)
  assert(info.train.step == 2 and info.train.task == "topics", "train state saved")
  assert(info.optimizer.step == 2, "optimizer saved")
  assert(#info.history == 2, "history saved")
  assert(#info.usage == 1 and info.usage[1].split == "train", "train usage saved")
  local loaded = caem.load(path)
  loaded:train{ task = task, steps = 4, batch = 8, resume = true }:wait()
  m:train{ task = task, steps = 4, batch = 8, resume = true }:wait()
  assert(loaded:hash() == m:hash(), "same continuation")
  m:save(path, { optimizer = false })
  assert(caem.info(path).optimizer == nil, "saved without the optimizer")
end)

test("checkpoints every N steps", function()
  local path = fixture.dir .. "/every.h5"
  local m = new_model()
  local job = m:train{ task = task, steps = 5, batch = 8, checkpoint = path,
                       checkpoint_every = 2, paused = true }
  job:step(3)
  job:wait()
  assert(caem.info(path).train.step == 2, "checkpoint at step 2")
  job:resume()
  job:wait()
  assert(caem.info(path).train.step == 5, "checkpoint at the end")
end)

test("job usage while running", function()
  local m = new_model()
  local job = m:train{ task = task, steps = 6, batch = 8, window = 2, paused = true }
  job:step(3)
  job:wait()
  local u = job:usage()
  assert(#u.running == 4, "4 MoE layers")
  assert(u.running[1].stack == "encoder" and u.running[1].block == 1, "first MoE layer")
  assert(u.running[3].stack == "decoder", "decoder layers after the encoder's")
  assert(u.running[1].tokens > 0, "tokens counted")
  assert(u.window[1].tokens > 0 and u.window[1].tokens < u.running[1].tokens,
         "the window has the last 2 steps only")
  local kept = 0
  for _, n in ipairs(u.running[1].kept) do
    kept = kept + n
  end
  assert(kept <= u.running[1].tokens, "kept tokens at most the tokens counted")
  job:stop()
  job:wait()
end)

test("train option errors", function()
  local m = new_model()
  expect_error("unknown option 'stpes' for model:train (expected one of: task, tasks, steps, batch",
               m.train, m, { task = task, stpes = 3 })
  expect_error("model:train: option 'task' is missing (expected a caem.task)", m.train, m, {})
  expect_error("option 'task' must be a caem.task, got caem.model", m.train, m, { task = m })
  expect_error("option 'steps' is 0, expected an integer in [1,", m.train, m,
               { task = task, steps = 0 })
  expect_error("option 'batch' must be an integer, got string", m.train, m,
               { task = task, batch = "8" })
  expect_error("option 'lr' is 2, expected a number in [0, 1]", m.train, m,
               { task = task, lr = 2 })
  expect_error("option 'resume' must be a boolean, got number", m.train, m,
               { task = task, resume = 1 })
  expect_error("no optimizer state or train state to resume from", m.train, m,
               { task = task, resume = true })
  expect_error("option 'every' needs an on_step function", m.train, m,
               { task = task, every = 2 })
  expect_error("option 'on_step' must be a function, got string", m.train, m,
               { task = task, on_step = "print" })
  expect_error("checkpoint_every needs a checkpoint path", m.train, m,
               { task = task, checkpoint_every = 2 })
  expect_error("model:train: expected a table of options, got no value", m.train, m)
  local small = caem.model{ preset = "tiny" }
  expect_error("the model's vocabulary has 96 ids, fewer than the tokenizer's", small.train,
               small, { task = task })
  local train_only = caem.task{ name = "topics", train = fixture.dir .. "/topics/train.jsonl",
                                tokenizer = tok }
  expect_error("task 'topics' has no validation examples; set validate_every to 0", m.train,
               m, { task = train_only, validate_every = 5 })
  local job = m:train{ task = train_only, steps = 1, batch = 8 }
  assert(job:wait().validation_loss == nil, "no validation without a validation split")
  expect_error("the saved run used seed 1, but this run has seed 2", m.train, m,
               { task = train_only, steps = 2, batch = 8, resume = true, seed = 2 })
  expect_error("steps is 1, but the run is already at step 1", m.train, m,
               { task = train_only, steps = 1, batch = 8, resume = true })
  expect_error("the run to resume used batch 8 and accumulation 1, not 4 and 1", m.train, m,
               { task = train_only, steps = 3, batch = 4, resume = true })
end)

test("train checks its checkpoint path first", function()
  local m = new_model()
  expect_error("is a directory", m.train, m, { task = task, steps = 2, checkpoint = fixture.dir })
  expect_error("does not exist", m.train, m,
               { task = task, steps = 2, checkpoint = fixture.dir .. "/no/such/x.h5" })
  assert(m.step == 0, "no step ran")
end)

test("train several tasks together", function()
  local other = caem.task{ name = "topics2", tokenizer = tok, max_input = 24, max_target = 4,
                           train = fixture.dir .. "/topics/train.jsonl",
                           validation = fixture.dir .. "/topics/validation.jsonl" }
  local m = new_model()
  local job = m:train{ tasks = { task, other }, steps = 4, batch = 8, validate_every = 2 }
  assert(type(job.task) == "table" and job.task[2] == other, "the job keeps its tasks")
  local _, state = job:wait()
  assert(state == "finished" and m.step == 4, "four steps")
  local names = {}
  for _, record in ipairs(m:usage_records()) do
    names[record.task .. "/" .. record.split] = record.usage
  end
  assert(names["topics/train"] and names["topics2/train"], "train usage per task")
  assert(names["topics/train"][1].tokens > 0 and names["topics2/train"][1].tokens > 0,
         "both tasks counted")
  assert(m.attributes.task == "topics+topics2", "task attribute " .. tostring(m.attributes.task))
  expect_error("give task or tasks, not both", m.train, m,
               { task = task, tasks = { task }, steps = 6 })
  expect_error("tasks[2] is not a caem.task", m.train, m, { tasks = { task, 3 }, steps = 6 })
  expect_error("the run to resume trained on tasks 'topics+topics2', not 'topics2+topics'",
               m.train, m, { tasks = { other, task }, steps = 6, resume = true })
  -- a list of one task trains as task = does
  local single = new_model()
  local _, single_state = single:train{ tasks = { task }, steps = 2, batch = 8 }:wait()
  assert(single_state == "finished", "a list of one task trains")
  assert(single.attributes.task == "topics", "a list of one task names the run")
end)
