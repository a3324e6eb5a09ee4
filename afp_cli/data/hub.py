"""Training inputs from the Hugging Face hub: ``hf://`` references, pinned revisions, and their local copies.

A reference reads ``hf://OWNER/NAME[@CONFIG][?revision=REV&split=SPLIT&limit=N]``:

- instruction data (Bactrian-X, ``hf://MBZUAI/Bactrian-X``): one config per language, rows ``id, instruction,
  input, output``; the config is the language code, so a reference names no config;
- parallel text (OPUS-100, ``hf://Helsinki-NLP/opus-100@en-zh``): one config, rows with a ``translation`` column
  (``{"en": ..., "zh": ...}``) or two text columns (named by language code, else taken in the order of the
  languages). Without ``@CONFIG`` the config is the two codes sorted and joined by ``-`` (OPUS-100's naming).

Rows are loaded with ``datasets.load_dataset`` (its cache, ``HF_TOKEN`` and ``HF_HUB_OFFLINE`` apply) and written
once, in the layout `afp data` reads, to a folder named by the pinned revision: the builders never see the hub,
and `afp data fetch` writes the same layout where a user wants it (for machines without internet).
A reference without a revision is pinned to the hub's current commit, and that pin goes into the mixture's cache
key and the run's recipe.yaml, so a rebuilt mixture reads the same rows.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from afp_cli.errors import AfpError, warn
from afp_cli.languages import Language, get_language
from afp_cli.text_files import streamed_atomically, write_atomically

PREFIX = "hf://"
KINDS = ("instructions", "parallel")
_REPO = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
_QUERY_KEYS = ("revision", "split", "limit")
_INSTRUCTION_FIELDS = ("id", "instruction", "input", "output")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def is_hub_reference(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


@dataclass(frozen=True)
class HubReference:
    repo: str
    config: str | None = None
    revision: str | None = None
    split: str = "train"
    limit: int | None = None  # read only the first N rows of each config

    @classmethod
    def parse(cls, text: str, option: str) -> HubReference:
        body, _, query = text[len(PREFIX) :].partition("?")
        repo, _, config = body.partition("@")
        if not _REPO.match(repo):
            raise AfpError(f"{option}: '{text}' is not a hub reference; write hf://OWNER/NAME[@CONFIG][?revision=REV]")
        try:
            settings = dict(parse_qsl(query, strict_parsing=True)) if query else {}
        except ValueError:
            raise AfpError(
                f"{option}: '{text}': cannot read '?{query}'; write ?revision=REV&split=SPLIT&limit=N"
            ) from None
        unknown = sorted(set(settings) - set(_QUERY_KEYS))
        if unknown:
            raise AfpError(f"{option}: '{text}': unknown setting '{unknown[0]}'; use {', '.join(_QUERY_KEYS)}")
        limit = settings.get("limit")
        if limit is not None and (not limit.isdigit() or int(limit) < 1):
            raise AfpError(f"{option}: '{text}': limit must be a positive whole number, got '{limit}'")
        return cls(
            repo,
            config or None,
            settings.get("revision"),
            settings.get("split", "train"),
            int(limit) if limit else None,
        )

    def __str__(self) -> str:
        query = [
            f"{key}={value}"
            for key, value in (("revision", self.revision), ("split", self.split), ("limit", self.limit))
            if value is not None and not (key == "split" and value == "train")
        ]
        return f"{PREFIX}{self.repo}{'@' + self.config if self.config else ''}{'?' + '&'.join(query) if query else ''}"

    @property
    def pinned(self) -> bool:
        return self.revision is not None and _COMMIT.match(self.revision) is not None

    def configs(self, kind: str, languages: list[str]) -> list[tuple[str, list[Language]]]:
        """(config, the languages it holds) for each config this input reads."""
        langs = [get_language(code) for code in languages]
        if kind == "instructions":
            if self.config:
                raise AfpError(
                    f"{self}: instruction data is read one config per language (Bactrian-X layout); "
                    f"drop '@{self.config}'"
                )
            return [(lang.code, [lang]) for lang in langs]
        return [(self.config or "-".join(sorted(lang.code for lang in langs)), langs)]


# ----------------------------------------------------------------------------------------------- the hub, guarded


class HubUnavailable(AfpError):
    """The hub cannot be reached (offline, no network) and the input is not in a local cache."""


class LoadingScriptOnly(AfpError):
    """The hub dataset is read by a loading script, which ``datasets`` 4 and later no longer run."""


def _unreachable(error: BaseException) -> bool:
    # datasets raises ConnectionError; huggingface_hub raises OfflineModeIsEnabled (a ConnectionError) or the HTTP
    # client's transport errors (ConnectError, timeouts), which are not OSErrors.
    names = {cls.__name__ for cls in type(error).__mro__}
    return isinstance(error, (ConnectionError, TimeoutError)) or bool(
        names & {"TransportError", "LocalEntryNotFoundError", "OfflineModeIsEnabled"}
    )


def offline_message(ref: HubReference, option: str, fetch_hint: str) -> str:
    return f"{option}: {ref}: the Hugging Face hub cannot be reached and it is not in the local cache; {fetch_hint}"


def fetched_path(ref: HubReference, kind: str, languages: list[str], root: Path) -> Path:
    """Where `afp data fetch -o ROOT` puts ``ref``: ``ROOT/<dataset name>/`` (instructions) or a file in it."""
    folder = root / ref.repo.split("/")[-1]
    return folder if kind == "instructions" else folder / local_name(ref.configs(kind, languages)[0][0])


def _hub_call(ref: HubReference, option: str, fetch_hint: str, call: Callable[[], Any]) -> Any:
    """Run a hub call, turning the failures a user can fix into one line; bugs keep their traceback."""
    try:
        return call()
    except AfpError:
        raise
    except Exception as error:  # noqa: BLE001 - classified below, re-raised when not a known user-side failure
        names = {cls.__name__ for cls in type(error).__mro__}
        if _unreachable(error):
            raise HubUnavailable(offline_message(ref, option, fetch_hint)) from None
        if names & {"GatedRepoError"}:
            raise AfpError(
                f"{option}: {ref}: the dataset is gated: accept its terms on huggingface.co and set "
                "HF_TOKEN (or run `hf auth login`)"
            ) from None
        if names & {"DatasetNotFoundError", "RepositoryNotFoundError", "RevisionNotFoundError"}:
            raise AfpError(
                f"{option}: {ref}: not found on the hub ({_first_line(error)}); check the name and "
                "revision, or set HF_TOKEN for a private dataset"
            ) from None
        if isinstance(error, ValueError) and ("config" in str(error).lower() or "split" in str(error).lower()):
            raise AfpError(f"{option}: {ref}: {_first_line(error)}") from None
        if isinstance(error, RuntimeError) and "scripts are no longer supported" in str(error):
            import datasets

            raise LoadingScriptOnly(
                f"{option}: {ref}: the dataset is read by a loading script, which datasets {datasets.__version__} "
                f"no longer runs; download its data files (hf download {ref.repo} --repo-type dataset"
                f"{' --revision ' + ref.revision if ref.revision else ''} --local-dir DIR) and name "
                "the downloaded files instead (docs/data.md, Input formats)"
            ) from None
        raise


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def resolve_revision(ref: HubReference, option: str, fetch_hint: str, refs_dir: Path | None = None) -> HubReference:
    """``ref`` pinned to a commit. Online, the hub says which; offline, the pin recorded by the last online run.

    ``refs_dir`` keeps the last pin of each (repo, revision) so a machine that built a mixture online rebuilds or
    reuses it offline; without a recorded pin an offline machine cannot know the revision: the one-line error.
    """
    if ref.pinned:
        return ref
    import huggingface_hub

    requested = ref.revision or "main"
    record = refs_dir / f"{ref.repo.replace('/', '--')}@{requested.replace('/', '--')}" if refs_dir else None
    try:
        info = _hub_call(
            ref, option, fetch_hint, lambda: huggingface_hub.HfApi().dataset_info(ref.repo, revision=ref.revision)
        )
    except HubUnavailable:
        if record is not None and record.is_file():
            return dataclasses.replace(ref, revision=record.read_text(encoding="utf-8").strip())
        raise
    if record is not None:  # a half-written pin would be read back as a revision: written whole or not at all
        write_atomically(record, info.sha + "\n", "the pinned revision")
    return dataclasses.replace(ref, revision=info.sha)


def load_rows(ref: HubReference, config: str, option: str, fetch_hint: str) -> Any:
    """The rows of one config and split (a ``datasets.Dataset``: sized, iterable, ``column_names``)."""
    import datasets

    return _hub_call(
        ref, option, fetch_hint, lambda: datasets.load_dataset(ref.repo, config, split=ref.split, revision=ref.revision)
    )


def instruction_file_rows(
    ref: HubReference, language: str, refusal: LoadingScriptOnly, option: str, fetch_hint: str
) -> list[dict]:
    """One language's instruction rows read straight from the repository's file, at the same pinned commit.

    For a dataset whose loading script ``datasets`` no longer runs, but whose files are in the layout afp reads
    from disk: one ``{lang}.json[l][.gz]`` per language, as Bactrian-X publishes its languages (``{lang}.json.gz``).
    Any other layout ends with the script's one-line refusal. (Not run against the real hub: afp's test machines
    have no network; tests/test_data_hub.py serves such a repository.)
    """
    import datasets
    import huggingface_hub

    from afp_cli.data.readers import INSTRUCTION_SUFFIXES, iter_json_objects

    api = huggingface_hub.HfApi()
    files = _hub_call(
        ref, option, fetch_hint, lambda: api.list_repo_files(ref.repo, repo_type="dataset", revision=ref.revision)
    )
    names = {f"{language}{suffix}" for suffix in INSTRUCTION_SUFFIXES}
    matches = sorted(name for name in files if name.rsplit("/", 1)[-1] in names)
    if len(matches) != 1:
        found = f"it has several: {', '.join(matches)}" if matches else "it has none"
        raise AfpError(
            f"{refusal} (afp reads the repository's one {language}.json[l][.gz] file in its place, but {found})"
        )
    local = _hub_call(
        ref,
        option,
        fetch_hint,
        lambda: huggingface_hub.hf_hub_download(ref.repo, matches[0], repo_type="dataset", revision=ref.revision),
    )
    warn(
        f"{ref}: read by a loading script, which datasets {datasets.__version__} no longer runs; reading its "
        f"file {matches[0]} at the same commit instead"
    )
    return [row for _, row in iter_json_objects(Path(local))]


# ----------------------------------------------------------------------------------------------- conversion


def instruction_records(ref: HubReference, config: str, rows: Iterable[dict]) -> Iterator[dict]:
    """Bactrian-X rows as afp's instruction records; a row without the schema's fields names row and field."""
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise AfpError(f"{ref} (config {config}): row {number}: a JSON object expected, got {type(row).__name__}")
        record = {}
        for name in _INSTRUCTION_FIELDS:
            value = row.get(name)
            if value is None and name in ("id", "instruction", "output"):
                raise AfpError(
                    f"{ref} (config {config}): row {number}: field '{name}': missing; instruction data "
                    f"needs {', '.join(_INSTRUCTION_FIELDS)} (Bactrian-X layout)"
                )
            record[name] = "" if value is None else str(value) if name == "id" else value
        yield record


def parallel_records(ref: HubReference, config: str, rows: Any, languages: list[Language]) -> Iterator[dict]:
    """Rows with a ``translation`` column or two text columns, as ``{"en": ..., "zh": ...}`` records."""
    columns = list(getattr(rows, "column_names", None) or [])
    pick = _column_picker(ref, config, columns, languages)
    for number, row in enumerate(rows, start=1):
        yield {lang.code: pick(row, lang, number) for lang in languages}


def _column_picker(ref: HubReference, config: str, columns: list[str], languages: list[Language]):
    where = f"{ref} (config {config})"
    if "translation" in columns:

        def from_translation(row: dict, lang: Language, number: int) -> str:
            pair = row["translation"]
            key = lang.code if lang.code in pair else lang.flores
            if not isinstance(pair, dict) or key not in pair:
                raise AfpError(
                    f"{where}: row {number}: field 'translation': no '{lang.code}' text "
                    f"(keys: {', '.join(pair) if isinstance(pair, dict) else type(pair).__name__})"
                )
            return pair[key]

        return from_translation
    by_language = {}
    for column in columns:
        try:
            by_language[get_language(column).code] = column
        except AfpError:
            continue
    if all(lang.code in by_language for lang in languages):
        return lambda row, lang, number: row[by_language[lang.code]]
    texts = [column for column in columns if column not in ("id", "idx")]
    if len(texts) != 2:
        raise AfpError(
            f"{where}: expected a 'translation' column or two text columns, found columns "
            f"{', '.join(columns) or 'none'}"
        )
    order = dict(zip((lang.code for lang in languages), texts))  # unnamed columns follow the languages' order
    return lambda row, lang, number: row[order[lang.code]]


# ----------------------------------------------------------------------------------------------- local copies


def local_name(config: str) -> str:
    """File of one config in afp's layout: ``{lang}.jsonl`` (instructions: config = language), ``{config}.jsonl``."""
    return f"{config}.jsonl"


