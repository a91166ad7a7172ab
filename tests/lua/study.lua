-- caem.pretrain, caem.usage_figure and scenarios/caem_study.lua at its test
-- size: every configuration, the tables, the results, the figures and the
-- saved models, a second run with --reuse, and wrong arguments.

local function read(path)
  local f = io.open(path, "r")
  if f == nil then
    return nil
  end
  local text = f:read("a")
  f:close()
  return text
end

-- A usage table of `layers` layers of `experts` experts.
local function usage_table(layers, experts)
  local u = { experts = experts, mean_entropy = { encoder = 0.5, decoder = 0.25 } }
  for l = 1, layers do
    local kept = {}
    for e = 1, experts do
      kept[e] = (e * l) % 5
    end
    u[l] = { stack = l <= layers // 2 and "encoder" or "decoder", block = 2 * l - 1,
             tokens = 100, entropy = l / layers, kept = kept }
  end
  return u
end

test("usage figure", function()
  local path = os.tmpname()
  local result = caem.usage_figure{ path = path, title = "a <title> & more",
                                    panels = { { title = "one", usage = usage_table(4, 8) },
                                               { title = "two", usage = usage_table(4, 8) } } }
  assert(result == path, "returns the path")
  local svg = read(path)
  os.remove(path)
  assert(svg:sub(1, 4) == "<svg" and svg:find("</svg>\n$"), "an SVG document")
  assert(svg:find("a &lt;title&gt; &amp; more", 1, true), "the title is escaped")
  local cells = 0
  for _ in svg:gmatch("<rect x=") do
    cells = cells + 1
  end
  assert(cells == 2 * 4 * 8 + 1, "one cell per layer and expert and panel, and the frame: "
         .. cells)
  local lines = 0
  for _ in svg:gmatch("<polyline") do
    lines = lines + 1
  end
  assert(lines == 2, "one entropy line per panel")
  -- layer 2's entropy is 0.5: the middle of the chart
  assert(svg:find("enc 3: 0.500", 1, true), "the entropy of a layer")

  expect_error("panel 2 has 3 layers of 8 experts, panel 1 4 of 8", caem.usage_figure,
               { path = path, panels = { { usage = usage_table(4, 8) },
                                         { usage = usage_table(3, 8) } } })
  expect_error("panel 1 has no usage table", caem.usage_figure,
               { path = path, panels = { { title = "x" } } })
  expect_error("non-empty list", caem.usage_figure, { path = path, panels = {} })
  local no_experts = usage_table(2, 4)
  no_experts.experts = 0
  expect_error("panel 1: invalid experts 0", caem.usage_figure,
               { path = path, panels = { { usage = no_experts } } })
  local nan = usage_table(2, 4)
  nan[2].entropy = 0 / 0
  expect_error("panel 1, layer 2: entropy", caem.usage_figure,
               { path = path, panels = { { usage = nan } } })
  expect_error("unknown option 'panel'", caem.usage_figure, { path = path, panel = {} })
  expect_error("cannot write", caem.usage_figure,
               { path = "/nonexistent/dir/f.svg", panels = { { usage = usage_table(2, 4) } } })
end)

if fixture.spm == nil then
  skip("pretrain and study", "no SentencePiece model (spm_train is missing)")
  return
end

local tok = caem.tokenizer(fixture.spm)
local topics = caem.task{ name = "topics", dir = fixture.dir, tokenizer = tok, max_input = 24,
                          max_target = 4 }

test("pretrain on span corruption", function()
  local m = caem.model{ preset = "tiny", tokenizer = tok, seed = 2 }
  local job = caem.pretrain{ model = m, tasks = { topics }, steps = 3, batch = 4, chunk = 12 }
  assert(job.kind == "train", "a training job")
  local _, state = job:wait()
  assert(state == "finished", "state " .. state)
  assert(m.step == 3, "steps")
  assert(m.attributes.task == "span_corruption_topics", "task " .. tostring(m.attributes.task))
  expect_error("option 'model' is required", caem.pretrain, { tasks = { topics } })
  expect_error("option 'tasks' must be a non-empty list", caem.pretrain, { model = m })
  expect_error("unknown option 'task'", caem.pretrain, { model = m, task = topics })
  expect_error("option 'model' must be a caem model, got number", caem.pretrain,
               { model = 5, tasks = { topics } })
  expect_error("tasks[1] must be a caem.task, got string", caem.pretrain,
               { model = m, tasks = { "topics" } })
  expect_error("invalid seed", caem.pretrain,
               { model = m, tasks = { topics }, seed = math.maxinteger })
end)

