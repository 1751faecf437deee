"""Answers that are always well formed: the answer format as an automaton, enforced in decoding.

A chat VLM answers ``Passed. No defects found.`` or ``Defective. N defect(s): <pos> <kind>[
(<dir>)]; ...`` exactly as :func:`~qeu_space.vocabulary.format_answer` writes it; a Florence-2
``<OD>`` model answers ``<category><loc_a><loc_b><loc_c><loc_d>...``. Untrained or
out-of-distribution models write anything (``Defective. 3 U U U U1 ...``), so generation runs
under the grammar of the format through transformers' own hook, a
:class:`~transformers.LogitsProcessor`: at each step only the tokens that keep the decoded text a
prefix of some valid answer are allowed, and once an answer is complete only end-of-sequence is.
Every answer generated to its end is then canonical; one cut short by ``max_new_tokens`` is
incomplete and reads as unreadable, never as an answer.

Why an automaton written here rather than a library (``outlines``/``outlines-core``,
``lm-format-enforcer``, ``transformers-cfg``): the format's constraints are agreement, not shape.
``N`` must equal the number of findings listed, positions are strictly increasing (canonical order,
each pin at most once) and a bent pin alone takes a direction. As a regular expression or an EBNF
grammar that is one alternative per (count, last position) pair, tens of thousands of productions,
which those libraries compile slowly or not at all; as a choice automaton whose states carry
``(count, written, last position)`` it is the forty lines of :class:`AnswerGrammar`, and stepping
it is a dictionary look-up. The token side is the usual one: every token's text is decoded once
per tokenizer (so BPE pieces such as ``Ġ``/``▁`` and tokens spanning several grammar symbols are
read as the text they add), the texts go into a character trie, and the tokens allowed in a state
are found by walking that trie along the characters the state allows (cached per state), so a
decoding step costs a few dictionary look-ups per row. Added tokens (``<loc_123>``, ``<image>``)
are atoms: each is one private-use character, so a grammar can ask for the token itself and a
model can never spell it out of pieces.

Example:
    >>> grammar = AnswerGrammar()
    >>> grammar.accepts("Defective. 2 defects: U3 bent pin (left); C7 missing pin.")
    True
    >>> grammar.accepts("Passed. No defects found found1 defect: D7 missing pin.")
    False
    >>> grammar.accepts("Defective. 2 defects: C7 missing pin; U3 bent pin (left).")  # order
    False
"""

from __future__ import annotations

import weakref
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from qeu_space.vocabulary import (
    ALL_POSITIONS,
    LOC_BINS,
    PASSED_ANSWER,
    DefectKind,
    Direction,
)

END = None
"""The context after the last character of an answer: nothing more may follow."""
_ATOM_BASE = 0xE000  # Unicode private-use area: added tokens become one character each


