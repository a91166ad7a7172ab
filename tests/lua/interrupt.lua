-- job:wait and the host's hooks: the progress hook sees the job, and the
-- interrupt hook stops it with the error "interrupted".

if fixture.spm == nil then
  skip("host hooks", "no SentencePiece model (spm_train is missing)")
  return
end

local tok = caem.tokenizer(fixture.spm)
local task = caem.task{ name = "topics", dir = fixture.dir, tokenizer = tok, max_input = 24 }

test("progress hook sees the job", function()
  local m = caem.model{ preset = "tiny", tokenizer = tok }
  local before = host_counters().progress
  m:train{ task = task, steps = 3, batch = 8 }:wait()
  local counters = host_counters()
  assert(counters.progress > before, "the progress hook ran")
  assert(counters.last_step == 3, "the last call saw step " .. counters.last_step)
end)

test("interrupt hook stops the job", function()
  local m = caem.model{ preset = "tiny", tokenizer = tok }
  local job = m:train{ task = task, steps = 100000, batch = 4 }
  host_interrupt_after(5)
  local message = expect_error("interrupted", job.wait, job)
  local calls = host_counters().interrupted
  host_interrupt_after(0)
  assert(message:find("interrupted$"), message)
  assert(calls == 5, "interrupted after 5 calls of the hook, not " .. calls)
  assert(job:status().state == "stopped", "the job is stopped")
  assert(not m.busy, "the model is free")
  assert(m.step == job:result().step, "the steps done are kept")
end)

test("interrupt stops an evaluation", function()
  local m = caem.model{ preset = "tiny", tokenizer = tok }
  local job = m:evaluate{ task = task, split = "train", batch = 1, beams = 1, max_length = 3 }
  host_interrupt_after(2)
  expect_error("interrupted", job.wait, job)
  host_interrupt_after(0)
  assert(job:status().state == "stopped", "stopped")
  assert(job:status().step < job:status().steps, "before its end")
end)
