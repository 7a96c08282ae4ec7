"""Prompt templates as files: Jinja, sandboxed, strict, loaded from ``prompts/`` and a user's folder.

A template is a ``NAME.jinja`` file with blocks:

- ``system`` (optional) and ``user``: the chat messages the model sees;
- ``answer_prefix`` (optional): text the assistant's answer starts with, right before the title;
- ``title_end`` (optional): the text that closes a title the model writes, when the answer goes on
  after it (a list of titles, one per line: ``{{ "\n" }}``). Without it a title is closed by the end
  of the assistant's turn. It is rendered without variables: the same for every prompt.

Templates are rendered in an immutable sandbox with ``StrictUndefined``: a misspelt variable is an
error naming the file and line, and template code cannot reach Python internals. Values a template
interpolates (catalog titles, a user's request) are data: they are rendered literally and any
special-token text in them (``<|im_start|>``) is defused so it cannot open a new chat turn.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import ChoiceLoader, FileSystemLoader, PrefixLoader, StrictUndefined

from .errors import LimitError, SecurityError, TemplateError
from .sandbox import TemplateSandbox, reaches_python

__all__ = ["Prompt", "PromptLibrary", "builtin_prompts_dir", "defuse", "to_model_text", "fit_history"]

TEMPLATE_SUFFIX = ".jinja"
_MESSAGE_BLOCKS = ("system", "user")
_ZERO_WIDTH = "\u200b"


def builtin_prompts_dir() -> Path:
    """The templates shipped with genrec (``prompts/`` in the repository, ``genrec/prompts`` when installed)."""
    installed = resources.files("genrec") / "prompts"
    if installed.is_dir():
        return Path(str(installed))
    # an editable install runs from the source tree, where prompts/ sits at the repository root
    source_tree = Path(__file__).resolve().parents[2] / "prompts"
    if source_tree.is_dir():
        return source_tree
    raise TemplateError(f"the built-in prompts folder is missing (looked in {installed} and {source_tree})")


def defuse(text: str, special_tokens: Iterable[str]) -> str:
    """Break every special-token string in ``text`` with a zero-width space, so a title or a request
    that contains ``<|im_start|>system`` stays text instead of becoming a chat turn."""
    for token in special_tokens:
        if len(token) > 1 and token in text:
            text = text.replace(token, token[0] + _ZERO_WIDTH + token[1:])
    return text


@dataclass(frozen=True)
class Prompt:
    """A rendered template: chat messages plus the text the answer starts with."""

    name: str
    messages: list[dict[str, str]]
    answer_prefix: str = ""


class PromptLibrary:
    """Templates from ``prompts_dir`` (searched first) and the built-in folder.

    A user's ``next_item.jinja`` replaces the built-in one; it can still extend the original as
    ``builtin/next_item.jinja``. Every template is compiled when the library is created, so a broken
    file fails there, with its name and line.
    """

    def __init__(
        self,
        prompts_dir: str | Path | None = None,
        *,
        special_tokens: Sequence[str] = (),
        max_render_chars: int = 200_000,
    ) -> None:
        self.builtin_dir = builtin_prompts_dir()
        self.user_dir = Path(prompts_dir) if prompts_dir is not None else None
        if self.user_dir is not None and not self.user_dir.is_dir():
            raise TemplateError(f"prompts folder not found: {self.user_dir}")
        self.special_tokens = tuple(sorted(set(special_tokens), key=len, reverse=True))
        self.max_render_chars = max_render_chars
        loaders: list[jinja2.BaseLoader] = []
        if self.user_dir is not None:
            loaders.append(FileSystemLoader(str(self.user_dir)))
        loaders.append(FileSystemLoader(str(self.builtin_dir)))
        loaders.append(PrefixLoader({"builtin": FileSystemLoader(str(self.builtin_dir))}))
        self.env = TemplateSandbox(
            max_chars=max_render_chars,
            loader=ChoiceLoader(loaders),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
            keep_trailing_newline=False,
            finalize=self._finalize,
        )
        self._templates: dict[str, jinja2.Template] = {}
        # each template's blocks and its parents', found once: finding them parses the files
        self._chains: dict[str, dict[str, list[Any]]] = {}
        for name in self.names():
            self._templates[name] = self._compile(name)
        self._title_ends = {name: self._render_title_end(name) for name in self._templates}

    def _finalize(self, value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, str) and self.special_tokens:
            return defuse(value, self.special_tokens)
        return value

    def names(self) -> list[str]:
        """Every template name available (user's and built-in)."""
        found = {p.stem for p in self.builtin_dir.glob(f"*{TEMPLATE_SUFFIX}")}
        if self.user_dir is not None:
            found |= {p.stem for p in self.user_dir.glob(f"*{TEMPLATE_SUFFIX}")}
        return sorted(found)

    def source_path(self, name: str) -> Path:
        for folder in (self.user_dir, self.builtin_dir):
            if folder is not None and (folder / f"{name}{TEMPLATE_SUFFIX}").is_file():
                return folder / f"{name}{TEMPLATE_SUFFIX}"
        raise TemplateError(f"no template named {name!r} (have: {', '.join(self.names())})")

    def source(self, name: str) -> str:
        return self.source_path(name).read_text(encoding="utf-8")

    def files(self) -> list[tuple[str, bytes]]:
        """Every file of the prompt folders (built-in, then the user's), as (relative path, bytes):
        what a template may extend or include, so what a cache of renderings depends on."""
        folders = [self.builtin_dir, *([self.user_dir] if self.user_dir is not None else [])]
        return [(str(f.relative_to(d)), f.read_bytes()) for d in folders for f in sorted(d.rglob("*")) if f.is_file()]

    def fingerprint(self, name: str) -> str:
        """A hash of a template's text, recorded with trained models."""
        import hashlib

        return hashlib.sha256(self.source(name).encode("utf-8")).hexdigest()[:16]

    def _compile(self, name: str) -> jinja2.Template:
        filename = f"{name}{TEMPLATE_SUFFIX}"
        try:
            template = self.env.get_template(filename)
        except jinja2.TemplateSyntaxError as exc:
            where = exc.filename or str(self.source_path(name))
            raise TemplateError(f"{where} line {exc.lineno}: {exc.message}") from None
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(f"{filename}: includes or extends a missing template {exc.name!r}") from None
        blocks = self._block_chain(template)
        if "user" not in blocks:
            raise TemplateError(
                f"{self.source_path(name)}: a prompt template needs a {{% block user %}} "
                f"(found blocks: {', '.join(blocks) or 'none'})"
            )
        self._chains[name] = blocks
        return template

    def _block_chain(self, template: jinja2.Template) -> dict[str, list[Any]]:
        """Block functions of a template and of every template it extends, most derived first
        (what Jinja builds while rendering a whole template, needed to render one block)."""
        chain: dict[str, list[Any]] = {}
        seen: set[str] = set()
        current: jinja2.Template | None = template
        # by file, not name: "builtin/next_item.jinja" loads under the name "next_item.jinja"
        while current is not None and (current.filename or current.name) not in seen:
            seen.add(current.filename or current.name)
            for block, func in current.blocks.items():
                chain.setdefault(block, []).append(func)
            parent = self._parent_name(current)
            try:
                current = self.env.get_template(parent) if parent else None
            except jinja2.TemplateNotFound:
                raise TemplateError(
                    f"{current.filename}: extends {parent!r}, which is not a template in the prompts folders"
                ) from None
        return chain

    def _parent_name(self, template: jinja2.Template) -> str | None:
        if template.filename is None:
            return None
        source = Path(template.filename).read_text(encoding="utf-8")
        extends = self.env.parse(source).find(jinja2.nodes.Extends)
        if extends is None:
            return None
        if not isinstance(extends.template, jinja2.nodes.Const):
            raise TemplateError(f"{template.filename}: extends must name a template literally")
        return str(extends.template.value)

    def template(self, name: str) -> jinja2.Template:
        try:
            return self._templates[name]
        except KeyError:
            raise TemplateError(f"no template named {name!r} (have: {', '.join(self.names())})") from None

    def has_block(self, name: str, block: str) -> bool:
        self.template(name)  # an unknown name is an error naming the templates there are
        return block in self._chains[name]

    def render(self, name: str, /, **context: Any) -> Prompt:
        """Render template ``name`` into chat messages. Errors name the template file and line."""
        ctx = self._new_context(name, context)
        parts: dict[str, str] = {}
        # only the blocks that make the prompt; others (a chat reply) are rendered on demand
        for block in (*_MESSAGE_BLOCKS, "answer_prefix"):
            if block in ctx.blocks:
                # the answer prefix keeps its spaces: they decide how the first title token is split
                parts[block] = self._render_block(name, block, ctx, strip=block != "answer_prefix")
        messages = [{"role": role, "content": parts[role]} for role in _MESSAGE_BLOCKS if parts.get(role)]
        if not any(m["role"] == "user" for m in messages):
            raise TemplateError(f"{self.source_path(name)}: block 'user' rendered empty")
        return Prompt(name=name, messages=messages, answer_prefix=parts.get("answer_prefix", ""))

    def title_end(self, name: str) -> str | None:
        """What closes a title written after template ``name``'s prompt (its ``title_end`` block),
        or None for the end of the assistant's turn."""
        self.template(name)  # an unknown name is an error naming the templates there are
        return self._title_ends[name]

    def _render_title_end(self, name: str) -> str | None:
        if not self.has_block(name, "title_end"):
            return None
        end = self._render_block(name, "title_end", self._new_context(name, {}), strip=False)
        if not end:
            raise TemplateError(f"{self.source_path(name)}: block 'title_end' rendered empty (a title needs an end)")
        return end

    def render_block(self, name: str, block: str, /, **context: Any) -> str:
        ctx = self._new_context(name, context)
        if block not in ctx.blocks:
            raise TemplateError(f"{self.source_path(name)}: no block {block!r}")
        return self._render_block(name, block, ctx)

    def _new_context(self, name: str, context: dict[str, Any]) -> Any:
        ctx = self.template(name).new_context(context)
        ctx.blocks = {block: list(funcs) for block, funcs in self._chains[name].items()}  # a copy: Jinja may extend it
        return ctx

    def _render_block(self, name: str, block: str, ctx: Any, strip: bool = True) -> str:
        try:
            try:
                text = "".join(ctx.blocks[block][0](ctx))
            except Exception:
                # re-raise with the traceback rewritten to template files and lines
                self.env.handle_exception()
        except jinja2.exceptions.SecurityError as exc:
            raise SecurityError(f"{self._where(name, exc)}: blocked by the template sandbox: {exc}") from None
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(
                f"{self._where(name, exc)}: includes or imports {exc.name!r}, which is not a template in the prompts folders"
            ) from None
        except jinja2.UndefinedError as exc:
            if reaches_python(exc.message or ""):
                raise SecurityError(
                    f"{self._where(name, exc)}: blocked by the template sandbox: {exc.message} "
                    f"(Python builtins and modules are not available to templates)"
                ) from None
            raise TemplateError(f"{self._where(name, exc)}: {exc.message}") from None
        except jinja2.TemplateError as exc:
            raise TemplateError(f"{self._where(name, exc)}: {exc}") from None
        except (TypeError, ValueError, AttributeError, KeyError, IndexError, ZeroDivisionError, OverflowError) as exc:
            raise TemplateError(f"{self._where(name, exc)}: {type(exc).__name__}: {exc}") from None
        except RecursionError:
            raise SecurityError(f"{self.source_path(name)}: template recursion too deep") from None
        except MemoryError:
            raise SecurityError(f"{self.source_path(name)}: template used too much memory") from None
        if len(text) > self.max_render_chars:
            raise LimitError(
                f"{self.source_path(name)}: block {block!r} rendered {len(text)} characters "
                f"(limit {self.max_render_chars})"
            )
        return text.strip() if strip else text

    def _where(self, name: str, exc: BaseException) -> str:
        """'path line N' for the deepest template frame in the traceback, else the path."""
        path = self.source_path(name)
        line = None
        for frame in traceback.extract_tb(exc.__traceback__):
            if frame.filename and frame.filename.endswith(TEMPLATE_SUFFIX):
                path, line = Path(frame.filename), frame.lineno
        return f"{path} line {line}" if line else str(path)


def to_model_text(prompt: Prompt, tokenizer: Any) -> str:
    """The exact text the model sees: the chat template when the tokenizer has one, else the
    messages joined by blank lines; followed by the answer prefix."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(prompt.messages, tokenize=False, add_generation_prompt=True)
    else:
        text = "\n\n".join(m["content"] for m in prompt.messages) + "\n"
    return text + prompt.answer_prefix


def fit_history(
    history: Sequence[Mapping[str, Any]],
    render: Callable[[Sequence[Mapping[str, Any]]], Any],
    count_tokens: Callable[[Any], int],
    budget: int,
) -> tuple[Any, int]:
    """Render with as much of ``history`` (most recent last) as fits ``budget`` tokens.

    Drops from the oldest end. Returns ``(rendered, dropped)``. Binary search: the prompt length
    grows with every kept item, so the largest fitting suffix is found in O(log n) renders.
    """
    rendered = render(history)
    if count_tokens(rendered) <= budget:
        return rendered, 0
    lo, hi = 0, len(history)  # keep the last `lo` items: fits; the last `hi` items: does not
    best = None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        candidate = render(history[len(history) - mid :])
        if count_tokens(candidate) <= budget:
            lo, best = mid, candidate
        else:
            hi = mid
    if best is None:
        best = render(history[len(history) :])
        if count_tokens(best) > budget:
            raise LimitError(
                f"the prompt does not fit the model's context even with an empty history "
                f"({count_tokens(best)} tokens, budget {budget}); shorten the request"
            )
    return best, len(history) - lo
