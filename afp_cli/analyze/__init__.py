"""Analysis of aligned models: language rate of generated answers and cross-lingual representation alignment.

`language_rate` + `generation` + `language_id` answer "does the model reply in the language it was asked for?";
`alignment` answers "how close are translations inside the model, layer by layer?"; `plots` draws both.
"""
