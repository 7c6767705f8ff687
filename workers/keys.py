"""Redis key names, in one place so producer and workers agree."""

PREFIX = "mf"


def batch(batch_id: str) -> str:
    return f"{PREFIX}:batch:{batch_id}"


def batch_model(batch_id: str, model: str) -> str:
    return f"{PREFIX}:batch:{batch_id}:model:{model}"


def batch_finished(batch_id: str) -> str:
    """Pub/sub channel: a model's name each time it reaches a final state (wakes `wait`)."""
    return f"{PREFIX}:batch:{batch_id}:finished"


def batch_specs(batch_id: str) -> str:
    """Hash model name -> ModelSpec JSON as submitted, so `retry` can resend a model."""
    return f"{PREFIX}:batch:{batch_id}:specs"


def batch_runs(batch_id: str) -> str:
    return f"{PREFIX}:batch:{batch_id}:runs"


BATCHES = f"{PREFIX}:batches"
RUNS = f"{PREFIX}:runs"


def run(run_id: str) -> str:
    return f"{PREFIX}:run:{run_id}"


def model_runs(model: str) -> str:
    return f"{PREFIX}:model:{model}:runs"


CACHE = f"{PREFIX}:cache"
# "<cost class>|<stage>|s" -> seconds computed, "...|n" -> runs: what packing sizes from.
STAGE_COSTS = f"{PREFIX}:stage_costs"
CACHE_STATS = f"{PREFIX}:cache:stats"


def lease(cache_key: str) -> str:
    return f"{PREFIX}:lease:{cache_key}"


def deliveries(task_id: str) -> str:
    return f"{PREFIX}:deliveries:{task_id}"


def retry_sent(task_id: str, retries: int) -> str:
    """Set once try `retries` of the task has sent its retry: a redelivered copy of that try
    then knows the model goes on in the retry, not that the try died before sending it."""
    return f"{PREFIX}:retry_sent:{task_id}:{retries}"


def alive(task_id: str) -> str:
    """Exists while a copy of the task runs (renewed by its heartbeat): not poison, just long."""
    return f"{PREFIX}:alive:{task_id}"


# The stalled-chain sweeper's view (workers/recovery.py): members are model_ref()s.
# RUNNING: models whose stage has begun and not finished, scored by when it began;
# HANDOFFS: models between two stages (their next message is queued, or lost), scored by
# when they were handed on (or last found queued). SWEEPER: the lock one sweeper holds.
RUNNING = f"{PREFIX}:running"
HANDOFFS = f"{PREFIX}:handoffs"
# task id -> when a sweep first found its alive key gone (a suspect, until the next check).
SUSPECTS = f"{PREFIX}:running:suspects"
SWEEPER = f"{PREFIX}:sweeper"


def model_ref(batch_id: str, model: str) -> str:
    """`batch/model`: model names have no '/', so rpartition splits it back."""
    return f"{batch_id}/{model}"


MODELS = f"{PREFIX}:models"


def versions(name: str) -> str:
    return f"{PREFIX}:reg:{name}:versions"


def version_by_digest(name: str) -> str:
    return f"{PREFIX}:reg:{name}:by_digest"


def aliases(name: str) -> str:
    return f"{PREFIX}:reg:{name}:aliases"


def alias_history(name: str, alias: str) -> str:
    return f"{PREFIX}:reg:{name}:history:{alias}"


def cancelled(batch_id: str) -> str:
    return f"{PREFIX}:batch:{batch_id}:cancelled"


def batch_slots(batch_id: str) -> str:
    """Sorted set task id -> since (ms): the stages of a capped batch running now."""
    return f"{PREFIX}:batch:{batch_id}:slots"


def batch_tasks(batch_id: str) -> str:
    """model name -> JSON list of its chain's task ids, so `cancel` can revoke them."""
    return f"{PREFIX}:batch:{batch_id}:tasks"


def aliases_rev(name: str) -> str:
    """Counts a model's alias moves, so the newest journaled alias snapshot is known."""
    return f"{PREFIX}:reg:{name}:aliases_rev"


# Malformed task messages the workers refused (newest first, capped), and counts per task name.
DEAD_LETTERS = f"{PREFIX}:dead_letters"
DEAD_LETTER_COUNTS = f"{PREFIX}:dead_letters:count"

# Live worker slots (workers/slots.py): WORKERS indexes the names of registered workers;
# worker_slots(name) holds one's slots and queues, and lapses unless its worker renews it.
WORKERS = f"{PREFIX}:workers"


def worker_slots(worker: str) -> str:
    return f"{PREFIX}:worker:{worker}"
