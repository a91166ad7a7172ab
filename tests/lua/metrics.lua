-- Metrics and results files: caem.rouge, caem.squad, caem.normalize_answer,
-- caem.overall_performance, caem.results.

local function near(a, b, what)
  assert(math.abs(a - b) < 1e-12, string.format("%s: %.17g, expected %.17g", what, a, b))
end

test("rouge of a known pair", function()
  local s = caem.rouge("the cat sat on the mat", "the cat is on the mat")
  near(s.rouge1.precision, 5 / 6, "rouge1 precision")
  near(s.rouge1.recall, 5 / 6, "rouge1 recall")
  near(s.rouge1.fmeasure, 5 / 6, "rouge1 F")
  near(s.rouge2.fmeasure, 3 / 5, "rouge2 F")
  near(s.rougeL.fmeasure, 5 / 6, "rougeL F")
  local empty = caem.rouge("", "words")
  near(empty.rougeL.fmeasure, 0, "rougeL of an empty target")
end)

test("squad best gold", function()
  local s = caem.squad("The Cat!", "cat")
  near(s.exact_match, 1, "exact match after normalization")
  near(s.f1, 1, "f1")
  s = caem.squad("a big cat", { "big dog", "small cat" })
  near(s.exact_match, 0, "exact match")
  near(s.f1, 0.5, "f1, the best over golds")
  expect_error("caem.squad: expected at least one gold answer", caem.squad, "x", {})
  expect_error("gold answer 2 is number, expected a string", caem.squad, "x", { "y", 3 })
  expect_error("string expected, got no value", caem.squad, "x")
end)

test("normalize_answer as squad", function()
  assert(caem.normalize_answer("The  Quick, brown fox!") == "quick brown fox")
  assert(caem.normalize_answer("An apple a day") == "apple day")
  expect_error("bad argument #1 to 'caem.normalize_answer'", caem.normalize_answer, {})
end)

test("overall_performance ratio mean", function()
  near(caem.overall_performance({ 90, 40 }, { 100, 50 }), 0.85, "overall")
  expect_error("2 multi-task scores but 1 single-task scores", caem.overall_performance,
               { 1, 2 }, { 1 })
  expect_error("caem.overall_performance:", caem.overall_performance, { 1 }, { 0 })
  expect_error("score 1 of argument 2 is string", caem.overall_performance, { 1 }, { "a" })
  expect_error("caem.overall_performance:", caem.overall_performance, {}, {})
end)

test("rouge argument errors", function()
  expect_error("bad argument #2 to 'caem.rouge'", caem.rouge, "a")
  expect_error("bad argument #1 to 'caem.rouge'", caem.rouge, {}, "b")
end)

test("results of missing file", function()
  local prefix = fixture.dir .. "/no-such-results"
  expect_error(prefix .. ".jsonl", caem.results, prefix)
end)

test("results read rows", function()
  local prefix = fixture.dir .. "/handmade"
  local f = assert(io.open(prefix .. ".jsonl", "w"))
  f:write('{"model": "m", "task": "t", "split": "validation", "metric": "f1", '
          .. '"value": 71.5, "step": 12, "time": 1700000000.5}\n')
  f:close()
  local rows = caem.results(prefix)
  assert(#rows == 1, #rows .. " rows")
  local r = rows[1]
  assert(r.model == "m" and r.task == "t" and r.split == "validation", "names")
  assert(r.metric == "f1" and r.value == 71.5, "metric and value")
  assert(r.step == 12 and math.type(r.step) == "integer", "step")
  assert(r.time == 1700000000.5, "time")
  f = assert(io.open(prefix .. ".jsonl", "a"))
  f:write("not json\n")
  f:close()
  expect_error(prefix .. ".jsonl", caem.results, prefix)
end)
