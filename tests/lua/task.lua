-- caem.task: the default-corpus layout, explicit paths, the dataset formats,
-- load reports, examples, and errors.

if fixture.spm == nil then
  skip("tasks", "no SentencePiece model (spm_train is missing)")
  return
end

local tok = caem.tokenizer(fixture.spm)

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

test("directory layout", function()
  local t = caem.task{ name = "topics", dir = fixture.dir, tokenizer = tok }
  assert(t:size("train") == 96, "train size " .. t:size("train"))
  assert(t:size("validation") == 16, "validation size")
  assert(t:size("test") == 8, "test size")
  assert(t.name == "topics" and t.metric == "accuracy", "name and metric")
  assert(t.prompt == nil, "no prompt for a task the default corpus does not name")
  assert(t.max_input == 256 and t.max_target == 64, "default maximum lengths")
  assert(t.tokenizer == tok, "the task keeps its tokenizer")
  assert(t.reports.train.loaded == 96 and t.reports.train.skipped == 0, "train report")
  assert(tostring(t) == "caem.task(topics: 96 train, 16 validation, 8 test, accuracy)",
         tostring(t))
end)

test("example fields", function()
  local t = caem.task{ name = "topics", dir = fixture.dir, tokenizer = tok, max_input = 4 }
  local ex = t:example("validation", 2)
  assert(ex.target == "music", "second validation example is music: " .. ex.target)
  assert(#ex.answers == 1 and ex.answers[1] == "music", "answers")
  assert(ex.input:find(" ", 1, true), "input text")
  assert(#ex.input_ids == 4, "input cut to max_input = 4 ids: " .. #ex.input_ids)
  assert(ex.input_ids[4] == tok.eos_id, "EOS ends the input")
  assert(ex.target_ids[#ex.target_ids] == tok.eos_id, "EOS ends the target")
  expect_error("task:example: index 17 is outside [1, 16] of the validation split",
               t.example, t, "validation", 17)
  expect_error("task:example: index 0 is outside", t.example, t, "train", 0)
  expect_error("task:size: invalid split 'dev' (expected train, validation or test)",
               t.size, t, "dev")
  expect_error("give either dir or the paths of the splits, not both (train is set too)",
               caem.task, { name = "topics", dir = fixture.dir, tokenizer = tok,
                            train = fixture.dir .. "/topics/train.jsonl" })
end)

test("prompt and metric options", function()
  local plain = caem.task{ name = "topics", dir = fixture.dir, tokenizer = tok }
  local prompted = caem.task{ name = "topics", dir = fixture.dir, tokenizer = tok,
                              prompt = "Classify: ", metric = "rouge" }
  assert(prompted.prompt == "Classify: ", "prompt")
  assert(prompted.metric == "rouge", "metric")
  local a, b = plain:example("train", 1), prompted:example("train", 1)
  assert(a.input == b.input, "the prompt is not part of the stored input")
  assert(#b.input_ids > #a.input_ids, "the prompt adds ids")
end)

test("explicit paths and skipped records", function()
  local path = write(fixture.dir .. "/mixed.jsonl",
                     '{"input": "goal team", "target": "sports"}\n'
                     .. '{"input": "no target"}\n'
                     .. 'not json\n'
                     .. '{"input": "oven flour", "target": "cooking"}\n')
  local t = caem.task{ name = "mixed", train = path, tokenizer = tok }
  assert(t:size("train") == 2, "two good records")
  assert(t:size("validation") == 0, "no validation split")
  local r = t.reports.train
  assert(r.loaded == 2 and r.skipped == 2, "report counts")
  assert(r.first_bad_record == 2, "the first bad record is line 2")
  assert(r.first_error:find("mixed.jsonl", 1, true), "the error names the file: " .. r.first_error)
  assert(t.reports.validation == nil, "no report for a split not loaded")
end)

test("default corpus prompt and metric", function()
  local dir = fixture.dir .. "/corpus"
  os.execute("mkdir -p " .. dir .. "/summarization")
  write(dir .. "/summarization/train.jsonl", '{"input": "a long text", "target": "short"}\n')
  local t = caem.task{ name = "summarization", dir = dir, tokenizer = tok }
  assert(t.metric == "rouge", "summarization is scored by rouge")
  assert(t.prompt == "Summarize: ", "prompt " .. tostring(t.prompt))
end)

test("agnews format", function()
  local path = write(fixture.dir .. "/ag.csv",
                     '"2","Team wins","The team won the match."\n'
                     .. '"4","New chip","A faster chip\\$."\n'
                     .. '"9","Bad","class out of range"\n')
  local t = caem.task{ format = "agnews", train = path, tokenizer = tok }
  assert(t.name == "agnews" and t.metric == "accuracy", "name and metric")
  assert(t:size("train") == 2, "two records")
  assert(t:example("train", 1).target == "Sports", t:example("train", 1).target)
  assert(t:example("train", 2).target == "Science and Technology", "class 4")
  assert(t:example("train", 1).input:find("^Classify: "), "the loader writes the prompt")
  assert(t.prompt == nil, "no second prompt")
  assert(t.reports.train.skipped == 1, "class 9 skipped")
end)

test("squad format", function()
  local path = write(fixture.dir .. "/squad.json", [[
{"version": "1.1", "data": [{"title": "T", "paragraphs": [{
  "context": "The cat sat on the mat.",
  "qas": [{"id": "q1", "question": "Where did the cat sit?",
           "answers": [{"text": "on the mat", "answer_start": 12},
                       {"text": "the mat", "answer_start": 15}]}]}]}]}
]])
  local t = caem.task{ format = "squad", validation = path, tokenizer = tok }
  assert(t.name == "squad" and t.metric == "squad", "name and metric")
  local ex = t:example("validation", 1)
  assert(ex.target == "on the mat" and #ex.answers == 2, "answers kept")
  assert(ex.id == "q1", "id")
end)

test("xsum formats", function()
  local jsonl = write(fixture.dir .. "/xsum.jsonl",
                      '{"document": "A long story.", "summary": "Short.", "id": "7"}\n')
  local t = caem.task{ format = "xsum_jsonl", test = jsonl, tokenizer = tok }
  assert(t.name == "xsum" and t.metric == "rouge", "name and metric")
  assert(t:example("test", 1).target == "Short.", "summary")

  local raw = fixture.dir .. "/extracts"
  os.execute("mkdir -p " .. raw)
  write(raw .. "/1.data", "[XSUM]URL[XSUM]\nu\n[XSUM]INTRODUCTION[XSUM]\nS1.\n"
                          .. "[XSUM]RESTBODY[XSUM]\nD1.\n")
  t = caem.task{ format = "xsum_raw", train = raw, tokenizer = tok, name = "news" }
  assert(t.name == "news" and t:example("train", 1).target == "S1.", "raw extract")

  local pairs_dir = fixture.dir .. "/pairs"
  os.execute("mkdir -p " .. pairs_dir)
  write(pairs_dir .. "/a.document", "Document a.\n")
  write(pairs_dir .. "/a.summary", "Summary a.\n")
  write(pairs_dir .. "/b.document", "No summary.\n")
  t = caem.task{ format = "xsum_pairs", train = pairs_dir, tokenizer = tok }
  assert(t:size("train") == 1, "one complete pair")
  assert(t.reports.train.skipped == 1, "the pair without a summary is skipped")
end)

test("task option errors", function()
  local dir = fixture.dir
  expect_error("unknown option 'nmae' for caem.task (expected one of: name, dir,",
               caem.task, { nmae = "x", tokenizer = tok })
  expect_error("caem.task: option 'tokenizer' is missing", caem.task,
               { name = "topics", dir = dir })
  expect_error("option 'tokenizer' must be a caem.tokenizer, got string", caem.task,
               { name = "topics", dir = dir, tokenizer = "spm.model" })
  expect_error("option 'name' is missing (required for format jsonl)", caem.task,
               { train = dir .. "/topics/train.jsonl", tokenizer = tok })
  expect_error("no split of task 'nothing' found", caem.task,
               { name = "nothing", dir = dir, tokenizer = tok })
  expect_error("give dir (with name) or at least one of the paths", caem.task,
               { name = "x", tokenizer = tok })
  expect_error(dir .. "/missing.jsonl", caem.task,
               { name = "x", train = dir .. "/missing.jsonl", tokenizer = tok })
  expect_error("option 'format' is 'csv', expected one of: jsonl, agnews", caem.task,
               { format = "csv", train = "x", tokenizer = tok })
  expect_error("option 'metric' is 'bleu'", caem.task,
               { name = "topics", dir = dir, tokenizer = tok, metric = "bleu" })
  expect_error("give the paths train, validation and test for format squad", caem.task,
               { format = "squad", dir = dir, tokenizer = tok })
  expect_error("option 'max_input' is 1, expected an integer in [2, 65536]", caem.task,
               { name = "topics", dir = dir, tokenizer = tok, max_input = 1 })
  expect_error("caem.task: expected a table of options, got string", caem.task, "topics")
end)
