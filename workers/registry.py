"""Model registry: numbered versions per model name, aliases, promotion rules.

Version numbers are allocated inside one Lua script (atomic in Redis), keyed by
the evaluated artifact, so concurrent deploys never duplicate or skip a number
and re-deploying the same artifact registers nothing new.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from workers import keys
from workers.contracts import LOWER_IS_BETTER, GateSpec
from workers.journal import Journal, encoded, open_journal
from workers.store import ArtifactStore
from workers.tracking import has_tags
from workers.writes import Writes

# KEYS: by_digest, versions, models, aliases. ARGV: artifact digest, record JSON (no version),
# name, content key ('' = none). Returns {version, created (1/0), the version's record JSON,
# the model's aliases (flat)}: a deploy decides its promotion from the aliases without another trip.
# A version is found by its artifact or by its content key (same inputs, code and metrics).
_REGISTER = """
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if not existing and ARGV[4] ~= '' then existing = redis.call('HGET', KEYS[1], 'content:' .. ARGV[4]) end
if existing then
  return {tonumber(existing), 0, redis.call('HGET', KEYS[2], existing), redis.call('HGETALL', KEYS[4])}
end
local n = redis.call('HLEN', KEYS[2]) + 1
local rec = '{"version": ' .. n .. ', ' .. string.sub(ARGV[2], 2)
redis.call('HSET', KEYS[2], n, rec)
redis.call('HSET', KEYS[1], ARGV[1], n)
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'content:' .. ARGV[4], n) end
redis.call('SADD', KEYS[3], ARGV[3])
return {n, 1, rec, redis.call('HGETALL', KEYS[4])}
"""
# KEYS: aliases, history, revision counter, versions. ARGV: alias, expected current ('' = none),
# new version, push history, history key prefix. Returns '' if the alias moved meanwhile, else
# the model's aliases and their histories as JSON, numbered by a revision (newest journal copy wins).
_MOVE_ALIAS = """
if redis.call('HEXISTS', KEYS[4], ARGV[3]) == 0 then return redis.error_reply('no such version') end
local cur = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if cur ~= ARGV[2] then return '' end
if cur ~= '' and ARGV[4] == '1' then redis.call('RPUSH', KEYS[2], cur) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
local aliases = redis.call('HGETALL', KEYS[1])
local snap = {aliases = {}, history = {}, rev = redis.call('INCR', KEYS[3])}
for i = 1, #aliases, 2 do
  snap.aliases[aliases[i]] = tonumber(aliases[i + 1])
  local h = redis.call('LRANGE', ARGV[5] .. aliases[i], 0, -1)
  for j = 1, #h do h[j] = tonumber(h[j]) end
  snap.history[aliases[i]] = h
end
return cjson.encode(snap)
"""


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(gate: GateSpec, metric: str, metrics: dict[str, float],
           incumbent: dict[str, float] | None) -> Decision:
    """Whether a new version may take the alias: pass the threshold, then beat the incumbent.

    `metric` is the gate's metric (ModelSpec.gate_metric: the gate's own or the primary).
    """
    value = metrics[metric]
    lower = metric in LOWER_IS_BETTER
    if gate.threshold is not None:
        ok = value <= gate.threshold if lower else value >= gate.threshold
        if not ok:
            op = "<=" if lower else ">="
            return Decision(False, f"gate failed: {metric}={value:.4g} not {op} {gate.threshold}")
    if gate.min_improvement is not None and incumbent is not None and metric in incumbent:
        gain = (incumbent[metric] - value) if lower else (value - incumbent[metric])
        if gain < gate.min_improvement:
            return Decision(False, f"does not beat the incumbent by {gate.min_improvement} on "
                                   f"{metric} ({value:.4g} vs {incumbent[metric]:.4g})")
    return Decision(True, "gate passed")


def decided(record: dict[str, Any], gate: dict[str, Any], alias: str) -> dict[str, Any] | None:
    """The version's decision if it was taken under this gate for this alias, else None.

    A decision from before decisions named their gate counts as taken under another one.
    """
    decision = record.get("decision")
    if decision and decision.get("gate") == gate and decision.get("alias") == alias:
        return dict(decision)
    return None


def fullness(record: dict[str, Any]) -> tuple[int, int]:
    """Orders the journal's copies of one version: it only gains decisions and fields."""
    return len(record.get("decisions", [])), len(record)


