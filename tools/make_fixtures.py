"""Write the parity fixtures that the C tests compare against the reference model.

Create the environment once, from the repository root:

    python3.11 -m venv tools/venv
    tools/venv/bin/pip install -r tools/requirements.txt

Then write the fixtures:

    tools/venv/bin/python tools/make_fixtures.py

Each entry of FIXTURES becomes tests/fixtures/parity_<name>.safetensors, built from
SwitchTransformersForConditionalGeneration of Hugging Face transformers in float32 on
the CPU, with fixed seeds, deterministic algorithms and one thread. A file contains:

    param.<name>     every parameter, named as in model.named_parameters()
    input.*          input_ids, attention_mask, labels, decoder_input_ids  [B,T] I64
    output.logits    [B,Td,V], and output.loss with each loss term as shape [1]
    output.router_logits.<stack>.<layer>  [B,T,E] for each MoE layer
    output.expert_index.<stack>.<layer>   [B,T] I64, 0 for a token dropped by capacity
    output.dropped.<stack>.<layer>        [B,T] I64, 1 for a token dropped by capacity
    grad.<name>      gradient of output.loss for every param.<name>, zero for an
                     expert that received no token (torch leaves that .grad None)
    adamw.losses     [10] total loss before each of ten AdamW steps on the same batch

AdamW skips a parameter whose .grad is None, so an expert that receives no token in
a step keeps its weights and optimizer state unchanged, so it gets no weight decay
either.

The metadata contains the configuration ("config"), the optimizer settings ("adamw"),
the library versions and a one-sentence description.
"""

import json
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import transformers
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import SwitchTransformersConfig, SwitchTransformersForConditionalGeneration

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_DIR = os.path.join(REPO_ROOT, "tests", "fixtures")
MAX_FIXTURE_BYTES = 2 * 1024 * 1024

PAD_ID = 0
EOS_ID = 1
IGNORE_INDEX = -100
FIRST_WORD_ID = 2

ADAMW = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.98, "eps": 1e-6, "weight_decay": 0.005, "steps": 10}

STACKS = ("encoder", "decoder")


@dataclass
class Fixture:
    """One model configuration and the shape of the batch run through it."""

    name: str
    description: str
    seed: int
    vocab_size: int
    d_model: int
    d_kv: int
    num_heads: int
    d_ff: int
    encoder_layers: int
    decoder_layers: int
    encoder_sparse_step: int
    decoder_sparse_step: int
    num_experts: int
    expert_capacity: int
    tie_word_embeddings: bool
    relative_attention_num_buckets: int
    relative_attention_max_distance: int
    batch_size: int
    encoder_length: int
    decoder_length: int
    # The row whose encoder input ends in padding, and its real length with EOS.
    short_encoder_row: int
    short_encoder_length: int
    # The row whose labels end in IGNORE_INDEX, and its real length with EOS.
    short_label_row: int
    short_label_length: int
    # Whether the capacity cut must drop tokens in both stacks (True) or in neither.
    expect_dropped: bool
    # Whether some expert must receive no token during the ten AdamW steps.
    expect_idle_experts: bool


