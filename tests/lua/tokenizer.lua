-- caem.tokenizer: encode, decode, pieces, special ids, errors.

local function needs_tokenizer(name, f)
  if fixture.spm == nil then
    skip(name, "no SentencePiece model (spm_train is missing)")
  else
    test(name, f)
  end
end

needs_tokenizer("round trip", function()
  local tok = caem.tokenizer(fixture.spm)
  local ids = tok:encode("the team scored a goal")
  assert(#ids > 0, "no ids")
  for i, id in ipairs(ids) do
    assert(math.type(id) == "integer" and id >= 0 and id < tok.vocab_size,
           "id " .. i .. " is " .. tostring(id))
  end
  assert(tok:decode(ids) == "the team scored a goal", "decoded " .. tok:decode(ids))
  assert(#tok:encode("") == 0, "empty text gives no ids")
end)

needs_tokenizer("fields and pieces", function()
  local tok = caem.tokenizer(fixture.spm)
  assert(tok.vocab_size == tok.pieces + 100, "vocabulary = pieces + 100 sentinels")
  assert(tok.eos_id == 1 and tok.pad_id == 0 and tok.unk_id == 2, "T5 layout of special ids")
  assert(tok.path == fixture.spm, "path " .. tostring(tok.path))
  assert(tok:piece(tok.vocab_size - 1) == "<extra_id_0>", tok:piece(tok.vocab_size - 1))
  assert(tok:piece(1) == "</s>", "piece 1 is " .. tok:piece(1))
  assert(tostring(tok) == "caem.tokenizer(" .. fixture.spm .. ", " .. tok.vocab_size .. " ids)",
         tostring(tok))
end)

needs_tokenizer("sentinels encode as one id", function()
  local tok = caem.tokenizer(fixture.spm)
  local ids = tok:encode("<extra_id_0>")
  assert(#ids == 1 and ids[1] == tok.vocab_size - 1, "sentinel 0 is the last id")
end)

needs_tokenizer("tokenizer errors", function()
  local tok = caem.tokenizer(fixture.spm)
  expect_error(fixture.dir .. "/none.model", caem.tokenizer, fixture.dir .. "/none.model")
  expect_error("tokenizer:decode: id 2 is -5, expected an integer in [0, " .. tok.vocab_size,
               tok.decode, tok, { 3, -5 })
  expect_error("tokenizer:decode: id 1 is x", tok.decode, tok, { "x" })
  expect_error("tokenizer:piece: id 100000 is outside [0, " .. tok.vocab_size .. ")",
               tok.piece, tok, 100000)
  expect_error("string expected, got table", tok.encode, tok, {})
  expect_error("caem.tokenizer has no field or method 'vocab'", function() return tok.vocab end)
  expect_error("bad argument #1 to 'caem.tokenizer' (string expected", caem.tokenizer, nil)
end)

test("tokenizer of a wrong file", function()
  local path = fixture.dir .. "/topics/train.jsonl"
  expect_error(path, caem.tokenizer, path)
end)
