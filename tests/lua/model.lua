-- Models: caem.model, its fields and methods that read or save it,
-- caem.load, caem.info and caem.import.

local function product(shape)
  local n = 1
  for _, d in ipairs(shape) do
    n = n * d
  end
  return n
end

test("new model fields", function()
  local m = caem.model{ preset = "tiny", seed = 3 }
  assert(m.name == "tiny", "name " .. m.name)
  assert(m.path == nil, "no path before a save")
  assert(m.step == 0, "no step trained")
  assert(m.busy == false, "not busy")
  assert(m.config.d_model == 32 and m.config.vocab_size == 96, "config")
  assert(math.type(m.parameters) == "integer" and m.parameters > 100000,
         "parameters " .. tostring(m.parameters))
  assert(next(m.attributes) == nil, "no attributes yet")
  assert(tostring(m) == "caem.model(tiny, 135.6k parameters, 2+2 MoE layers x 4 experts)",
         tostring(m))
  local total = 0
  for _, t in ipairs(m:tensors()) do
    total = total + t.count
  end
  assert(total == m.parameters, "the tensors add up to the parameters")
end)

test("config options shape the model", function()
  local m = caem.model{ preset = "tiny", num_experts = 8, d_model = 16, name = "wide",
                        encoder_sparse_step = 1 }
  assert(m.config.num_experts == 8 and m.config.d_model == 16, "config fields")
  assert(m.name == "wide", "name")
  assert(tostring(m):find("4+2 MoE layers x 8 experts", 1, true), tostring(m))
end)

