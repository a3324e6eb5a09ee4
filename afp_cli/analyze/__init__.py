"""Analysis of aligned models: language rate of generated answers and cross-lingual representation alignment.

Language rate: `questions` (what is asked) -> `generation` (lm-eval's afp_langrate family) -> `language_rate`
(cut, detect with `language_id`, summarise) -> `rate_report`; `rate_run` runs it end to end. `alignment` answers
"how close are translations inside the model, layer by layer?"; `plots` draws both. Input files are checked
by `afp_cli.text_files` (UTF-8 or one error line).
"""
