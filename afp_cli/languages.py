"""The one language table: ISO 639-1 codes, FLORES-200 codes, English names and scripts.

Used by data building (``Answer in {Language}:``), evaluation tasks (FLORES file names, sacrebleu tokenizers)
and analysis (language identification). It covers the 52 Bactrian-X languages plus the other languages of
XNLI, XCOPA and PAWS-X.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from afp_cli.errors import AfpError


@dataclass(frozen=True)
class Language:
    code: str  # ISO 639-1 (Bactrian-X file names, afp's own identifiers)
    name: str  # English name, as written in prompts: "Answer in Chinese:"
    flores: str  # FLORES-200 code: "{iso639-3}_{Script}"

    @property
    def script(self) -> str:
        return self.flores.split("_", 1)[1]


# (code, English name, FLORES-200 code). The first 52 rows are Bactrian-X's languages, in its order, named as in the
# official code's src/lang_dict.py (chongli17/CrossLingualAlignment), the source of its "Answer in {Language}:"
# prompts: "Slovene", not "Slovenian". A trained model has seen exactly these names, so they must not drift.
_TABLE: tuple[tuple[str, str, str], ...] = (
    ("af", "Afrikaans", "afr_Latn"),
    ("ar", "Arabic", "arb_Arab"),
    ("az", "Azerbaijani", "azj_Latn"),
    ("bn", "Bengali", "ben_Beng"),
    ("cs", "Czech", "ces_Latn"),
    ("de", "German", "deu_Latn"),
    ("en", "English", "eng_Latn"),
    ("es", "Spanish", "spa_Latn"),
    ("et", "Estonian", "est_Latn"),
    ("fa", "Persian", "pes_Arab"),
    ("fi", "Finnish", "fin_Latn"),
    ("fr", "French", "fra_Latn"),
    ("gl", "Galician", "glg_Latn"),
    ("gu", "Gujarati", "guj_Gujr"),
    ("he", "Hebrew", "heb_Hebr"),
    ("hi", "Hindi", "hin_Deva"),
    ("hr", "Croatian", "hrv_Latn"),
    ("id", "Indonesian", "ind_Latn"),
    ("it", "Italian", "ita_Latn"),
    ("ja", "Japanese", "jpn_Jpan"),
    ("ka", "Georgian", "kat_Geor"),
    ("kk", "Kazakh", "kaz_Cyrl"),
    ("km", "Khmer", "khm_Khmr"),
    ("ko", "Korean", "kor_Hang"),
    ("lt", "Lithuanian", "lit_Latn"),
    ("lv", "Latvian", "lvs_Latn"),
    ("mk", "Macedonian", "mkd_Cyrl"),
    ("ml", "Malayalam", "mal_Mlym"),
    ("mn", "Mongolian", "khk_Cyrl"),
    ("mr", "Marathi", "mar_Deva"),
    ("my", "Burmese", "mya_Mymr"),
    ("ne", "Nepali", "npi_Deva"),
    ("nl", "Dutch", "nld_Latn"),
    ("pl", "Polish", "pol_Latn"),
    ("ps", "Pashto", "pbt_Arab"),
    ("pt", "Portuguese", "por_Latn"),
    ("ro", "Romanian", "ron_Latn"),
    ("ru", "Russian", "rus_Cyrl"),
    ("si", "Sinhala", "sin_Sinh"),
    ("sl", "Slovene", "slv_Latn"),
    ("sv", "Swedish", "swe_Latn"),
    ("sw", "Swahili", "swh_Latn"),
    ("ta", "Tamil", "tam_Taml"),
    ("te", "Telugu", "tel_Telu"),
    ("th", "Thai", "tha_Thai"),
    ("tl", "Tagalog", "tgl_Latn"),
    ("tr", "Turkish", "tur_Latn"),
    ("uk", "Ukrainian", "ukr_Cyrl"),
    ("ur", "Urdu", "urd_Arab"),
    ("vi", "Vietnamese", "vie_Latn"),
    ("xh", "Xhosa", "xho_Latn"),
    ("zh", "Chinese", "zho_Hans"),
    # Beyond Bactrian-X: the remaining XNLI / XCOPA / PAWS-X languages and a few common neighbours.
    ("bg", "Bulgarian", "bul_Cyrl"),
    ("el", "Greek", "ell_Grek"),
    ("ht", "Haitian Creole", "hat_Latn"),
    ("qu", "Quechua", "quy_Latn"),
    ("ca", "Catalan", "cat_Latn"),
    ("eu", "Basque", "eus_Latn"),
    ("hu", "Hungarian", "hun_Latn"),
    ("da", "Danish", "dan_Latn"),
    ("yo", "Yoruba", "yor_Latn"),
)

LANGUAGES: dict[str, Language] = {code: Language(code, name, flores) for code, name, flores in _TABLE}
BACTRIAN_X_CODES: tuple[str, ...] = tuple(code for code, _, _ in _TABLE[:52])
_BY_FLORES: dict[str, Language] = {lang.flores: lang for lang in LANGUAGES.values()}


def get_language(code: str) -> Language:
    """Look up a language by ISO 639-1 or FLORES-200 code; an unknown code is a user error with suggestions."""
    if code in LANGUAGES:
        return LANGUAGES[code]
    if code in _BY_FLORES:
        return _BY_FLORES[code]
    lowered = code.strip().lower()
    if lowered in LANGUAGES:
        return LANGUAGES[lowered]
    known = list(LANGUAGES) + list(_BY_FLORES)
    close = difflib.get_close_matches(lowered, known, n=3, cutoff=0.3)
    hint = f"; closest known codes: {', '.join(close)}" if close else ""
    raise AfpError(f"unknown language code '{code}'{hint} (see afp_cli/languages.py)")


def language_name(code: str) -> str:
    """English name used in prompts, e.g. ``language_name('zh') == 'Chinese'``."""
    return get_language(code).name