test("seed decides parameters", function()
  local a = caem.model{ preset = "tiny", seed = 5 }
  local b = caem.model{ preset = "tiny", seed = 5 }
  local c = caem.model{ preset = "tiny", seed = 6 }
  assert(a:hash() == b:hash(), "same seed, same parameters")
  assert(a:hash() ~= c:hash(), "other seed, other parameters")
  assert(a:hash():match("^%x+$") and #a:hash() == 16, "16 hex digits")
end)

test("param values and shape", function()
  local m = caem.model{ preset = "tiny" }
  local norm, shape = m:param("encoder/final_norm")
  assert(#shape == 1 and shape[1] == 32, "shape of a norm")
  for i = 1, 32 do
    assert(norm[i] == 1, "norms start at 1, value " .. i .. " is " .. norm[i])
  end
  local router, router_shape = m:param("encoder/block_01/moe/router")
  assert(router_shape[1] == 4 and router_shape[2] == 32, "router [E, D]")
  assert(#router == product(router_shape), "row-major values")
  assert(router[1] ~= router[2], "random values")
  local limited = m:param("shared/embedding", { max_values = 96 * 32 })
  assert(#limited == 96 * 32, "max_values raised")
end)

test("param errors", function()
  local m = caem.model{ preset = "tiny" }
  expect_error("model:param: tensor 'shared/embedding' has 3072 values, more than "
               .. "max_values 100; pass {max_values = 3072}", m.param, m, "shared/embedding",
               { max_values = 100 })
  expect_error("model:param: no tensor 'shared' (model:tensors() lists them)", m.param, m,
               "shared")
  expect_error("unknown option 'max' for model:param", m.param, m, "shared/embedding",
               { max = 1 })
  expect_error("(caem.model expected, got table)", m.param, {}, "x")
end)

test("tokenizer sets vocabulary", function()
  if fixture.spm == nil then
    return
  end
  local tok = caem.tokenizer(fixture.spm)
  local m = caem.model{ preset = "tiny", tokenizer = tok }
  assert(m.config.vocab_size == tok.vocab_size, "vocabulary of the tokenizer")
  expect_error("the model's vocabulary has 50 ids, fewer than the tokenizer's", caem.model,
               { preset = "tiny", tokenizer = tok, vocab_size = 50 })
end)

test("model option errors", function()
  expect_error("unknown option 'stpes' for caem.model (expected one of: preset, seed, name, "
               .. "tokenizer, vocab_size, d_model", caem.model, { stpes = 3 })
  expect_error("unknown model preset 'large'", caem.model, { preset = "large" })
  expect_error("caem.model: option 'seed' is -1, expected an integer in [0,", caem.model,
               { seed = -1 })
  expect_error("caem.model: option 'seed' must be an integer, got string", caem.model,
               { seed = "1" })
  expect_error("invalid config: num_heads is 0", caem.model, { preset = "tiny", num_heads = 0 })
  expect_error("caem.model: expected a table of options, got string", caem.model, "tiny")
  expect_error("option 'tokenizer' must be a caem.tokenizer, got number", caem.model,
               { tokenizer = 1 })
  expect_error("caem.model has no field or method 'paramters'", function()
    return caem.model{ preset = "tiny" }.paramters
  end)
end)

test("save and load round trip", function()
  local path = fixture.dir .. "/saved.h5"
  local m = caem.model{ preset = "tiny", seed = 9 }
  expect_error("model:save: no path given, and the model was not loaded or saved before",
               m.save, m)
  m:save(path, { task = "topics", attributes = { note = "hand made" } })
  assert(m.path == path, "the path is kept")
  assert(m.attributes.base == m:hash(), "an untrained model is its own base")
  local loaded = caem.load(path)
  assert(loaded:hash() == m:hash(), "same parameters")
  assert(loaded.name == path and loaded.path == path, "named by its path")
  assert(loaded.config.d_model == 32, "config")
  assert(loaded.attributes.task == "topics", "task attribute")
  assert(loaded.attributes.note == "hand made", "free attribute")
  assert(#loaded:history() == 0, "no history")
  assert(#loaded:usage_records() == 0, "no usage records")
  assert(tostring(loaded):find("caem.model(" .. path, 1, true), tostring(loaded))
  m:save()
  assert(caem.load(path):hash() == m:hash(), "save() writes to the same path again")
end)

test("save option errors", function()
  local m = caem.model{ preset = "tiny" }
  local path = fixture.dir .. "/bad.h5"
  expect_error("unknown option 'atributes' for model:save", m.save, m, path, { atributes = {} })
  expect_error("attributes must map names to strings", m.save, m, path,
               { attributes = { 1, 2 } })
  expect_error("root attribute 'created' is reserved", m.save, m, path,
               { attributes = { created = "now" } })
  expect_error("option 'task' must be a string or a caem.task", m.save, m, path, { task = 3 })
  expect_error("model:save:", m.save, m, fixture.dir .. "/no/such/dir/m.h5")
  -- a failed save leaves nothing behind: the next save works
  m:save(path)
  os.remove(path)
end)

test("save never replaces other files", function()
  local m = caem.model()
  assert(m.config.d_model > 0, "caem.model() without options makes the default model")
  local path = fixture.dir .. "/notes.txt"
  local f = assert(io.open(path, "w"))
  f:write("my notes\n")
  f:close()
  expect_error("exists and is not a readable checkpoint", m.save, m, path)
  f = assert(io.open(path))
  assert(f:read("a") == "my notes\n", "the file changed")
  f:close()
  expect_error("is a directory", m.save, m, fixture.dir)
  os.remove(path)
end)

test("info without tensors", function()
  local path = fixture.dir .. "/info.h5"
  local m = caem.model{ preset = "tiny" }
  m:save(path, { attributes = { origin = "test" } })
  local info = caem.info(path)
  assert(info.path == path, "path")
  assert(info.parameters == m.parameters, "parameters")
  assert(info.config.num_experts == 4, "config")
  assert(info.attributes.origin == "test", "attributes")
  assert(info.created:match("^%d%d%d%d%-%d%d%-%d%dT"), "created " .. info.created)
  assert(info.optimizer == nil and info.train == nil, "no optimizer or train state")
  assert(#info.usage == 0 and #info.history == 0, "no usage or history")
end)

test("load and info errors", function()
  local path = fixture.dir .. "/none.h5"
  expect_error("caem.load: ", caem.load, path)
  expect_error(path, caem.load, path)
  expect_error(path, caem.info, path)
  local text = fixture.dir .. "/topics/train.jsonl"
  expect_error(text, caem.load, text)
  expect_error("bad argument #1 to 'caem.load' (string expected, got no value)", caem.load)
end)

test("import hugging face directory", function()
  local dir = fixture.root .. "/tests/fixtures/hf_single"
  local path = fixture.dir .. "/imported.h5"
  local report = caem.import(dir, path)
  assert(report.base:match("^%x+$") and #report.base == 16, "base hash")
  assert(report.files == 1, "one safetensors file")
  assert(report.tensors > 0, "tensors read")
  local m = caem.load(path)
  assert(m:hash() == report.base, "the base is the hash of the imported parameters")
  assert(m.config.d_ff == 48, "config from config.json")
  expect_error("caem.import:", caem.import, fixture.dir .. "/no-model", path)
end)