class ChoiceGrammar:
    """A language written as contexts, each offering a few literal choices.

    Subclasses give :meth:`choices`: for a context, ``(text, next context)`` pairs (``END``: the
    answer is complete). Choices may share prefixes (``1 defect: `` / ``12 defects: ``): the
    automaton follows all of them at once, so a state is the set of ``(text still to write,
    next context)`` pairs alive after the characters read so far. States are interned as ints and
    every transition is cached: the automaton grows only where decoding goes.
    """

    start: Hashable = "start"

    def choices(self, context: Hashable) -> Sequence[tuple[str, Hashable]]:
        raise NotImplementedError

    def __init__(self) -> None:
        self._states: list[frozenset] = []
        self._ids: dict[frozenset, int] = {}
        self._steps: dict[tuple[int, str], int | None] = {}
        self._short: dict[Hashable, tuple[int, int]] = {}
        self._index: dict[int, dict[str, list[tuple[str, Hashable]]]] = {}
        self._contexts: dict[Hashable, int] = {}
        self.initial = self._context_state(self.start)

    # ----------------------------------------------------------------- the automaton

    def _expand(self, context: Hashable) -> frozenset:
        return frozenset((text, after) for text, after in self.choices(context))

    def _intern(self, state: frozenset) -> int:
        found = self._ids.get(state)
        if found is None:
            found = self._ids[state] = len(self._states)
            self._states.append(state)
        return found

    def step(self, state: int, char: str) -> int | None:
        """The state after ``char``, or ``None`` if no valid answer goes on with it."""
        key = (state, char)
        if key in self._steps:
            return self._steps[key]
        pairs = self._by_char(state).get(char, ())
        if len(pairs) == 1 and len(pairs[0][0]) == 1 and pairs[0][1] is not END:
            found = self._context_state(pairs[0][1])  # the common case: one choice ends here
        else:
            alive: set[tuple[str, Hashable]] = set()
            for text, after in pairs:
                if len(text) > 1:
                    alive.add((text[1:], after))
                elif after is END:
                    alive.add(("", END))
                else:
                    alive |= self._expand(after)
            found = self._intern(frozenset(alive)) if alive else None
        self._steps[key] = found
        return found

    def _by_char(self, state: int) -> dict[str, list[tuple[str, Hashable]]]:
        """A state's live choices by their next character (``<loc_N>`` states hold 1000)."""
        index = self._index.get(state)
        if index is None:
            index = self._index[state] = {}
            for text, after in self._states[state]:
                if text:
                    index.setdefault(text[0], []).append((text, after))
        return index

    def _context_state(self, context: Hashable) -> int:
        found = self._contexts.get(context)
        if found is None:
            found = self._contexts[context] = self._intern(self._expand(context))
        return found

    def _shortest(self, context: Hashable) -> tuple[int, int]:
        """(length, choice index) of the shortest text that completes an answer from
        ``context`` (memoised; iterative, since the contexts of one answer nest deeply)."""
        memo = self._short
        todo = [context]
        while todo:
            current = todo[-1]
            if current in memo or current is END:
                todo.pop()
                continue
            options = self.choices(current)
            pending = [after for _, after in options if after is not END and after not in memo]
            if pending:
                todo += pending
                continue
            memo[current] = min(
                (len(text) + (0 if after is END else memo[after][0]), n)
                for n, (text, after) in enumerate(options)
            )
            todo.pop()
        return (0, -1) if context is END else memo[context]

    def completion(self, state: int) -> str:
        """A shortest text that completes an answer from ``state`` (``""`` when complete)."""
        if self.complete(state):
            return ""
        text, after = min(
            self._states[state], key=lambda pair: len(pair[0]) + self._shortest(pair[1])[0]
        )
        parts = [text]
        while after is not END:
            text, after = self.choices(after)[self._shortest(after)[1]]
            parts.append(text)
        return "".join(parts)

    def next_chars(self, state: int) -> Iterable[str]:
        return self._by_char(state).keys()

    def complete(self, state: int) -> bool:
        """Whether the text read so far is a whole answer."""
        return ("", END) in self._states[state]

    def walk(self, text: str, state: int | None = None) -> int | None:
        """The state after ``text`` from ``state`` (default: the start), ``None`` if invalid."""
        current = self.initial if state is None else state
        for char in text:
            current = self.step(current, char)
            if current is None:
                return None
        return current

    def accepts(self, text: str) -> bool:
        """Whether ``text`` is a whole answer of the language."""
        state = self.walk(text)
        return state is not None and self.complete(state)

    def is_prefix(self, text: str) -> bool:
        """Whether some answer of the language starts with ``text``."""
        return self.walk(text) is not None

    def alphabet(self) -> set[str]:
        """Every character an answer may hold (found by exploring all contexts once)."""
        seen: set[Hashable] = set()
        chars: set[str] = set()
        todo = [self.start]
        while todo:
            context = todo.pop()
            if context in seen or context is END:
                continue
            seen.add(context)
            for text, after in self.choices(context):
                chars.update(text)
                todo.append(after)
        return chars


