"""What a soak run serves: the model, the request mix, the pinned mlx-lm releases.

Everything here is data; the same seed gives both sides the same requests.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import MlxForkError


@dataclass(frozen=True)
class MlxLmPin:
    """An mlx-lm release whose declared `mlx>=` bound admits the base's MLX release."""

    version: str
    wheel: str
    sha256: str
    why: str


# Keyed by the MLX release of a base. mlx-lm declares its MLX floor only for macOS and in
# its extras (`mlx[cpu]>=...`), so the floor is read from its METADATA, not enforced by pip here.
MLX_LM_PINS: dict[str, MlxLmPin] = {
    "0.31.1": MlxLmPin(
        "0.31.2", "mlx_lm-0.31.2-py3-none-any.whl",
        "a90a7905031b2580b4923f92e0fb156ca287f452bb1a9e41a60dcbc971532d46",
        "the newest mlx-lm that admits MLX 0.31.1 (it declares mlx>=0.30.4; 0.31.3 declares mlx>=0.31.2); "
        "its generation_stream is one mx.new_stream shared by all threads"),
    "0.32.1": MlxLmPin(
        "0.31.3", "mlx_lm-0.31.3-py3-none-any.whl",
        "758cfddf1180053b7613db76fad3d246a331a2a905808e1164a275621fc983b8",
        "the newest mlx-lm that admits MLX 0.32.1 (it declares mlx>=0.31.2; 0.32.0 and later declare "
        "mlx>=0.32.2); its generation_stream is an mx.new_thread_local_stream"),
}


def mlx_lm_pin(mlx_version: str) -> MlxLmPin:
    try:
        return MLX_LM_PINS[mlx_version]
    except KeyError:
        raise MlxForkError(
            f"no mlx-lm release is pinned for MLX {mlx_version}",
            hint="add one to MLX_LM_PINS in build_tools/soak/plan.py (the newest mlx-lm whose mlx>= floor admits it)",
        ) from None


def streams_allowed(mlx_version: str) -> tuple[str, ...]:
    """0.31.1 streams are process-wide (threads may share one); 0.31.2+ streams belong to the thread making them."""
    parts = tuple(int(p) for p in mlx_version.split("+")[0].split(".")[:3])
    return ("shared", "own") if parts <= (0, 31, 1) else ("own",)


@dataclass(frozen=True)
class ModelShape:
    """A small mlx-lm llama with random weights (3.1M parameters by default)."""

    hidden_size: int = 128
    num_hidden_layers: int = 4
    intermediate_size: int = 512
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vocab_size: int = 8192
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# Request kinds and their share of a run.
MIX: tuple[tuple[str, float], ...] = (
    ("greedy", 0.44),   # temperature 0, tokens checked against the single-thread reference
    ("sample", 0.41),   # temperature 0.8: mx.random from several threads
    ("cancel", 0.07),   # sampled, the client goes away after a few tokens
    ("oom", 0.04),      # preprocessing allocates more memory than there is: must fail, server carries on
    ("lapack", 0.04),   # preprocessing inverts a singular matrix on the CPU stream: must fail
)
INTENDED_FAILURES = frozenset({"oom", "lapack"})


@dataclass(frozen=True)
class Request:
    id: int
    kind: str
    prompt_seed: int = 0
    prompt_len: int = 0
    max_tokens: int = 0
    temp: float = 0.0
    ref: int | None = None
    cancel_after: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Plan:
    seed: int
    prompt_range: tuple[int, int] = (128, 512)
    new_tokens_range: tuple[int, int] = (16, 64)
    references: int = 8
    model: ModelShape = field(default_factory=ModelShape)

    def reference_prompts(self) -> list[dict[str, Any]]:
        rng = random.Random(self.seed * 1000 + 1)
        return [{"ref": i, "prompt_seed": self.seed * 1000 + 100 + i, "prompt_len": rng.randint(*self.prompt_range)}
                for i in range(self.references)]

    def requests(self, n: int) -> list[Request]:
        rng = random.Random(self.seed)
        refs = self.reference_prompts()
        kinds = [k for k, _ in MIX]
        weights = [w for _, w in MIX]
        out = []
        for i in range(n):
            kind = rng.choices(kinds, weights)[0]
            new = rng.randint(*self.new_tokens_range)
            if kind in INTENDED_FAILURES:
                out.append(Request(i, kind))
            elif kind == "greedy":
                ref = refs[rng.randrange(len(refs))]
                out.append(Request(i, kind, ref["prompt_seed"], ref["prompt_len"], new, 0.0, ref=ref["ref"]))
            else:
                length = rng.randint(*self.prompt_range)
                cancel = rng.randint(2, max(2, new // 2)) if kind == "cancel" else None
                out.append(Request(i, kind, rng.randrange(1 << 30), length, new, 0.8, cancel_after=cancel))
        return out
