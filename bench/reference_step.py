"""Time one training step of the reference Switch Transformer, for comparison with the C code.

Run from the repository root, in the environment built from tools/requirements.txt:

    tools/venv/bin/python bench/reference_step.py --config small --steps 5 --threads 16
    tools/venv/bin/python bench/reference_step.py --config small --device cuda --precision tf32

One step is a forward pass with labels, the backward pass, an AdamW step and zero_grad,
in train mode (dropout 0.1, router jitter 0.01). On the CPU everything is float32. On
the GPU (--device cuda) the parameters and the batch live on the GPU, in float32, and
--precision sets the matrix multiplications: fp32 with TF32 off, tf32 with
torch.backends.cuda.matmul.allow_tf32 on, or bf16 through torch.autocast around the
forward pass. The script runs two untimed warm-up steps, then the timed ones, and
prints one line, split here at the backslash:

    reference config=<name> tokens_per_s=<float> step_ms=<float> threads=<n> \
        device=<cpu|cuda> precision=<fp32|tf32|bf16> torch=<version> \
        transformers=<version> [gpu=<name>]

tokens_per_s counts the encoder and decoder tokens of one batch per second, and step_ms
is the mean time of one timed step. On the GPU the timed region starts and ends with
torch.cuda.synchronize(). When torch, transformers or its Switch Transformers model
cannot be imported, or no GPU is available for --device cuda, the script prints the
reason on one line and exits with status 1.
"""

import argparse
import contextlib
import os
import sys
import time

try:
    import torch
    import transformers
except ImportError as error:
    sys.exit(f"reference_step.py: cannot import torch and transformers: {error}")
try:
    from transformers import (SwitchTransformersConfig,
                              SwitchTransformersForConditionalGeneration)
except ImportError as error:
    sys.exit(f"reference_step.py: transformers {transformers.__version__} has no Switch "
             f"Transformers model ({error}); install transformers 4.46.3 from "
             "tools/requirements.txt")

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
    # The dimensions of google/switch-base-8, with an untied LM head as the workbench's
    # preset of the same name has.
    "switch-base-8": {
        "vocab_size": 32128, "d_model": 768, "d_kv": 64, "num_heads": 12, "d_ff": 3072,
        "encoder_layers": 12, "decoder_layers": 12, "sparse_step": 2,
        "num_experts": 8, "expert_capacity": 64, "tie_word_embeddings": False,
        "batch_size": 24, "encoder_length": 512, "decoder_length": 64,
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
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the model and the batch live (default: cpu)")
    parser.add_argument("--precision", choices=("fp32", "tf32", "bf16"),
                        help="matrix multiplication precision on the GPU (default: fp32)")
    args = parser.parse_args()
    if args.device == "cpu" and args.precision not in (None, "fp32"):
        parser.error("--precision tf32 and bf16 apply to --device cuda only")
    if args.precision is None:
        args.precision = "fp32"
    return args


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


def make_batch(spec, device):
    """Build full-length random sequences that end in EOS. The model shifts the labels."""
    generator = torch.Generator().manual_seed(SEED + 1)
    shape_encoder = (spec["batch_size"], spec["encoder_length"])
    shape_decoder = (spec["batch_size"], spec["decoder_length"])
    input_ids = torch.randint(FIRST_WORD_ID, spec["vocab_size"], shape_encoder, generator=generator)
    labels = torch.randint(FIRST_WORD_ID, spec["vocab_size"], shape_decoder, generator=generator)
    input_ids[:, -1] = EOS_ID
    labels[:, -1] = EOS_ID
    batch = {
        "input_ids": input_ids,
        "attention_mask": torch.ones(shape_encoder, dtype=torch.int64),
        "labels": labels,
    }
    return {name: tensor.to(device) for name, tensor in batch.items()}


def forward_context(device, precision):
    """Return the context that the forward pass runs in: bf16 autocast or nothing."""
    if device == "cuda" and precision == "bf16":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(model, optimizer, batch, device, precision):
    with forward_context(device, precision):
        loss = model(**batch, use_cache=False, output_router_logits=True,
                     return_dict=True).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    spec = CONFIGS[args.config]
    gpu = ""
    if args.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit(f"reference_step.py: --device cuda: torch {torch.__version__} finds no "
                     "CUDA device")
        torch.backends.cuda.matmul.allow_tf32 = args.precision == "tf32"
        gpu = f" gpu={torch.cuda.get_device_name()}"

    # Building the model on the GPU runs the random initialization of its parameters
    # (644 million for switch-base-8) there instead of on the CPU.
    with torch.device(args.device):
        model = build_model(spec)
    model.to(dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), **ADAMW)
    batch = make_batch(spec, args.device)
    tokens = spec["batch_size"] * (spec["encoder_length"] + spec["decoder_length"])

    for _ in range(WARMUP_STEPS):
        train_step(model, optimizer, batch, args.device, args.precision)

    synchronize(args.device)
    start = time.perf_counter()
    for _ in range(args.steps):
        train_step(model, optimizer, batch, args.device, args.precision)
    synchronize(args.device)
    elapsed = time.perf_counter() - start

    step_ms = 1000.0 * elapsed / args.steps
    tokens_per_s = tokens * args.steps / elapsed
    print(f"reference config={args.config} tokens_per_s={tokens_per_s:.1f} "
          f"step_ms={step_ms:.3f} threads={torch.get_num_threads()} device={args.device} "
          f"precision={args.precision} torch={torch.__version__} "
          f"transformers={transformers.__version__}{gpu}")


if __name__ == "__main__":
    main()
