"""Generation-distillation (arXiv 2002.00733): `generate` writes new label-conditioned examples
(prompting and parsing apart from the model); `text_filters` rejects bad generated text with a
named reason. May import only the ground floor of `potstill.models` and the library.
"""
