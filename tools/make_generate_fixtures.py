"""Write the generation fixtures that tests/test_generate.c compares against the reference.

Run from the repository root, in the environment built from tools/requirements.txt, after
tools/make_fixtures.py has written the parity fixtures:

    tools/venv/bin/python tools/make_generate_fixtures.py

For each parity fixture tests/fixtures/parity_<name>.safetensors, the script loads its
parameters and configuration into SwitchTransformersForConditionalGeneration of Hugging
Face transformers in float32 on the CPU, scales the EOS row of the LM head (see
EOS_SCALES), and runs model.generate(do_sample=False) on a padded batch of inputs of
different lengths, once per entry of CASES. It writes
tests/fixtures/generate_<name>.safetensors, which contains:

    param.<name>                the tensor whose EOS row was scaled (lm_head.weight, or
                                shared.weight when the embeddings are tied); every other
                                parameter is the parity fixture's
    input.input_ids             [B,Te] I64, each real input ending in EOS, then padding
    input.attention_mask        [B,Te] I64
    <case>.sequences            [B,L] I64, generate's output: the decoder start token, the
                                generated tokens, then padding
    <case>.sequence_scores      [B] F32, beam search only: the score of the returned
                                hypothesis, its summed log-probabilities after the logits
                                processors divided by (generated tokens)^length_penalty
    <case>.log_likelihood       [B] F32, greedy only: the sum over the generated tokens
                                (with EOS, without the padding after it) of
                                log_softmax(raw logits), computed in float64

The metadata contains "cases" (a JSON list of each case's name and generate options), the
EOS scale, the library versions and a description. The script checks that every fixture
has rows that end by EOS before max_length and rows that reach max_length, and that the
cases together contain each of BEAM_EVENTS, so that the tests exercise them.
"""

import contextlib
import functools
import json
import os
from collections import Counter

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import SwitchTransformersConfig, SwitchTransformersForConditionalGeneration
from transformers.generation import beam_search

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_DIR = os.path.join(REPO_ROOT, "tests", "fixtures")
MAX_FIXTURE_BYTES = 256 * 1024

PAD_ID = 0
EOS_ID = 1
FIRST_WORD_ID = 2

# Per parity fixture: the factor applied to the EOS row of the LM head, the real lengths
# of the input rows (the longest is the batch's Te), the max_length of the greedy cases
# and of the beam cases, and the seed of the input ids. A random tiny model rarely ranks
# EOS first. The factor widens the spread of the EOS logit, so that EOS wins at some
# positions and not at others.
FIXTURES = {
    "step2_e4_tied": {"eos_scale": 2.5, "lengths": [12, 7, 10, 3], "greedy_max_length": 40,
                      "beam_max_length": 200, "seed": 101},
    "step3_e8_untied": {"eos_scale": 1.1, "lengths": [9, 11, 4], "greedy_max_length": 30,
                        "beam_max_length": 24, "seed": 202},
    "capacity_drop": {"eos_scale": 3.0, "lengths": [14, 6, 11, 9], "greedy_max_length": 30,
                      "beam_max_length": 20, "seed": 303},
    "step1_all_moe": {"eos_scale": 3.0, "lengths": [8, 5, 8], "greedy_max_length": 25,
                      "beam_max_length": 16, "seed": 404},
}

# The options of each case, as generate takes them. "beam" is the CAEM paper's setting.
CASES = [
    ("greedy_penalized", {"num_beams": 1, "repetition_penalty": 1.2, "no_repeat_ngram_size": 3}),
    ("greedy", {"num_beams": 1, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0}),
    ("beam", {"num_beams": 3, "repetition_penalty": 1.2, "no_repeat_ngram_size": 3,
              "length_penalty": 1.0, "early_stopping": True}),
    ("beam_heuristic", {"num_beams": 4, "repetition_penalty": 1.3, "no_repeat_ngram_size": 2,
                        "length_penalty": 0.5, "early_stopping": False}),
]


