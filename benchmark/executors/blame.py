"""Whose fault was this error: an exception raised in the submission's own code is the model's problem (one
`error:` naming the model, exit 2); anything else is fxbench's and propagates as it is (a traceback)."""

from __future__ import annotations

import contextlib
import inspect
import os
import traceback
from pathlib import Path

from ..errors import EvaluationBug, FxbenchError, ModelFailed


@contextlib.contextmanager
def model_errors(sub, where: str):
    """Turn an exception whose traceback passes through the submission's folder, or the module that defines
    its network, into ``ModelFailed``; ``sys.exit`` in model code likewise."""
    try:
        yield
    except (FxbenchError, EvaluationBug, KeyboardInterrupt):
        raise
    except SystemExit as e:
        raise ModelFailed(f"model {model_name(sub)} called sys.exit({e.code!r}) during {where}") from None
    except (Exception, RecursionError) as e:  # noqa: BLE001 - classified below
        if sub is None or not raised_by_model(e, sub):
            raise
        text = str(e)
        text = text if len(text) <= 300 else text[:300] + "..."
        raise ModelFailed(f"model {model_name(sub)} raised {type(e).__name__} during {where}: {text}") from None


def model_name(sub) -> str:
    return "?" if sub is None else f"{sub.spec.id!r} ({sub.yaml_path})"


def raised_by_model(e: BaseException, sub) -> bool:
    files = {str(Path(sub.folder).resolve())}
    for m in sub.model.net.modules():
        mod = type(m).__module__
        if mod.startswith(("torch.", "fxbench.")):
            continue
        with contextlib.suppress(TypeError, OSError):
            files.add(str(Path(inspect.getfile(type(m))).resolve()))
    for frame in traceback.extract_tb(e.__traceback__):
        f = str(Path(frame.filename).resolve())
        if any(f == x or f.startswith(x + os.sep) for x in files):
            return True
    return isinstance(e, RecursionError)  # the traceback of a deep recursion is cut; batteries do not recurse
