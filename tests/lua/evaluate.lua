-- model:evaluate, model:usage and model:generate: results, results files,
-- recorded usage, batch-wise progress, and errors.

if fixture.spm == nil then
  skip("evaluation", "no SentencePiece model (spm_train is missing)")
  return
end

local tok = caem.tokenizer(fixture.spm)
local task = caem.task{ name = "topics", dir = fixture.dir, tokenizer = tok, max_input = 24,
                        max_target = 4 }
local model = caem.model{ preset = "tiny", tokenizer = tok, seed = 2 }
model:train{ task = task, steps = 4, batch = 8 }:wait()

test("evaluate result fields", function()
  local e, state = model:evaluate{ task = task, limit = 8, batch = 4, beams = 1,
                                   max_length = 4 }:wait()
  assert(state == "finished", "state " .. state)
  assert(e.task == "topics" and e.split == "validation" and e.metric == "accuracy", "names")
  assert(e.examples == 8, "examples " .. e.examples)
  assert(e.figures.accuracy >= 0 and e.figures.accuracy <= 100, "accuracy in percent")
  assert(e.primary == e.figures.accuracy and e.primary_name == "accuracy", "primary figure")
  assert(e.loss > 0, "loss " .. tostring(e.loss))
  assert(#e.predictions == 8, #e.predictions .. " predictions")
  assert(type(e.predictions[1]) == "string", "predictions are text")
  assert(e.usage.decoder_source == "teacher", "teacher-forced decoder usage by default")
  assert(#e.usage == 4 and e.usage[1].tokens > 0, "usage per MoE layer")
  assert(e.seconds >= 0, "seconds")
end)

test("evaluate counts generated usage", function()
  local job = model:evaluate{ task = task, split = "test", beams = 2, max_length = 4,
                              usage_from = "generated" }
  local e = job:wait()
  assert(e.split == "test" and e.examples == 8, "the whole test split")
  assert(e.usage.decoder_source == "generated", "decoder usage while generating")
  assert(job:usage().decoder_source == "generated", "job:usage() after the end")
  assert(job:status().step == job:status().steps, "every batch done")
end)

test("evaluate in batch units", function()
  local job = model:evaluate{ task = task, limit = 8, batch = 2, beams = 1, max_length = 4,
                              paused = true }
  job:step(3)
  job:wait()
  local s = job:status()
  assert(s.kind == "evaluate" and s.step == 3, "3 batches done")
  assert(s.steps == 8, "4 loss batches and 4 generation batches: " .. s.steps)
  expect_error("job:usage: the evaluate job has no usage until it finishes", job.usage, job)
  job:stop()
  local e, state = job:wait()
  assert(e == nil and state == "stopped", "a stopped evaluation has no result")
  assert(job:result() == nil, "no result after the stop")
end)

test("evaluate writes results and records", function()
  local prefix = fixture.dir .. "/eval-results"
  local e = model:evaluate{ task = task, split = "test", limit = 4, beams = 1,
                            max_length = 4, results = prefix, record = true,
                            model_name = "tiny-topics" }:wait()
  local rows = caem.results(prefix)
  assert(#rows == 2, #rows .. " rows: accuracy and loss")
  assert(rows[1].model == "tiny-topics" and rows[1].metric == "accuracy", "accuracy row")
  assert(rows[1].value == e.figures.accuracy, "the figure")
  assert(rows[2].metric == "loss" and rows[2].value == e.loss, "loss row")
  assert(rows[1].step == 4 and rows[1].split == "test", "step and split")
  local found
  for _, record in ipairs(model:usage_records()) do
    if record.task == "topics" and record.split == "test" then
      found = record
    end
  end
  assert(found, "usage recorded under topics/test")
  assert(found.usage[1].tokens == e.usage[1].tokens, "the recorded usage is the evaluation's")
end)

test("usage pass counts teacher usage", function()
  local u = model:usage{ task = task, limit = 8, batch = 4 }:wait()
  local e = model:evaluate{ task = task, limit = 8, batch = 4, beams = 1,
                            max_length = 4 }:wait()
  assert(u.predictions == nil and next(u.figures) == nil, "nothing generated")
  assert(u.loss == e.loss, "same teacher-forced loss")
  for layer = 1, #u.usage do
    assert(u.usage[layer].tokens == e.usage[layer].tokens, "layer " .. layer .. " tokens")
    for expert = 1, u.usage.experts do
      assert(u.usage[layer].kept[expert] == e.usage[layer].kept[expert],
             "layer " .. layer .. ", expert " .. expert)
    end
  end
  local job = model:usage{ task = task, split = "train", count_padding = true }
  local padded = job:wait()
  assert(job.kind == "usage" and padded.usage.count_padding, "padding counted")
  assert(padded.examples == 96, "the whole train split")
end)

test("failed evaluation raises", function()
  local job = model:evaluate{ task = task, limit = 2, beams = 1, max_length = 3,
                              results = fixture.dir .. "/no/such/dir/results" }
  local message = expect_error("evaluate job failed: ", job.wait, job)
  assert(message:find("no/such/dir/results", 1, true), message)
  assert(job:status().state == "failed", "state failed")
  assert(job:status().message:find("no/such/dir", 1, true), "status message")
  expect_error("evaluate job failed", job.result, job)
  assert(not model.busy, "the model is free after a failure")
end)

test("evaluate option errors", function()
  expect_error("unknown option 'beam' for model:evaluate", model.evaluate, model,
               { task = task, beam = 2 })
  expect_error("invalid split 'dev' (expected train, validation or test)", model.evaluate,
               model, { task = task, split = "dev" })
  expect_error("option 'usage_from' is 'decoder', expected one of: teacher, generated",
               model.evaluate, model, { task = task, usage_from = "decoder" })
  expect_error("option 'limit' is -1", model.evaluate, model, { task = task, limit = -1 })
  expect_error("option 'beams' is 0, expected an integer in [1, 64]", model.evaluate, model,
               { task = task, beams = 0 })
  expect_error("unknown option 'beams' for model:usage", model.usage, model,
               { task = task, beams = 2 })
  local train_only = caem.task{ name = "topics", train = fixture.dir .. "/topics/train.jsonl",
                                tokenizer = tok }
  expect_error("task 'topics' has no tokenized validation examples", model.usage, model,
               { task = train_only })
end)

test("generate text and ids", function()
  local text, score = model:generate("goal team match", { tokenizer = tok, beams = 1,
                                                           max_length = 5 })
  assert(type(text) == "string", "one text for one input")
  assert(type(score) == "number" and score <= 0, "a log-likelihood")
  local texts, scores = model:generate({ "goal team", "oven flour", "guitar" },
                                       { tokenizer = tok, beams = 2, max_length = 4,
                                         batch = 2 })
  assert(#texts == 3 and #scores == 3, "one output per input")
  local ids = model:generate({ 5, 6, tok.eos_id }, { beams = 1, max_length = 4 })
  assert(type(ids) == "table" and #ids >= 1 and #ids <= 3, "ids without a tokenizer")
  local again = model:generate({ { 5, 6, tok.eos_id } }, { beams = 1, max_length = 4 })
  assert(#again == 1 and #again[1] == #ids, "a list of one id table")
  for i = 1, #ids do
    assert(again[1][i] == ids[i], "greedy search is deterministic")
  end
  local direct = model:generate(tok:encode("goal team match"), { beams = 1, max_length = 5 })
  assert(#direct >= 1, "encoded ids without EOS")
end)

test("generate errors", function()
  expect_error("text inputs need the tokenizer option", model.generate, model, "goal")
  expect_error("input id 2 is 100000, expected an integer in [0,", model.generate, model,
               { 5, 100000 })
  expect_error("expected at least one input", model.generate, model, {})
  expect_error("an input has no ids", model.generate, model, { {} })
  expect_error("unknown option 'beam' for model:generate", model.generate, model, { 5 },
               { beam = 2 })
  expect_error("an input must be a string or a table of ids, got boolean", model.generate,
               model, { { 5 }, true })
  expect_error("option 'max_length' is 1", model.generate, model, { 5 }, { max_length = 1 })
end)
