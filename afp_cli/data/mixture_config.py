"""What an AFP training mixture is made of: parts, each a mode with its languages, inputs, probabilities and
prompt templates, validated.

The same dataclasses serve `afp data` (built from CLI options or part files) and a recipe's ``data.build`` section
(built from YAML), so both paths accept and reject exactly the same values.
"""

from __future__ import annotations

import math
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from afp_cli.data.hub import HubReference, is_hub_reference
from afp_cli.errors import AfpError
from afp_cli.languages import get_language

MODES = ("bilingual", "multilingual", "translation")

# The paper's CIT prompt (official src/generate_sup_data.py, "cross-lingual instruction following").
DEFAULT_TEMPLATE = "{instruction} {input} Answer in {language}: {output}"
DEFAULT_TEMPLATE_NO_INPUT = "{instruction} Answer in {language}: {output}"
# The official translation mode picks one of these two uniformly for every example.
DEFAULT_TRANSLATION_TEMPLATES = ("{input} Translate into {language}: {output}", "{input} = {output}")

_OUTPUT = "{output}"
_INSTRUCTION_FIELDS = {"instruction", "input", "language", "output"}
_TRANSLATION_FIELDS = {"input", "language", "output"}


@dataclass(frozen=True)
class Template:
    """A prompt template that ends with ``{output}``, so the prompt is exactly the text before the answer."""

    text: str

    def prompt(self, **values: str) -> str:
        return self.text[: -len(_OUTPUT)].format(**values)


def check_template(text: str, allowed: set[str], option: str) -> Template:
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as error:
        raise AfpError(f"{option}: bad template {text!r} ({error})") from None
    unknown = sorted(set(names) - allowed)
    if unknown:
        raise AfpError(f"{option}: unknown placeholder {{{unknown[0]}}} in {text!r}; use {', '.join(sorted(allowed))}")
    if not text.endswith(_OUTPUT) or names.count("output") != 1:
        raise AfpError(
            f"{option}: template {text!r} must end with {_OUTPUT} (once), so clm_prompt_len marks the prompt"
        )
    return Template(text)


