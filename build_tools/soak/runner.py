"""The soak workload, run with one side's interpreter (standard library + mlx + mlx-lm).

Usage:
  python runner.py reference --config CFG.json --out REFS.json
  python runner.py worker    --config CFG.json --requests REQS.json
  python runner.py perf      --config CFG.json

The model and the generation loop are mlx-lm's own: `mlx_lm.models.llama.Model`
with random weights (mx.random.seed, no download) and `mlx_lm.generate.generate_step`
(prefill, then one-token decode pipelined with `mx.async_eval`, which is how every
mlx-lm server generates). mlx-lm's package `__init__` imports its converter and
loader (huggingface_hub, transformers); those are not installed. The runner makes
`mlx_lm` a bare package (its `__init__` is not run) and gives `generate.py` small
stand-ins for the three names it imports from them and never calls in
`generate_step`: `transformers.PreTrainedTokenizer` (an annotation; a real
transformers is used when installed), `mlx_lm.tokenizer_utils.TokenizerWrapper` and
`mlx_lm.utils` (`load`, `does_model_support_input_embeddings`).

Streams: mlx-lm runs generation on its module-level `generation_stream`.
`--streams shared`: every thread uses the one module (one stream for all threads,
the default of mlx-lm releases for MLX 0.31.1). `--streams own`: each thread loads
its own copy of `generate.py`, so each has its own `generation_stream` (mlx-lm
releases for MLX 0.31.2+ make it a thread-local stream, so there every thread
already has its own).

A worker prints one JSON object per line on stdout:
  {"ev": "ready"}                                     model built, references loaded
  {"ev": "start", "id": N}                            a request begins
  {"ev": "done", "id": N, "outcome": ..., ...}        a request ends (see finish())
  {"ev": "beat", "tokens": T}                         every second: tokens generated so far
  {"ev": "exit"}                                      all requests answered
outcome: "ok" | "cancelled" | "failed-as-intended" | "error" (an unexpected exception).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import queue
import random
import sys
import threading
import time
import types
from typing import Any

import mlx.core as mx

SINGULAR = [[1.0, 2.0], [2.0, 4.0]]
HUGE_SHAPE = (1 << 19, 1 << 19)  # float32: 1 TiB, more than any machine here has (malloc refuses it)


# ---------------------------------------------------------------- mlx-lm without its package __init__

def import_mlx_lm() -> tuple[Any, Any, Any, str]:
    """(llama module, generate module, sample_utils module, mlx-lm version)."""
    spec = importlib.util.find_spec("mlx_lm")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("mlx-lm is not installed in this environment (mlx-fork soak installs its pinned wheel)")
    pkg = types.ModuleType("mlx_lm")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["mlx_lm"] = pkg
    if importlib.util.find_spec("transformers") is None:
        tf: Any = types.ModuleType("transformers")
        tf.PreTrainedTokenizer = type("PreTrainedTokenizer", (), {})
        sys.modules["transformers"] = tf
    tok: Any = types.ModuleType("mlx_lm.tokenizer_utils")
    tok.TokenizerWrapper = type("TokenizerWrapper", (), {})
    sys.modules["mlx_lm.tokenizer_utils"] = tok
    utils: Any = types.ModuleType("mlx_lm.utils")

    def load(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("mlx_lm.utils.load is not available in the soak runner")

    utils.load = load
    utils.does_model_support_input_embeddings = lambda model: False
    sys.modules["mlx_lm.utils"] = utils
    from mlx_lm import _version, generate, sample_utils
    from mlx_lm.models import llama

    return llama, generate, sample_utils, str(_version.__version__)


def generate_copy(index: int) -> Any:
    """A private copy of mlx_lm/generate.py: its own module-level generation_stream."""
    path = sys.modules["mlx_lm.generate"].__file__
    spec = importlib.util.spec_from_file_location(f"mlx_lm._soak_generate_{index}", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load a copy of {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- model and prompts

def build_model(llama: Any, cfg: dict[str, Any]) -> Any:
    mx.random.seed(cfg["seed"])
    args = llama.ModelArgs.from_dict(dict(cfg["model"], model_type="llama"))
    model = llama.Model(args)
    # Default initialisation gives a model that repeats one token; larger matrices give varied
    # greedy tokens, so a wrong token shows up as a different token.
    scale = float(cfg.get("weight_scale", 1.0))
    if scale != 1.0:
        from mlx.utils import tree_map

        model.update(tree_map(lambda p: p * scale if p.ndim == 2 else p, model.parameters()))
    mx.eval(model.parameters())
    return model


def prompt_tokens(seed: int, length: int, vocab: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(vocab) for _ in range(length)]


def parameter_count(model: Any) -> int:
    from mlx.utils import tree_flatten

    return sum(v.size for _, v in tree_flatten(model.parameters()))


# ---------------------------------------------------------------- the worker

class Out:
    def __init__(self) -> None:
        self.lock = threading.Lock()

    def emit(self, **event: Any) -> None:
        event["t"] = round(time.time(), 3)
        line = json.dumps(event)
        with self.lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()


def run_request(req: dict[str, Any], gen: Any, sampler_mod: Any, model: Any, cache_mod: Any, refs: dict[str, Any],
                vocab: int, counter: list[int]) -> dict[str, Any]:
    """Serve one request; returns the fields of its "done" event."""
    kind = req["kind"]
    t0 = time.perf_counter()
    if kind == "oom":
        # Preprocessing that asks for more memory than there is: the request must fail with an error
        # raised by the evaluation, and the server carry on.
        big = mx.zeros(HUGE_SHAPE, dtype=mx.float32) + 1
        try:
            mx.eval(big.sum())
        except (RuntimeError, MemoryError, ValueError) as exc:
            return {"outcome": "failed-as-intended", "detail": f"{type(exc).__name__}: {str(exc)[:160]}"}
        return {"outcome": "error", "detail": "a 1 TiB allocation succeeded"}
    if kind == "lapack":
        inverse = mx.linalg.inv(mx.array(SINGULAR), stream=mx.cpu)
        try:
            mx.eval(inverse)
        except (RuntimeError, ValueError) as exc:
            return {"outcome": "failed-as-intended", "detail": f"{type(exc).__name__}: {str(exc)[:160]}"}
        return {"outcome": "error", "detail": "inv of a singular matrix returned values"}

    ids = prompt_tokens(req["prompt_seed"], req["prompt_len"], vocab)
    prompt = mx.array(ids, dtype=mx.uint32)
    sampler = sampler_mod.make_sampler(temp=req["temp"]) if req["temp"] > 0 else None
    prompt_cache = cache_mod.make_prompt_cache(model)
    tokens: list[int] = []
    first_at = None
    steps = gen.generate_step(prompt, model, max_tokens=req["max_tokens"], sampler=sampler,
                              prompt_cache=prompt_cache)
    cancel_after = req.get("cancel_after")
    for token, _logprobs in steps:
        tokens.append(int(token))
        counter[0] += 1
        if first_at is None:
            first_at = time.perf_counter()
        if cancel_after is not None and len(tokens) >= cancel_after:
            steps.close()  # the client went away: stop generating mid-request
            break
    end = time.perf_counter()
    result = {
        "outcome": "cancelled" if cancel_after is not None else "ok",
        "prompt_tokens": len(ids), "gen_tokens": len(tokens),
        "prefill_s": round((first_at or end) - t0, 6), "decode_s": round(end - (first_at or end), 6),
    }
    if req.get("ref") is not None:
        want = refs[str(req["ref"])][: len(tokens)]
        wrong = [i for i, (a, b) in enumerate(zip(tokens, want)) if a != b]
        result["checked_tokens"] = len(want)
        result["wrong_tokens"] = len(wrong) + max(0, len(want) - len(tokens))
        if wrong:
            result["first_wrong"] = wrong[0]
    return result


def worker(cfg: dict[str, Any], requests: list[dict[str, Any]]) -> None:
    llama, gen_mod, sampler_mod, _ = import_mlx_lm()
    from mlx_lm.models import cache as cache_mod

    out = Out()
    model = build_model(llama, cfg)
    refs = read_json(cfg["references"])["tokens"] if cfg.get("references") else {}
    mx.set_cache_limit(int(cfg["cache_limit_mb"]) << 20)
    vocab = cfg["model"]["vocab_size"]
    todo: queue.Queue[dict[str, Any]] = queue.Queue()
    for r in requests:
        todo.put(r)
    counter = [0]
    copy_lock = threading.Lock()
    stop = threading.Event()

    def serve(index: int) -> None:
        if cfg["streams"] == "own":
            with copy_lock:
                gen = generate_copy(index)
        else:
            gen = gen_mod
        while True:
            try:
                req = todo.get_nowait()
            except queue.Empty:
                return
            out.emit(ev="start", id=req["id"], thread=index)
            t0 = time.perf_counter()
            try:
                fields = run_request(req, gen, sampler_mod, model, cache_mod, refs, vocab, counter)
            except Exception as exc:
                fields = {"outcome": "error", "detail": f"{type(exc).__name__}: {str(exc)[:200]}"}
            fields["latency_s"] = round(time.perf_counter() - t0, 6)
            mx.clear_cache()  # what servers do after each request
            out.emit(ev="done", id=req["id"], **fields)

    def beat() -> None:
        while not stop.wait(1.0):
            out.emit(ev="beat", tokens=counter[0])

    out.emit(ev="ready", parameters=parameter_count(model), mlx=mx.__version__)
    threading.Thread(target=beat, daemon=True).start()
    threads = [threading.Thread(target=serve, args=(i,)) for i in range(cfg["threads"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    out.emit(ev="exit")


# ---------------------------------------------------------------- single-thread references and perf

def reference(cfg: dict[str, Any], out_path: str) -> None:
    """Greedy tokens of each reference prompt, generated on the main thread alone."""
    llama, gen, _, version = import_mlx_lm()
    model = build_model(llama, cfg)
    vocab = cfg["model"]["vocab_size"]
    tokens = {}
    for ref in cfg["reference_prompts"]:
        prompt = mx.array(prompt_tokens(ref["prompt_seed"], ref["prompt_len"], vocab), dtype=mx.uint32)
        toks = [int(t) for t, _ in gen.generate_step(prompt, model, max_tokens=cfg["max_new_tokens"])]
        tokens[str(ref["ref"])] = toks
    with open(out_path, "w", encoding="utf-8") as fh:
        json.dump({"mlx": mx.__version__, "mlx_lm": version, "parameters": parameter_count(model),
                   "tokens": tokens}, fh)


def perf(cfg: dict[str, Any]) -> None:
    """Prefill and decode tokens/s of one thread, best of a few repeats (wall and process CPU time)."""
    llama, gen, _, _ = import_mlx_lm()
    model = build_model(llama, cfg)
    vocab = cfg["model"]["vocab_size"]
    p = cfg["perf"]
    prompt = mx.array(prompt_tokens(1, p["prompt_len"], vocab), dtype=mx.uint32)
    best: dict[str, float] = {}

    def once() -> dict[str, float]:
        c0, t0 = time.process_time(), time.perf_counter()
        steps = gen.generate_step(prompt, model, max_tokens=p["new_tokens"])
        next(steps)  # generate_step yields plain ints: the first token has been computed
        c1, t1 = time.process_time(), time.perf_counter()
        n = 0
        for _ in steps:
            n += 1
        c2, t2 = time.process_time(), time.perf_counter()
        mx.clear_cache()
        return {"prefill_wall": p["prompt_len"] / (t1 - t0), "prefill_cpu": p["prompt_len"] / max(c1 - c0, 1e-9),
                "decode_wall": n / (t2 - t1), "decode_cpu": n / max(c2 - c1, 1e-9)}

    once()  # warm-up
    for _ in range(p["repeats"]):
        for k, v in once().items():
            best[k] = max(best.get(k, 0.0), v)
    print(json.dumps(best))


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("reference", "worker", "perf"))
    ap.add_argument("--config", required=True)
    ap.add_argument("--requests")
    ap.add_argument("--out")
    a = ap.parse_args()
    cfg = read_json(a.config)
    if a.mode == "reference":
        reference(cfg, a.out)
    elif a.mode == "worker":
        worker(cfg, read_json(a.requests))
    else:
        perf(cfg)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
