"""PostgREST's URL grammar, parsed into plain data: `select=`, filters, `or=()`/`and=()`, `order=`, paging.

Stage one of the pipeline (grammar -> plan -> SQL -> response): no schema cache and no SQL here, so every
rule can be tested on strings alone. Reserved characters in values are quoted with `"`; inside quotes a
backslash escapes `"` and `\\` (PostgREST's url_grammar.rst).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from kilnbase.records.errors import RecordsError, parse_error

#: Operators that compare with one value, and the SQL each renders to.
SIMPLE_OPERATORS = {
    "eq": "=",
    "neq": "<>",
    "gt": ">",
    "gte": ">=",
    "lt": "<",
    "lte": "<=",
    "like": "LIKE",
    "ilike": "ILIKE",
    "match": "~",
    "imatch": "~*",
    "isdistinct": "IS DISTINCT FROM",
    "cs": "@>",
    "cd": "<@",
    "ov": "&&",
    "sl": "<<",
    "sr": ">>",
    "nxr": "&<",
    "nxl": "&>",
    "adj": "-|-",
}
FTS_OPERATORS = {
    "fts": "to_tsquery",
    "plfts": "plainto_tsquery",
    "phfts": "phraseto_tsquery",
    "wfts": "websearch_to_tsquery",
}
QUANTIFIABLE = frozenset({"eq", "like", "ilike", "gt", "gte", "lt", "lte", "match", "imatch"})
IS_VALUES = {"null": "NULL", "not_null": "NOT NULL", "true": "TRUE", "false": "FALSE", "unknown": "UNKNOWN"}
AGGREGATES = frozenset({"count", "sum", "avg", "max", "min"})
#: How deep embeds and logic trees may nest; deeper is refused (PGRST100), never a recursion error.
MAX_DEPTH = 16
RESERVED_KEYS = frozenset({"select", "order", "limit", "offset", "on_conflict", "columns", "schema"})

#: A cast is a type name: one word, or one of Postgres's multi-word type names; never free text.
_CAST = re.compile(
    r"(?ai:[a-z_][a-z0-9_]*|double precision|character varying|bit varying"
    r"|time(stamp)? with(out)? time zone)(\[\])*"
)
_JSON_ARROW = re.compile(r"(->>|->)")
_LANGUAGE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class JsonStep:
    arrow: str  # "->" or "->>"
    key: str


@dataclass(frozen=True)
class Field:
    name: str
    json_path: tuple[JsonStep, ...] = ()

    @property
    def default_alias(self) -> str:
        """PostgREST names a JSON path output after its last key."""
        return self.json_path[-1].key if self.json_path else self.name


@dataclass(frozen=True)
class SelectColumn:
    field: Field  # `*` for `count()`
    alias: str | None = None
    cast: str | None = None  # of the column (an aggregate's input)
    aggregate: str | None = None  # count, sum, avg, max or min (`col.sum()`, `count()`)
    aggregate_cast: str | None = None  # of the aggregate's result (`col.sum()::text`)


@dataclass(frozen=True)
class SelectStar:
    pass


@dataclass(frozen=True)
class SelectEmbed:
    name: str
    alias: str | None
    hint: str | None
    join: str | None  # "inner", "left" or None
    spread: bool
    items: tuple[SelectItem, ...]

    @property
    def output_name(self) -> str:
        return self.alias or self.name


SelectItem = SelectColumn | SelectStar | SelectEmbed


@dataclass(frozen=True)
class Operation:
    operator: str
    value: str | tuple[str, ...]
    negated: bool = False
    quantifier: str | None = None  # "any" or "all"
    language: str | None = None


@dataclass(frozen=True)
class Filter:
    field: Field
    operation: Operation


@dataclass(frozen=True)
class LogicTree:
    conjunction: str  # "and" or "or"
    negated: bool
    children: tuple[Condition, ...]


Condition = Filter | LogicTree


@dataclass(frozen=True)
class OrderTerm:
    field: Field
    relation: str | None = None  # `order=author(name)`: a column of a to-one embed
    descending: bool = False
    nulls: str | None = None  # "first", "last" or None (Postgres's default)


EmbedPath = tuple[str, ...]


@dataclass
class QueryParams:
    """The query string as data. Filters, order and paging are keyed by embed path (`()` is the root)."""

    select: tuple[SelectItem, ...] = (SelectStar(),)
    select_given: bool = False
    conditions: dict[EmbedPath, list[Condition]] = field(default_factory=dict)
    order: dict[EmbedPath, list[OrderTerm]] = field(default_factory=dict)
    limit: dict[EmbedPath, int] = field(default_factory=dict)
    offset: dict[EmbedPath, int] = field(default_factory=dict)
    on_conflict: tuple[str, ...] | None = None
    columns: tuple[str, ...] | None = None
    function_args: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------
# small scanners


def _unquote(text: str) -> str:
    """`"a,b"` -> `a,b`; a backslash escapes the next character. Unquoted text is returned as is."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        body = text[1:-1]
        out: list[str] = []
        escaped = False
        for char in body:
            if escaped:
                out.append(char)
                escaped = False
            elif char == "\\":
                escaped = True
            else:
                out.append(char)
        return "".join(out)
    return text


