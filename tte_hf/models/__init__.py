"""Model families whose code is copied next to the weights for ``trust_remote_code`` (one folder each,
as transformers keeps ``models/<name>/``)."""
