"""The ``finetune_lora`` step: LoRA supervised fine-tuning with peft and transformers' Trainer.

- **Data**: ``train_file`` is JSONL chat records (``pipeline.jobs.datasets``). Each is rendered
  with the model's own chat template; the loss is on the assistant's turns only (their text and
  the end-of-turn token), found by character offsets, so the prompt is context, not a target.
- **Progress**: one line per optimizer step with ``step``, ``steps``, ``loss``, ``learning_rate``.
- **Checkpoints** every ``save_steps`` in ``checkpoints`` (adapter, optimizer, scheduler, RNG),
  the last ``keep_checkpoints`` kept; ``resume`` goes on from one (the same step, data order and
  learning-rate schedule). **SIGTERM** (the job's cancel) stops at the end of the current step,
  saves a checkpoint there and exits without merging.
- **Result**: the adapter merged into the base (``merge_and_unload``), saved as a Hugging Face
  folder with the base's tokenizer files; the adapter alone beside the checkpoints; the loss
  curve as ``loss.png`` (drawn at every checkpoint and at the end) and ``loss.json``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

from pipeline.jobs.steps.protocol import StepError, log, progress, threads, tokenizer_files_copy

LOAD_SPAN, TRAIN_SPAN = (0.0, 3.0), (3.0, 95.0)


class _Stop:
    requested = False


def _on_sigterm(signum: int, frame: Any) -> None:
    if not _Stop.requested:
        print("stop requested: finishing this step, then saving a checkpoint", flush=True)
    _Stop.requested = True


def encode(tokenizer: Any, messages: list[dict[str, str]], max_length: int) -> dict[str, list[int]] | None:
    """Token ids and labels (-100 outside the assistant's turns) of one conversation, or None when
    nothing is left to learn after cutting it to ``max_length`` tokens."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True))
        upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not text.startswith(upto):
            raise StepError("the chat template does not render a conversation as a prefix of the next turn")
        spans.append((start, len(upto)))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"][:max_length]
    labels = []
    for token, (lo, hi) in zip(ids, enc["offset_mapping"][:max_length], strict=False):
        inside = any(lo >= s and hi <= e and hi > lo for s, e in spans)
        labels.append(token if inside else -100)
    if all(label == -100 for label in labels):
        return None
    return {"input_ids": ids, "labels": labels}


def loss_plot(history: list[list[float]], path: Path, title: str) -> None:
    """The loss by step, and its moving average, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    steps = [h[0] for h in history]
    losses = [h[1] for h in history]
    window = max(1, len(losses) // 20)
    smooth = [sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1])
              for i in range(len(losses))]  # fmt: skip
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    ax.plot(steps, losses, color="#9bb7e0", linewidth=1, label="loss per step")
    ax.plot(steps, smooth, color="#1f4e9c", linewidth=2, label=f"moving average ({window})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def finetune_lora(params: dict[str, Any]) -> dict[str, Any]:
    signal.signal(signal.SIGTERM, _on_sigterm)
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    source, output = Path(params["source"]), Path(params["output"])
    checkpoints, loss_png = Path(params["checkpoints"]), Path(params["loss_png"])
    device = params.get("device", "auto")
    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise StepError("device=cuda, but this worker has no CUDA GPU (run the job on a GPU worker's queue)")
    use_cuda = cuda and device != "cpu"
    if not use_cuda:
        torch.set_num_threads(threads())
    progress(LOAD_SPAN[0], "loading the model", force=True)

    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    with open(params["train_file"], encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    examples, dropped, tokens, target_tokens = [], 0, 0, 0
    for record in records:
        item = encode(tokenizer, record["messages"], params["max_length"])
        if item is None:
            dropped += 1
            continue
        examples.append(item)
        tokens += len(item["input_ids"])
        target_tokens += sum(1 for label in item["labels"] if label != -100)
    if not examples:
        raise StepError(f"no example has assistant tokens within max_length={params['max_length']}")
    log(f"{len(examples)} examples ({dropped} dropped: nothing to learn within max_length), {tokens} tokens, "
        f"{target_tokens} of them trained on")  # fmt: skip

    model: Any = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    modules: Any = params["target_modules"]
    if modules == ["all-linear"]:
        modules = "all-linear"
    lora = LoraConfig(
        r=params["rank"], lora_alpha=params["alpha"], lora_dropout=params["dropout"], target_modules=modules,
        task_type="CAUSAL_LM",
    )  # fmt: skip
    try:
        model = get_peft_model(model, lora)
    except ValueError as exc:
        raise StepError(f"target_modules: {exc}") from None
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log(f"LoRA r={params['rank']} alpha={params['alpha']} on {modules}: {trainable:,} trainable of {total:,}")

    per_epoch = math.ceil(len(examples) / params["batch_size"])
    steps = params.get("max_steps") or max(1, math.ceil(params["epochs"] * per_epoch))
    history: list[list[float]] = []
    if params.get("resume"):
        state_file = Path(params["resume"]) / "trainer_state.json"
        if state_file.is_file():  # the curve goes on from where the earlier job left it
            earlier = json.loads(state_file.read_text()).get("log_history", [])
            history = [[h["step"], h["loss"]] for h in earlier if "loss" in h]
    title = f"LoRA r={params['rank']} on {params.get('source_name') or source.name}: {len(examples)} examples"

    def pad(batch: list[dict[str, list[int]]]) -> dict[str, Any]:
        width = max(len(b["input_ids"]) for b in batch)
        pad_id = tokenizer.pad_token_id
        ids = [b["input_ids"] + [pad_id] * (width - len(b["input_ids"])) for b in batch]
        labels = [b["labels"] + [-100] * (width - len(b["labels"])) for b in batch]
        mask = [[1] * len(b["input_ids"]) + [0] * (width - len(b["input_ids"])) for b in batch]
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}

    class Report(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if not logs or "loss" not in logs:
                return
            loss = float(logs["loss"])
            history.append([state.global_step, round(loss, 4)])
            lr = float(logs.get("learning_rate", 0.0))
            percent = TRAIN_SPAN[0] + (TRAIN_SPAN[1] - TRAIN_SPAN[0]) * state.global_step / steps
            metrics = {"step": state.global_step, "steps": steps, "loss": round(loss, 4), "learning_rate": lr,
                       "epoch": round(float(logs.get("epoch", state.epoch or 0)), 3)}  # fmt: skip
            progress(percent, f"step {state.global_step}/{steps} · loss {loss:.3f}", metrics=metrics)
            log(f"step {state.global_step}/{steps} loss {loss:.4f} lr {lr:.3g} epoch {metrics['epoch']}")

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if _Stop.requested:
                control.should_save = True
                control.should_training_stop = True

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            log(f"checkpoint saved at step {state.global_step}")
            loss_plot(history, loss_png, title)

    args = TrainingArguments(
        output_dir=str(checkpoints), per_device_train_batch_size=params["batch_size"], max_steps=steps,
        learning_rate=params["learning_rate"], lr_scheduler_type="cosine", warmup_steps=max(1, round(0.05 * steps)),
        weight_decay=0.0, logging_steps=1, save_strategy="steps", save_steps=params["save_steps"],
        save_total_limit=params["keep_checkpoints"], seed=params["seed"], data_seed=params["seed"],
        report_to="none", disable_tqdm=True, dataloader_num_workers=0, remove_unused_columns=False,
        use_cpu=not use_cuda, bf16=bool(use_cuda and torch.cuda.is_bf16_supported()),
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=examples, data_collator=pad, callbacks=[Report()])
    trainer.remove_callback(PrinterCallback)  # Report logs each step in one line instead
    progress(TRAIN_SPAN[0], f"training: {steps} steps on {'cuda' if use_cuda else 'cpu'}", force=True)
    started = time.monotonic()
    state = trainer.train(resume_from_checkpoint=params.get("resume") or None)
    seconds = round(time.monotonic() - started, 1)
    loss_plot(history, loss_png, title)
    loss_png.with_suffix(".json").write_text(json.dumps(history))
    found = sorted(checkpoints.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    summary: dict[str, Any] = {
        "steps": trainer.state.global_step, "planned_steps": steps, "examples": len(examples),
        "dropped_examples": dropped, "tokens": tokens, "trained_tokens": target_tokens,
        "trainable_params": trainable, "total_params": total, "device": "cuda" if use_cuda else "cpu",
        "train_seconds": seconds, "train_loss": round(float(state.training_loss), 4),
        "first_loss": history[0][1] if history else None, "last_loss": history[-1][1] if history else None,
        "loss_history": history, "resumed_from": params.get("resume"),
        "checkpoint": str(found[-1]) if found else None, "loss_png": str(loss_png),
    }  # fmt: skip
    if _Stop.requested:
        log(f"stopped at step {trainer.state.global_step}; resume from {summary['checkpoint']}")
        return {**summary, "stopped": True}

    progress(TRAIN_SPAN[1], "merging the adapter into the model", force=True)
    adapter = checkpoints.parent / "adapter"
    model.save_pretrained(str(adapter))
    merged = model.merge_and_unload()
    output.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(output))
    copied = tokenizer_files_copy(source, output, also=("generation_config.json",))
    log(f"merged model written to {output} with {', '.join(copied)}")
    progress(100, "done", force=True)
    return {**summary, "adapter": str(adapter)}
