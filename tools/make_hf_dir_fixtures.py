"""Write the Hugging Face model directories and reference logits for tests/test_import.c.

Run it from the repository root in the environment of tools/make_fixtures.py:

    tools/venv/bin/python tools/make_hf_dir_fixtures.py

It builds one small SwitchTransformersForConditionalGeneration (transformers 4.46.3, float32,
CPU) with tied embeddings, capacity drops and non-default dropout and jitter in its
config, and writes:

    tests/fixtures/hf_single/     save_pretrained with one model.safetensors, all float32
    tests/fixtures/hf_sharded/    save_pretrained of the same weights as F32, F16 and BF16
                                  tensors in three shards with model.safetensors.index.json,
                                  with the embedding also under encoder.embed_tokens.weight,
                                  decoder.embed_tokens.weight and lm_head.weight
    tests/fixtures/hf_logits.safetensors
                                  input.input_ids, input.attention_mask,
                                  input.decoder_input_ids [B,T] I64 and output.logits
                                  [B,Td,V] F32 of the model in eval mode

Every weight is first rounded to a value that BF16 and F16 both represent exactly, so the
16-bit tensors of the sharded directory hold the same numbers as the float32 ones and one
set of reference logits serves both directories.
"""

import json
import os
import shutil

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file

import make_fixtures
from make_fixtures import FIXTURE_DIR, REPO_ROOT, Fixture

FIXTURE = Fixture(
    name="hf_dir",
    description="Tied embeddings, 4 encoder and 2 decoder blocks with 4 experts at sparse "
    "step 2, and expert capacity 3, which drops tokens.",
    seed=5005,
    vocab_size=80, d_model=32, d_kv=8, num_heads=4, d_ff=48,
    encoder_layers=4, decoder_layers=2, encoder_sparse_step=2, decoder_sparse_step=2,
    num_experts=4, expert_capacity=3, tie_word_embeddings=True,
    relative_attention_num_buckets=32, relative_attention_max_distance=128,
    batch_size=2, encoder_length=11, decoder_length=7,
    short_encoder_row=1, short_encoder_length=6,
    short_label_row=0, short_label_length=5,
    expect_dropped=True,
    expect_idle_experts=False,
)

# Written into config.json; eval mode ignores both, so the logits do not depend on them.
DROPOUT_RATE = 0.125
ROUTER_JITTER_NOISE = 0.02

# F16's smallest normal magnitude. Smaller values would lose bits in F16, so they become 0.
F16_MIN_NORMAL = 2.0 ** -14

MAX_DIRECTORY_BYTES = 1024 * 1024
SHARD_BYTES = 100 * 1024
EMBEDDING_COPIES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
                    "lm_head.weight")


def round_to_16_bit(tensor):
    """Round to the nearest BF16 value and zero what F16 cannot represent exactly."""
    rounded = tensor.to(torch.bfloat16).to(torch.float32)
    rounded[rounded.abs() < F16_MIN_NORMAL] = 0.0
    if not torch.equal(rounded.to(torch.float16).to(torch.float32), rounded):
        raise RuntimeError("a rounded weight is not exact in F16")
    return rounded


def build_model():
    model = make_fixtures.build_model(FIXTURE)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(round_to_16_bit(param))
    model.config.dropout_rate = DROPOUT_RATE
    model.config.router_jitter_noise = ROUTER_JITTER_NOISE
    model.eval()
    return model


def directory_size(path):
    return sum(os.path.getsize(os.path.join(path, name)) for name in os.listdir(path))


def fresh_directory(name):
    path = os.path.join(FIXTURE_DIR, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def mixed_dtype_state(model):
    """Return the state dict with every tensor as F32, F16 or BF16 in turn.

    The embedding copies that save_pretrained leaves out are added, so that the import
    reads every name under which transformers stores the tied embedding.
    """
    dtypes = (torch.float32, torch.float16, torch.bfloat16)
    state = {}
    for index, (name, tensor) in enumerate(model.state_dict().items()):
        state[name] = tensor.detach().to(dtypes[index % len(dtypes)]).clone()
    for name in EMBEDDING_COPIES:
        state.setdefault(name, model.shared.weight.detach().to(torch.bfloat16).clone())
    return state


def check_loads_back(path, reference_logits, batch):
    """Load a written directory with transformers and compare its logits.

    The reloaded model has the same weights bit for bit but sums in another order
    (about 1e-6 apart), so the logits are compared within 1e-5 of their maximum.
    """
    loaded = transformers.SwitchTransformersForConditionalGeneration.from_pretrained(
        path, torch_dtype=torch.float32)
    # from_pretrained keeps each 16-bit tensor's dtype, so the model is converted to float32,
    # as the import does
    loaded.float().eval()
    with torch.no_grad():
        logits = loaded(**batch, use_cache=False).logits
    error = (logits - reference_logits).abs().max() / reference_logits.abs().max()
    if not error <= 1e-5:
        raise RuntimeError(f"{path}: logits of the reloaded model differ by {error:.3g} "
                           "relative to their maximum")


def write_single(model, reference_logits, batch):
    path = fresh_directory("hf_single")
    model.save_pretrained(path, safe_serialization=True)
    if not os.path.exists(os.path.join(path, "model.safetensors")):
        raise RuntimeError(f"{path}: save_pretrained did not write model.safetensors")
    check_loads_back(path, reference_logits, batch)
    return path


def write_sharded(model, reference_logits, batch):
    path = fresh_directory("hf_sharded")
    model.save_pretrained(path, state_dict=mixed_dtype_state(model),
                          max_shard_size=SHARD_BYTES, safe_serialization=True)
    with open(os.path.join(path, "model.safetensors.index.json")) as handle:
        index = json.load(handle)
    shards = sorted(set(index["weight_map"].values()))
    if not 2 <= len(shards) <= 3:
        raise RuntimeError(f"{path}: {len(shards)} shards, expected 2 or 3")
    dtypes = set()
    for shard in shards:
        with safe_open(os.path.join(path, shard), framework="pt") as handle:
            for name in handle.keys():
                dtypes.add(handle.get_slice(name).get_dtype())
    if dtypes != {"F32", "F16", "BF16"}:
        raise RuntimeError(f"{path}: dtypes {sorted(dtypes)}, expected F32, F16 and BF16")
    missing = [name for name in EMBEDDING_COPIES if name not in index["weight_map"]]
    if missing:
        raise RuntimeError(f"{path}: save_pretrained dropped {', '.join(missing)}")
    check_loads_back(path, reference_logits, batch)
    return path, len(shards)


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    model = build_model()
    batch = make_fixtures.make_batch(FIXTURE, model)
    del batch["labels"]
    with torch.no_grad():
        logits = model(**batch, use_cache=False).logits

    single = write_single(model, logits, batch)
    sharded, shards = write_sharded(model, logits, batch)
    for path in (single, sharded):
        if directory_size(path) >= MAX_DIRECTORY_BYTES:
            raise RuntimeError(f"{path} is {directory_size(path)} bytes, expected under "
                               f"{MAX_DIRECTORY_BYTES}")

    tensors = {f"input.{name}": value.clone() for name, value in batch.items()}
    tensors["output.logits"] = logits.clone()
    metadata = {
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "description": FIXTURE.description,
    }
    logits_path = os.path.join(FIXTURE_DIR, "hf_logits.safetensors")
    save_file(tensors, logits_path, metadata=metadata)
    for path in (single, sharded, logits_path):
        print(f"wrote {os.path.relpath(path, REPO_ROOT)}")
    print(f"{shards} shards, logits {list(logits.shape)}")


if __name__ == "__main__":
    main()
