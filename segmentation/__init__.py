"""Semantic segmentation: data with per-pixel masks, LR-ASPP models, SKD and CWD distillation (`zoo.segmentation`)."""
