"""Time generation in the reference Switch Transformer, for comparison with the C code.

Run from the repository root, in the environment built from tools/requirements.txt:

    tools/venv/bin/python bench/reference_generate.py --repeats 3 --threads 16

The model is the workbench's "small" preset (vocabulary 8000, d_model 256, 4 + 4 layers,
4 heads of 64, d_ff 1024, 8 experts in every other layer, untied LM head) with random
weights, in eval mode, float32 on the CPU. The row of EOS in the LM head is zero, so that
no sequence ends before max_length and every run generates the same number of tokens as
bench/bench_generate.c. The batch is 8 random inputs of 64 tokens ending in EOS. Greedy
search (1 beam) and beam search (3 beams) both use the CAEM paper's options: repetition
penalty 1.2, no repeated 3-grams, length penalty 1.0, early stopping, max_length 64.

Each search runs once untimed, then --repeats times timed, and prints one line, split here
at the backslash:

    reference config=small mode=<greedy|beam3> sequences_per_s=<float> batch_ms=<float> \
        threads=<n> torch=<version> transformers=<version>
"""

import argparse
import os
import time

import torch
import transformers
from transformers import SwitchTransformersConfig, SwitchTransformersForConditionalGeneration

PAD_ID = 0
EOS_ID = 1
FIRST_WORD_ID = 2
SEED = 0

SPEC = {
    "vocab_size": 8000, "d_model": 256, "d_kv": 64, "num_heads": 4, "d_ff": 1024,
    "layers": 4, "sparse_step": 2, "num_experts": 8, "expert_capacity": 64,
}
BATCH_SIZE = 8
INPUT_LENGTH = 64
MAX_LENGTH = 64
SEARCHES = [("greedy", 1), ("beam3", 3)]
PAPER_OPTIONS = {"repetition_penalty": 1.2, "no_repeat_ngram_size": 3, "length_penalty": 1.0,
                 "early_stopping": True}


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {value}, expected an integer >= 1")
    return value


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="timed runs of each search after one untimed run (default: 3)")
    parser.add_argument("--threads", type=positive_int, default=os.cpu_count(),
                        help="torch intra-op threads (default: the CPU count of this machine)")
    return parser.parse_args()


def build_model():
    """Build the model with random weights and a zero EOS row in the LM head."""
    layers = SPEC["layers"]
    config = SwitchTransformersConfig(
        vocab_size=SPEC["vocab_size"],
        d_model=SPEC["d_model"],
        d_kv=SPEC["d_kv"],
        d_ff=SPEC["d_ff"],
        num_heads=SPEC["num_heads"],
        num_layers=layers,
        num_decoder_layers=layers,
        num_sparse_encoder_layers=layers // SPEC["sparse_step"],
        num_sparse_decoder_layers=layers // SPEC["sparse_step"],
        num_experts=SPEC["num_experts"],
        expert_capacity=SPEC["expert_capacity"],
        tie_word_embeddings=False,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        decoder_start_token_id=PAD_ID,
    )
    torch.manual_seed(SEED)
    model = SwitchTransformersForConditionalGeneration(config)
    with torch.no_grad():
        model.lm_head.weight[EOS_ID] = 0.0
    model.eval()
    return model


def make_inputs():
    generator = torch.Generator().manual_seed(SEED + 1)
    input_ids = torch.randint(FIRST_WORD_ID, SPEC["vocab_size"], (BATCH_SIZE, INPUT_LENGTH),
                              generator=generator)
    input_ids[:, -1] = EOS_ID
    return input_ids, torch.ones_like(input_ids)


def generate(model, input_ids, attention_mask, num_beams):
    """Run one search and check that every sequence reached max_length."""
    with torch.no_grad():
        sequences = model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                   num_beams=num_beams, max_length=MAX_LENGTH, do_sample=False,
                                   **PAPER_OPTIONS)
    if sequences.shape[1] != MAX_LENGTH or (sequences[:, 1:] == EOS_ID).any():
        raise RuntimeError(f"a sequence ended before max_length {MAX_LENGTH}, so the runs "
                           "would not do the same work as the C benchmark")


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    model = build_model()
    input_ids, attention_mask = make_inputs()
    for mode, num_beams in SEARCHES:
        generate(model, input_ids, attention_mask, num_beams)
        start = time.perf_counter()
        for _ in range(args.repeats):
            generate(model, input_ids, attention_mask, num_beams)
        elapsed = time.perf_counter() - start
        print(f"reference config=small mode={mode} "
              f"sequences_per_s={BATCH_SIZE * args.repeats / elapsed:.3f} "
              f"batch_ms={1000.0 * elapsed / args.repeats:.1f} threads={torch.get_num_threads()} "
              f"torch={torch.__version__} transformers={transformers.__version__}", flush=True)


if __name__ == "__main__":
    main()
