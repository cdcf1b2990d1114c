"""Reading a pools file (``stickyip pool apply -f``): the whole file is checked before
anything is written, and every problem is reported with its line and column, unknown
keys with a "did you mean".

A file holds one pool, a list of pools, ``{pools: [...]}``, several YAML documents,
or a ConfigMap whose ``data`` values hold such documents.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from ipam import InvalidPool, IpamError, PoolSpec
from ipam.models import first_overlap

if TYPE_CHECKING:
    from collections.abc import Iterator


@dataclass(frozen=True, slots=True)
class Problem:
    line: int
    column: int
    text: str
    #: The ConfigMap ``data`` key the position is inside of, if any.
    inside: str = ""

    def __str__(self) -> str:
        where = f"ConfigMap data {self.inside!r}, " if self.inside else ""
        return f"{where}line {self.line}, column {self.column}: {self.text}"


class PoolFileInvalid(InvalidPool):
    """The pools file has problems; nothing was applied."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.problems = problems
        if len(problems) == 1:
            text = f"{source}: {problems[0]}"
        else:
            text = (f"{source} has {len(problems)} problems (nothing was applied):\n"
                    + "\n".join(f"  {p}" for p in problems))
        super().__init__(text)


#: Keys of a pool as written in a file (the aliases), and the field names they map to.
KEYS: dict[str, str] = {
    (field.alias or name): name for name, field in PoolSpec.model_fields.items()}


def load_pool_file(text: str, *, source: str = "pools file") -> list[PoolSpec]:
    """Every pool of ``text``; :class:`PoolFileInvalid` lists every problem found."""
    reader = _Reader()
    pools = reader.read(text, inside="")
    if not reader.problems and not pools:
        reader.problems.append(Problem(1, 1, "the pools file holds no pool"))
    if not reader.problems:
        reader.check_together(pools)
    if reader.problems:
        raise PoolFileInvalid(source, reader.problems)
    return [spec for spec, _ in pools]


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"the value {node.value!r}"


def _suggest(key: str, choices: list[str], *, also: tuple[str, ...] = ()) -> str:
    lowered = {c.lower(): c for c in [*choices, *also]}
    close = difflib.get_close_matches(key.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean {lowered[close[0]]!r}?)" if close else \
        f" (known keys: {', '.join(choices)})"


@dataclass(slots=True)
class _Pool:
    node: yaml.MappingNode
    keys: dict[str, tuple[yaml.Node, yaml.Node]]
    inside: str


