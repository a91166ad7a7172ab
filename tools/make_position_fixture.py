"""Write the relative position bucket fixture that tests/test_position.c reads.

Run from the repository root, in the environment of tools/requirements.txt:

    tools/venv/bin/python tools/make_position_fixture.py

The buckets come from SwitchTransformersAttention._relative_position_bucket of
Hugging Face transformers, computed with torch on the CPU. The output file,
tests/fixtures/position_buckets.txt, has '#' comment lines first, then one line
per case:

    num_buckets max_distance bidirectional first_relative count bucket...

where bidirectional is 0 or 1 and the count buckets are those of relative
positions first_relative, first_relative + 1, ...
"""

import os

import torch
import transformers
from transformers.models.switch_transformers.modeling_switch_transformers import (
    SwitchTransformersAttention,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_PATH = os.path.join(REPO_ROOT, "tests", "fixtures", "position_buckets.txt")

FIRST_RELATIVE = -300
LAST_RELATIVE = 300

# (num_buckets, max_distance): the Switch Transformer default first, then shapes
# whose logarithmic buckets start and end at other offsets.
CASES = ((32, 128), (8, 20), (16, 64), (32, 32))


def reference_buckets(num_buckets, max_distance, bidirectional):
    relative = torch.arange(FIRST_RELATIVE, LAST_RELATIVE + 1, dtype=torch.long)
    buckets = SwitchTransformersAttention._relative_position_bucket(
        relative,
        bidirectional=bidirectional,
        num_buckets=num_buckets,
        max_distance=max_distance,
    )
    return buckets.tolist()


def main():
    count = LAST_RELATIVE - FIRST_RELATIVE + 1
    lines = [
        "# Relative position buckets of SwitchTransformersAttention._relative_position_bucket.",
        "# Written by tools/make_position_fixture.py with transformers %s and torch %s."
        % (transformers.__version__, torch.__version__),
        "# Columns: num_buckets max_distance bidirectional first_relative count bucket...",
    ]
    for num_buckets, max_distance in CASES:
        for bidirectional in (True, False):
            buckets = reference_buckets(num_buckets, max_distance, bidirectional)
            assert len(buckets) == count
            fields = [num_buckets, max_distance, int(bidirectional), FIRST_RELATIVE, count]
            lines.append(" ".join(str(v) for v in fields + buckets))
    with open(FIXTURE_PATH, "w", encoding="ascii") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %s: %d cases of %d relative positions" % (FIXTURE_PATH, len(CASES) * 2, count))


if __name__ == "__main__":
    main()
