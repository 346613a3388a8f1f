"""The Python API, as RobustBench users expect it (issue 13): `fxbench.load_submission(...)` and
`fxbench.evaluate(model, ...)` for a model in memory. Both go through the same code as `fxbench run`:
evaluate() builds a `Submission` from the module and hands it to `run.run_submission`, so the result is
the very `RunResult` a run returns, computed by the same batteries on the same data.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import SubmissionError

if TYPE_CHECKING:
    import torch

    from .models.spec import InputSpec, OutputSpec
    from .models.submission import Submission
    from .run import Progress, RunResult

SUBMISSIONS = "submissions"
IN_MEMORY = "in-memory.py"  # the architecture a result names for a model evaluated from memory


def _repo_submissions() -> Path:
    return Path(__file__).resolve().parent.parent / SUBMISSIONS


def find_submission(path_or_id: str | Path) -> Path:
    """A model.yaml or its folder; else a submission id looked up in ./submissions/<id>/ and then in this
    repository's submissions/ folder."""
    path = Path(path_or_id)
    if path.exists():
        return path
    sid = str(path_or_id)
    if re.fullmatch(r"[a-z0-9][a-z0-9-]*", sid):
        for root in (Path.cwd() / SUBMISSIONS, _repo_submissions()):
            if (root / sid / "model.yaml").is_file():
                return root / sid
        raise SubmissionError(f"{sid!r}: no submission with this id in ./{SUBMISSIONS}/ or {_repo_submissions()}")
    raise SubmissionError(f"{path}: no such file or folder")


def load_submission(path_or_id: str | Path, *, trust_code: bool = False, device: str = "cpu") -> Submission:
    """Load a submission (a model.yaml, its folder, or a submission id such as `fxb-resnet10t-pgdat`) safely:
    hash-checked checkpoint, weights-only loading, entrypoints only with `trust_code`. `.model` is the
    wrapped `CanonicalModel` (canonical images N x 1 x 224 x 224 in [0, 1] -> N x 2 logits)."""
    from .models import load_submission as _load

    return _load(find_submission(path_or_id), trust_code=trust_code, device=device)


def _weights_sha256(net: torch.nn.Module) -> str:
    """A digest of the module's parameters and buffers (names, dtypes, shapes, bytes): what the result
    records as the checkpoint's sha256 for a model that has no file."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _in_memory_submission(model: torch.nn.Module, *, input: Mapping[str, Any] | InputSpec,
                          output: Mapping[str, Any] | OutputSpec, id: str, name: str | None,
                          training: Mapping[str, Any] | None, gradcam_layer: str | None, device: str) -> Submission:
    from .io import canonical_json
    from .models import resolve_device
    from .models.spec import ModelSpec
    from .models.submission import Submission, wrap_for_spec

    def plain(x: Any) -> Any:
        return x.model_dump(mode="json") if hasattr(x, "model_dump") else dict(x)

    net = copy.deepcopy(model)  # the wrapper freezes parameters and sets eval mode: never on the caller's module
    sha = _weights_sha256(net)
    input = plain(input)
    if "channels" not in input and isinstance(input.get("size"), int):  # inferred from the first convolution
        from .models.factory import input_channels

        found = input_channels(net, size=input["size"])
        if found is None:
            raise SubmissionError("fxbench.evaluate: input has no 'channels' and the model's first convolution does "
                                  "not tell: pass input={'channels': 1 or 3, ...}")
        input = {**input, "channels": found}
    doc = {
        "id": id, "name": name or f"{type(model).__name__} (in memory)", "authors": ["fxbench.evaluate"],
        "license": "unknown", "model": {"entrypoint": f"{IN_MEMORY}:{type(model).__name__}"},
        "checkpoint": {"path": "in-memory", "sha256": sha}, "input": input, "output": plain(output),
        "training": dict(training or {"adversarial": False}),
        "explain": {"gradcam_layer": gradcam_layer},
    }
    from pydantic import ValidationError

    from .models.spec import explain_validation_error

    try:
        spec = ModelSpec.model_validate(doc)
    except ValidationError as e:  # the message a model.yaml with these blocks would get
        raise SubmissionError(f"fxbench.evaluate: {explain_validation_error(e)}") from None
    target = resolve_device(device)
    try:
        wrapped = wrap_for_spec(net, spec).to(target)
    except SubmissionError as e:
        raise SubmissionError(f"fxbench.evaluate: {e}") from None
    try:  # the folder whose tracebacks are the model's fault: where its class is defined
        folder = Path(inspect.getfile(type(model))).resolve().parent
    except (TypeError, OSError):
        folder = Path(tempfile.gettempdir()) / "fxbench-in-memory-model"
    if (Path(__file__).resolve().parent / "x").is_relative_to(folder):  # never blame fxbench's own files
        folder = Path(tempfile.gettempdir()) / "fxbench-in-memory-model"
    return Submission(
        spec=spec, folder=folder, yaml_path=Path(f"<in-memory {type(model).__name__}>"),
        yaml_sha256=hashlib.sha256(canonical_json(doc).encode()).hexdigest(), checkpoint_sha256=sha,
        model=wrapped, n_parameters=sum(p.numel() for p in wrapped.net.parameters()), device=target,
    )


def evaluate(
    model: torch.nn.Module,
    *,
    input: Mapping[str, Any] | InputSpec,
    output: Mapping[str, Any] | OutputSpec | None = None,
    preset: str = "auto",
    batteries: Sequence[str] | None = None,
    device: str = "auto",
    data: str | Path | None = None,
    limit: int | None = None,
    seed: int | None = None,
    id: str = "in-memory-model",
    name: str | None = None,
    training: Mapping[str, Any] | None = None,
    gradcam_layer: str | None = None,
    out: str | Path | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Evaluate a model in memory exactly as `fxbench run` evaluates a submission, and return the same
    `RunResult` (`.result`: the result.json dict, `.samples`: the per-sample table).

    `input` / `output` are model.yaml's blocks (`{"size": 224, "channels": 1, "mean": [0.5], "std": [0.25]}`;
    `{"num_classes": 2, "fracture_index": 1}`, the default). A 3-channel network (an ImageNet-style stem) needs
    `"channels": 3` with three mean and std values: the grayscale image is repeated. Leave `channels` out to
    take it from the network's first convolution; a declared count that convolution does not take is refused
    with a message saying so. `preset`, `batteries`, `device`, `data`,
    `limit` and `seed` are `fxbench run`'s options. The model is deep-copied (your module is not frozen or
    moved). With `out=None` nothing stays on disk (`.out_dir` is None); give `out` to keep
    `OUT/<id>/result.json` and `samples.parquet` as a run writes them."""
    from .run import run_submission

    sub = _in_memory_submission(model, input=input, output=output or {"num_classes": 2}, id=id, name=name,
                                training=training, gradcam_layer=gradcam_layer, device=device)
    keep = out is not None
    folder = Path(out) if keep else Path(tempfile.mkdtemp(prefix="fxbench-evaluate-"))
    try:
        res = run_submission(sub, data=data, preset=preset, device=str(sub.device), out=folder, limit=limit,
                             seed=seed, batteries=list(batteries) if batteries else None, progress=progress)
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
    if keep:
        return res
    from dataclasses import replace

    return replace(res, out_dir=None)