class AnswerGrammar(ChoiceGrammar):
    """The chat VLMs' canonical answers, exactly what :func:`~qeu_space.vocabulary.format_answer`
    writes for some findings (each pin at most once, in canonical order U..D then 1..9).

    Contexts: ``count`` (after ``Defective. ``), ``("pos", n, written, last)``, ``("kind", n,
    written, position)``, ``("after", n, written, position, directed)``. A count is offered only
    where that many findings can still follow in order, so no prefix is a dead end.

    Args:
        kinds: the defect kinds an answer may name (default: every kind of the vocabulary).
        leading_space: also accept one space before the answer (chat templates such as SmolVLM's
            end the prompt with ``Assistant:`` and the answer's first token carries the space).
    """

    def __init__(
        self, kinds: Iterable[DefectKind | str] | None = None, *, leading_space: bool = True
    ) -> None:
        chosen = {DefectKind.parse(k) for k in (DefectKind if kinds is None else kinds)}
        if not chosen:
            raise ValueError("an answer grammar needs at least one defect kind")
        self.kinds = tuple(k for k in DefectKind if k in chosen)
        self.leading_space = leading_space
        super().__init__()

    def choices(self, context: Hashable) -> Sequence[tuple[str, Hashable]]:
        slots = len(ALL_POSITIONS)
        if context == "start":
            heads = [(PASSED_ANSWER, END), ("Defective. ", "count")]
            return heads + [(" " + t, after) for t, after in heads] if self.leading_space else heads
        if context == "count":
            return [
                (f"{n} defect{'s' if n > 1 else ''}: ", ("pos", n, 0, -1))
                for n in range(1, slots + 1)
            ]
        tag, n, written, last = context[:4]
        if tag == "pos":  # room is left for the findings still to come, in order
            return [
                (f"{ALL_POSITIONS[q].name} ", ("kind", n, written + 1, q))
                for q in range(last + 1, slots - (n - written - 1))
            ]
        if tag == "kind":
            return [
                (kind.value, ("after", n, written, last, kind.has_direction)) for kind in self.kinds
            ]
        # tag == "after": a bent pin may say which way, then the next finding or the end
        follow = [("; ", ("pos", n, written, last))] if written < n else [(".", END)]
        if context[4]:
            follow += [(f" ({d.value})", ("after", n, written, last, False)) for d in Direction]
        return follow


class OdGrammar(ChoiceGrammar):
    """Florence-2 ``<OD>`` output: ``(<category><loc_a><loc_b><loc_c><loc_d>)*``.

    Categories are the vocabulary's kind names; each location is one ``<loc_N>`` token (an atom,
    ``atoms["<loc_N>"]``), never spelt out. An optional beginning-of-sequence atom may come first
    (Florence-2's decoder writes ``<s>`` before the boxes).

    Args:
        atoms: added-token text -> its one-character atom (:attr:`TokenTable.atoms`).
        kinds: the categories allowed (default: every kind of the vocabulary).
        bos: the beginning-of-sequence token's text, if the decoder may write it first.
        max_boxes: at most this many boxes (default 27: one per pin).
    """

    def __init__(
        self,
        atoms: Mapping[str, str],
        kinds: Iterable[DefectKind | str] | None = None,
        *,
        bos: str | None = None,
        max_boxes: int = len(ALL_POSITIONS),
    ) -> None:
        missing = [f"<loc_{i}>" for i in (0, LOC_BINS - 1) if f"<loc_{i}>" not in atoms]
        if missing:
            raise ValueError(
                f"the tokenizer has no {missing[0]} token: the <OD> grammar needs Florence-2's "
                "location tokens <loc_0>..<loc_999>"
            )
        chosen = {DefectKind.parse(k) for k in (DefectKind if kinds is None else kinds)}
        self.kinds = tuple(k for k in DefectKind if k in chosen)
        self.locs = tuple(atoms[f"<loc_{i}>"] for i in range(LOC_BINS))
        self.bos = atoms.get(bos) if bos else None
        self.max_boxes = max_boxes
        super().__init__()

    def choices(self, context: Hashable) -> Sequence[tuple[str, Hashable]]:
        if context == "start":
            first = self.choices(("box", 0))
            return [*first, (self.bos, ("box", 0))] if self.bos else first
        tag, boxes = context[:2]
        if tag == "box":  # another box or the end (the empty output: no defect)
            more = [(kind.value, ("loc", boxes, 4)) for kind in self.kinds]
            return [*(more if boxes < self.max_boxes else []), ("", END)]
        left = context[2]
        after = ("box", boxes + 1) if left == 1 else ("loc", boxes, left - 1)
        return [(loc, after) for loc in self.locs]