FIXTURES = [
    Fixture(
        name="step2_e4_tied",
        description="Tied embeddings with the rescaled LM head, 4 experts in layers 1 and 3 "
        "of both stacks, no token dropped and every expert used at every step.",
        seed=15,
        vocab_size=96, d_model=32, d_kv=8, num_heads=4, d_ff=64,
        encoder_layers=4, decoder_layers=4, encoder_sparse_step=2, decoder_sparse_step=2,
        num_experts=4, expert_capacity=64, tie_word_embeddings=True,
        relative_attention_num_buckets=32, relative_attention_max_distance=128,
        batch_size=3, encoder_length=13, decoder_length=9,
        short_encoder_row=1, short_encoder_length=8,
        short_label_row=2, short_label_length=6,
        expect_dropped=False,
        expect_idle_experts=False,
    ),
    Fixture(
        name="step3_e8_untied",
        description="Untied LM head and 8 experts at sparse step 3 (encoder layers 1 and 4, "
        "decoder layer 1), with idle experts that AdamW skips.",
        seed=2002,
        vocab_size=80, d_model=32, d_kv=8, num_heads=4, d_ff=32,
        encoder_layers=6, decoder_layers=3, encoder_sparse_step=3, decoder_sparse_step=3,
        num_experts=8, expert_capacity=64, tie_word_embeddings=False,
        relative_attention_num_buckets=32, relative_attention_max_distance=128,
        batch_size=2, encoder_length=11, decoder_length=7,
        short_encoder_row=0, short_encoder_length=7,
        short_label_row=1, short_label_length=4,
        expect_dropped=False,
        expect_idle_experts=True,
    ),
    Fixture(
        name="capacity_drop",
        description="Expert capacity 2 drops tokens in both stacks, and 8 relative-position "
        "buckets with max distance 20 exercise the logarithmic buckets.",
        seed=3003,
        vocab_size=64, d_model=32, d_kv=8, num_heads=4, d_ff=48,
        encoder_layers=4, decoder_layers=4, encoder_sparse_step=2, decoder_sparse_step=2,
        num_experts=4, expert_capacity=2, tie_word_embeddings=False,
        relative_attention_num_buckets=8, relative_attention_max_distance=20,
        batch_size=2, encoder_length=16, decoder_length=10,
        short_encoder_row=1, short_encoder_length=11,
        short_label_row=0, short_label_length=7,
        expect_dropped=True,
        expect_idle_experts=True,
    ),
    Fixture(
        name="step1_all_moe",
        description="Sparse step 1: every layer is an MoE layer, and the reference computes "
        "no router loss for such a model, so the total loss is the cross-entropy alone.",
        seed=4004,
        vocab_size=72, d_model=32, d_kv=8, num_heads=4, d_ff=32,
        encoder_layers=2, decoder_layers=2, encoder_sparse_step=1, decoder_sparse_step=1,
        num_experts=4, expert_capacity=64, tie_word_embeddings=True,
        relative_attention_num_buckets=32, relative_attention_max_distance=128,
        batch_size=2, encoder_length=9, decoder_length=6,
        short_encoder_row=0, short_encoder_length=6,
        short_label_row=1, short_label_length=4,
        expect_dropped=False,
        expect_idle_experts=True,
    ),
]


def build_model(fx):
    """Build the reference model for one fixture, initialized by its own _init_weights."""
    config = SwitchTransformersConfig(
        vocab_size=fx.vocab_size,
        d_model=fx.d_model,
        d_kv=fx.d_kv,
        d_ff=fx.d_ff,
        num_heads=fx.num_heads,
        num_layers=fx.encoder_layers,
        num_decoder_layers=fx.decoder_layers,
        # The config derives each sparse step as layers // num_sparse_layers.
        num_sparse_encoder_layers=fx.encoder_layers // fx.encoder_sparse_step,
        num_sparse_decoder_layers=fx.decoder_layers // fx.decoder_sparse_step,
        num_experts=fx.num_experts,
        expert_capacity=fx.expert_capacity,
        router_jitter_noise=0.0,
        dropout_rate=0.0,
        relative_attention_num_buckets=fx.relative_attention_num_buckets,
        relative_attention_max_distance=fx.relative_attention_max_distance,
        tie_word_embeddings=fx.tie_word_embeddings,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        # SwitchTransformersConfig leaves this unset, and _shift_right raises without it.
        decoder_start_token_id=PAD_ID,
    )
    steps = (config.encoder_sparse_step, config.decoder_sparse_step)
    if steps != (fx.encoder_sparse_step, fx.decoder_sparse_step):
        raise ValueError(
            f"{fx.name}: the config derived sparse steps {steps}, expected "
            f"({fx.encoder_sparse_step}, {fx.decoder_sparse_step}). Choose layer counts "
            "that are multiples of the step."
        )

    torch.manual_seed(fx.seed)
    model = SwitchTransformersForConditionalGeneration(config)
    tied = model.lm_head.weight is model.shared.weight
    if tied != fx.tie_word_embeddings:
        raise ValueError(f"{fx.name}: lm_head tied to shared is {tied}, expected "
                         f"{fx.tie_word_embeddings}")
    return model


def sparse_layers(fx, model):
    """Return the MoE layer indices of each stack, checked against i % step == 1."""
    layers = {}
    for stack_name in STACKS:
        stack = getattr(model, stack_name)
        step = getattr(fx, f"{stack_name}_sparse_step")
        found = [i for i, block in enumerate(stack.block) if block.is_sparse]
        # step 1 makes every layer sparse (but then the reference skips the router losses)
        expected = [i for i in range(len(stack.block)) if step == 1 or i % step == 1]
        if found != expected:
            raise ValueError(f"{fx.name}: {stack_name} MoE layers are {found}, expected "
                             f"{expected} for sparse step {step}")
        layers[stack_name] = found
    return layers


