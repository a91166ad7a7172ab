-- caem.allocate, caem.merge, caem.soup and caem.cka from Lua: allocations
-- by hand, merges from usage tables and from stored usage records, the base
-- check, provenance through a checkpoint, soup values and CKA of a model
-- against itself.

test("allocate by hand", function()
  local n, report = caem.allocate({ 0.1, 0.35, 0.55 }, 8, 8)
  assert(n[1] == 1 and n[2] == 3 and n[3] == 4, "allocation " .. table.concat(n, ","))
  assert(report.alpha == 1 and not report.uniform_fallback, "report")
  n = caem.allocate({ 0.1, 0.35, 0.55 }, 8, 8, { alpha = 0 })
  assert(n[1] == 2 and n[2] == 3 and n[3] == 3, "alpha 0 " .. table.concat(n, ","))
  n = caem.allocate({ 0.1, 0.35, 0.55 }, 16, 8)
  assert(n[1] == 2 and n[2] == 6 and n[3] == 8, "8 to 16 " .. table.concat(n, ","))
  expect_error("no allocation of 2 target experts to 3 tasks", caem.allocate,
               { 0.1, 0.2, 0.3 }, 2, 8)
  expect_error("unknown option 'alfa' for caem.allocate", caem.allocate, { 1 }, 1, 1,
               { alfa = 1 })
  expect_error("entropy 2 is not a number", caem.allocate, { 0.1, "x" }, 2, 2)
end)

-- A usage table of `layers` MoE layers of `experts` experts whose kept
-- counts favor expert `favorite`.
local function usage_table(layers, experts, favorite)
  local u = {}
  for l = 1, layers do
    local kept = {}
    for e = 1, experts do
      kept[e] = e == favorite and 50 or (e + l) % 3 + 1
    end
    u[l] = { kept = kept }
  end
  return u
end

local function moe_layers(m)
  local c = m.config
  local function count(layers, step)
    if step == 0 then return 0 end
    local n = 0
    for i = 0, layers - 1 do
      if i % step == step - 1 then n = n + 1 end
    end
    return n
  end
  return count(c.encoder_layers, c.encoder_sparse_step)
         + count(c.decoder_layers, c.decoder_sparse_step)
end

test("merge from usage tables", function()
  local sources = {}
  for i = 1, 3 do
    sources[i] = caem.model{ preset = "tiny", seed = i }
  end
  local layers, experts = moe_layers(sources[1]), sources[1].config.num_experts
  local usage = {}
  for i = 1, 3 do
    usage[i] = usage_table(layers, experts, i)
  end
  local merged = caem.merge{ sources = sources, experts = 6, usage = usage,
                             allow_different_bases = true }
  assert(merged.config.num_experts == 6, "experts")
  local path = os.tmpname()
  os.remove(path)
  merged:save(path)
  local info = caem.info(path)
  os.remove(path)
  assert(info.merge ~= nil, "caem.info shows no merge")
  assert(info.merge.sources == 3 and info.merge.experts == 6, "merge summary")
  assert(merged.merge.layers[1].slots[1].source == 1, "slot 1 comes from source 1")
  assert(merged.merge.layers[1].slots[1].expert == 0, "slot 1 is expert 0")
  local sum = 0
  for _, n in ipairs(merged.merge.layers[1].allocation) do sum = sum + n end
  assert(sum == 6, "allocation sums to 6")
  -- expert 1 of source 1 (most used) fills the first slot of every layer
  local wi = merged:param("encoder/block_01/moe/expert_00/wi")
  local src = sources[1]:param("encoder/block_01/moe/expert_00/wi")
  for k = 1, #src do
    assert(wi[k] == src[k], "slot 0 is not source 1's expert 0")
  end
end)