def split_top_level(text: str, separator: str = ",") -> list[str]:
    """Split on `separator` outside double quotes and parentheses/braces."""
    parts: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    start = 0
    for index, char in enumerate(text):
        if quoted:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
            continue
        if char == '"':
            quoted = True
        elif char in "({[":
            depth += 1
        elif char in ")}]":
            depth -= 1
            if depth < 0:
                raise parse_error(f'unexpected ")" in "{text}"')
        elif char == separator and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    if quoted:
        raise parse_error(f'unclosed quote in "{text}"')
    if depth != 0:
        raise parse_error(f'unbalanced parentheses in "{text}"')
    parts.append(text[start:])
    return parts


def parse_field(text: str) -> Field:
    """`name`, `"quoted name"`, `data->a->>b`, `data->0`."""
    text = text.strip()
    if not text:
        raise parse_error("empty column name")
    pieces = _JSON_ARROW.split(text)
    name = _unquote(pieces[0].strip())
    if not name:
        raise parse_error(f'missing column name in "{text}"')
    steps: list[JsonStep] = []
    for arrow, raw_key in zip(pieces[1::2], pieces[2::2], strict=True):
        written = raw_key.strip()
        key = _unquote(written)
        if not key:
            raise parse_error(f'empty JSON key in "{text}"')
        if key == written and not key.isascii() and any(not c.isascii() and c.isdigit() for c in key):
            # `²` or `٣` is a digit to Python, not to PostgREST's grammar nor Postgres; quoted, it is a key.
            raise parse_error(
                f"failed to parse JSON path ({text})", f'"{key}" is not an array index: quote it'
            )
        steps.append(JsonStep(arrow, key))
    return Field(name, tuple(steps))


def parse_list(text: str) -> tuple[str, ...]:
    """`(a,"b,c",d)` -> ("a", "b,c", "d"); `()` is empty."""
    if len(text) < 2 or text[0] != "(" or text[-1] != ")":
        raise parse_error(f'expected a list in parentheses, got "{text}"')
    inner = text[1:-1]
    if inner.strip() == "":
        return ()
    return tuple(_unquote(part) for part in split_top_level(inner))


# ---------------------------------------------------------------------------------------------------------
# filters


_OPERATOR = re.compile(r"([a-z]+)(?:\(([^)]*)\))?")


def parse_operation(text: str, *, in_logic_tree: bool = False) -> Operation:
    """`[not.]op[(any|all|language)].value`."""
    negated = False
    if text.startswith("not."):
        negated, text = True, text[4:]
    head, dot, value = text.partition(".")
    match = _OPERATOR.fullmatch(head)
    if not dot or match is None:
        raise parse_error(f"failed to parse filter ({text})", 'expected "operator.value"')
    operator, modifier = match[1], match[2]
    quantifier = language = None
    if modifier is not None:
        if operator in FTS_OPERATORS:
            if not _LANGUAGE.fullmatch(modifier):
                raise parse_error(f"invalid text search language ({modifier})")
            language = modifier
        elif operator in QUANTIFIABLE and modifier in ("any", "all"):
            quantifier = modifier
        else:
            raise parse_error(f"failed to parse filter ({text})", f'"{operator}" takes no "({modifier})"')
    if operator == "in":
        return Operation("in", parse_list(value), negated)
    if operator == "is":
        if value.lower() not in IS_VALUES:
            raise parse_error(
                f"failed to parse filter (is.{value})", "is accepts null, not_null, true, false or unknown"
            )
        return Operation("is", value.lower(), negated)
    if operator not in SIMPLE_OPERATORS and operator not in FTS_OPERATORS:
        raise parse_error(f"failed to parse filter ({text})", f'unknown operator "{operator}"')
    if quantifier is not None:
        if not (value.startswith("{") and value.endswith("}")):
            raise parse_error(f"failed to parse filter ({text})", "(any) and (all) take a list in braces")
        items = tuple(_unquote(part) for part in split_top_level(value[1:-1])) if value != "{}" else ()
        return Operation(operator, items, negated, quantifier)
    if in_logic_tree:
        value = _unquote(value)
    return Operation(operator, value, negated, None, language)


