"""What Flower and the logs show for a stage task: the stage, its model(s) and batch.

Every stage task's argsrepr (the text Celery shows for its arguments, reported in
the worker's task events) is a label like `train model=iris-tree batch=quickstart-...`
instead of a repr of the message. Flower shows it in its args column and its search
matches it, so searching a batch id lists that batch's tasks and searching a model
name its four stages. Each model is written as `model=NAME` followed by a space, so
the quoted search `"model=NAME "` matches that model only (not `NAME-2`), in a pack too.
"""

from __future__ import annotations

from collections.abc import Sequence

# Characters of model names a pack's label shows at most; the rest are counted (`+N more`).
MODELS_LIMIT = 900


def chain_label(batch_id: str, models: Sequence[str], limit: int = MODELS_LIMIT) -> str:
    """The part every stage of a chain shares: `model=A [model=B ...] batch=ID`."""
    shown: list[str] = []
    size = 0
    for name in models:
        size += len(name) + 7  # "model=" and the space
        if size > limit and shown:
            break
        shown.append(f"model={name} ")
    rest = len(models) - len(shown)
    return f"{''.join(shown)}{f'+{rest} more ' if rest else ''}batch={batch_id}"


def stage_label(stage: str, chain: str) -> str:
    """One stage's argsrepr: the stage name before its chain's label."""
    return f"{stage} {chain}"