-- Three tasks from the topics task: its topic, its first word and its first
-- three words, as DIR/study/{topics,first,echo}/{train,validation}.jsonl.
local data = fixture.dir .. "/study"
for _, name in ipairs({ "topics", "first", "echo" }) do
  assert(os.execute(("mkdir -p '%s/%s'"):format(data, name)))
  for _, split in ipairs({ "train", "validation" }) do
    local text = read(("%s/topics/%s.jsonl"):format(fixture.dir, split))
    local out = assert(io.open(("%s/%s/%s.jsonl"):format(data, name, split), "w"))
    for input, target in text:gmatch('{"input": "([^"]*)", "target": "([^"]*)"}') do
      if name == "first" then
        target = input:match("^%S+")
      elseif name == "echo" then
        target = input:match("^%S+ %S+ %S+") or input
      end
      out:write(('{"input": "%s", "target": "%s"}\n'):format(input, target))
    end
    out:close()
  end
end

local scenario = fixture.root .. "/scenarios/caem_study.lua"

-- Runs the study with `words` as its arguments and returns what it printed.
local function study(words)
  local printed = {}
  local real_stdout = io.stdout
  io.stdout = {
    write = function(self, ...)
      for _, s in ipairs({ ... }) do
        printed[#printed + 1] = tostring(s)
      end
      return self
    end,
    flush = function() end,
  }
  arg = words
  local ok, message = pcall(dofile, scenario)
  io.stdout = real_stdout
  arg = nil
  if not ok then
    error(message, 0)
  end
  return table.concat(printed)
end

local out = fixture.dir .. "/study_out"
local common = { "--size", "test", "--data", data, "--tasks", "topics,first,echo",
                 "--tokenizer", fixture.spm, "--out", out }
local configurations = { "Baseline-8", "CAEM-8", "CAEM-8-Avg", "Baseline-16", "CAEM-16",
                         "CAEM-8-to-16", "CAEM-16-Avg" }
local first_run

-- The lines of table (a), from its heading to the line after it.
local function table_a(text)
  return text:match("%(a%) Overall Performance.-\nvs:")
end

test("study at test size", function()
  first_run = study(common)
  for _, heading in ipairs({ "(a) Overall Performance", "(b) Mean normalized entropy",
                             "(c) Allocations per MoE layer", "(d) Soup" }) do
    assert(first_run:find(heading, 1, true), "no table " .. heading .. ":\n" .. first_run)
  end
  local a = table_a(first_run)
  for _, name in ipairs(configurations) do
    assert(a:find("\n" .. name .. " ", 1, true), "table (a) has no row " .. name)
  end
  assert(read(out .. "/tables.txt") == first_run, "tables.txt holds what was printed")

  -- every allocation of table (c) sums to the target's experts
  local rows = 0
  for model, allocation in first_run:gmatch("\n(CAEM%-[%w%-]+) +%a+ +%d+ +[%d%. ]+ +([%d:]+)") do
    local sum = 0
    for n in allocation:gmatch("%d+") do
      sum = sum + tonumber(n)
    end
    local experts = tonumber(model:match("to%-(%d+)") or model:match("^CAEM%-(%d+)"))
    assert(sum == experts, model .. " allocates " .. allocation)
    rows = rows + 1
  end
  assert(rows == 5 * 4, "table (c) has a row per merge and MoE layer, got " .. rows)

  local results = read(out .. "/results.csv")
  for _, name in ipairs(configurations) do
    assert(results:find("\n" .. name .. ",", 1, true), "results.csv has no row of " .. name)
  end
  for _, name in ipairs({ "single-task-8", "single-task-16", table.unpack(configurations) }) do
    local svg = read(("%s/figures/%s.svg"):format(out, name))
    assert(svg ~= nil and svg:find("</svg>"), "no figure of " .. name)
  end

  -- the merge's sources share the base that the pretrained model records
  local base = caem.load(out .. "/models/base-8.h5")
  local merged = caem.info(out .. "/models/CAEM-8.h5")
  assert(merged.attributes.base == base:hash(), "CAEM-8 records base-8")
  assert(merged.merge ~= nil and merged.merge.experts == 8, "CAEM-8 keeps its merge record")
  local single = caem.info(out .. "/models/single-8-first.h5")
  assert(single.attributes.base == base:hash(), "a single-task model records base-8")
end)

test("study reuses finished models and resumes a stopped one", function()
  assert(first_run ~= nil, "the first run failed")
  -- single-8-first as a run stopped at step 4 of 8, with the study's settings
  local first = caem.task{ name = "first", dir = data, tokenizer = tok, max_input = 48 }
  local stopped = caem.load(out .. "/models/base-8.h5")
  stopped:train{ task = first, steps = 4, batch = 4, lr = 2e-3, seed = 1,
                 validate_every = 0 }:wait()
  stopped:save(out .. "/models/single-8-first.h5")

  local again = study({ "--reuse", table.unpack(common) })
  local reused = 0
  for _ in again:gmatch("reused ") do
    reused = reused + 1
  end
  assert(reused == 2 + 5 + 7, "every other model is reused, got " .. reused)
  assert(again:find("single-8-first: resuming " .. out .. "/models/single-8-first.h5 at step 4",
                    1, true), "the stopped run is resumed:\n" .. again)
  assert(table_a(again) == table_a(first_run), "the same scores:\n" .. again)
end)

test("study rejects wrong arguments", function()
  expect_error("unknown size 'huge'", study, { "--size", "huge" })
  expect_error("option --size needs a value", study, { "--size", "--out", "x" })
  expect_error("--base16 is not used at size demo", study,
               { "--size", "demo", "--base16", "x.h5" })
  expect_error("unknown argument '--sise'", study, { "--sise", "test" })
  expect_error("option --out needs a value", study, { "--out" })
  expect_error("invalid --task 'topics'", study,
               { "--size", "test", "--tokenizer", fixture.spm, "--task", "topics" })
  expect_error("give --tasks or --task, not both", study,
               { "--tasks", "a,b", "--task", "a=jsonl:x:y" })
  expect_error("at least two tasks", study,
               { "--size", "test", "--data", data, "--tasks", "topics", "--tokenizer",
                 fixture.spm, "--out", out })
  expect_error("--base8: " .. out .. "/models/base-16.h5 has 16 experts", study,
               { "--base8", out .. "/models/base-16.h5", table.unpack(common) })
  local help = study({ "--help" })
  assert(help:find("^usage: caem run scenarios/caem_study.lua"), "--help prints the usage")
end)

-- A base whose step counter equals the multi-task steps (at --size small the
-- pretraining and multi-task runs both have 5000 steps) must still be
-- fine-tuned into each baseline.
test("study fine-tunes a base at multi steps", function()
  local base_dir = fixture.dir .. "/given_bases"
  assert(os.execute(("mkdir -p '%s'"):format(base_dir)))
  local study_tasks = {}
  for i, name in ipairs({ "topics", "first", "echo" }) do
    study_tasks[i] = caem.task{ name = name, dir = data, tokenizer = tok, max_input = 48 }
  end
  local paths = {}
  for _, experts in ipairs({ 8, 16 }) do
    local base = caem.model{ preset = "tiny", tokenizer = tok, num_experts = experts, seed = 3 }
    -- 8 steps: the multi-task steps of --size test
    caem.pretrain{ model = base, tasks = study_tasks, steps = 8, batch = 4, chunk = 24 }:wait()
    paths[experts] = ("%s/base-%d.h5"):format(base_dir, experts)
    base:save(paths[experts], { tokenizer = tok, base = base:hash() })
  end

  local out_with_bases = fixture.dir .. "/study_out_with_bases"
  local printed = study({ "--size", "test", "--data", data, "--tasks", "topics,first,echo",
                          "--tokenizer", fixture.spm, "--out", out_with_bases,
                          "--base8", paths[8], "--base16", paths[16] })
  for _, experts in ipairs({ 8, 16 }) do
    local name = "Baseline-" .. experts
    assert(printed:find("] " .. name .. ": 8 steps in ", 1, true),
           name .. " is fine-tuned:\n" .. printed)
    local baseline = caem.load(("%s/models/%s.h5"):format(out_with_bases, name))
    assert(baseline:hash() ~= caem.load(paths[experts]):hash(),
           name .. " differs from its base")
  end
end)

test("study checks given bases first", function()
  local checked_out = fixture.dir .. "/study_out_wrong_base"
  expect_error("--base16: " .. out .. "/models/base-8.h5 has 8 experts per MoE layer, not 16",
               study, { "--size", "test", "--data", data, "--tasks", "topics,first,echo",
                        "--tokenizer", fixture.spm, "--out", checked_out,
                        "--base16", out .. "/models/base-8.h5" })
  assert(io.open(checked_out .. "/models/base-8.h5") == nil,
         "base-8 is not pretrained before --base16 is checked")
end)

-- DIR/NAME/train.jsonl made of `bad` malformed lines and then the lines of
-- the topics task's train split, with its validation split as is.
local function task_with_bad_lines(name, bad, keep_good)
  assert(os.execute(("mkdir -p '%s/%s'"):format(data, name)))
  local train = assert(io.open(("%s/%s/train.jsonl"):format(data, name), "w"))
  for _ = 1, bad do
    train:write('{"text": "no input field"}\n')
  end
  if keep_good then
    train:write(read(("%s/topics/train.jsonl"):format(data)))
  end
  train:close()
  local validation = assert(io.open(("%s/%s/validation.jsonl"):format(data, name), "w"))
  validation:write(read(("%s/topics/validation.jsonl"):format(data)))
  validation:close()
end

test("study reports malformed task records", function()
  task_with_bad_lines("unusable", 3, false)
  expect_error("task unusable has no usable example in its train split: 3 malformed "
               .. "records skipped, the first: " .. data .. "/unusable/train.jsonl:1: "
               .. 'missing "input"', study,
               { "--size", "test", "--data", data, "--tasks", "topics,first,unusable",
                 "--tokenizer", fixture.spm, "--out", fixture.dir .. "/study_out_unusable" })

  task_with_bad_lines("partly", 2, true)
  local printed = study({ "--size", "test", "--data", data, "--tasks", "topics,partly",
                          "--tokenizer", fixture.spm,
                          "--out", fixture.dir .. "/study_out_partly" })
  assert(printed:find("task partly, train split: 2 malformed records skipped, the first: "
                      .. data .. '/partly/train.jsonl:1: missing "input"', 1, true),
         "the skipped records are reported:\n" .. printed)
end)

test("study failure keeps the previous tables", function()
  local tables = read(out .. "/tables.txt")
  local csv, jsonl = read(out .. "/results.csv"), read(out .. "/results.jsonl")
  assert(tables ~= nil and tables:find("(a) Overall Performance", 1, true),
         "the runs and the failed runs before left the tables of a finished run")
  assert(csv ~= nil and jsonl ~= nil, "an earlier run wrote its results")

  -- a damaged model file stops the run after the single-task evaluations
  local damaged = assert(io.open(out .. "/models/CAEM-8.h5", "w"))
  damaged:write("not a checkpoint\n")
  damaged:close()
  expect_error(out .. "/models/CAEM-8.h5", study, { "--reuse", table.unpack(common) })
  assert(read(out .. "/tables.txt") == tables, "tables.txt is kept")
  assert(read(out .. "/results.csv") == csv, "results.csv is kept")
  assert(read(out .. "/results.jsonl") == jsonl, "results.jsonl is kept")

  -- a finished run replaces the results instead of adding to them
  os.remove(out .. "/models/CAEM-8.h5")
  study({ "--reuse", table.unpack(common) })
  local _, rows_before = csv:gsub("\n", "")
  local _, rows_after = read(out .. "/results.csv"):gsub("\n", "")
  assert(rows_after == rows_before, ("results.csv has %d lines, the run before %d"):format(
    rows_after, rows_before))
  assert(io.open(out .. "/tables.txt.partial") == nil, "no partial tables are left")
end)

test("study reuse rejects a damaged model", function()
  local damaged = assert(io.open(out .. "/models/single-8-first.h5", "w"))
  damaged:write("not a checkpoint\n")
  damaged:close()
  expect_error(out .. "/models/single-8-first.h5 cannot be reused: caem.load: checkpoint "
               .. out .. "/models/single-8-first.h5: not an HDF5 file (no HDF5 signature); "
               .. "remove it to train single-8-first again", study,
               { "--reuse", table.unpack(common) })
  os.remove(out .. "/models/single-8-first.h5")
end)