def parse_logic_tree(conjunction: str, negated: bool, text: str, depth: int = 0) -> LogicTree:
    """`(a.eq.1,or(b.gt.2,not.and(c.lt.3,d.is.null)))`."""
    if depth > MAX_DEPTH:
        raise parse_error(f"logic trees may nest at most {MAX_DEPTH} levels deep")
    text = text.strip()
    if len(text) < 2 or text[0] != "(" or text[-1] != ")":
        raise parse_error(f'logic tree must be in parentheses: "{text}"')
    children: list[Condition] = []
    for raw in split_top_level(text[1:-1]):
        item = raw.strip()
        if not item:
            raise parse_error(f'empty condition in "{text}"')
        item_negated = False
        body = item
        if body.startswith("not."):
            item_negated, body = True, body[4:]
        nested = re.match(r"(and|or)\(", body)
        if nested:
            children.append(parse_logic_tree(nested[1], item_negated, body[len(nested[1]) :], depth + 1))
            continue
        children.append(_parse_inline_filter(item))
    if not children:
        raise parse_error("empty logic tree")
    return LogicTree(conjunction, negated, tuple(children))


def _parse_inline_filter(item: str) -> Filter:
    """`field.op.value` inside a logic tree; the field may be quoted."""
    if item.startswith('"'):
        end = 1
        while end < len(item):
            if item[end] == "\\":
                end += 2
                continue
            if item[end] == '"':
                break
            end += 1
        field_text, rest = item[: end + 1], item[end + 1 :]
        if not rest.startswith("."):
            raise parse_error(f'failed to parse logic tree item "{item}"')
        rest = rest[1:]
    else:
        # The field ends at the first "." that is not part of a JSON arrow's key.
        field_text, dot, rest = item.partition(".")
        if not dot:
            raise parse_error(f'failed to parse logic tree item "{item}"')
    return Filter(parse_field(field_text), parse_operation(rest, in_logic_tree=True))


# ---------------------------------------------------------------------------------------------------------
# select


