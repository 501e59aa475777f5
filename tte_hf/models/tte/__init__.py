"""Think-Then-Embed: everything copied next to the weights for ``trust_remote_code``, and nothing else.

Every ``.py`` file in this folder is shipped flat into saved repos (``tte_hf.models.remote_code``),
where ``auto_map`` and ``modules.json`` name them by bare file name (``modeling_tte.TTEEmbedderModel``,
``sentence_transformer_tte.TTETransformer``). So the files import only the standard library,
third-party packages and each other (relatively); ``tests/test_layout.py`` and ruff (``ruff.toml``
here) fail otherwise. This ``__init__`` is not shipped and stays empty so importing one file does not import the rest.
"""
