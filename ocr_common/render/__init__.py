"""Every format of a result, rendered from its pages (``ocr_common.result.Page``) when asked:
one module a format, each a function of the pages. The text is ``result.document_text`` and the
JSON the model's own dump."""