def make_batch(fx, model):
    """Build random token ids with EOS at each real end, one padded row and one short label row."""
    generator = torch.Generator().manual_seed(fx.seed + 1)
    shape_encoder = (fx.batch_size, fx.encoder_length)
    shape_decoder = (fx.batch_size, fx.decoder_length)
    input_ids = torch.randint(FIRST_WORD_ID, fx.vocab_size, shape_encoder, generator=generator)
    attention_mask = torch.ones(shape_encoder, dtype=torch.int64)
    labels = torch.randint(FIRST_WORD_ID, fx.vocab_size, shape_decoder, generator=generator)

    encoder_lengths = [fx.encoder_length] * fx.batch_size
    encoder_lengths[fx.short_encoder_row] = fx.short_encoder_length
    for row, length in enumerate(encoder_lengths):
        input_ids[row, length - 1] = EOS_ID
        input_ids[row, length:] = PAD_ID
        attention_mask[row, length:] = 0

    label_lengths = [fx.decoder_length] * fx.batch_size
    label_lengths[fx.short_label_row] = fx.short_label_length
    for row, length in enumerate(label_lengths):
        labels[row, length - 1] = EOS_ID
        labels[row, length:] = IGNORE_INDEX

    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "decoder_input_ids": model._shift_right(labels),
    }


def run_model(model, batch):
    return model(**batch, use_cache=False, output_router_logits=True, return_dict=True)


def as_scalar(value):
    # the reference returns a plain 0 for the router losses of a step-1 model
    if not torch.is_tensor(value):
        return torch.tensor([float(value)], dtype=torch.float32)
    return value.detach().reshape(1).clone()


def dropped_by_capacity(router_logits, capacity):
    """Mark the tokens whose top-1 expert already took `capacity` earlier tokens of the row.

    Returns (dropped, choice): dropped is 1 for a dropped token, and choice is the
    top-1 expert before the capacity cut. Both are [B,T] int64.
    """
    choice = router_logits.argmax(dim=-1)
    one_hot = F.one_hot(choice, router_logits.shape[-1])
    queue_position = (one_hot.cumsum(dim=1) * one_hot).sum(dim=-1)
    return (queue_position > capacity).to(torch.int64), choice


def idle_experts(model):
    """Return the names of the experts whose parameters received no gradient.

    An expert that gets no token after the capacity cut is left out of the graph, so
    torch leaves its .grad as None. AdamW then skips that expert for the step, with no
    moment update, no weight decay and no step count increase.
    """
    suffix = ".wi.weight"
    return [name[: -len(suffix)] for name, p in model.named_parameters()
            if p.grad is None and name.endswith(suffix)]


def check_grads_present(model, context):
    """Raise if a parameter other than an idle expert's has no gradient."""
    idle = set(idle_experts(model))
    missing = [name for name, p in model.named_parameters()
               if p.grad is None and name.rsplit(".", 2)[0] not in idle]
    if missing:
        raise RuntimeError(f"{context}: no gradient for {', '.join(missing)}")


def hook_router_outputs(model, layers):
    """Record each MoE layer's (router_logits, expert_index) from its own forward."""
    seen = {}
    handles = []
    for stack_name in STACKS:
        stack = getattr(model, stack_name)
        for i in layers[stack_name]:
            def record(module, args, output, key=(stack_name, i)):
                seen[key] = output[1]
            handles.append(stack.block[i].layer[-1].mlp.register_forward_hook(record))
    return seen, handles


def check_router_tuple(fx, stack_name, router_outputs, layers, seen):
    """Check that entry i of the output's router tuple belongs to layer i of the stack.

    The model returns one entry per layer: (router_logits, expert_index) for an MoE
    layer and a 1-element placeholder tuple for a dense layer.
    """
    num_layers = getattr(fx, f"{stack_name}_layers")
    if len(router_outputs) != num_layers:
        raise RuntimeError(f"{fx.name}: {stack_name} router tuple has {len(router_outputs)} "
                           f"entries, expected one per layer ({num_layers})")
    for i, entry in enumerate(router_outputs):
        if i not in layers[stack_name]:
            if len(entry) != 1 or entry[0].dim() != 1:
                raise RuntimeError(f"{fx.name}: {stack_name} layer {i} is dense but its "
                                   "router entry is not the placeholder")
            continue
        logits, expert_index = entry
        hooked_logits, hooked_index = seen[(stack_name, i)]
        if not (torch.equal(logits, hooked_logits) and torch.equal(expert_index, hooked_index)):
            raise RuntimeError(f"{fx.name}: {stack_name} router entry {i} differs from the "
                               f"output of block {i}")


