"""Each instance's own text (what the router embeds), recovered from a harness log.

A logged prompt holds the task description and the in-context examples, shared by all
instances of a task; embedded as a whole (and cut to the embedder's 256 tokens) every
instance of a few-shot task gets the same vector. The correctness table therefore stores the
instance's zero-shot text, and the rule that produced it (``text_rule``):

- ``doc_to_text``: lm-eval's ``doc_to_text`` of the logged task config (a Jinja template or
  a field name, rendered with lm-eval's own Jinja environment), as lm-eval renders the doc
  at ``num_fewshot`` 0 without the description;
- ``doc_to_text:function``: the same through a Python ``doc_to_text`` found (by its logged
  source) among the installed lm-eval's task modules;
- ``structure``: the in-context part cut off by the prompt's structure (the prompt ends with
  this doc's text; examples and description are joined by ``fewshot_delimiter``);
- ``tail``: last resort, the prompt's last :data:`TAIL_CHARS` characters;
- ``helm:input`` / ``helm:prompt`` (HELM adapter), ``table`` (table adapter: as given).

    >>> render = LMEvalDocText.from_config({"doc_to_text": "Q: {{q}}\\nA:"})
    >>> render({"q": "2+2?"})
    'Q: 2+2?\\nA:'
    >>> structural_texts(["Intro\\n\\nQ: 1?\\nA: 2\\n\\nQ: 3?\\nA:", "Intro\\n\\nQ: 5?\\nA:"])[0]
    ['Q: 3?\\nA:', 'Q: 5?\\nA:']
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import logging
import os
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RULE_TEMPLATE = "doc_to_text"
RULE_FUNCTION = "doc_to_text:function"
RULE_STRUCTURE = "structure"
RULE_TAIL = "tail"
RULE_HELM_INPUT = "helm:input"
RULE_HELM_PROMPT = "helm:prompt"
RULE_TABLE = "table"
TAIL_CHARS = 1000  # the "tail" rule's length: about 250 tokens, the embedder's window
DEFAULT_FEWSHOT_DELIMITER = "\n\n"  # lm-eval's TaskConfig default


def prompt_hash(prompt: str) -> str:
    """sha256 hex digest of a prompt (64 chars), as lm-eval's ``prompt_hash``."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


class Unrenderable(Exception):
    """The logged config cannot be rendered here (the reason is the message)."""


def _jinja_env() -> Any:
    """lm-eval's own Jinja environment (same filters, StrictUndefined), else an equal one."""
    try:
        from lm_eval.utils import env  # 0.4.x: module-level Environment used by apply_template

        return env
    except ImportError:  # lm-eval not installed: the same settings as lm_eval.utils.env
        from jinja2 import BaseLoader, Environment, StrictUndefined

        env = Environment(loader=BaseLoader, undefined=StrictUndefined,
                          keep_trailing_newline=True)
        env.filters["regex_replace"] = lambda s, p, r, count=0: re.sub(p, r, s, count=count)
        return env


_NOT_SOURCE = re.compile(r"\s*(?:functools\.partial\(|<function |<bound method |<built-in )")


def _looks_like_source(value: str) -> bool:
    # lm-eval's TaskConfig.to_dict writes a callable as inspect.getsource(fn)
    return value.lstrip().startswith(("def ", "@")) and "(" in value and ":" in value


@lru_cache(maxsize=1)
def _lm_eval_task_sources() -> list[tuple[Path, str]]:
    """(path, text) of every Python file under the installed ``lm_eval/tasks`` (read once)."""
    try:
        spec = importlib.util.find_spec("lm_eval")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    root = Path(list(spec.submodule_search_locations)[0]) / "tasks"
    out = []
    for folder, _dirs, names in os.walk(root):
        for name in names:
            if name.endswith(".py"):
                path = Path(folder) / name
                try:
                    out.append((path, path.read_text(encoding="utf-8")))
                except (OSError, UnicodeDecodeError):
                    continue
    return out


@lru_cache(maxsize=64)
def import_logged_function(source: str) -> Callable[..., Any]:
    """The installed lm-eval task function whose source equals ``source`` (as logged).

    Raises:
        Unrenderable: no installed task module holds exactly that function.
    """
    import inspect

    match = re.match(r"\s*(?:@[^\n]*\n\s*)*def\s+(\w+)\s*\(", source)
    if not match:
        raise Unrenderable("doc_to_text is logged as code that is not a function definition")
    name, body = match.group(1), source.strip()
    for path, text in _lm_eval_task_sources():
        if body not in text:
            continue
        try:  # how lm-eval itself loads "!function module.fn" (utils.import_function)
            module_spec = importlib.util.spec_from_file_location(
                f"_lm_router_task_{abs(hash(str(path)))}", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)  # type: ignore[union-attr]
            function = getattr(module, name)
            if inspect.getsource(function).strip() == body:
                return function
        except Exception as exc:  # a task module with missing optional dependencies
            logger.debug("%s: cannot import %s: %s", path, name, exc)
    raise Unrenderable(f"its Python doc_to_text '{name}' is not in the installed lm-eval's "
                       "task modules (a task from --include_path, or another lm-eval version)")