# Beam search events that some case must contain, so that the tests cover the rules of
# BeamSearchScorer and BeamHypotheses that they rarely meet.
BEAM_EVENTS = {
    "eos_skipped": "an EOS candidate ranked below the first num_beams was skipped",
    "hypothesis_replaced": "a finished hypothesis replaced the worst of a full list",
    "hypothesis_rejected": "a finished hypothesis was rejected by a full list",
    "heuristic_done": "early_stopping=False ended a row before max_length",
    "row_done_early": "a row was done while another row went on",
}


@contextlib.contextmanager
def count_beam_events(events):
    """Count BEAM_EVENTS into the Counter `events` while the block runs.

    Wraps BeamSearchScorer.process, BeamHypotheses.add and BeamHypotheses.is_done of
    transformers 4.46.3 and restores them afterwards. The wrappers only observe.
    """
    scorer, hypotheses = beam_search.BeamSearchScorer, beam_search.BeamHypotheses
    process, add, is_done = scorer.process, hypotheses.add, hypotheses.is_done

    @functools.wraps(process)
    def counting_process(self, input_ids, next_scores, next_tokens, *args, **kwargs):
        for row in range(next_tokens.shape[0]):
            if self._done[row]:
                continue
            kept = 0
            for rank, token in enumerate(next_tokens[row].tolist()):
                if token == EOS_ID:
                    events["eos_skipped"] += rank >= self.group_size
                    continue
                kept += 1
                if kept == self.group_size:
                    break
        result = process(self, input_ids, next_scores, next_tokens, *args, **kwargs)
        events["row_done_early"] += bool(self._done.any() and not self._done.all())
        return result

    @functools.wraps(add)
    def counting_add(self, hyp, sum_logprobs, *args, **kwargs):
        full, worst = len(self) == self.num_beams, self.worst_score
        add(self, hyp, sum_logprobs, *args, **kwargs)
        if full:
            replaced = self.worst_score != worst or any(beam[1] is hyp for beam in self.beams)
            events["hypothesis_replaced" if replaced else "hypothesis_rejected"] += 1

    @functools.wraps(is_done)
    def counting_is_done(self, *args, **kwargs):
        done = is_done(self, *args, **kwargs)
        events["heuristic_done"] += bool(done and self.early_stopping is False)
        return done

    scorer.process, hypotheses.add, hypotheses.is_done = (counting_process, counting_add,
                                                          counting_is_done)
    try:
        yield events
    finally:
        scorer.process, hypotheses.add, hypotheses.is_done = process, add, is_done


def parity_config(name, meta):
    """Return the reference config for the workbench config `meta` of a parity fixture."""
    enc_step, dec_step = meta["encoder_sparse_step"], meta["decoder_sparse_step"]
    config = SwitchTransformersConfig(
        vocab_size=meta["vocab_size"],
        d_model=meta["d_model"],
        d_kv=meta["d_kv"],
        d_ff=meta["d_ff"],
        num_heads=meta["num_heads"],
        num_layers=meta["encoder_layers"],
        num_decoder_layers=meta["decoder_layers"],
        num_sparse_encoder_layers=meta["encoder_layers"] // enc_step,
        num_sparse_decoder_layers=meta["decoder_layers"] // dec_step,
        num_experts=meta["num_experts"],
        expert_capacity=meta["expert_capacity"],
        router_jitter_noise=meta["router_jitter_noise"],
        dropout_rate=meta["dropout_rate"],
        layer_norm_epsilon=meta["layer_norm_epsilon"],
        relative_attention_num_buckets=meta["relative_attention_num_buckets"],
        relative_attention_max_distance=meta["relative_attention_max_distance"],
        tie_word_embeddings=bool(meta["tie_word_embeddings"]),
        pad_token_id=meta["pad_token_id"],
        eos_token_id=meta["eos_token_id"],
        decoder_start_token_id=meta["decoder_start_token_id"],
    )
    if (config.encoder_sparse_step, config.decoder_sparse_step) != (enc_step, dec_step):
        raise ValueError(f"{name}: the config derived sparse steps "
                         f"{(config.encoder_sparse_step, config.decoder_sparse_step)}, expected "
                         f"{(enc_step, dec_step)}")
    return config