def record_pass(fx, model, batch, layers):
    """Run one forward and backward pass.

    Returns the output.* and grad.* tensors and the names of the idle experts.
    """
    model.zero_grad(set_to_none=True)
    seen, handles = hook_router_outputs(model, layers)
    try:
        out = run_model(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    out.loss.backward()
    check_grads_present(model, f"{fx.name} gradient pass")

    logits = out.logits.detach()
    ce_loss = F.cross_entropy(logits.reshape(-1, fx.vocab_size), batch["labels"].reshape(-1),
                              ignore_index=IGNORE_INDEX)
    tensors = {
        "output.logits": logits.clone(),
        "output.loss": as_scalar(out.loss),
        "output.ce_loss": as_scalar(ce_loss),
    }
    for stack_name in STACKS:
        tensors[f"output.{stack_name}_z_loss"] = as_scalar(getattr(out, f"{stack_name}_z_loss"))
        tensors[f"output.{stack_name}_aux_loss"] = as_scalar(
            getattr(out, f"{stack_name}_aux_loss"))
        tensors.update(record_routing(fx, stack_name, out, layers, seen))

    # the total must be the cross-entropy plus the scaled router losses
    config = model.config
    expected_loss = (
        ce_loss
        + config.router_z_loss_coef * (out.encoder_z_loss + out.decoder_z_loss)
        + config.router_aux_loss_coef * (out.encoder_aux_loss + out.decoder_aux_loss)
    )
    torch.testing.assert_close(out.loss.detach(), expected_loss.detach())

    # an idle expert's gradient is zero, which torch represents as None
    for name, param in model.named_parameters():
        grad = torch.zeros_like(param) if param.grad is None else param.grad
        tensors[f"grad.{name}"] = grad.detach().clone()
    return tensors, idle_experts(model)


def record_routing(fx, stack_name, out, layers, seen):
    """Return router logits, expert indices and capacity drops of one stack's MoE layers."""
    router_outputs = getattr(out, f"{stack_name}_router_logits")
    check_router_tuple(fx, stack_name, router_outputs, layers, seen)

    tensors = {}
    dropped_total = 0
    for i in layers[stack_name]:
        logits, expert_index = router_outputs[i]
        dropped, choice = dropped_by_capacity(logits.detach(), fx.expert_capacity)

        # the model reports expert 0 for a dropped token, because its capacity
        # mask is all zero and argmax of zeros is 0
        if not torch.equal(expert_index, torch.where(dropped.bool(), 0, choice)):
            raise RuntimeError(f"{fx.name}: {stack_name} layer {i} expert_index disagrees "
                               "with top-1 routing under the capacity cut")
        dropped_total += int(dropped.sum())
        tensors[f"output.router_logits.{stack_name}.{i}"] = logits.detach().clone()
        tensors[f"output.expert_index.{stack_name}.{i}"] = expert_index.detach().clone()
        tensors[f"output.dropped.{stack_name}.{i}"] = dropped

    if (dropped_total > 0) != fx.expect_dropped:
        raise RuntimeError(f"{fx.name}: {stack_name} dropped {dropped_total} tokens, expected "
                           f"{'some' if fx.expect_dropped else 'none'}")
    return tensors


def adamw_losses(model, batch):
    """Train the model in place on one batch.

    Returns the total loss before each step and the number of (step, expert) pairs
    that AdamW skipped because the expert received no token.
    """
    model.train()
    # The gradient passes before this one leave their gradients behind.
    model.zero_grad(set_to_none=True)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=ADAMW["lr"],
        betas=(ADAMW["beta1"], ADAMW["beta2"]),
        eps=ADAMW["eps"],
        weight_decay=ADAMW["weight_decay"],
    )
    losses = []
    skipped = 0
    for step in range(ADAMW["steps"]):
        loss = run_model(model, batch).loss
        losses.append(loss.detach().clone())
        loss.backward()
        check_grads_present(model, f"AdamW step {step}")
        skipped += len(idle_experts(model))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return torch.stack(losses), skipped


