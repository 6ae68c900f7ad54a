"""Which part of the train step each traced op belongs to: attention, LM head and loss, optimizer, host
transfer, and the rest of the encoder.

A profiler trace names kernels or XLA instructions (``loop_convert_fusion_11``, ``fusion.12``), which say
nothing about the model. The compiled program's HLO text does: every instruction carries the JAX name
stack it came from (``metadata={op_name="jit(step_fn)/transpose(jvp(XLMP))/layer_3/attention/..."}``).
This module maps instruction names to those stacks and the stacks to groups, so a profile can be summed
by model part (``bench/profile_step.py``, the device run of issue 28).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# (group, pattern on the JAX name stack), first match wins. The loss runs outside the model's modules,
# under the bare ``jvp()`` / ``transpose(jvp())`` of ``jax.grad``; the optimizer update and the gradient
# norm run outside ``jvp`` altogether (the NaN guard's ``cond`` holds AdamW).
GROUPS: tuple[tuple[str, str], ...] = (
    ("attention", r"/attention/|dot_product_attention|cudnn"),
    ("lm head + loss", r"/lm_head/|(^|/)(transpose\()?jvp\(\)"),
    ("pool", r"/pool/"),
    ("embeddings", r"/embeddings|_embed"),
    ("encoder ffn/norm/dropout", r"/layer_\d+/"),
    ("rng", r"threefry|random_bits|rng"),
    ("optimizer + grad norm", r"^jit\([^)]*\)/(?!.*jvp\()"),
)
# A GPU trace's host-to-device copies; on the CPU the nearest is JAX's argument transfer (``shard_args``).
HOST_TRANSFER = re.compile(r"memcpyh2d|memcpy h2d|htod|h2d|transfertodevice|host.?to.?device|shard_args", re.I)
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s(.*)$", re.MULTILINE)
_COMPUTATION = re.compile(r"^%?([\w.\-]+) [^\n]*\{\n(.*?)^\}", re.MULTILINE | re.DOTALL)
_OP_NAME = re.compile(r'op_name="([^"]+)"')
_CALLS = re.compile(r"calls=%?([\w.\-]+)")


def normalize(name: str) -> str:
    """An instruction or kernel name in one spelling (``fusion.12``, ``fusion_12`` -> ``fusion_12``)."""
    return re.sub(r"[.\-]", "_", name.strip().lstrip("%"))


def name_stacks(hlo_text: str) -> dict[str, str]:
    """Instruction name (normalised) -> its JAX name stack, from a compiled program's ``as_text()``.

    A fusion that XLA left without metadata takes the first name stack found in the computation it calls.
    """
    inside = {}
    for comp, body in _COMPUTATION.findall(hlo_text):
        found = _OP_NAME.search(body)
        if found:
            inside[comp] = found.group(1)
    stacks = {}
    for name, rest in _INSTRUCTION.findall(hlo_text):
        own, calls = _OP_NAME.search(rest), _CALLS.search(rest)
        stack = own.group(1) if own else inside.get(calls.group(1)) if calls else None
        if stack is not None:
            stacks[normalize(name)] = stack
    return stacks


def group_of_stack(stack: str) -> str:
    for group, pattern in GROUPS:
        if re.search(pattern, stack):
            return group
    return "other"


def group_of_event(name: str, args: Mapping[str, object] | None, stacks: Mapping[str, str]) -> str:
    """The group of one trace event: a host-to-device copy by its name, else through the instruction it
    ran (the event's ``hlo_op`` argument on a GPU, its own name on the CPU) and that one's name stack."""
    if HOST_TRANSFER.search(name):
        return "host transfer"
    args = args or {}
    for candidate in (args.get("hlo_op"), args.get("long_name"), name):
        if isinstance(candidate, str) and candidate:
            stack = stacks.get(normalize(candidate.split(" ")[0].split("=")[0]))
            if stack is not None:
                return group_of_stack(stack)
    return "unmapped"