class _Field:
    """One logged ``doc_to_*`` value compiled once: a field name, a Jinja template, the source
    of an importable lm-eval function, or a constant (list/dict/int)."""

    def __init__(self, value: Any, env: Any, *, required: bool = False):
        self.value = value
        self.template = self.function = None
        self.error = ""
        if isinstance(value, str) and value:
            if _NOT_SOURCE.match(value):  # str() of a callable lm-eval found no source for
                self.error = f"a Python callable logged without its source ({value[:60]})"
            elif _looks_like_source(value):
                try:
                    self.function = import_logged_function(value)
                except Unrenderable as exc:
                    self.error = str(exc)
            else:
                try:
                    self.template = env.from_string(value)
                except Exception as exc:  # jinja2.TemplateSyntaxError
                    self.error = f"not a valid Jinja template: {exc}"
        if required and self.error:
            raise Unrenderable(self.error)

    def __call__(self, doc: dict[str, Any]) -> Any:
        """lm-eval's ``ConfigurableTask.doc_to_*`` dispatch (the raw value)."""
        value = self.value
        if self.function is not None:
            return self.function(doc)
        if isinstance(value, str) and value in doc:  # lm-eval: "in self.features"
            return doc[value]
        if self.template is not None:
            return self.template.render(**doc)
        if self.error:
            raise Unrenderable(self.error)
        return value


class LMEvalDocText:
    """lm-eval's ``ConfigurableTask.doc_to_text`` for one logged task config, compiled once.

    ``__call__(doc) -> str`` gives the doc's zero-shot text: what lm-eval puts after the
    description and the in-context examples. For multiple-input tasks (doc_to_text gives a
    choice index, e.g. winogrande) it is the first choice's context followed by the shared
    continuation (target_delimiter + doc_to_target): the whole first request, since twin
    docs may share the context and differ only after it.
    """

    def __init__(self, text: _Field, choice: _Field, target: _Field, target_delimiter: str,
                 rule: str):
        self._text, self._choice, self._target = text, choice, target
        self.target_delimiter = target_delimiter
        self.rule = rule
        self.context = ""  # of the last call: the part that occurs in the logged prompt

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LMEvalDocText:
        """Compile the logged ``configs.<task>``.

        Raises:
            Unrenderable: no usable doc_to_text (missing, promptsource, unimportable code).
        """
        if config.get("use_prompt"):
            raise Unrenderable(f"a promptsource template ({config['use_prompt']!r})")
        value = config.get("doc_to_text")
        if isinstance(value, int) and not isinstance(value, bool):
            raise Unrenderable("doc_to_text is a constant index")
        if not isinstance(value, str) or not value:
            raise Unrenderable("no doc_to_text in the logged config")
        env = _jinja_env()
        text = _Field(value, env, required=True)
        delimiter = config.get("target_delimiter")
        return cls(text, _Field(config.get("doc_to_choice"), env),
                   _Field(config.get("doc_to_target"), env),
                   delimiter if isinstance(delimiter, str) else " ",
                   RULE_FUNCTION if text.function is not None else RULE_TEMPLATE)

    def __call__(self, doc: dict[str, Any]) -> str:
        """The doc's zero-shot text (raises on a doc the config cannot render)."""
        text = self._text(doc)
        if isinstance(text, str) and text.isdigit() and self._choice.value is not None \
                and self._text.template is not None:
            text = ast.literal_eval(text)
        if isinstance(text, int) and not isinstance(text, bool):  # multiple inputs
            choices = self._choice(doc)
            if isinstance(choices, str):
                choices = ast.literal_eval(choices)
            if isinstance(choices, dict):
                choices = list(choices.values())
            if not isinstance(choices, list) or not choices:
                raise Unrenderable("a multiple-input task without a usable doc_to_choice")
            self.context = str(choices[0])
            return f"{self.context}{self.target_delimiter}{self._target(doc)}"
        if not isinstance(text, str):
            raise Unrenderable(f"doc_to_text gave a {type(text).__name__}, not a string")
        self.context = text
        return text


def multiple_input_text(doc_to_text: Any, task: Any, doc: dict[str, Any]) -> str:
    """A loaded lm-eval Task's zero-shot text given its ``doc_to_text(doc)`` (tasks.py):
    for multiple inputs (an int) the first context + target_delimiter + doc_to_target."""
    if isinstance(doc_to_text, int) and not isinstance(doc_to_text, bool):
        return (f"{task.doc_to_choice(doc)[0]}{task.config.target_delimiter}"
                f"{task.doc_to_target(doc)}")
    return str(doc_to_text)