# --------------------------------------------------------------------------- tokens


class TokenTable:
    """A tokenizer's tokens as the text each adds to an answer.

    Each ordinary token is decoded after an anchor token (``decode([anchor, id])`` minus the
    anchor's text), which keeps the leading space that ``Ġ``/``▁`` pieces stand for; added tokens
    (specials, ``<loc_N>``, image tokens) become one private-use character each (:attr:`atoms`).
    """

    def __init__(self, tokenizer: Any) -> None:
        size = len(tokenizer)
        added = {int(i): str(t) for i, t in tokenizer.added_tokens_decoder.items()}
        self.atoms: dict[str, str] = {
            text: chr(_ATOM_BASE + n) for n, (_, text) in enumerate(sorted(added.items()))
        }
        anchor = _anchor_id(tokenizer, added)
        plain = [i for i in range(size) if i not in added]
        options = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}
        head = tokenizer.decode([anchor], **options)
        texts = tokenizer.batch_decode([[anchor, i] for i in plain], **options)
        self.texts: list[str | None] = [None] * size
        for i, text in zip(plain, texts, strict=True):
            if text.startswith(head) and len(text) > len(head):
                self.texts[i] = text[len(head) :]
        for i, text in added.items():
            if i < size:
                self.texts[i] = self.atoms[text]

    def trie(self, alphabet: set[str]) -> dict:
        """A character trie of the tokens made only of ``alphabet``'s characters (the others can
        never be allowed); the ids of the tokens ending at a node are under its key ``""``."""
        trie: dict = {}
        for i, text in enumerate(self.texts):
            if not text or not set(text) <= alphabet:
                continue
            node = trie
            for char in text:
                node = node.setdefault(char, {})
            node.setdefault("", []).append(i)
        return trie


def _anchor_id(tokenizer: Any, added: Mapping[int, str]) -> int:
    """An ordinary token to decode others after (a letter: every tokenizer has one)."""
    for probe in ("a", "x", "A", "0"):
        ids = tokenizer.encode(probe, add_special_tokens=False)
        if ids and ids[-1] not in added:
            return ids[-1]
    raise ValueError("cannot find an ordinary token to decode the vocabulary after")


