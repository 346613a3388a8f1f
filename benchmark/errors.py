"""Errors a user can act on. The CLI turns them into one paragraph and exit code 2, never a traceback."""


class FxbenchError(Exception):
    """Bad input or an unusable environment: the message names the file, field or problem."""

    exit_code = 2


class DataError(FxbenchError):
    """The FracAtlas source or a prepared dataset is missing, malformed or inconsistent."""


class SubmissionError(FxbenchError):
    """A model.yaml, checkpoint or model that cannot be accepted."""


class ModelMisbehaviour(SubmissionError):
    """The model did something an evaluable classifier must not: non-finite logits or gradients, outputs that
    change between identical evaluations (random on attacked inputs), or that depend on the batch. The
    submission's fault, not fxbench's: the message names what the model did."""


class ResultError(FxbenchError):
    """A result file that fails the schema or does not belong where it was found."""


class DeviceError(FxbenchError):
    """A device that was asked for and is not available."""


class EvaluationBug(RuntimeError):
    """An internal check failed (e.g. an adversarial example that does not verify): a bug, fail loudly."""


class ModelCallTimeout(SubmissionError):
    """A call into trusted submission code ran past the model call time limit (FXBENCH_MODEL_CALL_TIMEOUT)."""


class ModelFailed(SubmissionError):
    """The submission's own code raised, recursed or called sys.exit while fxbench evaluated it."""