def write_local(
    ref: HubReference,
    kind: str,
    languages: list[str],
    folder: Path,
    option: str,
    fetch_hint: str,
    progress: Callable[[str, int], Any] | None = None,
) -> Path:
    """Write the rows ``ref`` names to ``folder`` in the layout `afp data` reads; return the path to read.

    Instructions: ``folder/{lang}.jsonl`` each, the folder is returned. Parallel text: ``folder/{config}.jsonl``.
    Each file is written to a temporary name and renamed, so an interrupted download leaves no partial file.
    """
    target = folder
    for config, langs in ref.configs(kind, languages):
        try:
            rows = load_rows(ref, config, option, fetch_hint)
        except LoadingScriptOnly as refusal:
            if kind != "instructions":
                raise
            rows = instruction_file_rows(ref, config, refusal, option, fetch_hint)
        total = len(rows) if ref.limit is None else min(ref.limit, len(rows))
        if ref.limit is not None:
            rows = rows.select(range(total)) if hasattr(rows, "select") else rows[:total]
        records = (
            instruction_records(ref, config, rows)
            if kind == "instructions"
            else parallel_records(ref, config, rows, langs)
        )
        path = folder / local_name(config)
        if kind == "parallel":
            target = path
        with streamed_atomically(path) as file:
            if progress is None:
                for record in records:
                    file.write(json.dumps(record, ensure_ascii=False) + "\n")
            else:
                with progress(f"{ref.repo} {config}", total) as advance:
                    for record in records:
                        file.write(json.dumps(record, ensure_ascii=False) + "\n")
                        advance()
    return target


def cached_copy(
    ref: HubReference, kind: str, languages: list[str], cache_dir: Path, option: str, fetch_hint: str
) -> Path:
    """The local copy of a pinned reference under ``cache_dir``, written on first use."""
    assert ref.pinned, "pin the reference first (resolve_revision)"
    folder = (
        cache_dir
        / ref.repo.replace("/", "--")
        / ref.revision
        / f"{ref.split}{'-' + str(ref.limit) if ref.limit else ''}"
    )
    configs = ref.configs(kind, languages)
    missing = [config for config, _ in configs if not (folder / local_name(config)).is_file()]
    if missing:
        # instructions: fetch only the languages not copied yet (a recipe may add one later)
        wanted = [lang.code for config, langs in configs if config in missing for lang in langs]
        write_local(ref, kind, wanted if kind == "instructions" else languages, folder, option, fetch_hint)
    return folder if kind == "instructions" else folder / local_name(configs[0][0])
