"""Text classification and BERT -> TinyBERT distillation (installed as ``zoo.nlp``)."""
