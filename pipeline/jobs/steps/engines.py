"""The engines the ``evaluate`` step measures with: llama.cpp for GGUF, transformers for Hugging
Face folders (compressed-tensors GPTQ included) and RTN folders, optimum-intel and openvino-genai
for OpenVINO IR. Each gives token ids, logits for a perplexity window, a timed greedy run and a
sample (see ``pipeline.jobs.steps.evaluate`` for the method)."""

from __future__ import annotations

import hashlib
import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inference.llama_runtime import llama_load
from pipeline.jobs.steps.protocol import StepError, threads
from pipeline.jobs.steps.rtn import load_rtn

# ---------------------------------------------------------------- helpers


def path_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def ids_digest(ids: Sequence[int]) -> str:
    return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()[:16]


class Timer:
    """Times a token stream: call ``tick()`` once per generated token."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.stamps: list[float] = []

    def tick(self, n: int = 1) -> None:
        now = time.perf_counter()
        self.stamps.extend([now] * n)

    def rates(self, prompt_tokens: int) -> dict[str, Any]:
        out: dict[str, Any] = {"speed_prompt_tokens": prompt_tokens, "speed_generated_tokens": len(self.stamps)}
        if self.stamps:
            first = self.stamps[0] - self.start
            out["prefill_tokens_per_s"] = round(prompt_tokens / first, 1) if first > 0 else None
        if len(self.stamps) >= 2:
            span = self.stamps[-1] - self.stamps[0]
            out["decode_tokens_per_s"] = round((len(self.stamps) - 1) / span, 1) if span > 0 else None
        return out


# ---------------------------------------------------------------- engines


class Engine:
    """One loaded artifact: tokenizer ids, window logits, a timed greedy run and a chat answer."""

    context_length: int | None = None
    notes: dict[str, Any]

    def token_ids(self, text: str) -> list[int]:
        raise NotImplementedError

    def window_logits(self, ids: list[int]) -> Any:
        raise NotImplementedError

    def speed(self, prompt_ids: list[int], n: int) -> dict[str, Any]:
        raise NotImplementedError

    def sample(self, prompt: str, n: int) -> str:
        raise NotImplementedError

    def close(self) -> None:
        pass


class GGUFEngine(Engine):
    def __init__(self, path: Path, window: int) -> None:
        try:
            import llama_cpp
        except ImportError:
            raise StepError("llama-cpp-python is not installed in this environment") from None
        self._llama_cpp = llama_cpp
        self.path = path
        self.notes = {"n_threads": threads()}
        self._gen: Any = None
        meta = self._open_scoring(window).metadata
        arch = meta.get("general.architecture", "")
        ctx = meta.get(f"{arch}.context_length")
        self.context_length = int(ctx) if ctx else None
        self.window = min(window, self.context_length or window)
        if self.window != window:
            self._score.close()
            self._open_scoring(self.window)

    def _open_scoring(self, n_ctx: int) -> Any:
        try:
            self._score = llama_load(
                model_path=str(self.path),
                n_ctx=n_ctx,
                n_batch=n_ctx,
                n_ubatch=n_ctx,
                n_threads=threads(),
                logits_all=True,
                verbose=False,
            )
        except ValueError as exc:
            raise StepError(f"llama.cpp could not load {self.path}: {exc}") from exc
        return self._score

    def token_ids(self, text: str) -> list[int]:
        return list(self._score.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def window_logits(self, ids: list[int]) -> Any:
        llm = self._score
        llm.reset()
        llm.eval(ids)
        return llm.scores[: len(ids)]

    def _generator(self) -> Any:
        if self._gen is None:
            self._score.close()  # the scoring context (all logits) is not needed any more
            self._gen = llama_load(
                model_path=str(self.path),
                n_ctx=min(self.context_length or 2048, 2048),
                n_threads=threads(),
                verbose=False,
            )
        return self._gen

    def speed(self, prompt_ids: list[int], n: int) -> dict[str, Any]:
        llm = self._generator()
        llm.reset()
        timer = Timer()
        # Llama.generate yields sampled tokens until the caller stops: end-of-sequence is not special.
        for count, _token in enumerate(llm.generate(prompt_ids, temp=0.0, repeat_penalty=1.0, reset=True), 1):
            timer.tick()
            if count >= n:
                break
        return timer.rates(len(prompt_ids))

    def sample(self, prompt: str, n: int) -> str:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        llm = self._generator()
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise StepError(f"{self.path} has no chat template in its metadata")
        eos = llm.detokenize([llm.token_eos()], special=True).decode("utf-8", "replace")
        bos = llm.detokenize([llm.token_bos()], special=True).decode("utf-8", "replace")
        formatter = Jinja2ChatFormatter(
            template=template, eos_token=eos, bos_token=bos, stop_token_ids=[llm.token_eos()]
        )
        rendered = formatter(messages=[{"role": "user", "content": prompt}])
        stop = rendered.stop if isinstance(rendered.stop, list) else ([rendered.stop] if rendered.stop else [])
        tokens = llm.tokenize(rendered.prompt.encode("utf-8"), add_bos=False, special=True)
        llm.reset()
        out = llm.create_completion(prompt=tokens, max_tokens=n, temperature=0.0, repeat_penalty=1.0, stop=stop)
        return str(out["choices"][0]["text"])

    def close(self) -> None:
        for llm in (getattr(self, "_score", None), self._gen):
            if llm is not None:
                llm.close()


class _TimingStreamer:
    """A transformers streamer that stamps each generated token (the first put() is the prompt)."""

    def __init__(self, timer: Timer) -> None:
        self.timer = timer
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.timer.tick(int(value.numel()))

    def end(self) -> None:
        pass


class TorchEngine(Engine):
    """A transformers model in float32 (an HF folder, or an RTN folder through load_rtn)."""

    def __init__(self, path: Path, fmt: str) -> None:
        import torch
        from transformers import AutoTokenizer

        torch.set_grad_enabled(False)
        torch.set_num_threads(threads())
        self.path = path
        self.notes = {"dtype": "float32", "torch_threads": torch.get_num_threads()}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise StepError(f"no usable tokenizer in {path}: {exc}") from exc
        if fmt == "rtn":
            self.model = load_rtn(path)
        else:
            self.model = self._load_hf(path)
        self.model.eval()
        ctx = getattr(self.model.config, "max_position_embeddings", None)
        self.context_length = int(ctx) if ctx else None

    def _load_hf(self, path: Path) -> Any:
        import torch
        from transformers import AutoModelForCausalLM

        try:
            return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        except (OSError, ValueError, TypeError) as exc:
            # A quantized checkpoint (compressed-tensors GPTQ, ...) may insist on its own dtype.
            print(f"float32 load failed ({exc}); retrying with the checkpoint's dtype")
            try:
                model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
            except (OSError, ValueError, TypeError) as exc2:
                raise StepError(f"transformers could not load {path}: {exc2}") from exc2
            self.notes["dtype"] = str(getattr(model, "dtype", "auto"))
            return model

    def token_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def window_logits(self, ids: list[int]) -> Any:
        import torch

        input_ids = torch.tensor([ids], dtype=torch.long)
        out = self.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False)
        return out.logits[0].float().numpy()

    def _generate(self, input_ids: Any, **kwargs: Any) -> Any:
        import torch

        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        return self.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=False,
            repetition_penalty=1.0,
            pad_token_id=pad,
            **kwargs,
        )

    def speed(self, prompt_ids: list[int], n: int) -> dict[str, Any]:
        import torch

        timer = Timer()
        input_ids = torch.tensor([prompt_ids], dtype=torch.long)
        timer.start = time.perf_counter()
        self._generate(input_ids, max_new_tokens=n, min_new_tokens=n, streamer=_TimingStreamer(timer))
        return timer.rates(len(prompt_ids))

    def sample(self, prompt: str, n: int) -> str:
        import torch

        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids = torch.tensor([ids], dtype=torch.long)
        out = self._generate(input_ids, max_new_tokens=n)
        return str(self.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True))


class OpenVINOEngine(Engine):
    """Perplexity through optimum-intel (logits); speed and sample through openvino-genai."""

    def __init__(self, path: Path, precision: str) -> None:
        try:
            from optimum.intel import OVModelForCausalLM
            from transformers import AutoTokenizer
        except ImportError:
            raise StepError("optimum-intel is not installed in this environment") from None
        self.path = path
        ov_config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if precision != "default":
            ov_config["INFERENCE_PRECISION_HINT"] = precision
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise StepError(f"no Hugging Face tokenizer files in {path} (needed for perplexity): {exc}") from exc
        try:
            self.model = OVModelForCausalLM.from_pretrained(path, device="CPU", ov_config=ov_config)
        except (OSError, ValueError, RuntimeError) as exc:
            raise StepError(f"optimum-intel could not load {path}: {exc}") from exc
        self.notes = {"perplexity_engine": "optimum-intel OVModelForCausalLM", "ov_config": ov_config}
        try:
            compiled = self.model.request.get_compiled_model()
            value = compiled.get_property("INFERENCE_PRECISION_HINT")
            self.notes["perplexity_precision"] = str(getattr(value, "get_type_name", lambda: value)())
        except Exception:  # informative only
            pass
        ctx = getattr(self.model.config, "max_position_embeddings", None)
        self.context_length = int(ctx) if ctx else None
        self._pipe: Any = None

    def token_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def window_logits(self, ids: list[int]) -> Any:
        import torch

        input_ids = torch.tensor([ids], dtype=torch.long)
        # No past_key_values: the stateful model resets its KV state before this call.
        out = self.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
        logits = out.logits[0]
        return logits.numpy() if hasattr(logits, "numpy") else logits

    def _pipeline(self) -> Any:
        if self._pipe is None:
            import openvino_genai

            self.model = None  # free the optimum model before compiling the pipeline
            try:
                # As inference.backends.openvino loads it: the stateful SDPA pipeline on CPU.
                self._pipe = openvino_genai.LLMPipeline(str(self.path), "CPU", ATTENTION_BACKEND="SDPA")
            except RuntimeError as exc:
                raise StepError(f"openvino-genai could not load {self.path}: {exc}") from exc
            self._genai = openvino_genai
            self.notes["generation_engine"] = "openvino-genai LLMPipeline (SDPA, engine defaults)"
        return self._pipe

    def _config(self, n: int) -> Any:
        config = self._pipeline().get_generation_config()
        config.max_new_tokens = n
        config.do_sample = False
        config.repetition_penalty = 1.0
        return config

    def speed(self, prompt_ids: list[int], n: int) -> dict[str, Any]:
        pipe = self._pipeline()
        config = self._config(n)
        config.min_new_tokens = n
        config.ignore_eos = True
        config.apply_chat_template = False
        text = self.tokenizer.decode(prompt_ids)
        result = pipe.generate([text], config)
        metrics = result.perf_metrics
        prompt_tokens = int(metrics.get_num_input_tokens())
        generated = int(metrics.get_num_generated_tokens())
        ttft_ms = float(metrics.get_ttft().mean)
        tpot_ms = float(metrics.get_tpot().mean)
        return {
            "speed_prompt_tokens": prompt_tokens,
            "speed_generated_tokens": generated,
            "prefill_tokens_per_s": round(prompt_tokens / (ttft_ms / 1000), 1) if ttft_ms > 0 else None,
            "decode_tokens_per_s": round(1000 / tpot_ms, 1) if tpot_ms > 0 else None,
        }

    def sample(self, prompt: str, n: int) -> str:
        # The backend's plain mode (kv_cache_reuse off): render the template, generate from a fresh
        # cache. Chat mode (a ChatHistory) after the plain speed run is refused by the stateful
        # pipeline ("Chat doesn't support switching between input types"), or crashes it.
        pipe = self._pipeline()
        history = self._genai.ChatHistory([{"role": "user", "content": prompt}])
        rendered = pipe.get_tokenizer().apply_chat_template(history, add_generation_prompt=True)
        config = self._config(n)
        config.apply_chat_template = False
        result = pipe.generate([rendered], config)
        return str(result.texts[0] if result.texts else "")

    def close(self) -> None:
        self._pipe = None
        self.model = None
