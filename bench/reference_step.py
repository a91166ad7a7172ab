"""Time one training step of the reference Switch Transformer, for comparison with the C code.

Run from the repository root, in the environment built from tools/requirements.txt:

    tools/venv/bin/python bench/reference_step.py --config small --steps 5 --threads 16

One step is a forward pass with labels, the backward pass, an AdamW step and zero_grad,
in train mode (dropout 0.1, router jitter 0.01), in float32 on the CPU. The script runs
two untimed warm-up steps, then the timed ones, and prints one line, split here at the
backslash:

    reference config=<name> tokens_per_s=<float> step_ms=<float> threads=<n> \
        torch=<version> transformers=<version>

tokens_per_s counts the encoder and decoder tokens of one batch per second, and step_ms
is the mean time of one timed step.
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
WARMUP_STEPS = 2
SEED = 0

# Model sizes in the workbench's field names, with the batch shape of one step.
# "tiny" is the step2_e4_tied parity fixture of tools/make_fixtures.py.
CONFIGS = {
    "tiny": {
        "vocab_size": 96, "d_model": 32, "d_kv": 8, "num_heads": 4, "d_ff": 64,
        "encoder_layers": 4, "decoder_layers": 4, "sparse_step": 2,
        "num_experts": 4, "expert_capacity": 64, "tie_word_embeddings": True,
        "batch_size": 3, "encoder_length": 13, "decoder_length": 9,
    },
    "small": {
        "vocab_size": 8000, "d_model": 256, "d_kv": 64, "num_heads": 4, "d_ff": 1024,
        "encoder_layers": 4, "decoder_layers": 4, "sparse_step": 2,
        "num_experts": 8, "expert_capacity": 64, "tie_word_embeddings": True,
        "batch_size": 24, "encoder_length": 256, "decoder_length": 64,
    },
}

# The multi-task fine-tuning settings of the workbench. The values do not change the
# cost of a step.
ADAMW = {"lr": 3e-4, "betas": (0.9, 0.98), "eps": 1e-6, "weight_decay": 0.005}


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {value}, expected an integer >= 1")
    return value


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="tiny",
                        help="model size and batch shape (default: tiny)")
    parser.add_argument("--steps", type=positive_int, default=5,
                        help=f"timed training steps after {WARMUP_STEPS} warm-up steps "
                        "(default: 5)")
    parser.add_argument("--threads", type=positive_int, default=os.cpu_count(),
                        help="torch intra-op threads (default: the CPU count of this machine)")
    return parser.parse_args()


def build_model(spec):
    """Build the reference model with random initialization, dropout 0.1 and jitter 0.01."""
    layers = (spec["encoder_layers"], spec["decoder_layers"])
    config = SwitchTransformersConfig(
        vocab_size=spec["vocab_size"],
        d_model=spec["d_model"],
        d_kv=spec["d_kv"],
        d_ff=spec["d_ff"],
        num_heads=spec["num_heads"],
        num_layers=layers[0],
        num_decoder_layers=layers[1],
        # The config derives each sparse step as layers // num_sparse_layers.
        num_sparse_encoder_layers=layers[0] // spec["sparse_step"],
        num_sparse_decoder_layers=layers[1] // spec["sparse_step"],
        num_experts=spec["num_experts"],
        expert_capacity=spec["expert_capacity"],
        router_jitter_noise=0.01,
        dropout_rate=0.1,
        tie_word_embeddings=spec["tie_word_embeddings"],
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        # SwitchTransformersConfig leaves this unset, and _shift_right raises without it.
        decoder_start_token_id=PAD_ID,
    )
    torch.manual_seed(SEED)
    return SwitchTransformersForConditionalGeneration(config)


def make_batch(spec):
    """Build full-length random sequences that end in EOS. The model shifts the labels."""
    generator = torch.Generator().manual_seed(SEED + 1)
    shape_encoder = (spec["batch_size"], spec["encoder_length"])
    shape_decoder = (spec["batch_size"], spec["decoder_length"])
    input_ids = torch.randint(FIRST_WORD_ID, spec["vocab_size"], shape_encoder, generator=generator)
    labels = torch.randint(FIRST_WORD_ID, spec["vocab_size"], shape_decoder, generator=generator)
    input_ids[:, -1] = EOS_ID
    labels[:, -1] = EOS_ID
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones(shape_encoder, dtype=torch.int64),
        "labels": labels,
    }


def train_step(model, optimizer, batch):
    loss = model(**batch, use_cache=False, output_router_logits=True, return_dict=True).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    spec = CONFIGS[args.config]

    model = build_model(spec)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), **ADAMW)
    batch = make_batch(spec)
    tokens = spec["batch_size"] * (spec["encoder_length"] + spec["decoder_length"])

    for _ in range(WARMUP_STEPS):
        train_step(model, optimizer, batch)

    start = time.perf_counter()
    for _ in range(args.steps):
        train_step(model, optimizer, batch)
    elapsed = time.perf_counter() - start

    step_ms = 1000.0 * elapsed / args.steps
    tokens_per_s = tokens * args.steps / elapsed
    print(f"reference config={args.config} tokens_per_s={tokens_per_s:.1f} "
          f"step_ms={step_ms:.3f} threads={torch.get_num_threads()} "
          f"torch={torch.__version__} transformers={transformers.__version__}")


if __name__ == "__main__":
    main()