def _common_suffix(texts: Sequence[str]) -> str:
    """The longest common suffix (shrinks rarely: a per-character loop only on a mismatch)."""
    suffix = texts[0]
    for text in texts:
        if text.endswith(suffix):
            continue
        n = 0
        limit = min(len(text), len(suffix))
        while n < limit and text[-1 - n] == suffix[-1 - n]:
            n += 1
        suffix = suffix[len(suffix) - n:]
        if not suffix:
            break
    return suffix


def _head_after_delimiter(prefix: str, prompts: Sequence[str], fsd: str, n_prompts: int = 20
                          ) -> str:
    """The template's head when the common prefix holds no delimiter (a description glued
    on without one, as lm-eval 0.4.13 does): the longest end of the prefix that also starts
    a part after a delimiter (an in-context example). None found: the whole prefix."""
    best = 0
    for prompt in prompts[:n_prompts]:
        pos = prompt.find(fsd)
        while pos >= 0:
            part = prompt[pos + len(fsd): pos + len(fsd) + len(prefix)]
            for n in range(len(prefix), best, -1):
                if part.startswith(prefix[-n:]):
                    best = n
                    break
            pos = prompt.find(fsd, pos + len(fsd))
    return prefix[-best:] if best else prefix


def tail_text(prompt: str, n_chars: int = TAIL_CHARS) -> str:
    """The prompt's last ``n_chars`` characters, starting at a word boundary."""
    if len(prompt) <= n_chars:
        return prompt
    cut = prompt[-n_chars:]
    space = cut.find(" ")
    return cut[space + 1:] if 0 <= space < 40 else cut


def structural_texts(prompts: Sequence[str], *, fewshot_delimiter: str | None = None,
                     description: str | None = None, num_fewshot: int | None = None
                     ) -> tuple[list[str], list[str]]:
    """Cut the description and in-context examples off each prompt of one task.

    The prompts of a task share the template's head ``h`` (after the last delimiter of their
    common prefix, e.g. ``"Question: "``) and its tail ``s`` (their common suffix, e.g.
    ``"\\nAnswer:"``). An example is text + answer, so the doc's own text is the shortest
    part after a delimiter that starts with ``h`` and ends with ``s``. With one prompt,
    a known ``num_fewshot`` of 0 and the description, the description is removed; otherwise
    (and where nothing matches) the :func:`tail_text` is kept.

    Returns:
        (texts, rules): one text and one rule name (structure | tail) per prompt.
    """
    fsd = fewshot_delimiter or DEFAULT_FEWSHOT_DELIMITER
    texts: list[str] = []
    rules: list[str] = []
    if description and all(p.startswith(description) for p in prompts):
        # lm-eval 0.4.13 glues the description on without a delimiter, older ones with one
        prompts = [p[len(description):] for p in prompts]
        if all(p.startswith(fsd) for p in prompts):
            prompts = [p[len(fsd):] for p in prompts]
        description = None
    if len(set(prompts)) < 2:
        for prompt in prompts:
            if num_fewshot == 0:
                texts.append(prompt)
                rules.append(RULE_STRUCTURE)
            else:
                texts.append(tail_text(prompt))
                rules.append(RULE_TAIL)
        return texts, rules
    prefix = os.path.commonprefix(list(prompts))
    head = prefix[prefix.rfind(fsd) + len(fsd):] if fsd in prefix else _head_after_delimiter(
        prefix, prompts, fsd)
    suffix = _common_suffix(prompts)
    for prompt in prompts:
        text = None
        if not head and num_fewshot is not None:
            # no constant head to find the doc by: count delimited parts instead (the doc and
            # each example have as many)
            parts = prompt.split(fsd)
            if len(parts) % (num_fewshot + 1) == 0:
                texts.append(fsd.join(parts[-(len(parts) // (num_fewshot + 1)):]))
                rules.append(RULE_STRUCTURE)
                continue
        start = len(prompt)
        # candidate starts: after each delimiter (or 0), scanned from the end
        while True:
            start = prompt.rfind(fsd, 0, start)
            begin = 0 if start < 0 else start + len(fsd)
            rest = prompt[begin:]
            if (len(rest) >= max(len(head), len(suffix)) and rest.startswith(head)
                    and rest.endswith(suffix) and rest.strip()):
                text = rest
                break
            if start < 0:
                break
        if text is None:
            texts.append(tail_text(prompt))
            rules.append(RULE_TAIL)
        else:
            texts.append(text)
            rules.append(RULE_STRUCTURE)
    return texts, rules


__all__ = ["LMEvalDocText", "RULE_FUNCTION", "RULE_HELM_INPUT", "RULE_HELM_PROMPT",
           "RULE_STRUCTURE", "RULE_TABLE", "RULE_TAIL", "RULE_TEMPLATE", "Unrenderable",
           "import_logged_function", "multiple_input_text", "prompt_hash", "structural_texts",
           "tail_text"]
