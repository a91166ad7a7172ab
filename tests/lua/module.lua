-- The module table: version, presets, configs, and the prelude's helpers
-- (table_print, sweep, print_usage).

test("version matches the program", function()
  assert(caem.version:match("^%d+%.%d+%.%d+$"), "version is " .. tostring(caem.version))
  if fixture.caem == nil then
    return
  end
  local pipe = io.popen(fixture.caem .. " --version")
  local printed = pipe:read("a")
  pipe:close()
  assert(printed == "caem " .. caem.version .. "\n", "caem --version printed " .. printed)
end)

test("presets listed", function()
  local presets = caem.presets()
  assert(#presets == 3, "expected 3 presets, got " .. #presets)
  assert(presets[1] == "tiny", presets[1])
  assert(presets[2] == "small", presets[2])
  assert(presets[3] == "switch-base-8", presets[3])
end)

test("config of a preset", function()
  local c = caem.config("tiny")
  assert(c.d_model == 32, "d_model " .. tostring(c.d_model))
  assert(c.num_experts == 4, "num_experts " .. tostring(c.num_experts))
  assert(c.vocab_size == 96, "vocab_size " .. tostring(c.vocab_size))
  assert(math.type(c.d_model) == "integer", "d_model is not an integer")
  assert(c.dropout_rate == 0.1, "dropout_rate " .. tostring(c.dropout_rate))
  assert(c.routing == "parity", "routing " .. tostring(c.routing))
  local base = caem.config("switch-base-8")
  assert(base.d_model == 768 and base.vocab_size == 32128, "switch-base-8 shape")
end)

test("config with fields", function()
  local c = caem.config{ preset = "tiny", d_model = 64, routing = "clean", dropout_rate = 0 }
  assert(c.d_model == 64, "d_model " .. c.d_model)
  assert(c.routing == "clean", "routing " .. c.routing)
  assert(c.dropout_rate == 0, "dropout_rate " .. c.dropout_rate)
  local small = caem.config{}
  assert(small.d_model == 256, "the default preset is small")
end)

test("config errors", function()
  expect_error("unknown model preset 'huge' (expected one of: tiny, small, switch-base-8)",
               caem.config, "huge")
  expect_error("unknown option 'd_modle' for caem.config (expected one of: preset, vocab_size",
               caem.config, { d_modle = 3 })
  expect_error("config field 'd_model' must be an integer", caem.config, { d_model = 1.5 })
  expect_error("config field 'routing' is \"fast\"", caem.config, { routing = "fast" })
  expect_error("num_heads is 0, expected a positive integer", caem.config, { num_heads = 0 })
  expect_error("dropout_rate is 1, expected [0, 1)", caem.config, { dropout_rate = 1 })
  expect_error("config field 'd_ff' must be a number, a boolean or a string, got table",
               caem.config, { d_ff = {} })
  expect_error("expected a preset name or a table of fields", caem.config, 3)
end)

test("every config field accepted", function()
  for key, value in pairs(caem.config("tiny")) do
    local options = { preset = "tiny" }
    options[key] = value
    local ok, message = pcall(caem.config, options)
    assert(ok, "field " .. key .. ": " .. tostring(message))
  end
end)

test("table_print aligns columns", function()
  local out = capture()
  caem.table_print({ { name = "a", loss = 2.5, step = 10 }, { name = "bb", loss = 0.125 } },
                   { out = out })
  local expected = " loss  name  step\n"
                .. "  2.5  a       10\n"
                .. "0.125  bb\n"
  assert(out:text() == expected, "printed:\n" .. out:text())
end)

test("table_print given columns", function()
  local out = capture()
  caem.table_print({ { x = 1, y = "u" }, { x = 22, y = "v" } },
                   { columns = { "y", "x" }, out = out })
  assert(out:text() == "y   x\nu   1\nv  22\n", "printed:\n" .. out:text())
  expect_error("unknown option 'colums' for caem.table_print", caem.table_print, {},
               { colums = {} })
  expect_error("caem.table_print: expected a list of rows, got string", caem.table_print, "x")
end)

test("sweep covers grid", function()
  local calls = 0
  local rows = caem.sweep{
    grid = { lr = { 1, 2 }, batch = { 8, 16, 32 } },
    run = function(p)
      calls = calls + 1
      p.lr = -1 -- a change of the parameters does not reach the row
      return { score = calls }
    end,
  }
  assert(calls == 6, "run called " .. calls .. " times")
  assert(#rows == 6, #rows .. " rows")
  assert(rows[1].batch == 8 and rows[1].lr == 1, "first row batch 8, lr 1")
  assert(rows[2].batch == 8 and rows[2].lr == 2, "lr varies fastest (sorted names)")
  assert(rows[6].batch == 32 and rows[6].lr == 2 and rows[6].score == 6, "last row")
end)

test("sweep order and plain results", function()
  local rows = caem.sweep{
    grid = { a = { 1, 2 }, b = { 10, 20 } },
    order = { "b", "a" },
    run = function(p) return p.a + p.b end,
  }
  assert(rows[2].a == 2 and rows[2].b == 10, "a varies fastest")
  assert(rows[2].result == 12, "result " .. tostring(rows[2].result))
  expect_error("grid entry 'b' is missing from option 'order'", caem.sweep,
               { grid = { a = { 1 }, b = { 2 } }, order = { "a" }, run = print })
  expect_error("grid entry 'a' must be a non-empty list", caem.sweep,
               { grid = { a = {} }, run = print })
  expect_error("option 'run' must be a function", caem.sweep, { grid = { a = { 1 } } })
  expect_error("unknown option 'gird' for caem.sweep", caem.sweep, { gird = {} })
  expect_error("boom", caem.sweep, { grid = { a = { 1 } }, run = function() error("boom") end })
end)

-- A usage table of one encoder and one decoder layer with three experts.
local function usage_table()
  return {
    experts = 3,
    mean_entropy = { encoder = 0.5, decoder = 1 },
    { stack = "encoder", block = 1, tokens = 4, entropy = 0.5,
      kept = { 3, 1, 0 }, dropped = { 0, 0, 2 }, soft = { 0.6, 0.3, 0.1 } },
    { stack = "decoder", block = 1, tokens = 3, entropy = 1,
      kept = { 1, 1, 1 }, dropped = { 0, 0, 0 }, soft = { 0.3, 0.3, 0.4 } },
  }
end

test("print_usage formats layers", function()
  local out = capture()
  caem.print_usage(usage_table(), { out = out })
  local lines = {}
  for line in out:text():gmatch("[^\n]+") do
    lines[#lines + 1] = line
  end
  assert(#lines == 4, #lines .. " lines:\n" .. out:text())
  assert(lines[2] == "encoder     1         4   0.500   75.0  25.0   0.0  dropped 2", lines[2])
  assert(lines[3] == "decoder     1         3   1.000   33.3  33.3  33.3", lines[3])
  assert(lines[4] == "mean normalized entropy: encoder 0.500, decoder 1.000", lines[4])
  out = capture()
  caem.print_usage(usage_table(), { out = out, experts = 2 })
  assert(out:text():find("first 2", 1, true), "header names the experts shown")
  expect_error("caem.print_usage: expected a usage table", caem.print_usage, { 1, 2 })
  expect_error("unknown option 'expert' for caem.print_usage", caem.print_usage,
               usage_table(), { expert = 2 })
end)

test("device get and set", function()
  local previous = caem.device()
  assert(previous == "cpu" or previous == "cuda", "device " .. tostring(previous))
  assert(caem.device("cpu") == "cpu", "setting cpu")
  assert(caem.device() == "cpu", "cpu kept")
  local ok, err = pcall(caem.device, "gpu")
  assert(not ok and err:find("unknown device 'gpu'", 1, true), tostring(err))
  assert(caem.device() == "cpu", "a rejected name leaves the device alone")
  ok, err = pcall(caem.device, "cuda")
  assert(ok or err:find("caem.device: ", 1, true), tostring(err))
  assert(caem.device(previous) == previous, "restored")
end)

test("precision get and set", function()
  assert(caem.precision() == "fp32", "default " .. caem.precision())
  local ok, err = pcall(caem.precision, "fp16")
  assert(not ok and err:find("fp16", 1, true), tostring(err))
  ok, err = pcall(caem.precision, "tf32")
  if ok then
    assert(err == "tf32", "set " .. tostring(err))
    assert(caem.precision("fp32") == "fp32", "restored")
  else
    assert(err:find("needs the CUDA backend", 1, true), tostring(err))
  end
  assert(caem.precision() == "fp32", "fp32 again")
end)