test("merge checks bases and options", function()
  local a = caem.model{ preset = "tiny", seed = 1 }
  local b = caem.model{ preset = "tiny", seed = 2 }
  local layers = moe_layers(a)
  local u = { usage_table(layers, 4, 1), usage_table(layers, 4, 2) }
  expect_error("do not record the same base model", caem.merge,
               { sources = { a, b }, experts = 4, usage = u })
  expect_error("option 'experts'", caem.merge, { sources = { a, b }, usage = u })
  expect_error("unknown option 'expert'", caem.merge, { sources = { a, b }, expert = 4 })
  expect_error("has no usage record of", caem.merge,
               { sources = { a, b }, experts = 4, allow_different_bases = true })
  expect_error("usage 2 must be a usage table of " .. layers .. " MoE layers", caem.merge,
               { sources = { a, b }, experts = 4, allow_different_bases = true,
                 usage = { u[1], { { kept = { 1 } } } } })
  local short = usage_table(layers, 4, 1)
  short[1] = { kept = { 1 } }
  expect_error("usage 2, layer 1: 'kept' must list 4 counts", caem.merge,
               { sources = { a, b }, experts = 4, allow_different_bases = true,
                 usage = { u[1], short } })
  expect_error("sums to 5, not to the 4", caem.merge,
               { sources = { a, b }, experts = 4, usage = u, allocation = { 2, 3 },
                 allow_different_bases = true })
  local m = caem.merge{ sources = { a, b }, experts = 4, usage = u, allocation = { 1, 3 },
                        allow_different_bases = true }
  assert(m.config.num_experts == 4)
end)

test("soup is the weighted mean", function()
  local a = caem.model{ preset = "tiny", seed = 3 }
  local b = caem.model{ preset = "tiny", seed = 4 }
  local s = caem.soup(a, b, 0.25)
  local x, y, z = a:param("shared/embedding"), b:param("shared/embedding"),
                  s:param("shared/embedding")
  for k = 1, 50 do
    local want = 0.25 * x[k] + 0.75 * y[k]
    assert(math.abs(z[k] - want) <= 1e-6 * math.max(1, math.abs(want)), "value " .. k)
  end
  expect_error("invalid soup weight 2", caem.soup, a, b, 2)
  expect_error("same shape", caem.soup, a, caem.model{ preset = "tiny", num_experts = 8 })
end)

if fixture.spm == nil then
  skip("cka", "no SentencePiece model (spm_train is missing)")
  return
end

test("cka of a model with itself is one", function()
  local tok = caem.tokenizer(fixture.spm)
  local task = caem.task{ name = "topics", dir = fixture.dir, tokenizer = tok,
                          max_input = 24, max_target = 4 }
  local a = caem.model{ preset = "tiny", tokenizer = tok, seed = 5 }
  local b = caem.model{ preset = "tiny", tokenizer = tok, seed = 6 }
  local same = caem.cka(a, a, task, { limit = 16 })
  assert(#same.encoder == a.config.encoder_layers, "one value per encoder block")
  for _, stack in ipairs({ "encoder", "decoder" }) do
    for k, v in ipairs(same[stack]) do
      assert(math.abs(v - 1) < 1e-9, stack .. " block " .. k .. ": " .. v)
    end
  end
  local other = caem.cka(a, b, task, { limit = 16, split = "train" })
  assert(other.decoder[1] > 0 and other.decoder[1] < 1, "different models")
  expect_error("unknown option 'limt' for caem.cka", caem.cka, a, b, task, { limt = 3 })
end)

test("span corruption task for pretraining", function()
  local tok = caem.tokenizer(fixture.spm)
  local task = caem.task{ name = "topics", dir = fixture.dir, tokenizer = tok,
                          max_input = 24, max_target = 4 }
  local pt = caem.span_corruption{ task = task, chunk = 16, seed = 3 }
  assert(pt:size("train") > 10, "train chunks " .. pt:size("train"))
  assert(pt:size("validation") > 0, "validation chunks")
  assert(pt.max_input == 17 and pt.max_target == 17, "lengths chunk + 1")
  local again = caem.span_corruption{ task = task, chunk = 16, seed = 3 }
  assert(again:size("train") == pt:size("train"), "the same seed, the same chunks")
  local m = caem.model{ preset = "tiny", tokenizer = tok }
  local _, state = m:train{ task = pt, steps = 3, batch = 4, validate_every = 3 }:wait()
  assert(state == "finished" and m.step == 3, "pretraining steps")
  expect_error("token ids without texts", function()
    return m:evaluate{ task = pt, limit = 4 }:wait()
  end)
  expect_error("gives no chunk of 4000 ids", caem.span_corruption,
               { task = task, chunk = 4000 })
  expect_error("unknown option 'chunks'", caem.span_corruption, { task = task, chunks = 3 })
end)