@dataclass
class MixturePart:
    """One part of a mixture, built on its own (one `afp data` mode). ``languages[0]`` is the pivot: MCL pairs are
    (pivot sentence, its translation)."""

    mode: str
    languages: list[str]
    instructions: str | None = None  # folder with one {lang}.json per language, or hf://… (bilingual, multilingual)
    parallel: str | None = None  # TSV or JSON-lines translation pairs, or hf://… (translation)
    cross_prob: float = 0.5  # share of CIT examples answered in another language than the question's
    change_prob: float = 0.5  # multilingual: other->pivot instead of pivot->other; translation: swap direction
    repeat: float = 1.0  # examples = int(repeat * usable source records)
    seed: int = 0
    template: str = DEFAULT_TEMPLATE
    template_no_input: str = DEFAULT_TEMPLATE_NO_INPUT
    translation_templates: list[str] = field(default_factory=lambda: list(DEFAULT_TRANSLATION_TEMPLATES))
    audit_fields: bool = True  # add src_lang, tgt_lang, id, sent0_lang, sent1_lang after the official four fields

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise AfpError(f"mode: unknown mode '{self.mode}'; use one of {', '.join(MODES)}")
        self.languages = [get_language(code).code for code in self.languages]
        self._check_languages()
        self._check_source()
        for name in ("cross_prob", "change_prob"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
                raise AfpError(f"{_option(name)}: must be a probability in [0, 1], got {value!r}")
        if isinstance(self.repeat, bool) or not isinstance(self.repeat, (int, float)) or not math.isfinite(self.repeat):
            raise AfpError(f"{_option('repeat')}: must be a positive number, got {self.repeat!r}")
        if self.repeat <= 0:
            raise AfpError(f"{_option('repeat')}: must be > 0, got {self.repeat!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise AfpError(f"{_option('seed')}: must be an integer, got {self.seed!r}")
        if not self.translation_templates:
            raise AfpError(f"{_option('translation_templates')}: give at least one template")
        self.instruction_templates()
        self.translation_template_list()

    def _check_languages(self) -> None:
        wanted = {"bilingual": "exactly 2", "translation": "exactly 2", "multilingual": "at least 2"}[self.mode]
        count_ok = len(self.languages) >= 2 if self.mode == "multilingual" else len(self.languages) == 2
        if not count_ok:
            raise AfpError(f"languages: {self.mode} mode needs {wanted} languages, got {len(self.languages)}")
        repeated = sorted({code for code in self.languages if self.languages.count(code) > 1})
        if repeated:
            raise AfpError(f"languages: '{repeated[0]}' is given twice")

    def _check_source(self) -> None:
        needed, unused = ("parallel", "instructions") if self.mode == "translation" else ("instructions", "parallel")
        if not getattr(self, needed):
            raise AfpError(f"{_option(needed)}: {self.mode} mode needs --{needed}")
        if getattr(self, unused):
            raise AfpError(f"{_option(unused)}: not used by {self.mode} mode (it reads --{needed})")
        if self.hub_reference is not None:
            self.hub_reference.configs(self.input_kind, self.languages)  # a config the layout cannot use fails now

    @property
    def input_kind(self) -> str:
        """``instructions`` or ``parallel``: the option that names this part's input."""
        return "parallel" if self.mode == "translation" else "instructions"

    @property
    def source(self) -> str:
        return getattr(self, self.input_kind)

    @property
    def hub_reference(self) -> HubReference | None:
        return HubReference.parse(self.source, _option(self.input_kind)) if is_hub_reference(self.source) else None

    @property
    def source_path(self) -> Path:
        if is_hub_reference(self.source):
            raise AssertionError(f"{self.source}: copy hub inputs to local files before reading (build.localize)")
        return Path(self.source)

    def instruction_templates(self) -> tuple[Template, Template]:
        """(with input, without input)."""
        return (
            check_template(self.template, _INSTRUCTION_FIELDS, _option("template")),
            check_template(self.template_no_input, _INSTRUCTION_FIELDS - {"input"}, _option("template_no_input")),
        )

    def translation_template_list(self) -> list[Template]:
        return [
            check_template(text, _TRANSLATION_FIELDS, _option("translation_templates"))
            for text in self.translation_templates
        ]


def _option(name: str) -> str:
    """Errors name the CLI option; a recipe's ``data.<key>`` differs only in dashes."""
    return "--translation-template" if name == "translation_templates" else "--" + name.replace("_", "-")


@dataclass
class Mixture:
    """A training mixture: one or more parts, built each with its own seed and interleaved at random by ``seed``.

    The official training file is two builds concatenated and shuffled (``cat bilingual translation | shuf``,
    chongli17/CrossLingualAlignment README); a mix of those two parts is that file, streamed.
    """

    parts: list[MixturePart]
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.parts:
            raise AfpError("parts: a mixture needs at least one part")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise AfpError(f"--seed: must be an integer, got {self.seed!r}")
        if len({part.audit_fields for part in self.parts}) > 1:
            raise AfpError(
                "audit_fields: set it the same way in every part (--official-format applies to the whole file)"
            )

    @classmethod
    def from_mappings(
        cls, parts: dict[str, Any] | list[Any], seed: int, where: str = "data.build", labels: list[str] | None = None
    ) -> Mixture:
        """Parts from YAML (a recipe's ``data.build``, part files): one mapping, or a list of mappings.

        Part ``i`` gets the seed ``seed + i`` unless it sets its own, so two parts never share a random stream.
        Errors name ``labels[i]`` (e.g. the part's file), else ``where[i]``.
        """
        mappings = parts if isinstance(parts, list) else [parts]
        built = []
        for index, mapping in enumerate(mappings):
            label = labels[index] if labels else f"{where}[{index}]" if isinstance(parts, list) else where
            if not isinstance(mapping, dict):
                raise AfpError(
                    f"{label}: each part must be a mapping (mode, languages, instructions or parallel, ...), "
                    f"got {mapping!r}"
                )
            try:
                built.append(MixturePart(**{"seed": seed + index, **mapping}))
            except TypeError as error:  # an unknown key
                message = str(error).replace("MixturePart.__init__() got an ", "")
                raise AfpError(f"{label}: {message}") from None
            except AfpError as error:
                raise AfpError(f"{label}: {error}") from None
        return cls(built, seed)

    @property
    def names(self) -> list[str]:
        """One label per part for statistics: its mode, numbered when two parts share a mode."""
        counts = Counter(part.mode for part in self.parts)
        seen: Counter = Counter()
        names = []
        for part in self.parts:
            seen[part.mode] += 1
            names.append(part.mode if counts[part.mode] == 1 else f"{part.mode}-{seen[part.mode]}")
        return names

    @property
    def audit_fields(self) -> bool:
        return self.parts[0].audit_fields