class _SelectParser:
    def __init__(self, text: str, *, aggregates: bool = False) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0
        self.aggregates = aggregates

    def fail(self, why: str) -> RecordsError:
        return parse_error(f"failed to parse select parameter ({self.text})", why)

    def parse(self) -> tuple[SelectItem, ...]:
        items = self.items()
        if self.pos != len(self.text):
            raise self.fail(f'unexpected "{self.text[self.pos]}" at position {self.pos}')
        return items

    def items(self) -> tuple[SelectItem, ...]:
        items: list[SelectItem] = []
        while True:
            self.skip_spaces()
            if self.pos >= len(self.text) or self.text[self.pos] == ")":
                break
            items.append(self.item())
            self.skip_spaces()
            if self.pos < len(self.text) and self.text[self.pos] == ",":
                self.pos += 1
                continue
            break
        return tuple(items)

    def skip_spaces(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\n":
            self.pos += 1

    def head(self) -> str:
        """Everything up to `,`, `(`, `)` or `!`, outside quotes."""
        start = self.pos
        quoted = False
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if quoted:
                if char == "\\":
                    self.pos += 1
                elif char == '"':
                    quoted = False
            elif char == '"':
                quoted = True
            elif char in ",()!":
                break
            self.pos += 1
        if quoted:
            raise self.fail("unclosed quote")
        return self.text[start : self.pos].strip()

    def item(self) -> SelectItem:
        spread = self.text.startswith("...", self.pos)
        if spread:
            self.pos += 3
        head = self.head()
        if head == "*" and not spread:
            return SelectStar()
        at = self.text[self.pos] if self.pos < len(self.text) else ""
        if not spread and self.text.startswith("()", self.pos):
            alias, rest = _split_alias(head)
            if rest == "count" or ("." in rest and rest.rsplit(".", 1)[1] in AGGREGATES):
                return self.aggregate(alias, rest)
        if at and at in "(!":
            return self.embed(head, spread)
        if spread:
            raise self.fail("the spread operator ... applies to embedded resources only")
        if not head:
            raise self.fail("empty select item")
        return self.column(head)

    def column(self, head: str) -> SelectColumn:
        alias, rest = _split_alias(head)
        cast = None
        if "::" in rest:
            rest, cast = rest.rsplit("::", 1)
            cast = cast.strip()
            if not _CAST.fullmatch(cast):
                raise self.fail(f'invalid cast "{cast}"')
        if "." in rest and rest.rsplit(".", 1)[1] in AGGREGATES:
            raise _aggregates_disabled()
        return SelectColumn(parse_field(rest), alias, cast)

    def aggregate(self, alias: str | None, rest: str) -> SelectColumn:
        """PostgREST's aggregates: `count()`, `col.sum()`, `col::int.sum()`, `col.sum()::text` (400
        PGRST123 unless the server allows them)."""
        self.pos += 2
        if not self.aggregates:
            raise _aggregates_disabled()
        result_cast = None
        if self.text.startswith("::", self.pos):
            self.pos += 2
            start = self.pos
            while self.pos < len(self.text) and self.text[self.pos] not in ",)":
                self.pos += 1
            result_cast = self.text[start : self.pos].strip()
            if not _CAST.fullmatch(result_cast):
                raise self.fail(f'invalid cast "{result_cast}"')
        if rest == "count":
            return SelectColumn(Field("*"), alias, None, "count", result_cast)
        column, function = rest.rsplit(".", 1)
        cast = None
        if "::" in column:
            column, cast = (part.strip() for part in column.rsplit("::", 1))
            if not _CAST.fullmatch(cast):
                raise self.fail(f'invalid cast "{cast}"')
        return SelectColumn(parse_field(column.strip()), alias, cast, function, result_cast)

    def embed(self, head: str, spread: bool) -> SelectEmbed:
        alias, name = _split_alias(head)
        name = _unquote(name)
        if not name:
            raise self.fail("missing embedded resource name")
        hints: list[str] = []
        while self.pos < len(self.text) and self.text[self.pos] == "!":
            self.pos += 1
            raw_hint = self.head()
            if not raw_hint:
                raise self.fail("empty embed hint after !")
            hints.append(_unquote(raw_hint))
        if self.pos >= len(self.text) or self.text[self.pos] != "(":
            raise self.fail(f'expected "(" after "{head}"')
        aggregate = name.rsplit(".", 1)[-1] if "." in name else name
        if aggregate in AGGREGATES and self.text.startswith("()", self.pos) and not hints:
            raise _aggregates_disabled()
        self.pos += 1
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"embeds may nest at most {MAX_DEPTH} levels deep")
        items = self.items()
        self.depth -= 1
        if self.pos >= len(self.text) or self.text[self.pos] != ")":
            raise self.fail(f'missing ")" for "{name}"')
        self.pos += 1
        join: str | None = None
        hint: str | None = None
        for value in hints:
            if value in ("inner", "left"):
                join = value
            elif hint is None:
                hint = value
            else:
                raise self.fail(f'too many hints for "{name}"')
        return SelectEmbed(name, alias, hint, join, spread, items)


def _aggregates_disabled() -> RecordsError:
    return RecordsError(400, "PGRST123", "Use of aggregate functions is not allowed", None, None)


def _split_alias(head: str) -> tuple[str | None, str]:
    """`alias:name` -> ("alias", "name"); a `::` cast is not an alias separator."""
    index = 0
    while True:
        index = head.find(":", index)
        if index < 0:
            return None, head
        if head.startswith("::", index):
            index += 2
            continue
        alias = _unquote(head[:index].strip())
        if not alias:
            raise parse_error(f'empty alias in "{head}"')
        return alias, head[index + 1 :].strip()


def parse_select(text: str, *, aggregates: bool = False) -> tuple[SelectItem, ...]:
    items = _SelectParser(text, aggregates=aggregates).parse()
    return items if items else ()


# ---------------------------------------------------------------------------------------------------------
# order, paging, the whole query string


