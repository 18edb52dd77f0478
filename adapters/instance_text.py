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


class LMEvalDocText:
    """lm-eval's ``ConfigurableTask.doc_to_text`` for one logged task config, compiled once.

    ``__call__(doc) -> str`` gives the doc's zero-shot text: what lm-eval puts after the
    description and the in-context examples. For multiple-input tasks (doc_to_text gives a
    choice index, e.g. winogrande) it is the first choice's context, as the first request.
    """

    def __init__(self, doc_to_text: Any, doc_to_choice: Any = None, *, rule: str = RULE_TEMPLATE,
                 template: Any = None, function: Callable[..., Any] | None = None,
                 choice_template: Any = None, choice_function: Callable[..., Any] | None = None):
        self.doc_to_text = doc_to_text
        self.doc_to_choice = doc_to_choice
        self.rule = rule
        self._template = template
        self._function = function
        self._choice_template = choice_template
        self._choice_function = choice_function

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LMEvalDocText:
        """Compile the logged ``configs.<task>``.

        Raises:
            Unrenderable: no usable doc_to_text (missing, promptsource, unimportable code).
        """
        if config.get("use_prompt"):
            raise Unrenderable(f"a promptsource template ({config['use_prompt']!r})")
        text = config.get("doc_to_text")
        if isinstance(text, int) and not isinstance(text, bool):
            raise Unrenderable("doc_to_text is a constant index")
        if not isinstance(text, str) or not text:
            raise Unrenderable("no doc_to_text in the logged config")
        env = _jinja_env()
        rule, template, function = RULE_TEMPLATE, None, None
        if _NOT_SOURCE.match(text):  # str() of a callable whose source lm-eval could not get
            raise Unrenderable(f"doc_to_text is a Python callable logged without its source "
                               f"({text[:60]})")
        if _looks_like_source(text):
            function, rule = import_logged_function(text), RULE_FUNCTION
        else:
            try:
                template = env.from_string(text)
            except Exception as exc:  # jinja2.TemplateSyntaxError
                raise Unrenderable(f"doc_to_text is not a valid Jinja template: {exc}") from exc
        choice = config.get("doc_to_choice")
        choice_template = choice_function = None
        if isinstance(choice, str) and choice:
            if _looks_like_source(choice):
                try:
                    choice_function = import_logged_function(choice)
                except Unrenderable:
                    choice_function = None  # only needed for multiple-input tasks
            else:
                try:
                    choice_template = env.from_string(choice)
                except Exception:
                    choice_template = None
        return cls(text, choice, rule=rule, template=template, function=function,
                   choice_template=choice_template, choice_function=choice_function)

    def __call__(self, doc: dict[str, Any]) -> str:
        """The doc's zero-shot text (raises on a doc the config cannot render)."""
        if self._function is not None:
            text = self._function(doc)
        elif self.doc_to_text in doc:  # a field name (lm-eval: "in self.features")
            text = doc[self.doc_to_text]
        else:
            text = self._template.render(**doc)
            if text.isdigit() and self.doc_to_choice is not None:
                text = ast.literal_eval(text)
        if isinstance(text, int) and not isinstance(text, bool):
            return str(self._choices(doc)[0])  # multiple inputs: the first request's context
        if not isinstance(text, str):
            raise Unrenderable(f"doc_to_text gave a {type(text).__name__}, not a string")
        return text

    def _choices(self, doc: dict[str, Any]) -> list[Any]:
        choice = self.doc_to_choice
        if isinstance(choice, str) and choice in doc:
            return list(doc[choice])
        if self._choice_function is not None:
            return list(self._choice_function(doc))
        if self._choice_template is not None:
            return list(ast.literal_eval(self._choice_template.render(**doc)))
        if isinstance(choice, list):
            return choice
        if isinstance(choice, dict):
            return list(choice.values())
        raise Unrenderable("a multiple-input task without a usable doc_to_choice")


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
           "import_logged_function", "prompt_hash", "structural_texts", "tail_text"]