def config_metadata(config):
    """Return the configuration in the workbench's field names."""
    return {
        "vocab_size": config.vocab_size,
        "d_model": config.d_model,
        "d_kv": config.d_kv,
        "d_ff": config.d_ff,
        "num_heads": config.num_heads,
        "encoder_layers": config.num_layers,
        "decoder_layers": config.num_decoder_layers,
        "encoder_sparse_step": config.encoder_sparse_step,
        "decoder_sparse_step": config.decoder_sparse_step,
        "num_experts": config.num_experts,
        "expert_capacity": config.expert_capacity,
        "router_jitter_noise": config.router_jitter_noise,
        "dropout_rate": config.dropout_rate,
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "relative_attention_num_buckets": config.relative_attention_num_buckets,
        "relative_attention_max_distance": config.relative_attention_max_distance,
        "router_z_loss_coef": config.router_z_loss_coef,
        "router_aux_loss_coef": config.router_aux_loss_coef,
        "initializer_factor": config.initializer_factor,
        "tie_word_embeddings": int(config.tie_word_embeddings),
        "pad_token_id": config.pad_token_id,
        "eos_token_id": config.eos_token_id,
        "decoder_start_token_id": config.decoder_start_token_id,
    }


def check_dtypes(name, tensors):
    for key, tensor in tensors.items():
        if tensor.dtype not in (torch.float32, torch.int64):
            raise TypeError(f"{name}: tensor {key} is {tensor.dtype}, expected float32 or int64")


def write_fixture(path, tensors, metadata):
    """Write one fixture, then read it back and compare it. Returns its size in bytes."""
    check_dtypes(path, tensors)
    save_file(tensors, path, metadata=metadata)

    size = os.path.getsize(path)
    if size >= MAX_FIXTURE_BYTES:
        raise RuntimeError(f"{path} is {size} bytes, expected under {MAX_FIXTURE_BYTES}. "
                           "Shrink the configuration or the batch.")

    loaded = load_file(path)
    if loaded.keys() != tensors.keys():
        raise RuntimeError(f"{path}: read back {len(loaded)} tensors, expected {len(tensors)}")
    for key, tensor in tensors.items():
        if loaded[key].dtype != tensor.dtype or not torch.equal(loaded[key], tensor):
            raise RuntimeError(f"{path}: tensor {key} differs after reading back")
    with safe_open(path, framework="pt") as handle:
        if handle.metadata() != metadata:
            raise RuntimeError(f"{path}: metadata differs after reading back")
    return size


def make_fixture(fx):
    """Compute every tensor of one fixture, write it and log one line."""
    model = build_model(fx)
    layers = sparse_layers(fx, model)
    batch = make_batch(fx, model)

    tensors = {f"param.{name}": p.detach().clone() for name, p in model.named_parameters()}
    tensors.update({f"input.{name}": value.clone() for name, value in batch.items()})

    # dropout and jitter are 0, so train mode must reproduce eval mode bit for bit
    model.eval()
    results, idle = record_pass(fx, model, batch, layers)
    model.train()
    train_results, _ = record_pass(fx, model, batch, layers)
    for key, value in results.items():
        if not torch.equal(value, train_results[key]):
            raise RuntimeError(f"{fx.name}: {key} differs between eval and train mode")
    tensors.update(results)

    # run last, because it updates the parameters in place
    tensors["adamw.losses"], skipped = adamw_losses(model, batch)
    if not torch.equal(tensors["adamw.losses"][:1], tensors["output.loss"]):
        raise RuntimeError(f"{fx.name}: the first AdamW loss differs from output.loss")
    if (skipped > 0) != fx.expect_idle_experts:
        raise RuntimeError(f"{fx.name}: AdamW skipped {skipped} idle expert updates, expected "
                           f"{'some' if fx.expect_idle_experts else 'none'}. Change the seed.")

    metadata = {
        "config": json.dumps(config_metadata(model.config)),
        "adamw": json.dumps(ADAMW),
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "description": fx.description,
    }
    path = os.path.join(FIXTURE_DIR, f"parity_{fx.name}.safetensors")
    size = write_fixture(path, tensors, metadata)
    print(f"wrote {os.path.relpath(path, REPO_ROOT)}: {len(tensors)} tensors, {size} bytes, "
          f"{len(idle)} idle experts in the gradient pass, {skipped} idle expert updates "
          "skipped by AdamW")


def main():
    torch.use_deterministic_algorithms(True)
    # one thread, so that the machine's core count cannot change the order of reductions
    torch.set_num_threads(1)
    os.makedirs(FIXTURE_DIR, exist_ok=True)
    for fx in FIXTURES:
        make_fixture(fx)


if __name__ == "__main__":
    main()