def parse_order(text: str) -> list[OrderTerm]:
    terms: list[OrderTerm] = []
    for raw in split_top_level(text):
        term = raw.strip()
        if not term:
            raise parse_error(f"failed to parse order ({text})", "empty order term")
        relation = None
        match = re.fullmatch(r"([^()]+)\(([^()]+)\)(.*)", term)
        if match:
            relation, term = _unquote(match[1].strip()), match[2] + match[3]
        field_text, *modifiers = term.split(".")
        descending = False
        nulls = None
        for modifier in modifiers:
            if modifier in ("asc", "desc"):
                descending = modifier == "desc"
            elif modifier in ("nullsfirst", "nullslast"):
                nulls = modifier[5:]
            else:
                raise parse_error(f"failed to parse order ({text})", f'unknown modifier "{modifier}"')
        terms.append(OrderTerm(parse_field(field_text), relation, descending, nulls))
    return terms


def is_ascii_digits(text: str) -> bool:
    """`0`-`9` only: `str.isdigit` alone also accepts `²`, which `int` then refuses."""
    return text.isascii() and text.isdigit()


def parse_non_negative(name: str, text: str) -> int:
    if not is_ascii_digits(text) or len(text) > 18:
        raise parse_error(f"failed to parse {name} parameter ({text})", "expected a non-negative integer")
    return int(text)


def _split_key(key: str) -> tuple[EmbedPath, str]:
    """`actors.roles.character` -> (("actors", "roles"), "character"); a JSON path stays in the field."""
    arrow = _JSON_ARROW.search(key)
    prefix, suffix = (key[: arrow.start()], key[arrow.start() :]) if arrow else (key, "")
    pieces = prefix.split(".")
    if len(pieces) >= 2 and pieces[-2] == "not" and pieces[-1] in ("or", "and") and not suffix:
        return tuple(pieces[:-2]), "not." + pieces[-1]
    return tuple(pieces[:-1]), pieces[-1] + suffix


def parse_query(
    pairs: Iterable[tuple[str, str]],
    *,
    rpc_read: bool = False,
    aggregates: bool = False,
) -> QueryParams:
    """The whole query string (repeated keys allowed) -> QueryParams; `aggregates`: whether `select=` may
    use aggregate functions.

    `rpc_read` (a function called with GET or HEAD): as PostgREST reads it, a root parameter whose value is
    not a filter (`?a=1`, `?name=Peter`) is one of the call's arguments; one that is (`?id=eq.5`) filters
    what the function returns."""
    query = QueryParams()
    for key, value in pairs:
        if key == "select":
            query.select = parse_select(value, aggregates=aggregates)
            query.select_given = True
            continue
        if key == "on_conflict":
            query.on_conflict = tuple(part.strip() for part in value.split(",") if part.strip())
            continue
        if key == "columns":
            query.columns = tuple(_unquote(part.strip()) for part in split_top_level(value) if part.strip())
            continue
        if key == "schema":
            continue
        path, last = _split_key(key)
        if last == "order":
            query.order[path] = parse_order(value)
        elif last == "limit":
            query.limit[path] = parse_non_negative("limit", value)
        elif last == "offset":
            query.offset[path] = parse_non_negative("offset", value)
        elif last in ("or", "and", "not.or", "not.and"):
            negated = last.startswith("not.")
            tree = parse_logic_tree(last.removeprefix("not."), negated, value)
            query.conditions.setdefault(path, []).append(tree)
        else:
            if not last:
                raise parse_error(f'failed to parse filter key "{key}"')
            if rpc_read and not path:
                try:
                    operation = parse_operation(value)
                except RecordsError:
                    query.function_args[key] = value
                    continue
            else:
                operation = parse_operation(value)
            query.conditions.setdefault(path, []).append(Filter(parse_field(last), operation))
    return query


_RANGE = re.compile(r"\s*(?:items=)?([0-9]{1,18})-([0-9]{0,18})\s*")


def parse_range_header(value: str) -> tuple[int, int | None]:
    """`Range: 0-9` -> (0, 9); `10-` -> (10, None). A reversed range is 416 PGRST103."""
    match = _RANGE.fullmatch(value)
    if match is None:
        raise RecordsError(
            416, "PGRST103", "Requested range not satisfiable", f"invalid Range header: {value}"
        )
    first = int(match[1])
    last = int(match[2]) if match[2] else None
    if last is not None and last < first:
        raise RecordsError(
            416,
            "PGRST103",
            "Requested range not satisfiable",
            "The lower boundary must be lower than or equal to the upper boundary in the Range header.",
        )
    return first, last