class Registry:
    def __init__(self, client: redis.Redis, store: ArtifactStore, journal: Journal | None = None) -> None:
        self.r = client
        self.store = store
        self.journal = journal or open_journal(store.root)
        self._register = client.register_script(_REGISTER)
        self._move = client.register_script(_MOVE_ALIAS)

    def register(self, name: str, artifact: str, record: dict[str, Any]) -> tuple[int, bool]:
        """(version, created): a new version for a new artifact, the old one otherwise."""
        stored, created = self.register_record(name, artifact, record)
        return int(stored["version"]), created

    def register_record(self, name: str, artifact: str, record: dict[str, Any],
                        content_key: str | None = None) -> tuple[dict[str, Any], bool]:
        """(the version's record, created), in one round trip.

        An existing version with the same artifact, or the same `content_key` (training
        inputs, params, code and metrics), is returned instead of a new one.
        """
        stored, created, _ = self.register_reading_aliases(name, artifact, record, content_key)
        return stored, created

    def register_reading_aliases(self, name: str, artifact: str, record: dict[str, Any],
                                 content_key: str | None = None
                                 ) -> tuple[dict[str, Any], bool, dict[str, int]]:
        """register_record's (record, created) and the model's aliases as they were then."""
        body = json.dumps({**record, "name": name, "artifact": artifact, "created": time.time(),
                           **({"content_key": content_key} if content_key else {})})
        _, created, stored, flat = self._register(
            keys=[keys.version_by_digest(name), keys.versions(name), keys.MODELS, keys.aliases(name)],
            args=[artifact, body, name, content_key or ""])
        if created:
            self.journal.append([encoded("version", "record", stored)])
        return json.loads(stored), bool(created), {flat[i]: int(flat[i + 1]) for i in range(0, len(flat), 2)}

    def version(self, name: str, version: int) -> dict[str, Any]:
        raw = self.r.hget(keys.versions(name), str(version))
        if raw is None:
            raise KeyError(f"{name} has no version {version}")
        return dict(json.loads(raw))

    def annotate(self, name: str, version: int, record: dict[str, Any] | None = None,
                 writes: Writes | None = None, **fields: Any) -> None:
        """Add fields (e.g. the promotion decision) to a version record (`record`: as just read);
        with `writes`, queued there (sent with the step's other records) instead of sent now."""
        body = json.dumps({**(record or self.version(name, version)), **fields})
        own = writes is None
        writes = Writes(self.r, self.journal) if writes is None else writes
        writes.pipe.hset(keys.versions(name), str(version), body)
        writes.record(encoded("version", "record", body))
        if own:
            writes.execute()

    def decide_version(self, name: str, version: int, record: dict[str, Any],
                       decision: dict[str, Any], writes: Writes | None = None) -> None:
        """Record a promotion decision: the version's current one, appended to its `decisions`."""
        earlier = record.get("decisions") or ([record["decision"]] if "decision" in record else [])
        decision = {**decision, "decided": time.time()}
        self.annotate(name, version, record, writes, decision=decision, decisions=[*earlier, decision])

    def versions(self, name: str) -> list[dict[str, Any]]:
        raws = self.r.hvals(keys.versions(name))
        return sorted((json.loads(v) for v in raws), key=lambda v: v["version"])

    def names(self, tags: dict[str, str] | None = None) -> list[str]:
        """Model names, or those whose latest version carries every tag in `tags`."""
        names = sorted(n for n in self.r.smembers(keys.MODELS))
        if not tags:
            return names
        return [n for n in names if (vs := self.versions(n)) and has_tags(vs[-1], tags)]

    def aliases(self, name: str) -> dict[str, int]:
        return {k: int(v) for k, v in self.r.hgetall(keys.aliases(name)).items()}

    def history(self, name: str, alias: str) -> list[int]:
        """The versions an alias pointed at before, oldest first (rollback pops the last)."""
        return [int(v) for v in self.r.lrange(keys.alias_history(name, alias), 0, -1)]

    def resolve(self, ref: str) -> dict[str, Any]:
        """A version record from `NAME@alias`, `NAME/version` or `NAME` (latest)."""
        if "@" in ref:
            name, alias = ref.split("@", 1)
            version = self.aliases(name).get(alias)
            if version is None:
                raise KeyError(self._never_promoted(name, alias))
            return self.version(name, version)
        if "/" in ref:
            name, num = ref.split("/", 1)
            # A KeyError like every other unknown ref, so that every command answers it the same
            # way (int() would take "٣" and " 3", and raise on 5,000 digits).
            if not (num.isascii() and num.isdigit()):
                raise KeyError(f"{ref!r}: a version is a whole number, as in NAME/2 (or use NAME@ALIAS)")
            if len(num) > 18:
                raise KeyError(f"{name} has no version {num[:18]}...")
            return self.version(name, int(num))
        versions = self.versions(ref)
        if not versions:
            raise KeyError(f"no model named {ref!r}")
        return versions[-1]

    def _never_promoted(self, name: str, alias: str) -> str:
        versions = self.versions(name)
        if not versions:
            return f"no model named {name!r}"
        latest = versions[-1]
        reason = (latest.get("decision") or {}).get("reason", "no decision recorded")
        return (f"{name} was never promoted to {alias!r}: {len(versions)} version(s) registered, none "
                f"took the alias (latest, {name}/{latest['version']}: {reason}); "
                f"`modelfleet lineage {name}/{latest['version']}` shows it")

    def move_alias(self, name: str, alias: str, version: int, expected: int | None,
                   keep_history: bool = True) -> bool:
        """Point alias at version if it still points at `expected` (compare-and-set)."""
        try:
            snapshot = self._move(keys=[keys.aliases(name), keys.alias_history(name, alias),
                                        keys.aliases_rev(name), keys.versions(name)],
                                  args=[alias, "" if expected is None else str(expected), str(version),
                                        "1" if keep_history else "0", keys.alias_history(name, "")])
        except redis.exceptions.ResponseError as exc:
            if "no such version" not in str(exc):
                raise
            raise KeyError(f"{name} has no version {version}") from exc
        if snapshot:
            snap = json.loads(snapshot)
            # Lua's cjson writes an empty list as {}: a history is always a list.
            history = {a: list(h) if h else [] for a, h in snap["history"].items()}
            self.journal.append([{"kind": "aliases", "name": name, "aliases": snap["aliases"] or {},
                                  "history": history, "rev": snap["rev"]}])
        return bool(snapshot)

    def promote(self, name: str, version: int, alias: str) -> None:
        """Point alias at version by hand, whatever it points at now."""
        while not self.move_alias(name, alias, version, self.aliases(name).get(alias)):
            pass  # someone moved it between our read and write; read again

    def rollback(self, name: str, alias: str) -> int:
        """Point alias back at the version it pointed at before; returns that version."""
        current = self.aliases(name).get(alias)
        previous = self.r.rpop(keys.alias_history(name, alias))
        if previous is None or current is None:
            raise KeyError(f"{name}@{alias} has no earlier version to roll back to")
        if not self.move_alias(name, alias, int(previous), current, keep_history=False):
            self.r.rpush(keys.alias_history(name, alias), previous)
            raise RuntimeError(f"{name}@{alias} moved during rollback; try again")
        return int(previous)

    def reindex(self) -> dict[str, int]:
        """Rebuild versions, digests, names, aliases and alias history from the artifact root."""
        versions, aliases = self.stored_records()
        counts = {"models": 0, "versions": 0}
        for name in sorted(set(versions) | set(aliases)):
            pipe = self.r.pipeline(transaction=False)
            for rec in versions.get(name, {}).values():
                pipe.hset(keys.versions(name), str(rec["version"]), json.dumps(rec))
                pipe.hset(keys.version_by_digest(name), rec["artifact"], rec["version"])
                if rec.get("content_key"):
                    pipe.hset(keys.version_by_digest(name), f"content:{rec['content_key']}", rec["version"])
                counts["versions"] += 1
            pipe.sadd(keys.MODELS, name)
            if (snap := aliases.get(name)) is not None:
                pipe.delete(keys.aliases(name))
                if snap["aliases"]:
                    pipe.hset(keys.aliases(name), mapping=snap["aliases"])
                for alias, history in snap["history"].items():
                    pipe.delete(keys.alias_history(name, alias))
                    if history:
                        pipe.rpush(keys.alias_history(name, alias), *history)
                pipe.set(keys.aliases_rev(name), snap.get("rev", 0))
            pipe.execute()
            counts["models"] += 1
        return counts

    def stored_records(self) -> tuple[dict[str, dict[int, dict[str, Any]]], dict[str, dict[str, Any]]]:
        """Version records and the newest alias snapshot per model: per-file copies, then the journal."""
        versions: dict[str, dict[int, dict[str, Any]]] = {}
        aliases: dict[str, dict[str, Any]] = {}
        for relpath, rec in self.store.records("registry").items():
            parts = relpath.split("/")  # registry/<model>/<file>.json
            if len(parts) != 3:
                continue
            if parts[2] == "aliases.json":
                aliases[parts[1]] = rec
            else:
                versions.setdefault(parts[1], {})[rec["version"]] = rec
        for rec in self.journal.replay():
            if rec["kind"] == "version":
                version = rec["record"]
                have = versions.setdefault(version["name"], {})
                # A version only gains fields and decisions, so the fuller record is the newer.
                if fullness(version) >= fullness(have.get(version["version"], {})):
                    have[version["version"]] = version
            elif rec["kind"] == "aliases" and rec["rev"] >= aliases.get(rec["name"], {}).get("rev", 0):
                aliases[rec["name"]] = rec
        return versions, aliases
