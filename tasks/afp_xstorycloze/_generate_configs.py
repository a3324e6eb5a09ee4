"""Generate the afp_xstorycloze per-language tasks, groups and demonstration-language variants.

Run from the repository root: ``python tasks/afp_xstorycloze/_generate_configs.py``.
"""

from pathlib import Path

from afp_cli.evaluation.taskgen import data_spec, language_family, write_family

LANGUAGES = ("ar", "en", "es", "eu", "hi", "id", "my", "ru", "sw", "te", "zh")
# The published XStoryCloze TSVs (spring2016.val.{lang}.tsv.split_20_80_{train,eval}.tsv) name the columns as
# the English StoryCloze release does; the hub copy renames them. Local files are read with the hub's names.
PUBLISHED_COLUMNS = {
    "InputStoryid": "story_id",
    **{f"InputSentence{i}": f"input_sentence_{i}" for i in range(1, 5)},
    "RandomFifthSentenceQuiz1": "sentence_quiz1",
    "RandomFifthSentenceQuiz2": "sentence_quiz2",
    "AnswerRightEnding": "answer_right_ending",
}
FIELDS = [*(f"input_sentence_{i}" for i in range(1, 5)), "sentence_quiz1", "sentence_quiz2", "answer_right_ending"]


def split(language: str, role: str) -> dict:
    """Test on the eval split (1,511 stories); demonstrations from the train split (360), as the official code."""
    file_split = "eval" if role == "test" else "train"
    return data_spec("juletxara/xstory_cloze", language, file_split, f"xstorycloze/{language}_{file_split}.tsv")


def configs() -> dict:
    return language_family("afp_xstorycloze", LANGUAGES, split, data={"columns": PUBLISHED_COLUMNS, "fields": FIELDS})


if __name__ == "__main__":
    write_family(Path(__file__).parent, configs())