class _Reader:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def problem(self, node: yaml.Node, text: str, inside: str) -> None:
        mark = node.start_mark
        self.problems.append(Problem(mark.line + 1, mark.column + 1, text, inside))

    def read(self, text: str, *, inside: str) -> list[tuple[PoolSpec, _Pool]]:
        try:
            docs = [d for d in yaml.compose_all(text, Loader=yaml.SafeLoader) if d is not None]
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            what = e.problem or e.context or "cannot be read"
            if mark is None:
                self.problems.append(Problem(1, 1, f"not valid YAML: {what}", inside))
            else:
                self.problems.append(Problem(mark.line + 1, mark.column + 1,
                                             f"not valid YAML: {what}", inside))
            return []
        except yaml.YAMLError as e:
            self.problems.append(Problem(1, 1, f"not valid YAML: {str(e).splitlines()[0]}",
                                         inside))
            return []
        out: list[tuple[PoolSpec, _Pool]] = []
        for doc in docs:
            data = _configmap_data(doc)
            if data is not None:
                if not isinstance(data, yaml.MappingNode):
                    self.problem(doc, "a ConfigMap of pools needs a 'data' mapping", inside)
                for k, v in data.value if isinstance(data, yaml.MappingNode) else []:
                    if isinstance(v, yaml.ScalarNode):
                        out.extend(self.read(str(v.value), inside=str(k.value)))
                continue
            for node in self._pool_nodes(doc, inside):
                pool = self._pool(node, inside)
                if pool is not None:
                    out.append(pool)
        return out

    def _pool_nodes(self, doc: yaml.Node, inside: str) -> Iterator[yaml.Node]:
        if isinstance(doc, yaml.SequenceNode):
            yield from doc.value
            return
        if not isinstance(doc, yaml.MappingNode):
            yield doc  # reported by _pool
            return
        keys = {k.value: v for k, v in doc.value if isinstance(k, yaml.ScalarNode)}
        if "pools" not in keys:
            yield doc  # one pool
            return
        for k, _ in doc.value:
            if k.value != "pools":
                self.problem(k, f"unknown key {k.value!r} next to 'pools'", inside)
        pools = keys["pools"]
        if isinstance(pools, yaml.SequenceNode):
            yield from pools.value
        else:
            self.problem(pools, f"'pools' must be a list of pools, got {_kind(pools)}", inside)

    def _pool(self, node: yaml.Node, inside: str) -> tuple[PoolSpec, _Pool] | None:
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, f"a pool must be a mapping (name, cidr, ...), got {_kind(node)}",
                         inside)
            return None
        keys: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        name_node = next((v for k, v in node.value if k.value == "name"), None)
        label = f"pool {name_node.value!r}" if isinstance(name_node, yaml.ScalarNode) \
            else "pool"
        ok = True
        for k, v in node.value:
            key = str(k.value)
            if key not in KEYS and key not in KEYS.values():
                self.problem(k, f"{label}: unknown key {key!r}"
                             + _suggest(key, list(KEYS), also=("pools",)), inside)
                ok = False
            elif key in keys:
                self.problem(k, f"{label}: key {key!r} is given twice", inside)
                ok = False
            else:
                keys[key] = (k, v)
        data = {key: _construct(v) for key, (_, v) in keys.items()}
        pool = _Pool(node=node, keys=keys, inside=inside)
        try:
            spec = PoolSpec.model_validate(data)
        except ValidationError as e:
            for err in e.errors(include_url=False):
                field = str(err["loc"][0]) if err["loc"] else ""
                where = self._key_node(pool, field, value=True) or node
                if err["type"] == "missing":
                    if ok:  # else the unknown key's "did you mean" says it already
                        self.problem(node, f"{label}: the key {_alias(field)!r} is required",
                                     inside)
                else:
                    msg = str(err["msg"]).removeprefix("Value error, ")
                    self.problem(where, f"{label}: invalid {_alias(field)}: {msg}", inside)
            return None
        # The range (reported at 'cidr'), then the exclusions within it (at 'exclude').
        for field, check in (("cidr", spec.geometry), ("exclude", spec.excluded_offsets)):
            try:
                check()
            except IpamError as e:
                self.problem(self._key_node(pool, field, value=True) or node,
                             f"pool {spec.name!r}: {e}", inside)
                return None
        return (spec, pool) if ok else None

    def _key_node(self, pool: _Pool, field: str, *, value: bool) -> yaml.Node | None:
        for written in (_alias(field), field):
            if written in pool.keys:
                k, v = pool.keys[written]
                return v if value else k
        return None

    def check_together(self, pools: list[tuple[PoolSpec, _Pool]]) -> None:
        first: dict[str, _Pool] = {}
        for i, (spec, pool) in enumerate(pools):
            if spec.name in first:
                seen = first[spec.name]
                self.problem(self._key_node(pool, "name", value=True) or pool.node,
                             f"pool {spec.name!r} is defined twice in the file (first at "
                             f"line {seen.node.start_mark.line + 1})", pool.inside)
                continue
            first[spec.name] = pool
            later = [s for s, _ in pools[i + 1:]]
            other = first_overlap(spec, later)
            if other is not None:
                self.problem(self._key_node(pool, "cidr", value=True) or pool.node,
                             f"pools {spec.name!r} ({spec.cidr}) and {other.name!r} "
                             f"({other.cidr}) overlap in the file", pool.inside)


def _alias(field: str) -> str:
    info = PoolSpec.model_fields.get(field)
    return (info.alias or field) if info is not None else field


def _configmap_data(doc: yaml.Node) -> yaml.Node | None:
    """A ConfigMap's ``data`` node (an empty scalar when it has none); None for a
    document that is not a ConfigMap."""
    if not isinstance(doc, yaml.MappingNode):
        return None
    keys = {k.value: v for k, v in doc.value if isinstance(k, yaml.ScalarNode)}
    kind = keys.get("kind")
    if not (isinstance(kind, yaml.ScalarNode) and kind.value == "ConfigMap"):
        return None
    return keys.get("data") or yaml.ScalarNode("tag:yaml.org,2002:null", "",
                                                 doc.start_mark, doc.end_mark)


def _construct(node: yaml.Node) -> Any:
    return yaml.SafeLoader("").construct_document(node)