class Constraint:
    """A grammar over one tokenizer's tokens: the tokens allowed in each state, cached."""

    def __init__(self, grammar: ChoiceGrammar, table: TokenTable) -> None:
        self.grammar, self.table = grammar, table
        self.trie = table.trie(grammar.alphabet())
        grammar.completion(grammar.initial)  # explores every context once, here, not mid-answer
        self._allowed: dict[int, torch.Tensor] = {}
        self._budget: dict[int, float] = {}
        self._costs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def transitions(self, state: int) -> list[tuple[int, int]]:
        """``(token id, state after it)`` for every token allowed in ``state``."""
        found = []
        todo = [(self.trie, state)]
        while todo:
            node, current = todo.pop()
            chars = self.grammar.next_chars(current)
            for char in node if len(node) < len(chars) else chars:  # the shorter list
                child = node.get(char) if char else None
                if child is None:
                    continue
                after = self.grammar.step(current, char)
                if after is None:
                    continue
                found += [(i, after) for i in child.get("", ())]
                todo.append((child, after))
        return found

    def allowed(self, state: int) -> torch.Tensor:
        """The ids allowed in ``state`` as a tensor (cached per state)."""
        found = self._allowed.get(state)
        if found is None:
            ids = sorted({i for i, _ in self.transitions(state)})
            found = self._allowed[state] = torch.tensor(ids, dtype=torch.long)
        return found

    def budget(self, state: int) -> float:
        """Tokens that surely complete an answer from ``state`` (``inf``: none found).

        The shortest completion text (:meth:`ChoiceGrammar.completion`) cut into the longest
        tokens the trie has, greedily. Every state on that path is noted with its own count
        (keeping the smallest ever found), so the first token of a state's path always leads to a
        state whose budget is one less: a generation that keeps within its budget can end.
        """
        known = self._budget.get(state)
        if known is not None:
            return known
        text = self.grammar.completion(state)
        path, current, at = [state], state, 0
        while at < len(text):
            node, probe, best = self.trie, current, None
            for end in range(at, len(text)):
                node = node.get(text[end])
                if node is None:
                    break
                probe = self.grammar.step(probe, text[end])
                if node.get(""):
                    best = (end + 1, probe)
            if best is None:
                self._budget[state] = float("inf")
                return float("inf")
            at, current = best
            path.append(current)
        for n, step_state in enumerate(path):
            left = len(path) - 1 - n
            self._budget[step_state] = min(self._budget.get(step_state, left), left)
        return self._budget[state]

    def allowed_within(self, state: int, tokens_left: int) -> torch.Tensor:
        """The ids allowed in ``state`` after which an answer can still end within
        ``tokens_left`` tokens (this one included)."""
        costs = self._costs.get(state)
        if costs is None:
            pairs = sorted(self.transitions(state))
            ids = torch.tensor([i for i, _ in pairs], dtype=torch.long)
            cost = torch.tensor([self.budget(after) for _, after in pairs], dtype=torch.float)
            costs = self._costs[state] = (ids, cost)
        ids, cost = costs
        return ids[cost + 1 <= tokens_left]

    def advance(self, state: int, token: int) -> int | None:
        """The state after ``token``; ``None`` if it leaves the grammar."""
        text = self.table.texts[token] if 0 <= token < len(self.table.texts) else None
        return None if text is None else self.grammar.walk(text, state)


_CONSTRAINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _cached(tokenizer: Any, key: Hashable, make: Any) -> Any:
    per = _CONSTRAINTS.setdefault(tokenizer, {})
    if key not in per:
        per[key] = make()
    return per[key]


def token_table(tokenizer: Any) -> TokenTable:
    """``tokenizer``'s :class:`TokenTable`, decoded once per tokenizer."""
    return _cached(tokenizer, "table", lambda: TokenTable(tokenizer))


def _kinds_key(kinds: Iterable[DefectKind | str] | None) -> tuple[str, ...]:
    chosen = {DefectKind.parse(k) for k in (DefectKind if kinds is None else kinds)}
    return tuple(k.value for k in DefectKind if k in chosen)


def answer_constraint(
    tokenizer: Any, kinds: Iterable[DefectKind | str] | None = None
) -> Constraint:
    """The chat-VLM answer grammar over ``tokenizer`` (built once per tokenizer and kinds)."""
    key = _kinds_key(kinds)
    return _cached(
        tokenizer,
        ("answer", key),
        lambda: Constraint(AnswerGrammar(key), token_table(tokenizer)),
    )


def od_constraint(tokenizer: Any, kinds: Iterable[DefectKind | str] | None = None) -> Constraint:
    """The Florence-2 ``<OD>`` grammar over ``tokenizer`` (built once per tokenizer and kinds)."""
    key = _kinds_key(kinds)

    def make() -> Constraint:
        table = token_table(tokenizer)
        return Constraint(OdGrammar(table.atoms, key, bos=tokenizer.bos_token), table)

    return _cached(tokenizer, ("od", key), make)


# --------------------------------------------------------------------------- the hook