def load_parity(name):
    """Return the reference model with a parity fixture's parameters, and its config."""
    path = os.path.join(FIXTURE_DIR, f"parity_{name}.safetensors")
    with safe_open(path, framework="pt") as handle:
        config = parity_config(name, json.loads(handle.metadata()["config"]))
    tensors = load_file(path)
    model = SwitchTransformersForConditionalGeneration(config)

    state = {key[len("param."):]: value for key, value in tensors.items()
             if key.startswith("param.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # named_parameters() lists a shared tensor once: the stacks' embeddings are the
    # shared embedding, and so is a tied LM head
    aliases = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
    if config.tie_word_embeddings:
        aliases.add("lm_head.weight")
    missing = [key for key in missing if key not in aliases]
    if missing or unexpected:
        raise ValueError(f"{name}: parameters missing {missing}, unexpected {unexpected}")

    model.eval()
    check_parity_logits(name, model, tensors)
    return model, config


def check_parity_logits(name, model, tensors):
    """Check that the loaded model reproduces the logits stored in the parity fixture."""
    batch = {key: tensors[f"input.{key}"]
             for key in ("input_ids", "attention_mask", "decoder_input_ids")}
    with torch.no_grad():
        logits = model(**batch, use_cache=False, return_dict=True).logits
    if not torch.equal(logits, tensors["output.logits"]):
        raise RuntimeError(f"{name}: the loaded model's logits differ from the parity fixture's")


def scale_eos_row(model, config, scale):
    """Multiply the EOS row of the LM head in place. Returns the changed tensor's name."""
    name = "shared.weight" if config.tie_word_embeddings else "lm_head.weight"
    with torch.no_grad():
        weight = model.get_parameter(name)
        weight[EOS_ID] *= scale
    return name


def make_inputs(spec, vocab_size):
    """Build random ids with EOS at each real end and padding after it."""
    lengths = spec["lengths"]
    te = max(lengths)
    generator = torch.Generator().manual_seed(spec["seed"])
    input_ids = torch.randint(FIRST_WORD_ID, vocab_size, (len(lengths), te), generator=generator)
    attention_mask = torch.ones((len(lengths), te), dtype=torch.int64)
    for row, length in enumerate(lengths):
        input_ids[row, length - 1] = EOS_ID
        input_ids[row, length:] = PAD_ID
        attention_mask[row, length:] = 0
    return input_ids, attention_mask


def generated_part(row):
    """Return the generated tokens of one output row: after the start token, up to and
    including the first EOS, and check that only padding follows it."""
    tokens = row[1:].tolist()
    if EOS_ID in tokens:
        end = tokens.index(EOS_ID) + 1
        if any(t != PAD_ID for t in tokens[end:]):
            raise RuntimeError(f"output row {row.tolist()} has tokens other than padding "
                               "after its EOS")
        return tokens[:end]
    return tokens


def greedy_log_likelihood(sequences, logits):
    """Sum log_softmax(raw logits) of each row's generated tokens, in float64."""
    sums = []
    for row in range(sequences.shape[0]):
        tokens = generated_part(sequences[row])
        total = 0.0
        for step, token in enumerate(tokens):
            log_probs = torch.log_softmax(logits[step][row].double(), dim=-1)
            total += float(log_probs[token])
        sums.append(total)
    return torch.tensor(sums, dtype=torch.float32)


def run_case(model, input_ids, attention_mask, options, max_length):
    """Run generate for one case. Returns (sequences, scores tensor, score name)."""
    beam = options["num_beams"] > 1
    out = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_length=max_length,
        do_sample=False,
        return_dict_in_generate=True,
        output_scores=beam,
        output_logits=not beam,
        **options,
    )
    if beam:
        return out.sequences, out.sequences_scores.float(), "sequence_scores"
    return out.sequences, greedy_log_likelihood(out.sequences, out.logits), "log_likelihood"


def describe_rows(sequences, max_length):
    """Count the rows that end by EOS and those that reach max_length without it."""
    ended = reached = 0
    for row in range(sequences.shape[0]):
        tokens = generated_part(sequences[row])
        if tokens and tokens[-1] == EOS_ID:
            ended += 1
        elif len(tokens) == max_length - 1:
            reached += 1
        else:
            raise RuntimeError(f"row {row} has {len(tokens)} tokens without EOS, expected "
                               f"max_length - 1 = {max_length - 1}")
    return ended, reached


def write_fixture(path, tensors, metadata):
    """Write one fixture, then read it back and compare it. Returns its size in bytes."""
    save_file(tensors, path, metadata=metadata)
    size = os.path.getsize(path)
    if size >= MAX_FIXTURE_BYTES:
        raise RuntimeError(f"{path} is {size} bytes, expected under {MAX_FIXTURE_BYTES}")
    loaded = load_file(path)
    for key, tensor in tensors.items():
        if loaded[key].dtype != tensor.dtype or not torch.equal(loaded[key], tensor):
            raise RuntimeError(f"{path}: tensor {key} differs after reading back")
    return size


def make_fixture(name, spec, events):
    model, config = load_parity(name)
    changed = scale_eos_row(model, config, spec["eos_scale"])
    input_ids, attention_mask = make_inputs(spec, config.vocab_size)
    tensors = {
        f"param.{changed}": model.get_parameter(changed).detach().clone(),
        "input.input_ids": input_ids,
        "input.attention_mask": attention_mask,
    }
    cases = []
    summary = []
    ended_total = reached_total = 0
    for case_name, options in CASES:
        beam = options["num_beams"] > 1
        max_length = spec["beam_max_length"] if beam else spec["greedy_max_length"]
        with count_beam_events(events):
            sequences, scores, score_name = run_case(model, input_ids, attention_mask,
                                                     options, max_length)
        ended, reached = describe_rows(sequences, max_length)
        ended_total += ended
        reached_total += reached
        tensors[f"{case_name}.sequences"] = sequences.clone()
        tensors[f"{case_name}.{score_name}"] = scores.clone()
        cases.append({"name": case_name, "max_length": max_length, **options})
        summary.append(f"{case_name} {ended} EOS/{reached} max")
    if ended_total == 0 or reached_total == 0:
        raise RuntimeError(f"{name}: {ended_total} rows ended by EOS and {reached_total} "
                           "reached max_length over all cases, expected some of each. "
                           "Change eos_scale or the seed.")

    metadata = {
        "cases": json.dumps(cases),
        "eos_scale": json.dumps(spec["eos_scale"]),
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "description": f"generate() of the parity fixture {name} with its EOS row of the LM "
                       f"head scaled by {spec['eos_scale']}",
    }
    path = os.path.join(FIXTURE_DIR, f"generate_{name}.safetensors")
    size = write_fixture(path, tensors, metadata)
    print(f"wrote {os.path.relpath(path, REPO_ROOT)}: {size} bytes; " + ", ".join(summary))


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    events = Counter()
    for name, spec in FIXTURES.items():
        make_fixture(name, spec, events)
    missing = [text for key, text in BEAM_EVENTS.items() if events[key] == 0]
    if missing:
        raise RuntimeError("no case exercises: " + "; ".join(missing) +
                           ". Change the cases, eos_scale or the seeds.")
    print("beam search events over all cases: " +
          ", ".join(f"{key} {events[key]}" for key in BEAM_EVENTS))


if __name__ == "__main__":
    main()