class GrammarLogitsProcessor(LogitsProcessor):
    """Masks every token that would leave the grammar; only end-of-sequence once complete.

    One instance serves one ``generate`` call (it remembers the prompt length from its first
    call). Given ``max_new_tokens``, it also keeps every answer short enough to end in time (a
    random model would otherwise start ``Defective. 27 defects:`` and be cut off). Rows are
    tracked by the tokens generated so far, so batches, left padding and beam reordering need no
    bookkeeping. A row that has ended (an end-of-sequence token) may only
    pad or end again. A token outside the grammar (only possible if the caller forced one) ends
    the row: the text is then incomplete and reads as unreadable.

    Args:
        constraint: the grammar over the model's tokenizer (:func:`answer_constraint`).
        eos_token_ids: the ids that end an answer (the generation config's ``eos_token_id``).
        pad_token_id: what ``generate`` writes after a row has ended.
        max_new_tokens: the ``generate`` call's token budget (``None``: unbounded).
    """

    def __init__(
        self,
        constraint: Constraint,
        eos_token_ids: Iterable[int],
        pad_token_id: int | None = None,
        max_new_tokens: int | None = None,
    ) -> None:
        self.constraint = constraint
        self.max_new_tokens = max_new_tokens
        self.eos = torch.tensor(sorted({int(i) for i in eos_token_ids}), dtype=torch.long)
        if not len(self.eos):
            raise ValueError("grammar-constrained generation needs an end-of-sequence token id")
        ended = self.eos.tolist() + ([int(pad_token_id)] if pad_token_id is not None else [])
        self.ended = torch.tensor(sorted(set(ended)), dtype=torch.long)
        self._eos_set = set(self.eos.tolist())
        self.prompt_length: int | None = None
        self._states: dict[tuple[int, ...], int | None | str] = {(): constraint.grammar.initial}

    def _state(self, generated: tuple[int, ...]) -> int | None | str:
        """The grammar state after ``generated`` (``"ended"`` once an end token was written)."""
        known = len(generated)
        while generated[:known] not in self._states:
            known -= 1
        state = self._states[generated[:known]]
        for n in range(known, len(generated)):
            token = generated[n]
            if state == "ended" or token in self._eos_set:
                state = "ended"
            elif state is not None:
                state = self.constraint.advance(state, token)
            self._states[generated[: n + 1]] = state
        return state

    def _allowed(self, state: int, written: int) -> torch.Tensor:
        """Tokens of the grammar; with a token budget, only those after which the answer can
        still be finished in time (unless the budget was too small from the start)."""
        if self.max_new_tokens is None:
            return self.constraint.allowed(state)
        within = self.constraint.allowed_within(state, self.max_new_tokens - written)
        return within if len(within) else self.constraint.allowed(state)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
        mask = torch.full_like(scores, float("-inf"))
        grammar = self.constraint.grammar
        for row, ids in enumerate(input_ids[:, self.prompt_length :].tolist()):
            state = self._state(tuple(ids))
            if state == "ended":
                allowed = self.ended
            elif state is None:
                allowed = self.eos
            else:
                allowed = self._allowed(state, len(ids))
                if grammar.complete(state) or not len(allowed):
                    allowed = torch.cat([allowed, self.eos])
            mask[row, allowed[allowed < scores.shape[-1]].to(scores.device)] = 0
        return scores + mask


def end_token_ids(generation_config: Any, tokenizer: Any) -> list[int]:
    """The ids that end generation: the generation config's ``eos_token_id`` (an int or a list),
    else the tokenizer's end-of-sequence token."""
    eos = getattr(generation_config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return [int(eos)] if isinstance(eos, int) else [int(i) for i in eos or ()]


def logits_processor(
    constraint: Constraint,
    generation_config: Any,
    tokenizer: Any,
    max_new_tokens: int | None = None,
) -> GrammarLogitsProcessor:
    """A fresh processor for one ``generate`` call of a model with ``generation_config``."""
    pad = getattr(generation_config, "pad_token_id", None)
    if pad is None:
        pad = tokenizer.pad_token_id
    eos = end_token_ids(generation_config, tokenizer)
    return GrammarLogitsProcessor(constraint, eos, pad, max_new_tokens)


def logits_processors(
    constraint: Constraint,
    generation_config: Any,
    tokenizer: Any,
    max_new_tokens: int | None = None,
) -> LogitsProcessorList:
    """:func:`logits_processor` as ``generate(..., logits_processor=...)`` takes it (fresh per
    call: it tracks the rows of one batch)."""
    return LogitsProcessorList(
        [logits_processor(constraint, generation_config, tokenizer, max_new_tokens)]
    )
